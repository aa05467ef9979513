"""Any folder of images laid out as ``root/<class name>/**/<image>.png|.jpg|.jpeg``.

Class names are the sorted sub-folder names (hidden folders skipped); images of any size are
resized to a square (bilinear). Files with other extensions are ignored.

Channels (``data.channels``): 1 converts every image to greyscale (PIL mode ``L``), 3 to RGB, and 0
keeps what the files are: one channel when every file is stored greyscale (PIL modes 1, L, LA, I,
I;16, F; palette and colour files count as colour), else three (greyscale files replicated).

Bit depth: 16-bit greyscale files (PNG, TIFF) are scaled to 8 bits as ``round(value / 257)``;
16-bit colour PNGs are reduced by PIL itself to their high bytes (``value // 256``). In both cases
the count per PIL mode becomes a note in ``Dataset.notes`` (the prepare stage records it in
``stats.json``). PIL's own conversion clipped them at 255 (nearly white images) without a word.

Group-aware split (``data.group_regex``): the first capture group of the regex, searched in each
file's path relative to ``root`` (``/``-separated, class folder included), names the file's group
(the source it was made from: one font, one video, one object). A group never straddles the
train / validation / test split, so near-duplicates of one source cannot inflate kNN. Groups are
global: the same name in two class folders is one group. Groups are assigned greedily in a seeded
order so each class's share of the test split comes as close as whole groups allow to
``test_fraction``; no class ever loses its last training group.
"""

from __future__ import annotations

import os
import re
from typing import BinaryIO

import numpy as np
from PIL import Image

from jem.data.common import BILINEAR, Dataset
from jem.errors import DataError
from jem.progress import progress as bar

EXTENSIONS = (".png", ".jpg", ".jpeg")
DEFAULT_SIZE = 32
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
MIN_PER_CLASS = 3  # one image each for train, validation and test
_PROGRESS_MIN = 2000
_HOW = "set data.root to a folder with one sub-folder of PNG/JPEG images per class"


def _class_dirs(root: str) -> list[str]:
    if not root:
        raise DataError(f"imagefolder needs a root folder; {_HOW}")
    if not os.path.isdir(root):
        raise DataError(f"imagefolder root {root!r} is not a folder; {_HOW}")
    with os.scandir(root) as entries:
        names = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not names:
        loose = any(f.lower().endswith(EXTENSIONS) for f in os.listdir(root))
        hint = " (its images lie directly in it: move them into one sub-folder per class)" if loose else ""
        raise DataError(f"imagefolder root {root!r} has no class sub-folders{hint}; {_HOW}")
    return names


