"""The evaluate step on a tiny prepared digits folder: metric keys, collapse diagnostics of
backbone and projector, the report's arrays; and the projector head rebuilt for every method."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from jem.config import AugmentConfig, EvalConfig
from jem.engine.checkpoint import save_encoder
from jem.evaluate.features import extract_features
from jem.evaluate_run import evaluate
from jem.export import load_projector
from jem.methods import get_method_class, method_names, params_class

ARCH = {"backbone": "small_cnn", "width": 8, "in_channels": 1, "image_size": 8}
VIT_ARCH = {"backbone": "vit_tiny", "in_channels": 1, "image_size": 8, "patch_size": 2, "depth": 6}


def trained_like(tmp_path, method: str = "vicreg", projector=(32, 16)):
    torch.manual_seed(0)
    cls, params = get_method_class(method), params_class(method)()
    try:
        net = cls(ARCH, list(projector), params)
    except ValueError:  # methods that need a ViT (masked tokens)
        net = cls(VIT_ARCH, list(projector), params)
    folder = tmp_path / f"encoder-{method}"
    folder.mkdir()
    save_encoder(folder, net)
    return net.eval(), folder


def test_evaluate_metrics_collapse_and_artefacts(tmp_path, prepared):
    net, enc = trained_like(tmp_path)
    ecfg = EvalConfig(knn_k=[5, 20], semi_epochs=0, linear_max_iter=100, batch_size=64)
    art = tmp_path / "eval"
    m = evaluate(prepared, enc, ecfg, seed=0, progress=False, artefacts=art, augment=AugmentConfig())
    for key in ("knn", "knn20", "linear", "semi_1pct", "semi_10pct", "random_init", "pixels"):
        assert 0.0 <= m[key]["top1"] <= 1.0 if "top1" in m[key] else key in m
    col = m["collapse"]
    assert col["collapsed"] in (0, 1) and isinstance(col["collapsed"], int)
    assert set(col["backbone"]) == {"std", "std_healthy", "rankme", "rankme_ratio", "uniformity", "alignment",
                                    "collapsed"}
    assert col["backbone"]["std_healthy"] == pytest.approx(1 / math.sqrt(32))  # small_cnn width 8 -> 32-d
    assert col["projector"]["std_healthy"] == pytest.approx(1 / math.sqrt(16))
    assert 0.0 <= col["projector"]["alignment"] <= 4.0
    json.dumps(m)  # plain JSON types only

    meta = json.loads((art / "meta.json").read_text())
    assert meta["views_source"] == "rendered" and meta["n_test"] == 100
    # an image-only run: the audio-visual report arrays are not written
    assert meta["files"] == ["correlation.npz", "predictions.npz", "retrieval.npz", "tsne.npz", "views.npz"]
    assert sorted(p.name for p in art.iterdir()) == sorted(["meta.json", *meta["files"]])
    with np.load(art / "predictions.npz") as p:
        y = np.load(prepared / "test_y.npy")
        assert np.array_equal(p["y_true"], y)
        assert (p["linear_pred"] == y).mean() == pytest.approx(m["linear"]["top1"])
        assert (p["knn_pred"] == y).mean() == pytest.approx(m["knn"]["top1"])
    with np.load(art / "retrieval.npz") as r:
        assert r["query_x"].shape == (8, 8, 8, 1) and r["neigh_x"].shape == (8, 8, 8, 8, 1)
        assert sorted(r["query_y"].tolist()) == list(range(8))  # one query per class
        assert np.all(np.diff(r["neigh_sim"], axis=1) <= 1e-6)  # best first
    with np.load(art / "correlation.npz") as c:
        assert c["backbone"].shape == (32, 32) and c["projector_xcorr"].shape == (16, 16)
    with np.load(art / "tsne.npz") as t:
        assert t["xy"].shape == (100, 2)
    with np.load(art / "views.npz") as v:
        assert v["originals"].shape == (8, 8, 8, 1) and v["views"].shape == (8, 4, 8, 8, 1)


def test_evaluate_without_artefacts_keeps_the_old_contract(tmp_path, prepared):
    _, enc = trained_like(tmp_path)
    ecfg = EvalConfig(knn_k=[5], semi_epochs=0, linear_max_iter=50, batch_size=64)
    m = evaluate(prepared, enc, ecfg, seed=0, progress=False)
    assert "alignment" not in m["collapse"]["backbone"] and "projector" in m["collapse"]
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("method", method_names())
def test_projector_rebuilt_for_every_method(tmp_path, method):
    net, enc = trained_like(tmp_path, method)
    head = load_projector(enc)
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        feats = net.backbone(x).flatten(1)
        try:
            ref = net.projector.eval()(feats)
        except (RuntimeError, TypeError, IndexError):
            ref = None  # a pretext head that does not take backbone features: skipped
    if ref is None or ref.ndim != 2:
        assert head is None
        return
    assert head is not None and not head.training
    with torch.no_grad():
        assert torch.allclose(head(feats), ref, atol=1e-6)


def _record(enc, name: str, digest: str | None) -> None:
    meta = json.loads((enc / "encoder.json").read_text())
    if digest is None:
        meta["sha256"].pop(name)
    else:
        meta["sha256"][name] = digest
    (enc / "encoder.json").write_text(json.dumps(meta))


def test_projector_absent_or_unloadable_is_skipped(tmp_path):
    _, enc = trained_like(tmp_path)
    (enc / "projector.safetensors").unlink()
    with pytest.raises(ValueError, match="projector.safetensors is listed in encoder.json but missing"):
        load_projector(enc)
    _record(enc, "projector.safetensors", None)  # an encoder saved without a projector
    assert load_projector(enc) is None
    save_file({"bogus": torch.zeros(3)}, str(enc / "projector.safetensors"))
    with pytest.raises(ValueError, match="no SHA-256 in encoder.json"):
        load_projector(enc)
    # a well-formed head of another shape, recorded as this encoder's: skipped
    _record(enc, "projector.safetensors", hashlib.sha256((enc / "projector.safetensors").read_bytes()).hexdigest())
    assert load_projector(enc) is None


def test_backbone_features_of_saved_encoder_match(tmp_path, prepared):
    from jem.export import load_encoder

    net, enc = trained_like(tmp_path)
    x = np.load(prepared / "test_x.npy")
    a = extract_features(net.backbone, x, [0.3], [0.37])
    b = extract_features(load_encoder(enc), x, [0.3], [0.37])
    assert np.array_equal(a, b)


def test_top_level_verdict():
    from jem.evaluate_run import _verdict

    ok = {"std": 0.05, "std_healthy": 0.09, "collapsed": 0.0}
    dimensional = {"std": 0.05, "std_healthy": 0.09, "collapsed": 1.0}  # low RankMe only
    complete = {"std": 1e-6, "std_healthy": 0.09, "collapsed": 1.0}
    assert _verdict({"backbone": ok}) == 0
    assert _verdict({"backbone": complete}) == 1
    assert _verdict({"backbone": ok, "projector": dimensional}) == 0
    assert _verdict({"backbone": ok, "projector": complete}) == 1
