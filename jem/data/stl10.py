"""STL-10 from the official binary files (Coates, Lee and Ng 2011, https://cs.stanford.edu/~acoates/stl10/).

``stl10_binary/`` holds ``train_X.bin`` / ``test_X.bin`` / ``unlabeled_X.bin`` (uint8 images of
3x96x96, back to back, each channel stored column-major as in MATLAB), ``train_y.bin`` /
``test_y.bin`` (one uint8 label per image, 1..10) and ``class_names.txt`` (one name per line).
"""

from __future__ import annotations

import os

import numpy as np

from jem.data.common import Dataset, missing_error, resolve_dir
from jem.errors import DataError

SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE
N_CLASSES = 10
_HOW = (
    "download stl10_binary.tar.gz from https://cs.stanford.edu/~acoates/stl10/, "
    "extract it and set data.root to the folder holding stl10_binary/"
)
_LABELLED = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt")
UNLABELLED = "unlabeled_X.bin"


def _image_count(path: str) -> int:
    size = os.path.getsize(path)
    if size == 0 or size % IMAGE_BYTES:
        raise DataError(
            f"{path} is truncated: expected a non-zero multiple of {IMAGE_BYTES} bytes "
            f"(3x{SIDE}x{SIDE} per image), got {size}"
        )
    return size // IMAGE_BYTES


def _locate(root: str, use_unlabelled: bool) -> str:
    folder = resolve_dir(root, "stl10_binary", "train_X.bin")
    wanted = [*_LABELLED, UNLABELLED] if use_unlabelled else list(_LABELLED)
    missing = [f for f in wanted if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise missing_error("stl10", root, missing, _HOW)
    return folder


def _check_pair(folder: str, split: str) -> int:
    images, labels = os.path.join(folder, f"{split}_X.bin"), os.path.join(folder, f"{split}_y.bin")
    n = _image_count(images)
    n_labels = os.path.getsize(labels)
    if n_labels != n:
        raise DataError(f"{images} holds {n} images but {labels} holds {n_labels} labels (one byte each)")
    return n


def check_stl10(root: str, use_unlabelled: bool = False) -> None:
    """Check the files exist and every image file is a whole number of images matching its labels."""
    folder = _locate(root, use_unlabelled)
    for split in ("train", "test"):
        _check_pair(folder, split)
    if use_unlabelled:
        _image_count(os.path.join(folder, UNLABELLED))


def _images(path: str, n: int, memmap: bool) -> np.ndarray:
    """``(n, 96, 96, 3)`` view of an image file; a read-only memory map when ``memmap``."""
    raw: np.ndarray
    if memmap:
        raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, 3, SIDE, SIDE))
    else:
        raw = np.fromfile(path, dtype=np.uint8).reshape(n, 3, SIDE, SIDE)
    # Each channel is column-major: the array above is indexed (image, channel, column, row).
    return raw.transpose(0, 3, 2, 1)  # (n, row, column, channel)


def _labels(path: str) -> np.ndarray:
    y = np.fromfile(path, dtype=np.uint8).astype(np.int64)
    if y.size and (y.min() < 1 or y.max() > N_CLASSES):
        raise DataError(f"{path} has labels outside 1..{N_CLASSES}")
    return y - 1


def _class_names(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not a UTF-8 text file ({exc})") from exc
    if len(names) != N_CLASSES:
        raise DataError(f"{path} lists {len(names)} class names, expected {N_CLASSES}")
    return names


def load_stl10(root: str, use_unlabelled: bool = False) -> Dataset:
    """Load STL-10's 5000/8000 labelled split as uint8 ``(N, 96, 96, 3)``, labels shifted to 0..9.

    With ``use_unlabelled`` the 100k unlabelled images come back as a read-only memory map (2.7 GB
    on disk), transposed lazily; copy or resize it before writing into it.
    """
    folder = _locate(root, use_unlabelled)
    split_arrays = {}
    for split in ("train", "test"):
        n = _check_pair(folder, split)
        x = np.ascontiguousarray(_images(os.path.join(folder, f"{split}_X.bin"), n, memmap=False))
        split_arrays[split] = (x, _labels(os.path.join(folder, f"{split}_y.bin")))
    unlabelled = None
    if use_unlabelled:
        path = os.path.join(folder, UNLABELLED)
        unlabelled = _images(path, _image_count(path), memmap=True)
    return Dataset(
        train_x=split_arrays["train"][0],
        train_y=split_arrays["train"][1],
        test_x=split_arrays["test"][0],
        test_y=split_arrays["test"][1],
        classes=_class_names(os.path.join(folder, "class_names.txt")),
        unlabelled_x=unlabelled,
    )
