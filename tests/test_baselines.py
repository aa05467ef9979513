"""jem.baselines on a tiny prepared digits folder: raw pixels against scikit-learn, the random-init
encoder seeded and built from the `model` section alone, and `evaluate` copying a baselines file
in (or recomputing it for an encoder of another architecture)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from jem.baselines import compute_baselines
from jem.config import EvalConfig
from jem.engine.checkpoint import save_encoder
from jem.evaluate_run import evaluate
from jem.methods import get_method_class, params_class
from jem.sections import ModelConfig

ECFG = EvalConfig(knn_k=[5, 20], semi_epochs=0, linear_max_iter=50, batch_size=64)
MODEL = ModelConfig(backbone="small_cnn", width=8)


def test_keys_arch_and_raw_pixels_match_sklearn(prepared):
    out = compute_baselines(prepared, MODEL, ECFG, seed=0, progress=False)
    assert out["arch"] == {"backbone": "small_cnn", "width": 8, "in_channels": 1, "image_size": 8}
    assert set(out["random_init"]) == {"knn", "linear", "semi_1pct", "semi_10pct"}
    assert set(out["pixels"]) == {"knn", "linear"}
    for part in (*out["random_init"].values(), *out["pixels"].values()):
        assert set(part) == {"top1", "top5"} and all(0.0 <= v <= 1.0 for v in part.values())
    # raw pixels: kNN (first k = 5) with the exp(cos / T) weighted vote, computed by scikit-learn
    tx, ty = np.load(prepared / "train_x.npy"), np.load(prepared / "train_y.npy")
    vx, vy = np.load(prepared / "test_x.npy"), np.load(prepared / "test_y.npy")
    clf = KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute",
                               weights=lambda d: np.exp((1 - d) / ECFG.knn_temperature))
    clf.fit(tx.reshape(len(tx), -1) / 255.0, ty)
    expected = float((clf.predict(vx.reshape(len(vx), -1) / 255.0) == vy).mean())
    assert out["pixels"]["knn"]["top1"] == pytest.approx(expected, abs=0.011)  # at most one tie flips


def test_random_init_is_seeded(prepared):
    a = compute_baselines(prepared, MODEL, ECFG, seed=0, progress=False, semi=False)
    b = compute_baselines(prepared, MODEL, ECFG, seed=0, progress=False, semi=False)
    assert a == b
    wider = compute_baselines(prepared, ModelConfig(backbone="small_cnn", width=16), ECFG, seed=0, progress=False,
                              semi=False)
    assert wider["arch"]["width"] == 16 and wider["pixels"] == a["pixels"]  # pixels do not see the encoder


def _encoder(tmp_path, width: int):
    torch.manual_seed(0)
    arch = {"backbone": "small_cnn", "width": width, "in_channels": 1, "image_size": 8}
    net = get_method_class("vicreg")(arch, [32, 16], params_class("vicreg")())
    folder = tmp_path / f"encoder-{width}"
    folder.mkdir()
    save_encoder(folder, net)
    return folder


def test_evaluate_copies_the_baselines_of_its_architecture_and_recomputes_others(prepared, tmp_path, capsys):
    enc = _encoder(tmp_path, 8)
    marker = {"top1": 0.125, "top5": 0.5}  # 0.125 cannot come out of 100 test images (multiples of 0.01)
    given = {"arch": {"backbone": "small_cnn", "width": 8, "in_channels": 1, "image_size": 8},
             "random_init": {"knn": marker, "linear": marker, "semi_1pct": marker, "semi_10pct": marker},
             "pixels": {"knn": marker, "linear": marker}}
    m = evaluate(prepared, enc, ECFG, seed=0, progress=False, baselines=given)
    assert m["random_init"] == given["random_init"] and m["pixels"] == given["pixels"]
    # an encoder of another architecture (a method that forces its own backbone): computed here
    other = evaluate(prepared, _encoder(tmp_path, 16), ECFG, seed=0, progress=False, baselines=given)
    assert "computing its random-init baseline here" in capsys.readouterr().out
    fresh = compute_baselines(prepared, ModelConfig(backbone="small_cnn", width=16), ECFG, seed=0, progress=False)
    assert other["random_init"] == fresh["random_init"] and other["pixels"] == fresh["pixels"]
