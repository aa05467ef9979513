"""Fixtures: a tiny copy of each dataset in its exact official on-disk format, under tmp_path."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from data_writers import Fixture, cifar_rows, py2_pickle, stl_bytes, write_idx
from PIL import Image


def _images(rng: np.random.Generator, n: int, h: int, w: int, c: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


@pytest.fixture
def fashion_root(tmp_path: Path) -> Fixture:
    rng = np.random.default_rng(1)
    train_x, test_x = _images(rng, 20, 28, 28, 1), _images(rng, 10, 28, 28, 1)
    train_x[0] = 0
    train_x[0, 2, 5, 0] = 255  # row 2, column 5: an asymmetric marker
    train_y, test_y = np.arange(20) % 10, np.arange(10)[::-1].copy()
    for name, arr in [
        ("train-images-idx3-ubyte.gz", train_x[..., 0]),
        ("train-labels-idx1-ubyte.gz", train_y),
        ("t10k-images-idx3-ubyte.gz", test_x[..., 0]),
        ("t10k-labels-idx1-ubyte.gz", test_y),
    ]:
        write_idx(tmp_path / name, arr)
    return Fixture(tmp_path, train_x, train_y, test_x, test_y, [])


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Fixture:
    """Official layout ``<root>/cifar-10-batches-py/`` with 5 train batches of 3 images and a test batch."""
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    train_x, test_x = _images(rng, 15, 32, 32, 3), _images(rng, 4, 32, 32, 3)
    train_x[0] = 0
    train_x[0, 1, 30, 2] = 250  # row 1, column 30, blue
    train_y, test_y = np.arange(15) % 10, np.array([3, 1, 4, 1])
    for b in range(5):
        sl = slice(3 * b, 3 * b + 3)
        batch = {
            b"batch_label": f"training batch {b + 1} of 5".encode(),
            b"labels": [int(v) for v in train_y[sl]],
            b"data": cifar_rows(train_x[sl]),
            b"filenames": [f"img_{i}.png".encode() for i in range(3)],
        }
        (folder / f"data_batch_{b + 1}").write_bytes(py2_pickle(batch))
    test = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": [int(v) for v in test_y],
        b"data": cifar_rows(test_x),
    }
    (folder / "test_batch").write_bytes(py2_pickle(test))
    meta = {b"num_cases_per_batch": 3, b"label_names": [c.encode() for c in classes], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return Fixture(tmp_path, train_x, train_y, test_x, test_y, classes)


@pytest.fixture
def cifar100_root(tmp_path: Path) -> Fixture:
    """``cifar-100-python/`` written with Python 3's own pickler at protocol 2 (bytes via _codecs)."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    classes = [f"fine_{i}" for i in range(100)]
    train_x, test_x = _images(rng, 6, 32, 32, 3), _images(rng, 3, 32, 32, 3)
    train_y, test_y = np.array([0, 99, 5, 5, 42, 7]), np.array([99, 0, 1])
    for name, x, y in [("train", train_x, train_y), ("test", test_x, test_y)]:
        batch = {
            b"filenames": [b"a.png"] * len(x),
            b"fine_labels": [int(v) for v in y],
            b"coarse_labels": [int(v) // 5 for v in y],
            b"data": cifar_rows(x),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"fine_label_names": [c.encode() for c in classes], b"coarse_label_names": [b"c"] * 20}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return Fixture(folder, train_x, train_y, test_x, test_y, classes)


@pytest.fixture
def stl10_root(tmp_path: Path) -> Fixture:
    rng = np.random.default_rng(4)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    classes = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    train_x, test_x, unl_x = (_images(rng, n, 96, 96, 3) for n in (4, 3, 5))
    train_x[0] = 0
    train_x[0, 3, 70, 0] = 200  # row 3, column 70, red
    train_x[0, 80, 1, 1] = 100  # row 80, column 1, green
    train_y, test_y = np.array([0, 9, 3, 3]), np.array([1, 2, 9])
    (folder / "train_X.bin").write_bytes(stl_bytes(train_x))
    (folder / "test_X.bin").write_bytes(stl_bytes(test_x))
    (folder / "unlabeled_X.bin").write_bytes(stl_bytes(unl_x))
    (folder / "train_y.bin").write_bytes((train_y + 1).astype(np.uint8).tobytes())  # labels 1..10
    (folder / "test_y.bin").write_bytes((test_y + 1).astype(np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(classes) + "\n")
    return Fixture(tmp_path, train_x, train_y, test_x, test_y, classes, unl_x)


@pytest.fixture
def imagefolder_root(tmp_path: Path) -> Fixture:
    """Two classes of PNG/JPEG files of mixed sizes and modes; ``train_x[0]`` is cat/a.png (exact)."""
    rng = np.random.default_rng(5)
    root = tmp_path / "images"
    exact = _images(rng, 1, 32, 32, 3)[0]
    exact[0, 31] = (255, 0, 0)  # top-right pixel red
    cat, dog = root / "cat", root / "dog"
    (cat / "nested").mkdir(parents=True)
    dog.mkdir()
    Image.fromarray(exact).save(cat / "a.png")
    Image.fromarray(_images(rng, 1, 30, 45, 3)[0]).save(cat / "b.PNG")
    Image.fromarray(_images(rng, 1, 20, 20, 1)[0, ..., 0]).save(cat / "nested" / "c.jpg")
    Image.fromarray(_images(rng, 1, 64, 64, 4)[0]).save(cat / "d.png")
    for i, (h, w) in enumerate([(17, 33), (40, 40), (32, 32), (50, 12)]):
        Image.fromarray(_images(rng, 1, h, w, 3)[0]).save(dog / f"{i}.JPEG", quality=95)
    (dog / "notes.txt").write_text("not an image, ignored")
    (root / ".hidden").mkdir()
    return Fixture(root, exact[None], np.array([0]), exact[None], np.array([0]), ["cat", "dog"])
