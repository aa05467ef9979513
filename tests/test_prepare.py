"""`prepare`: three disjoint splits (train / validation / test), the validation split stratified and
fixed by the seed, carved before `data.max_train` subsamples the rest."""

from collections import Counter

import numpy as np
import pytest

from jem.config import parse_config
from jem.prepare import prepare, validation_split


def test_validation_split_partitions_and_stratifies():
    labels = np.repeat(np.arange(4), [50, 30, 11, 2])
    rng = np.random.default_rng(3)
    labels = labels[rng.permutation(len(labels))]
    train, val = validation_split(labels, 0.1, seed=5)
    # a partition: disjoint, covering, sorted
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    # per class round(0.1 n_c), at least one, never the last member: 50 -> 5, 30 -> 3, 11 -> 1, 2 -> 1
    assert Counter(labels[val].tolist()) == {0: 5, 1: 3, 2: 1, 3: 1}
    assert set(labels[train].tolist()) == {0, 1, 2, 3}
    # fixed by the seed, different for another seed
    assert np.array_equal(validation_split(labels, 0.1, seed=5)[1], val)
    assert not np.array_equal(validation_split(labels, 0.1, seed=6)[1], val)


def test_singleton_class_keeps_its_only_image_for_training():
    labels = np.array([0] * 20 + [1])
    train, val = validation_split(labels, 0.5, seed=0)
    assert 20 in train and 20 not in val and len(val) == 10


@pytest.mark.parametrize("max_train", [0, 400])
def test_prepare_writes_disjoint_train_val_test(tmp_path, max_train):
    cfg = parse_config({"dataset": "digits", "seed": 1, "data": {"val_fraction": 0.2, "max_train": max_train}})
    stats = prepare(cfg, tmp_path)
    arr = {n: np.load(tmp_path / f"{n}.npy") for n in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
    # digits: 1797 images, 25% test (stratified) -> 1347 train, of which round(0.2 n_c) per class -> validation
    n_val = len(arr["val_y"])
    assert 0.18 * 1347 < n_val < 0.22 * 1347
    assert stats["n_val"] == n_val and stats["n_test"] == len(arr["test_y"]) == 1797 - 1347
    assert stats["n_train"] == len(arr["train_y"])
    assert len(arr["train_y"]) == 1347 - n_val if not max_train else abs(len(arr["train_y"]) - max_train) <= 10
    # no image is in two splits (an image that occurs twice in the data set may legitimately do so)
    from sklearn.datasets import load_digits

    counts = Counter(img.tobytes() for img in load_digits().images.astype(np.float64))
    keys = {}
    for split in ("train", "val", "test"):
        raw = arr[f"{split}_x"][..., 0].astype(np.float64) * 16.0 / 255.0  # back to digits' 0..16 scale
        keys[split] = {img.tobytes() for img in np.round(raw)}
    assert all(k in counts for ks in keys.values() for k in ks)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert all(counts[k] > 1 for k in keys[a] & keys[b]), (a, b)
    # the validation split does not depend on max_train (it is carved first)
    full_cfg = parse_config({"dataset": "digits", "seed": 1, "data": {"val_fraction": 0.2}})
    other = tmp_path / "full"
    other.mkdir()
    prepare(full_cfg, other)
    assert np.array_equal(np.load(other / "val_y.npy"), arr["val_y"])
    assert np.array_equal(np.load(other / "val_x.npy"), arr["val_x"])
    # the labelled subsets index the training split
    for frac in ("1pct", "10pct"):
        assert np.load(tmp_path / f"subset_{frac}.npy").max() < len(arr["train_y"])
