"""CIFAR-10 and CIFAR-100 from the official "python version" pickle batches.

Layout (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html): ``cifar-10-batches-py/``
holds ``data_batch_1 .. data_batch_5``, ``test_batch`` and ``batches.meta``; ``cifar-100-python/``
holds ``train``, ``test`` and ``meta``. Each batch is a Python 2 pickle (protocol 2) of a dict
with bytes keys: ``b"data"`` is a uint8 array ``(N, 3072)``, each row one image stored channel-major
(1024 red, 1024 green, 1024 blue values, each 32x32 row-major), and ``b"labels"`` (CIFAR-10) or
``b"fine_labels"`` (CIFAR-100) a list of N ints.

Pickles can run arbitrary code on load, so they are read with :class:`SafeUnpickler`, which
resolves only the few globals a numpy array needs and refuses everything else.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from typing import Any

import numpy as np

from jem.data.common import Dataset, missing_error, resolve_dir
from jem.errors import DataError

try:  # numpy >= 2 keeps the implementation in numpy._core; numpy.core is a deprecated alias
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

_PIXELS = 3 * 32 * 32
_HOW = (
    "download the python version from https://www.cs.toronto.edu/~kriz/cifar.html, "
    "extract it and set data.root"
)
# name -> (sub-folder of the official archive, train files, test file, meta file, label key, names key)
_LAYOUTS = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "batches.meta",
        b"labels",
        b"label_names",
    ),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", b"fine_labels", b"fine_label_names"),
}


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``, which Python 3 protocol-2 pickles use for bytes objects.

    Only the latin-1 form that pickle itself emits is allowed, so no other codec can be invoked.
    """
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise DataError(f"refusing _codecs.encode with encoding {encoding!r} in a pickle")
    return text.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and plain containers, and nothing else.

    Any other global (``os.system``, ``builtins.eval``, a class with a malicious ``__reduce__``)
    raises :class:`DataError` before it is called.
    """

    def __init__(self, file: io.BufferedIOBase, path: str) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._path} refers to {module}.{name}, which a dataset pickle never needs; "
                "refusing to load it"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self._path} uses persistent ids, which a dataset pickle never needs")


def safe_unpickle(path: str) -> Any:
    """Unpickle ``path`` with :class:`SafeUnpickler`; any failure becomes one DataError naming the file."""
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, path).load()
    except DataError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        OSError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        struct.error,
        OverflowError,
        MemoryError,
    ) as exc:
        raise DataError(f"{path} is not a valid pickle (truncated or corrupt: {exc!r})") from exc


def _get(d: dict, key: bytes, path: str) -> Any:
    """``d[key]``, also accepting the str form of the key (batches re-pickled from Python 3)."""
    for k in (key, key.decode()):
        if k in d:
            return d[k]
    raise DataError(f"{path} has no {key!r} entry; is it an official CIFAR python batch?")


def _read_batch(path: str, label_key: bytes, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_unpickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, expected a dict")
    data = _get(batch, b"data", path)
    is_array = isinstance(data, np.ndarray)
    if not is_array or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        desc = f"{data.dtype} {data.shape}" if is_array else type(data).__name__
        raise DataError(f"{path}: data must be a uint8 array of shape (N, {_PIXELS}), got {desc}")
    try:
        labels = np.asarray(_get(batch, label_key, path), dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{path}: labels are not a list of integers ({exc})") from exc
    if labels.shape != (len(data),):
        raise DataError(f"{path} holds {len(data)} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{path} has labels outside 0..{n_classes - 1}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    return np.ascontiguousarray(images), labels


def _read_names(path: str, names_key: bytes) -> list[str]:
    meta = safe_unpickle(path)
    if not isinstance(meta, dict):
        raise DataError(f"{path} holds a {type(meta).__name__}, expected a dict")
    names = _get(meta, names_key, path)
    if not isinstance(names, list) or not names:
        raise DataError(f"{path}: {names_key!r} must be a non-empty list of class names")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _locate(name: str, root: str) -> tuple[str, list[str], str, str]:
    """(folder, train paths, test path, meta path); DataError if any file is missing or empty."""
    subdir, train, test, meta, _, _ = _LAYOUTS[name]
    folder = resolve_dir(root, subdir, test)
    files = [*train, test, meta]
    missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise missing_error(name, root, missing, _HOW)
    paths = [os.path.join(folder, f) for f in files]
    return folder, paths[: len(train)], paths[-2], paths[-1]


def check_cifar(name: str, root: str) -> None:
    """Check every batch exists and ends with pickle's STOP opcode (catches truncated copies)."""
    _, train, test, meta = _locate(name, root)
    for path in [*train, test, meta]:
        size = os.path.getsize(path)
        if size == 0:
            raise DataError(f"{path} is empty")
        with open(path, "rb") as f:
            f.seek(size - 1)
            if f.read(1) != b".":
                raise DataError(f"{path} is truncated or corrupt: it does not end like a pickle")


def load_cifar(name: str, root: str) -> Dataset:
    """Load ``cifar10`` or ``cifar100`` (fine labels) as uint8 ``(N, 32, 32, 3)`` with the official split."""
    _, _, _, _, label_key, names_key = _LAYOUTS[name]
    _, train, test, meta = _locate(name, root)
    classes = _read_names(meta, names_key)
    parts = [_read_batch(p, label_key, len(classes)) for p in train]
    test_x, test_y = _read_batch(test, label_key, len(classes))
    train_x = np.concatenate([x for x, _ in parts]) if len(parts) > 1 else parts[0][0]
    train_y = np.concatenate([y for _, y in parts]) if len(parts) > 1 else parts[0][1]
    return Dataset(train_x, train_y, test_x, test_y, classes)
