"""jem.preflight counts what the prepare stage will produce without reading images: checked here
against real prepare runs (digits and a PNG folder), and its checks against the failures they stand
in for."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image
from shipped_params import shipped_params_text

from jem.config import load_config
from jem.preflight import check_run, data_sizes
from jem.prepare import prepare
from jem.sections import ConfigError


def _cfg(tmp_path, **overrides):
    params = yaml.safe_load(shipped_params_text())
    for key, value in overrides.items():
        *parents, leaf = key.split("__")
        node = params
        for p in parents:
            node = node[p]
        node[leaf] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return load_config(tmp_path / "params.yaml")


@pytest.mark.parametrize("overrides", [{}, {"data__max_train": 150}, {"data__val_fraction": 0.3},
                                       {"data__test_fraction": 0.5, "data__max_test": 37},
                                       {"data__max_train": 5000}, {"data__max_train": 157}])
def test_digits_sizes_match_a_real_prepare(tmp_path, overrides):
    cfg = _cfg(tmp_path, **overrides)
    out = tmp_path / "prepared"
    out.mkdir()
    stats = prepare(cfg, out)
    sizes = data_sizes(cfg)
    assert sizes is not None
    assert (sizes.train, sizes.val, sizes.test, sizes.pretrain, sizes.classes, sizes.image_size, sizes.channels) == (
        stats["n_train"], stats["n_val"], stats["n_test"], stats["n_pretrain"], stats["num_classes"],
        stats["image_size"], stats["channels"])


def test_image_folder_sizes_match_a_real_prepare(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("a", 7), ("b", 12), ("c", 4)):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(tmp_path / "imgs" / name / f"{i}.png")
    cfg = _cfg(tmp_path, dataset="imagefolder", data__root=str(tmp_path / "imgs"))
    out = tmp_path / "prepared"
    out.mkdir()
    stats = prepare(cfg, out)
    sizes = data_sizes(cfg)
    assert sizes is not None
    assert (sizes.train, sizes.val, sizes.test, sizes.classes, sizes.image_size) == (
        stats["n_train"], stats["n_val"], stats["n_test"], stats["num_classes"], stats["image_size"])
    assert json.loads((out / "stats.json").read_text())["n_train"] == sizes.train


def test_the_batch_check_matches_the_training_loop(tmp_path):
    """The loop raises when workers x batch exceeds the pretraining images; validate says so first,
    at exactly that boundary."""
    n = data_sizes(_cfg(tmp_path)).pretrain
    assert check_run(_cfg(tmp_path, train__batch_size=n)) == []
    with pytest.raises(ConfigError, match=f"= {n + 1} exceeds the {n} pretraining images"):
        check_run(_cfg(tmp_path, train__batch_size=n + 1))


def test_subsample_below_the_class_count_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="data.max_train = 5 is below the 10 classes"):
        check_run(_cfg(tmp_path, data__max_train=5, train__batch_size=2, eval__knn_k=[1]))


def test_a_rounded_subsample_is_named(tmp_path):
    notes = check_run(_cfg(tmp_path, data__max_train=157, train__batch_size=64, eval__knn_k=[20]))
    sizes = data_sizes(_cfg(tmp_path, data__max_train=157))
    assert sizes.train != 157 and notes == [f"note: data.max_train = 157 gives {sizes.train} training images "
                                            f"({sizes.what})"]
