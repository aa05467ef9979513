"""IDX files (the MNIST family's format) and the Fashion-MNIST reader built on them.

An IDX file is a 4-byte big-endian magic number ``0x0000TTDD`` (``TT`` = element type, 0x08 for
unsigned bytes; ``DD`` = number of dimensions), then one big-endian uint32 per dimension, then the
elements in C order. Images are ``0x00000803`` (N, rows, cols), labels ``0x00000801`` (N,). Files
may be gzipped (the official and the Debian ``dataset-fashion-mnist`` layout) or plain.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib

import numpy as np

from jem.data.common import Dataset, missing_error
from jem.errors import DataError

CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

_UBYTE = 0x08
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_HOW = (
    "run: sudo apt-get install dataset-fashion-mnist (Debian), "
    "or set data.root to a folder holding the four IDX .gz files"
)
# (images, labels) base names of the official split files.
_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_GZ_ERRORS = (OSError, EOFError, zlib.error)  # BadGzipFile is an OSError


def _find(root: str, base: str) -> str | None:
    """The file for ``base`` under ``root``: gzipped (standard) first, then uncompressed."""
    for candidate in (base + ".gz", base):
        path = os.path.join(root, candidate)
        if os.path.isfile(path):
            return path
    return None


def _open(path: str) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _parse_header(path: str, head: bytes, magic: int) -> tuple[tuple[int, ...], int]:
    """Validate the magic and dims of an IDX header; return (dims, total file size implied)."""
    ndim = magic & 0xFF
    if len(head) < 4 + 4 * ndim:
        raise DataError(
            f"{path} is truncated: expected an IDX header of {4 + 4 * ndim} bytes, got {len(head)}"
        )
    (found,) = struct.unpack(">I", head[:4])
    if found != magic:
        raise DataError(
            f"{path} is not an IDX file of the expected kind: magic 0x{found:08x}, expected 0x{magic:08x}"
        )
    dims = struct.unpack(f">{ndim}I", head[4 : 4 + 4 * ndim])
    if any(d == 0 for d in dims):
        raise DataError(f"{path} has an empty dimension in its IDX header: {dims}")
    return dims, 4 + 4 * ndim + int(np.prod(dims))


def read_idx(path: str, magic: int) -> np.ndarray:
    """Read a whole unsigned-byte IDX file (``.gz`` or plain), checking magic, dims and exact length."""
    if (magic >> 8) & 0xFF != _UBYTE:
        raise DataError(f"only unsigned-byte IDX files are supported, asked for magic 0x{magic:08x}")
    try:
        with _open(path) as f:
            raw = f.read()
    except _GZ_ERRORS as exc:
        raise DataError(f"{path} is truncated or corrupt ({exc})") from exc
    dims, expected = _parse_header(path, raw, magic)
    if len(raw) < expected:
        raise DataError(f"{path} is truncated: expected {expected} bytes, got {len(raw)}")
    if len(raw) > expected:
        raise DataError(f"{path} has trailing data: expected {expected} bytes, got {len(raw)}")
    header = 4 + 4 * len(dims)
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()  # writable


def _check_idx_cheaply(path: str, magic: int) -> int:
    """Header plus size check without reading the body; returns the first dimension (the count).

    For ``.gz`` files the size comes from the gzip trailer (uncompressed size mod 2**32), so a
    truncated download is caught without decompressing it.
    """
    ndim = magic & 0xFF
    try:
        with _open(path) as f:
            head = f.read(4 + 4 * ndim)
        if path.endswith(".gz"):
            with open(path, "rb") as f:
                f.seek(-4, os.SEEK_END)
                (size,) = struct.unpack("<I", f.read(4))
        else:
            size = os.path.getsize(path)
    except _GZ_ERRORS as exc:
        raise DataError(f"{path} is truncated or corrupt ({exc})") from exc
    dims, expected = _parse_header(path, head, magic)
    if path.endswith(".gz"):
        if size != expected % 2**32:
            raise DataError(
                f"{path} is truncated or corrupt: expected {expected} bytes, its gzip trailer says {size}"
            )
    elif size < expected:
        raise DataError(f"{path} is truncated: expected {expected} bytes, got {size}")
    elif size > expected:
        raise DataError(f"{path} has trailing data: expected {expected} bytes, got {size}")
    return dims[0]


def _locate(root: str) -> dict[str, tuple[str, str]]:
    """Paths of (images, labels) per split, or a DataError listing every missing file."""
    found: dict[str, tuple[str, str]] = {}
    missing = []
    for split, (images, labels) in _SPLITS.items():
        paths = [_find(root, images), _find(root, labels)]
        missing += [base + ".gz" for base, p in zip((images, labels), paths, strict=True) if p is None]
        if paths[0] and paths[1]:
            found[split] = (paths[0], paths[1])
    if missing:
        raise missing_error("fashion-mnist", root, missing, _HOW)
    return found


def check_fashion_mnist(root: str) -> None:
    """Check the four files exist, their headers are valid and their sizes are complete."""
    for images, labels in _locate(root).values():
        n_images = _check_idx_cheaply(images, IMAGES_MAGIC)
        n_labels = _check_idx_cheaply(labels, LABELS_MAGIC)
        if n_images != n_labels:
            raise DataError(f"{images} holds {n_images} images but {labels} holds {n_labels} labels")


def _read_split(images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(images, IMAGES_MAGIC)  # (N, 28, 28)
    y = read_idx(labels, LABELS_MAGIC)  # (N,)
    if len(x) != len(y):
        raise DataError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
    if y.size and int(y.max()) >= len(CLASSES):
        raise DataError(f"{labels} has label {int(y.max())}, expected 0..{len(CLASSES) - 1}")
    return x[..., None], y.astype(np.int64)  # (N, 28, 28, 1)


def load_fashion_mnist(root: str) -> Dataset:
    """Load Fashion-MNIST's official 60000/10000 split as uint8 ``(N, 28, 28, 1)``."""
    paths = _locate(root)
    train_x, train_y = _read_split(*paths["train"])
    test_x, test_y = _read_split(*paths["test"])
    return Dataset(train_x, train_y, test_x, test_y, list(CLASSES))
