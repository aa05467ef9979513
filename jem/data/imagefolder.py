"""Any folder of images laid out as ``root/<class name>/**/<image>.png|.jpg|.jpeg``.

Class names are the sorted sub-folder names (hidden folders skipped); images of any size and mode
are converted to RGB and resized to a square. Files with other extensions are ignored.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from jem.data.common import BILINEAR, Dataset, split_dataset
from jem.errors import DataError
from jem.progress import progress as bar

EXTENSIONS = (".png", ".jpg", ".jpeg")
DEFAULT_SIZE = 32
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
        raise DataError(f"imagefolder root {root!r} has no class sub-folders; {_HOW}")
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


def check_imagefolder(root: str) -> None:
    """Check the class folders exist and each holds at least one image file (nothing is decoded)."""
    _index(root)


def read_image(path: str, size: int) -> np.ndarray:
    """Decode one image file to uint8 RGB ``(size, size, 3)`` (bilinear resize); DataError if unreadable."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {path} ({exc})") from exc


def load_imagefolder(root: str, image_size: int, test_fraction: float, seed: int) -> Dataset:
    """Load every image as uint8 ``(N, S, S, 3)`` (``S`` = ``image_size`` or 32) and split stratified."""
    size = image_size or DEFAULT_SIZE
    classes, paths, y = _index(root)
    x = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(bar(paths, desc="imagefolder", disable=len(paths) <= _PROGRESS_MIN)):
        x[i] = read_image(path, size)
    return split_dataset(x, y, classes, test_fraction, seed)
