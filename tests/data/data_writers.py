"""Writers of tiny fixtures in each dataset's exact official on-disk format (used by conftest.py).

The writers are independent of the readers under test: IDX headers are packed by hand, CIFAR
batches are emitted opcode by opcode the way Python 2's cPickle wrote the originals, STL-10 images
are serialised in Fortran (MATLAB) order.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


# ------------------------------------------------------------------------------------------ IDX
def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: magic 0x000008DD, big-endian uint32 dims, C-order data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)


# ------------------------------------------------------------- Python 2 style pickle (protocol 2)
class Py2Pickle:
    """Emits protocol-2 opcodes as Python 2 cPickle did for CIFAR: ``str`` values are raw bytes."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")  # PROTO 2

    def op(self, code: bytes) -> Py2Pickle:
        self.out += code
        return self

    def glob(self, module: str, name: str) -> Py2Pickle:
        return self.op(b"c" + module.encode() + b"\n" + name.encode() + b"\n")  # GLOBAL

    def value(self, v: Any) -> Py2Pickle:
        if v is None:
            return self.op(b"N")
        if isinstance(v, bool):
            return self.op(b"\x88" if v else b"\x89")  # NEWTRUE / NEWFALSE
        if isinstance(v, int):
            return self.op(b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v))
        if isinstance(v, bytes):  # a Python 2 str
            if len(v) < 256:
                return self.op(b"U" + bytes([len(v)]) + v)  # SHORT_BINSTRING
            return self.op(b"T" + struct.pack("<I", len(v)) + v)  # BINSTRING
        if isinstance(v, tuple):
            if not v:
                return self.op(b")")
            self.op(b"(")
            for item in v:
                self.value(item)
            return self.op(b"t")
        if isinstance(v, list):
            self.op(b"](")  # EMPTY_LIST, MARK
            for item in v:
                self.value(item)
            return self.op(b"e")  # APPENDS
        if isinstance(v, dict):
            self.op(b"}(")  # EMPTY_DICT, MARK
            for key, item in v.items():
                self.value(key).value(item)
            return self.op(b"u")  # SETITEMS
        if isinstance(v, np.ndarray):
            return self.array(v)
        raise TypeError(type(v))

    def array(self, a: np.ndarray) -> Py2Pickle:
        # numpy 1.x under Python 2: _reconstruct(ndarray, (0,), 'b') then __setstate__.
        self.glob("numpy.core.multiarray", "_reconstruct")
        self.glob("numpy", "ndarray").value((0,)).value(b"b").op(b"\x87R")  # TUPLE3, REDUCE
        self.op(b"(").value(1).value(tuple(a.shape))
        self.glob("numpy", "dtype").value(b"u1").value(0).value(1).op(b"\x87R")
        self.value((3, b"|", None, None, None, -1, -1, 0)).op(b"b")  # dtype state, BUILD
        self.value(False).value(np.ascontiguousarray(a).tobytes()).op(b"t")
        return self.op(b"b")  # BUILD

    def done(self) -> bytes:
        return bytes(self.out + b".")  # STOP


def py2_pickle(obj: Any) -> bytes:
    return Py2Pickle().value(obj).done()


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> (N, 3072): all red values row by row, then green, then blue."""
    return np.stack([images[..., c].reshape(len(images), -1) for c in range(3)], axis=1).reshape(
        len(images), -1
    )


# -------------------------------------------------------------------------------- shared records
@dataclass
class Fixture:
    root: Path
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    unlabelled_x: np.ndarray | None = None


def stl_bytes(images: np.ndarray) -> bytes:
    """(N, 96, 96, 3) (row, column, channel) -> MATLAB column-major bytes, one image after another."""
    return b"".join(np.asarray(img).tobytes(order="F") for img in images)