def _image_files(folder: str) -> list[str]:
    """Image files under ``folder`` (recursively, hidden entries skipped), in a stable sorted order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [
            os.path.join(dirpath, f)
            for f in sorted(filenames)
            if not f.startswith(".") and f.lower().endswith(EXTENSIONS)
        ]
    return found


def _index(root: str) -> tuple[list[str], list[str], np.ndarray]:
    """(class names, file paths, int64 labels); DataError for an empty class folder."""
    classes = _class_dirs(root)
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = _image_files(os.path.join(root, name))
        if not files:
            folder = os.path.join(root, name)
            raise DataError(f"imagefolder class folder {folder!r} holds no .png/.jpg/.jpeg files")
        paths += files
        labels += [label] * len(files)
    return classes, paths, np.asarray(labels, dtype=np.int64)


def file_groups(root: str, paths: list[str], group_regex: str) -> np.ndarray:
    """int64 group id of each path: the first capture group of ``group_regex`` searched in the path
    relative to ``root`` (``/``-separated); DataError naming a file it does not match."""
    try:
        pattern = re.compile(group_regex)
    except re.error as exc:
        raise DataError(f"data.group_regex {group_regex!r} is not a valid regular expression ({exc})") from None
    if pattern.groups < 1:
        raise DataError(f"data.group_regex {group_regex!r} has no capture group; wrap the part that "
                        "names the group in parentheses, e.g. '^[^/]+/([^_]+)_'")
    names: list[str] = []
    for path in paths:
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        m = pattern.search(rel)
        if m is None or not m.group(1):
            raise DataError(f"data.group_regex {group_regex!r} does not match {rel!r} (or captures nothing); "
                            "every image needs a group")
        names.append(m.group(1))
    _, ids = np.unique(np.asarray(names), return_inverse=True)
    return ids.astype(np.int64).reshape(-1)


def group_split(y: np.ndarray, groups: np.ndarray, fraction: float, seed: int | list[int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (keep, held-out) indices such that no group has members on both sides.

    Each class's target is ``max(1, round(n_c * fraction))`` held-out images. Groups are visited in
    a seeded random order and held out when that leaves fewer classes with nothing held out, or as
    many and the per-class held-out counts closer to their targets (L1 distance), unless it would
    hold out a class's last kept image. So every class
    keeps at least one image; a class whose images form a single group gets none held out.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must be strictly between 0 and 1, got {fraction}")
    uniq, inv = np.unique(groups, return_inverse=True)
    inv = inv.reshape(-1)
    n_classes = int(y.max()) + 1 if len(y) else 0
    counts = np.zeros((len(uniq), n_classes), dtype=np.int64)  # (G, C) images of class c in group g
    np.add.at(counts, (inv, y), 1)
    total = counts.sum(0)
    target = np.where(total > 0, np.maximum(1, np.round(total * fraction)), 0)
    held = np.zeros(n_classes, dtype=np.int64)
    out = np.zeros(len(uniq), dtype=bool)
    for g in np.random.default_rng(seed).permutation(len(uniq)):
        after = held + counts[g]
        if np.any((counts[g] > 0) & (after >= total)):
            continue  # would leave a class with nothing kept
        if _score(after, target) < _score(held, target):
            out[g], held = True, after
    mask = out[inv]
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _score(held: np.ndarray, target: np.ndarray) -> tuple[int, int]:
    """(classes with a target but nothing held out, L1 distance to the targets): lower is better."""
    return int(((held == 0) & (target > 0)).sum()), int(np.abs(held - target).sum())


def _check_layout(classes: list[str], y: np.ndarray, root: str) -> None:
    if len(classes) < 2:
        raise DataError(f"imagefolder root {root!r} has a single class folder ({classes[0]!r}); "
                        "classification needs at least two (one sub-folder per class)")
    sizes = np.bincount(y, minlength=len(classes))
    few = [f"{c} ({n})" for c, n in zip(classes, sizes) if n < MIN_PER_CLASS]
    if few:
        raise DataError(f"imagefolder class folders with fewer than {MIN_PER_CLASS} images (one each for "
                        f"train, validation and test): {', '.join(few)}")


def _check_groups(classes: list[str], y: np.ndarray, groups: np.ndarray, test_idx: np.ndarray) -> None:
    tested = np.bincount(y[test_idx], minlength=len(classes))
    untested = [c for c, n in zip(classes, tested) if n == 0]
    if untested:
        n_groups = {c: len(np.unique(groups[y == i])) for i, c in enumerate(classes)}
        what = ", ".join(f"{c} ({n_groups[c]} group{'s' * (n_groups[c] != 1)})" for c in untested)
        raise DataError(f"data.group_regex leaves no test image for class {what}: a group-aware split needs "
                        "at least two groups per class; check the regex or add sources")


def _split(classes: list[str], y: np.ndarray, groups: np.ndarray | None, test_fraction: float,
           seed: int) -> tuple[np.ndarray, np.ndarray]:
    from jem.data.common import stratified_split

    if groups is None:
        return stratified_split(y, test_fraction, seed)
    train_idx, test_idx = group_split(y, groups, test_fraction, seed)
    _check_groups(classes, y, groups, test_idx)
    return train_idx, test_idx


def check_imagefolder(root: str, test_fraction: float = 0.25, group_regex: str = "", seed: int = 0) -> None:
    """Check the layout without decoding anything: class folders exist, at least two of them, each
    holding at least three images; with ``group_regex``, every file has a group and the group-aware
    split leaves every class a test image."""
    classes, paths, y = _index(root)
    _check_layout(classes, y, root)
    if group_regex:
        _split(classes, y, file_groups(root, paths, group_regex), test_fraction, seed)


def read_image(path: str | BinaryIO, size: int, channels: int = 3) -> np.ndarray:
    """Decode one image file (a path, or an open binary file such as ``io.BytesIO``) to uint8
    ``(size, size, channels)`` (bilinear resize; ``channels`` 1 is PIL's ``L`` conversion, 3 is
    ``RGB``); DataError if unreadable."""
    return _decode(path, size, "L" if channels == 1 else "RGB")[0]


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit greyscale image (PIL modes ``I;16*``, or ``I``, which is how PIL opens 16-bit PNG
    files) as 8-bit ``L``, scaled as round(value / 257), so 65535 -> 255. PIL's own conversion clips
    at 255 instead: every value above 255 became white."""
    a = np.asarray(img).astype(np.int64)
    return Image.fromarray(((a + 128) // 257).astype(np.uint8), "L")


def _decode(path: str | BinaryIO, size: int, mode: str | None, high: dict[str, int] | None = None
            ) -> tuple[np.ndarray, bool]:
    """(uint8 ``(size, size, C)`` image, whether the file is stored greyscale); ``mode`` None picks
    ``L`` for greyscale files and ``RGB`` for the rest. A high-bit-depth file is scaled to 8 bits
    (:func:`_to_8bit`) and counted per PIL mode in ``high``."""
    try:
        with Image.open(path) as img:
            grey = img.mode in GREY_MODES
            src: Image.Image = img
            if img.mode in HIGH_DEPTH_MODES:
                if high is not None:
                    high[img.mode] = high.get(img.mode, 0) + 1
                src = _to_8bit(img)
            elif high is not None and img.format == "PNG" and isinstance(path, str) and _png_bit_depth(path) == 16:
                # PIL opens a 16-bit colour PNG as 8-bit RGB(A), keeping each sample's high byte
                key = f"{img.mode};16"
                high[key] = high.get(key, 0) + 1
            out = src.convert(mode or ("L" if grey else "RGB"))
            if out.size != (size, size):
                out = out.resize((size, size), BILINEAR)
            arr = np.asarray(out, dtype=np.uint8)
            return (arr[..., None] if arr.ndim == 2 else arr), grey
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {path} ({exc})") from exc


def load_imagefolder(root: str, image_size: int, test_fraction: float, seed: int, channels: int = 0,
                     group_regex: str = "") -> Dataset:
    """Load every image as uint8 ``(N, S, S, C)`` (``S`` = ``image_size`` or 32; ``C`` from
    ``channels``, 0 = what the files are) and split it: stratified per image, or by group with
    ``group_regex`` (then ``Dataset.train_groups`` carries the training images' group ids)."""
    size = image_size or DEFAULT_SIZE
    classes, paths, y = _index(root)
    _check_layout(classes, y, root)
    groups = file_groups(root, paths, group_regex) if group_regex else None
    train_idx, test_idx = _split(classes, y, groups, test_fraction, seed)
    mode = {1: "L", 3: "RGB"}.get(channels)
    x = np.empty((len(paths), size, size, channels or 3), dtype=np.uint8)
    all_grey = True
    high: dict[str, int] = {}
    for i, path in enumerate(bar(paths, desc="imagefolder", disable=len(paths) <= _PROGRESS_MIN)):
        img, grey = _decode(path, size, mode, high)
        x[i] = img  # a one-channel image broadcasts to three when channels is 0
        all_grey &= grey
    if channels == 0 and all_grey:
        x = np.ascontiguousarray(x[..., :1])
    return Dataset(
        train_x=x[train_idx], train_y=y[train_idx], test_x=x[test_idx], test_y=y[test_idx], classes=classes,
        train_groups=None if groups is None else groups[train_idx], notes=high_depth_notes(high, len(paths)),
    )


def _png_bit_depth(path: str) -> int:
    """The bit depth in a PNG file's IHDR chunk (byte 24: after the 8-byte signature, the chunk's
    length and type, width and height)."""
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if len(head) == 25 else 8


def high_depth_notes(high: dict[str, int], total: int) -> list[str]:
    """One note per PIL mode of the 16-bit files scaled to 8 bits (greyscale by :func:`_to_8bit`,
    colour PNGs by PIL itself)."""
    return [f"{n} of {total} images are 16-bit colour PNGs (PIL mode {m[:-3]}); PIL reduces them to 8 bits "
            "by keeping each sample's high byte (value // 256)" if m.endswith(";16") and m[:-3] in ("RGB", "RGBA")
            else f"{n} of {total} images are 16-bit (PIL mode {m}); scaled to 8 bits as round(value / 257)"
            for m, n in sorted(high.items())]
