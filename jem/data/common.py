"""Shared pieces of the dataset readers: the result record, resizing and splitting (their error
type is :class:`jem.errors.DataError`).

Every reader returns uint8 images shaped ``(N, H, W, C)`` with ``C`` 1 or 3 and int64 labels, so the
rest of the pipeline never needs to know which on-disk format an array came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from jem.errors import DataError
from jem.progress import progress as bar

# Pillow >= 9.1 moved the filters into ``Image.Resampling``; older releases only have the constants.
BILINEAR = getattr(Image, "Resampling", Image).BILINEAR

# Resizing more images than this shows a progress bar (PIL needs ~10-100 us per image).
_PROGRESS_MIN = 20000


@dataclass
class Dataset:
    """A loaded dataset: uint8 images ``(N, H, W, C)`` and int64 labels in ``0 .. len(classes)-1``.

    ``unlabelled_x`` is only set for STL-10 with ``use_unlabelled``; it may be a read-only memory map.
    ``train_groups`` is only set for an image folder split by ``data.group_regex``: the group id of
    each training image, so the validation split can keep groups whole too.
    ``train_audio``/``test_audio`` are only set for the audio-visual sets (``av-digits``,
    ``avfolder``): int16 mono samples ``(N, T)`` at ``sample_rate`` Hz, row ``i`` paired with image ``i``.
    ``notes`` are one-line statements of what the reader changed in the files' values (the prepare
    stage records them in ``stats.json``).
    """

    train_x: np.ndarray  # uint8 (N, H, W, C)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray  # uint8 (M, H, W, C)
    test_y: np.ndarray  # int64 (M,)
    classes: list[str]
    unlabelled_x: np.ndarray | None = None  # uint8 (U, H, W, C)
    train_groups: np.ndarray | None = None  # int64 (N,)
    train_audio: np.ndarray | None = None  # int16 (N, T)
    test_audio: np.ndarray | None = None  # int16 (M, T)
    sample_rate: int = 0
    notes: list[str] = field(default_factory=list)  # what the reader changed (e.g. 16-bit files scaled)


def resize_images(x: np.ndarray, size: int, desc: str = "resize") -> np.ndarray:
    """Resize every image of ``x`` (uint8, ``(N, H, W, C)``) to ``size x size`` with PIL bilinear.

    ``size`` 0, or images already ``size x size``, returns ``x`` unchanged (no copy). Aspect ratio
    is not preserved: non-square images are stretched, as the config promises square inputs.
    """
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        raise DataError(f"expected images shaped (N, H, W, 1 or 3), got {x.shape}")
    if size < 0:
        raise DataError(f"image_size must be >= 0, got {size}")
    if size == 0 or (x.shape[1] == size and x.shape[2] == size):
        return x
    n, _, _, c = x.shape
    out = np.empty((n, size, size, c), dtype=np.uint8)
    for i in bar(range(n), desc=desc, disable=n < _PROGRESS_MIN, leave=False):
        img = np.ascontiguousarray(x[i, :, :, 0] if c == 1 else x[i])
        resized = np.asarray(Image.fromarray(img).resize((size, size), BILINEAR))
        out[i] = resized.reshape(size, size, c)
    return out


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """uint8 ``(N, H, W, C)`` images with ``channels`` channels: 0 or the current count returns ``x``;
    1 -> 3 replicates; 3 -> 1 is ITU-R 601-2 luma with PIL's ``L`` rounding
    (``(19595 R + 38470 G + 7471 B + 2**15) >> 16``), so arrays and decoded files agree."""
    if channels in (0, x.shape[3]):
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=3)
    out = np.empty(x.shape[:3] + (1,), dtype=np.uint8)
    for i in range(0, len(x), 4096):  # chunked: uint32 temporaries stay small
        c = x[i:i + 4096].astype(np.uint32)
        luma = (19595 * c[..., 0] + 38470 * c[..., 1] + 7471 * c[..., 2] + 0x8000) >> 16
        out[i:i + 4096, ..., 0] = luma.astype(np.uint8)
    return out


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices ``0 .. len(y)-1`` into (train, test), class by class, reproducibly under ``seed``.

    Each class with ``n`` members sends ``round(n * test_fraction)`` of them to test, clipped so a
    class with at least two members has at least one on each side (a single-member class stays in
    train). Both index arrays come back sorted, so the split keeps the source order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    test_parts = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        n = len(members)
        n_test = min(max(round(n * test_fraction), 1 if n >= 2 else 0), max(n - 1, 0))
        test_parts.append(rng.permutation(members)[:n_test])
    test_idx = np.sort(np.concatenate(test_parts)) if test_parts else np.zeros(0, dtype=np.int64)
    train_mask = np.ones(len(y), dtype=bool)
    train_mask[test_idx] = False
    return np.flatnonzero(train_mask), test_idx


def split_dataset(
    x: np.ndarray, y: np.ndarray, classes: list[str], test_fraction: float, seed: int
) -> Dataset:
    """Build a :class:`Dataset` from one labelled pool with a stratified train/test split."""
    train_idx, test_idx = stratified_split(y, test_fraction, seed)
    return Dataset(
        train_x=x[train_idx],
        train_y=y[train_idx].astype(np.int64),
        test_x=x[test_idx],
        test_y=y[test_idx].astype(np.int64),
        classes=classes,
    )


def resolve_dir(root: str, subdir: str, marker: str) -> str:
    """Return ``root/subdir`` if it holds ``marker``, else ``root`` (the user may point at either)."""
    nested = os.path.join(root, subdir)
    if os.path.exists(os.path.join(nested, marker)):
        return nested
    return root


def missing_error(name: str, root: str, missing: list[str], how: str) -> DataError:
    """One-line error listing the missing files of a dataset and how to get them."""
    return DataError(f"{name} not found in {root!r}: missing {', '.join(missing)}; {how}")
