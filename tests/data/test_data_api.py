"""The public entry points, digits, and the shared resize/split helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from requirements_util import require_or_skip
from sklearn.datasets import load_digits

from jem.data import DEFAULT_ROOTS, DataError, Dataset, check_dataset, load_dataset
from jem.data.common import resize_images, stratified_split

NAMES = ("digits", "fashion-mnist", "cifar10", "cifar100", "stl10", "imagefolder", "av-digits", "avfolder")


def test_default_roots_cover_every_dataset() -> None:
    assert tuple(DEFAULT_ROOTS) == NAMES
    assert DEFAULT_ROOTS["fashion-mnist"] == "/usr/share/datasets/fashion-mnist"


def test_unknown_dataset_lists_the_choices() -> None:
    for call in (lambda: check_dataset("mnist"), lambda: load_dataset("mnist")):
        with pytest.raises(DataError, match="unknown dataset 'mnist'; choose one of: digits, fashion-mnist"):
            call()


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("fashion-mnist", "sudo apt-get install dataset-fashion-mnist"),
        ("cifar10", "cs.toronto.edu/~kriz/cifar.html"),
        ("cifar100", "cs.toronto.edu/~kriz/cifar.html"),
        ("stl10", "cs.stanford.edu/~acoates/stl10"),
        ("imagefolder", "one sub-folder of PNG/JPEG images per class"),
    ],
)
def test_missing_dataset_says_how_to_get_it(tmp_path: Path, name: str, hint: str) -> None:
    empty = str(tmp_path / "nothing-here")
    for call in (lambda: check_dataset(name, empty), lambda: load_dataset(name, empty)):
        with pytest.raises(DataError, match="not found|not a folder") as err:
            call()
        assert hint in str(err.value) and "\n" not in str(err.value)


def test_fashion_mnist_missing_message_names_files_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        check_dataset("fashion-mnist", str(tmp_path))
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert msg.endswith(
        "run: sudo apt-get install dataset-fashion-mnist (Debian), "
        "or set data.root to a folder holding the four IDX .gz files"
    )


def test_digits_shapes_values_and_classes() -> None:
    ds = load_dataset("digits")
    assert isinstance(ds, Dataset) and ds.unlabelled_x is None
    assert ds.train_x.dtype == np.uint8 and ds.train_y.dtype == np.int64
    assert ds.train_x.shape[1:] == (8, 8, 1) and ds.test_x.shape[1:] == (8, 8, 1)
    assert len(ds.train_x) + len(ds.test_x) == 1797
    assert ds.classes == [str(d) for d in range(10)]
    assert ds.train_x.max() == 255 and ds.train_x.min() == 0
    # Every loaded image is one of sklearn's, scaled by 255/16 and rounded.
    ref = load_digits()
    scaled = np.rint(ref.images * 255 / 16).astype(np.uint8)
    keys = {(img.tobytes(), int(t)) for img, t in zip(scaled, ref.target, strict=True)}
    for x, y in [(ds.train_x, ds.train_y), (ds.test_x, ds.test_y)]:
        assert all((img[..., 0].tobytes(), int(t)) in keys for img, t in zip(x, y, strict=True))


def test_digits_split_is_stratified_and_seeded() -> None:
    a = load_dataset("digits", test_fraction=0.2, seed=7)
    b = load_dataset("digits", test_fraction=0.2, seed=7)
    c = load_dataset("digits", test_fraction=0.2, seed=8)
    np.testing.assert_array_equal(a.test_x, b.test_x)
    np.testing.assert_array_equal(a.train_y, b.train_y)
    assert not np.array_equal(a.test_x, c.test_x)
    full = np.bincount(load_digits().target)
    test_counts = np.bincount(a.test_y, minlength=10)
    np.testing.assert_array_equal(test_counts, np.rint(full * 0.2).astype(int))
    np.testing.assert_array_equal(np.bincount(a.train_y, minlength=10), full - test_counts)


def test_digits_resize() -> None:
    ds = load_dataset("digits", image_size=16)
    assert ds.train_x.shape[1:] == (16, 16, 1) and ds.train_x.dtype == np.uint8


def test_stratified_split_properties() -> None:
    y = np.array([0] * 8 + [1] * 4 + [2] * 1 + [3] * 2)
    train, test = stratified_split(y, 0.25, seed=0)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(len(y)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    assert np.bincount(y[test], minlength=4).tolist() == [2, 1, 0, 1]  # singleton class stays in train
    assert set(y[train]) == {0, 1, 2, 3}
    again = stratified_split(y, 0.25, seed=0)
    np.testing.assert_array_equal(test, again[1])
    different = {tuple(stratified_split(y, 0.25, seed=s)[1]) for s in range(10)}
    assert len(different) > 1


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_test_fraction_is_one_clear_error(fraction: float) -> None:
    with pytest.raises(DataError, match="test_fraction must be strictly between 0 and 1"):
        load_dataset("digits", test_fraction=fraction)


def test_bad_arguments() -> None:
    with pytest.raises(DataError, match="image_size must be >= 0"):
        load_dataset("digits", image_size=-1)
    with pytest.raises(DataError, match="use_unlabelled is only available for stl10"):
        load_dataset("digits", use_unlabelled=True)


def test_resize_images() -> None:
    flat = np.full((2, 10, 6, 3), 77, dtype=np.uint8)
    out = resize_images(flat, 4)
    assert out.shape == (2, 4, 4, 3) and out.dtype == np.uint8 and np.all(out == 77)
    grey = np.zeros((3, 8, 8, 1), dtype=np.uint8)
    grey[:, :, 4:] = 200  # right half bright
    small = resize_images(grey, 4)
    assert small.shape == (3, 4, 4, 1)
    # PIL's bilinear filter widens its support when shrinking (antialiasing): edges stay exact,
    # the two middle columns blend, symmetrically around the step.
    assert np.all(small[..., 0, 0] == 0) and np.all(small[..., 3, 0] == 200)
    assert np.all(small[..., 1, 0] + small[..., 2, 0] == 200) and np.all(small[..., 1, 0] < 100)
    assert resize_images(grey, 8) is grey and resize_images(grey, 0) is grey
    with pytest.raises(DataError, match="expected images shaped"):
        resize_images(np.zeros((2, 8, 8), dtype=np.uint8), 4)


def test_check_digits_needs_nothing() -> None:
    check_dataset("digits")


REAL_FASHION = Path(DEFAULT_ROOTS["fashion-mnist"]) / "train-images-idx3-ubyte.gz"


def test_real_fashion_mnist() -> None:
    require_or_skip(REAL_FASHION.exists(), "dataset-fashion-mnist",
                    "Debian: `apt-get install -y dataset-fashion-mnist`, or `make datasets` as root")
    check_dataset("fashion-mnist")
    ds = load_dataset("fashion-mnist")
    assert ds.train_x.shape == (60000, 28, 28, 1) and ds.test_x.shape == (10000, 28, 28, 1)
    assert ds.train_x.dtype == np.uint8 and ds.train_y.dtype == np.int64
    assert np.bincount(ds.train_y).tolist() == [6000] * 10
    assert np.bincount(ds.test_y).tolist() == [1000] * 10
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
