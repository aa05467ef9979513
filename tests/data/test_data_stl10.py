"""STL-10 binary files: column-major orientation, labels 1..10, the memory-mapped unlabelled split."""

from __future__ import annotations

import numpy as np
import pytest
from data_writers import Fixture

from jem.data import DataError, check_dataset, load_dataset


def test_round_trip_and_orientation(stl10_root: Fixture) -> None:
    check_dataset("stl10", str(stl10_root.root))
    ds = load_dataset("stl10", str(stl10_root.root))
    assert ds.train_x.shape == (4, 96, 96, 3) and ds.test_x.shape == (3, 96, 96, 3)
    assert ds.train_x.dtype == np.uint8 and ds.train_y.dtype == np.int64
    np.testing.assert_array_equal(ds.train_x, stl10_root.train_x)
    np.testing.assert_array_equal(ds.test_x, stl10_root.test_x)
    assert ds.train_x[0, 3, 70, 0] == 200 and ds.train_x[0, 80, 1, 1] == 100  # not transposed
    assert ds.train_x[0].sum() == 300
    np.testing.assert_array_equal(ds.train_y, stl10_root.train_y)  # 1..10 on disk -> 0..9
    np.testing.assert_array_equal(ds.test_y, stl10_root.test_y)
    assert ds.classes == stl10_root.classes and ds.unlabelled_x is None


def test_first_bytes_are_the_first_column(stl10_root: Fixture) -> None:
    """Independent of the writer: byte k < 96 of an image is red at row k, column 0."""
    folder = stl10_root.root / "stl10_binary"
    raw = bytearray((folder / "train_X.bin").read_bytes())
    raw[:96] = bytes(range(96))
    (folder / "train_X.bin").write_bytes(bytes(raw))
    ds = load_dataset("stl10", str(folder))  # root = the stl10_binary folder itself
    np.testing.assert_array_equal(ds.train_x[0, :, 0, 0], np.arange(96))


def test_unlabelled_is_memory_mapped(stl10_root: Fixture) -> None:
    check_dataset("stl10", str(stl10_root.root), use_unlabelled=True)
    ds = load_dataset("stl10", str(stl10_root.root), use_unlabelled=True)
    assert ds.unlabelled_x is not None and ds.unlabelled_x.shape == (5, 96, 96, 3)
    assert isinstance(ds.unlabelled_x.base, np.memmap) or isinstance(ds.unlabelled_x, np.memmap)
    np.testing.assert_array_equal(ds.unlabelled_x, stl10_root.unlabelled_x)


def test_resize_applies_to_every_split(stl10_root: Fixture) -> None:
    ds = load_dataset("stl10", str(stl10_root.root), image_size=32, use_unlabelled=True)
    assert ds.train_x.shape == (4, 32, 32, 3) and ds.test_x.shape == (3, 32, 32, 3)
    assert ds.unlabelled_x is not None and ds.unlabelled_x.shape == (5, 32, 32, 3)


def test_truncated_images(stl10_root: Fixture) -> None:
    path = stl10_root.root / "stl10_binary" / "test_X.bin"
    path.write_bytes(path.read_bytes()[:-1])
    for call in (
        lambda: check_dataset("stl10", str(stl10_root.root)),
        lambda: load_dataset("stl10", str(stl10_root.root)),
    ):
        with pytest.raises(
            DataError, match=r"test_X.bin is truncated: expected a non-zero multiple of 27648"
        ):
            call()


def test_truncated_unlabelled_only_matters_when_used(stl10_root: Fixture) -> None:
    path = stl10_root.root / "stl10_binary" / "unlabeled_X.bin"
    path.write_bytes(path.read_bytes()[:1000])
    check_dataset("stl10", str(stl10_root.root))
    with pytest.raises(DataError, match=r"unlabeled_X.bin is truncated"):
        check_dataset("stl10", str(stl10_root.root), use_unlabelled=True)
    with pytest.raises(DataError, match=r"unlabeled_X.bin is truncated"):
        load_dataset("stl10", str(stl10_root.root), use_unlabelled=True)


def test_label_count_and_range(stl10_root: Fixture) -> None:
    labels = stl10_root.root / "stl10_binary" / "train_y.bin"
    labels.write_bytes(b"\x01\x02\x03")
    with pytest.raises(DataError, match=r"holds 4 images but .*train_y.bin holds 3 labels"):
        check_dataset("stl10", str(stl10_root.root))
    labels.write_bytes(b"\x01\x02\x03\x00")  # 0 is not a valid STL-10 label
    with pytest.raises(DataError, match=r"train_y.bin has labels outside 1..10"):
        load_dataset("stl10", str(stl10_root.root))


def test_missing_unlabelled_named(stl10_root: Fixture) -> None:
    (stl10_root.root / "stl10_binary" / "unlabeled_X.bin").unlink()
    load_dataset("stl10", str(stl10_root.root))
    with pytest.raises(DataError, match=r"missing unlabeled_X.bin; download stl10_binary.tar.gz"):
        load_dataset("stl10", str(stl10_root.root), use_unlabelled=True)
