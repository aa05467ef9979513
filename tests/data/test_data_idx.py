"""Fashion-MNIST from IDX files: round trip, layouts, and every kind of damage."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from data_writers import Fixture, idx_bytes, write_idx

from jem.data import DataError, check_dataset, load_dataset
from jem.data.idx import CLASSES


def test_round_trip(fashion_root: Fixture) -> None:
    check_dataset("fashion-mnist", str(fashion_root.root))
    ds = load_dataset("fashion-mnist", str(fashion_root.root))
    assert ds.train_x.shape == (20, 28, 28, 1) and ds.test_x.shape == (10, 28, 28, 1)
    assert ds.train_x.dtype == np.uint8 and ds.train_y.dtype == np.int64
    np.testing.assert_array_equal(ds.train_x, fashion_root.train_x)
    np.testing.assert_array_equal(ds.test_x, fashion_root.test_x)
    np.testing.assert_array_equal(ds.train_y, fashion_root.train_y)
    np.testing.assert_array_equal(ds.test_y, fashion_root.test_y)
    assert ds.train_x[0, 2, 5, 0] == 255 and ds.train_x[0].sum() == 255  # row 2, column 5 only
    assert ds.classes == CLASSES and len(ds.classes) == 10 and ds.unlabelled_x is None


def test_uncompressed_files_are_accepted(fashion_root: Fixture) -> None:
    for gz in fashion_root.root.glob("*.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    check_dataset("fashion-mnist", str(fashion_root.root))
    ds = load_dataset("fashion-mnist", str(fashion_root.root))
    np.testing.assert_array_equal(ds.train_x, fashion_root.train_x)


def test_resize(fashion_root: Fixture) -> None:
    ds = load_dataset("fashion-mnist", str(fashion_root.root), image_size=32)
    assert ds.train_x.shape == (20, 32, 32, 1) and ds.test_x.shape == (10, 32, 32, 1)


def _both(root: Path, match: str, check_match: str = "") -> None:
    """load_dataset refuses ``root`` with ``match``, check_dataset with ``check_match`` (default: same)."""
    for call, pattern in [
        (lambda: check_dataset("fashion-mnist", str(root)), check_match or match),
        (lambda: load_dataset("fashion-mnist", str(root)), match),
    ]:
        with pytest.raises(DataError, match=pattern) as err:
            call()
        assert "\n" not in str(err.value)


def test_truncated_gz_images(fashion_root: Fixture) -> None:
    path = fashion_root.root / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-100]))  # a well-formed gzip of a short IDX file
    _both(
        fashion_root.root,
        r"train-images-idx3-ubyte.gz is truncated: expected 15696 bytes, got 15596",
        r"images-idx3-ubyte.gz is truncated or corrupt: expected 15696 bytes, its gzip trailer says 15596",
    )


def test_cut_gzip_stream(fashion_root: Fixture) -> None:
    path = fashion_root.root / "t10k-images-idx3-ubyte.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # an interrupted download
    _both(fashion_root.root, r"t10k-images-idx3-ubyte.gz is truncated or corrupt")


def test_truncated_uncompressed_labels(fashion_root: Fixture) -> None:
    (fashion_root.root / "train-labels-idx1-ubyte.gz").unlink()
    (fashion_root.root / "train-labels-idx1-ubyte").write_bytes(idx_bytes(fashion_root.train_y)[:-3])
    _both(fashion_root.root, r"train-labels-idx1-ubyte is truncated: expected 28 bytes, got 25")


def test_trailing_data(fashion_root: Fixture) -> None:
    path = fashion_root.root / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(fashion_root.test_y) + b"\x00"))
    _both(
        fashion_root.root,
        r"t10k-labels-idx1-ubyte.gz has trailing data: expected 18 bytes, got 19",
        r"t10k-labels-idx1-ubyte.gz is truncated or corrupt: expected 18 bytes, its gzip trailer says 19",
    )


def test_bad_magic(fashion_root: Fixture) -> None:
    path = fashion_root.root / "train-images-idx3-ubyte.gz"
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[:4] = struct.pack(">I", 0x00000801)  # a labels magic on the images file
    path.write_bytes(gzip.compress(bytes(data)))
    _both(fashion_root.root, r"magic 0x00000801, expected 0x00000803")


def test_not_gzip_at_all(fashion_root: Fixture) -> None:
    (fashion_root.root / "train-labels-idx1-ubyte.gz").write_bytes(b"<html>404 not found</html>")
    _both(fashion_root.root, r"train-labels-idx1-ubyte.gz is truncated or corrupt")


def test_count_mismatch(fashion_root: Fixture) -> None:
    write_idx(fashion_root.root / "train-labels-idx1-ubyte.gz", fashion_root.train_y[:-1])
    _both(fashion_root.root, r"holds 20 images but .*train-labels-idx1-ubyte.gz holds 19 labels")


def test_label_out_of_range(fashion_root: Fixture) -> None:
    labels = fashion_root.test_y.copy()
    labels[3] = 10
    write_idx(fashion_root.root / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz has label 10, expected 0..9"):
        load_dataset("fashion-mnist", str(fashion_root.root))


def test_one_missing_file_is_named(fashion_root: Fixture) -> None:
    (fashion_root.root / "t10k-labels-idx1-ubyte.gz").unlink()
    _both(
        fashion_root.root,
        r"missing t10k-labels-idx1-ubyte.gz; run: sudo apt-get install dataset-fashion-mnist",
    )
