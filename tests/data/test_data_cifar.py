"""CIFAR-10/100 python batches: round trip, both root layouts, and the restricted unpickler."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from data_writers import Fixture, Py2Pickle, py2_pickle

from jem.data import DataError, check_dataset, load_dataset
from jem.data.cifar import safe_unpickle


def test_cifar10_round_trip(cifar10_root: Fixture) -> None:
    check_dataset("cifar10", str(cifar10_root.root))
    ds = load_dataset("cifar10", str(cifar10_root.root))  # root = parent of cifar-10-batches-py
    assert ds.train_x.shape == (15, 32, 32, 3) and ds.test_x.shape == (4, 32, 32, 3)
    assert ds.train_x.dtype == np.uint8 and ds.train_y.dtype == np.int64 and ds.train_x.flags.c_contiguous
    np.testing.assert_array_equal(ds.train_x, cifar10_root.train_x)
    np.testing.assert_array_equal(ds.test_x, cifar10_root.test_x)
    np.testing.assert_array_equal(ds.train_y, cifar10_root.train_y)
    np.testing.assert_array_equal(ds.test_y, cifar10_root.test_y)
    assert ds.train_x[0, 1, 30, 2] == 250 and ds.train_x[0].sum() == 250  # row 1, column 30, blue
    assert ds.classes == cifar10_root.classes


def test_cifar10_channel_major_rows(tmp_path: Path, cifar10_root: Fixture) -> None:
    """Byte 1024 * c + 32 * r + k of a row is channel c, row r, column k."""
    folder = cifar10_root.root / "cifar-10-batches-py"
    row = np.zeros((1, 3072), dtype=np.uint8)
    row[0, 1024 * 1 + 32 * 5 + 9] = 123  # green, row 5, column 9
    batch = {b"labels": [2], b"data": row}
    for name in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        (folder / name).write_bytes(py2_pickle(batch))
    ds = load_dataset("cifar10", str(folder))  # root = the batches folder itself
    assert ds.test_x[0, 5, 9, 1] == 123 and ds.test_x.sum() == 123
    assert len(ds.train_x) == 5


def test_cifar100_round_trip_python3_protocol2(cifar100_root: Fixture) -> None:
    check_dataset("cifar100", str(cifar100_root.root))
    ds = load_dataset("cifar100", str(cifar100_root.root), image_size=16)
    assert ds.train_x.shape == (6, 16, 16, 3) and ds.test_x.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(ds.train_y, cifar100_root.train_y)  # fine labels, not coarse
    np.testing.assert_array_equal(ds.test_y, cifar100_root.test_y)
    assert ds.classes == cifar100_root.classes and len(ds.classes) == 100
    native = load_dataset("cifar100", str(cifar100_root.root))
    np.testing.assert_array_equal(native.train_x, cifar100_root.train_x)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _evil_pickles(marker: Path) -> list[bytes]:
    hand = Py2Pickle().glob("os", "system").value((f"touch {marker}".encode(),)).op(b"R").done()
    builtin = Py2Pickle().glob("__builtin__", "eval").value((b"open('x', 'w')",)).op(b"R").done()
    nested = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [_Evil(marker)]}, protocol=2)
    return [hand, builtin, pickle.dumps(_Evil(marker), protocol=2), nested]


def test_forbidden_globals_are_refused_without_running(tmp_path: Path, cifar10_root: Fixture) -> None:
    marker = tmp_path / "pwned"
    path = cifar10_root.root / "cifar-10-batches-py" / "data_batch_3"
    for payload in _evil_pickles(marker):
        path.write_bytes(payload)
        with pytest.raises(DataError, match=r"data_batch_3 refers to (os|posix|__builtin__)\.(system|eval)"):
            load_dataset("cifar10", str(cifar10_root.root))
        assert not marker.exists()


def test_codecs_encode_only_for_latin1(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_bytes(Py2Pickle().glob("_codecs", "encode").value((b"eJw=", b"base64")).op(b"R").done())
    with pytest.raises(DataError, match="refusing _codecs.encode with encoding b'base64'"):
        safe_unpickle(str(path))


def test_truncated_batch(cifar10_root: Fixture) -> None:
    path = cifar10_root.root / "cifar-10-batches-py" / "test_batch"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(DataError, match=r"test_batch is truncated or corrupt: it does not end like a pickle"):
        check_dataset("cifar10", str(cifar10_root.root))
    with pytest.raises(DataError, match=r"test_batch is not a valid pickle \(truncated or corrupt"):
        load_dataset("cifar10", str(cifar10_root.root))


def test_garbage_batch(cifar10_root: Fixture) -> None:
    (cifar10_root.root / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"not a pickle at all.")
    with pytest.raises(DataError, match=r"data_batch_1 is not a valid pickle"):
        load_dataset("cifar10", str(cifar10_root.root))


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ({b"labels": [1]}, r"has no b'data' entry"),
        (
            {b"labels": [1], b"data": np.zeros((1, 100), np.uint8)},
            r"must be a uint8 array of shape \(N, 3072\)",
        ),
        ({b"labels": [1, 2], b"data": np.zeros((1, 3072), np.uint8)}, r"holds 1 images but labels of shape"),
        ({b"labels": [10], b"data": np.zeros((1, 3072), np.uint8)}, r"has labels outside 0..9"),
        ([1, 2, 3], r"holds a list, expected a dict"),
    ],
)
def test_bad_batch_contents(cifar10_root: Fixture, batch: object, match: str) -> None:
    (cifar10_root.root / "cifar-10-batches-py" / "data_batch_2").write_bytes(py2_pickle(batch))
    with pytest.raises(DataError, match=match):
        load_dataset("cifar10", str(cifar10_root.root))


def test_missing_meta_is_named(cifar100_root: Fixture) -> None:
    (cifar100_root.root / "meta").unlink()
    with pytest.raises(
        DataError, match=r"cifar100 not found in .*: missing meta; download the python version"
    ):
        check_dataset("cifar100", str(cifar100_root.root))


def test_str_keys_from_python3_repickling(cifar10_root: Fixture) -> None:
    folder = cifar10_root.root / "cifar-10-batches-py"
    batch = {"labels": [7], "data": np.full((1, 3072), 9, np.uint8)}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=4))
    ds = load_dataset("cifar10", str(cifar10_root.root))
    assert ds.test_y.tolist() == [7] and np.all(ds.test_x == 9)
