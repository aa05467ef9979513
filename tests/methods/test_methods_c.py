"""Smoke runs of deepcluster, sela, data2vec, npid, rotation, jigsaw, context and autoencoder through
the Method interface the engine drives (on_epoch_start, forward, backward, before_optimizer_step,
optimizer step, after_step) on random 8x8x1 images with the default hyperparameters (data2vec on
a 2-block vit_tiny), plus checkpoint round trips of their non-parameter state."""

import numpy as np
import pytest
import torch

from jem.config import ConfigError, parse_config
from jem.engine.optim import build_optimizer
from jem.methods import get_method_class
from jem.methods.base import EpochData, StepContext

METHODS = ["deepcluster", "sela", "data2vec", "npid", "rotation", "jigsaw", "context", "autoencoder"]
CNN = {"backbone": "small_cnn", "width": 4, "in_channels": 1, "image_size": 8}
VIT = {"backbone": "vit_tiny", "width": 4, "in_channels": 1, "image_size": 8, "depth": 2}
N, BATCH = 160, 32


def _build(name, overrides=None):
    cfg = parse_config({"method": name, "methods": {name: overrides or {}}})
    params = cfg.method_params
    if name == "data2vec":
        params = parse_config({"method": name, "methods": {name: {"top_k": 2, **(overrides or {})}}}).method_params
    torch.manual_seed(0)
    return get_method_class(name)(VIT if name == "data2vec" else CNN, [32, 16], params), cfg


def _epoch_data(images, epoch=0):
    return EpochData(epoch, images, [0.5], [0.25], torch.device("cpu"))


VARIANTS = [(name, {}) for name in METHODS] + [
    ("npid", {"loss": "nce", "nce_k": 16, "prox_weight": 1.0}), ("sela", {"heads": 2}),
    ("rotation", {"all_rotations": False}), ("jigsaw", {"grid": 3, "n_permutations": 10, "tile_norm": False}),
    ("deepcluster", {"balanced": False, "recluster_every": 2})]


@pytest.mark.parametrize("name, overrides", VARIANTS)
def test_method_trains_a_few_steps(name, overrides):
    method, cfg = _build(name, overrides)
    assert method.name == name and method.n_global == 1 and method.n_local == 0
    opt = build_optimizer(method, cfg.train, 0.05)
    before = [p.detach().clone() for p in method.parameters()]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 8, 8, 1), dtype=np.uint8)
    steps, step = 2, 0
    for epoch in range(2):
        method.train()
        method.on_epoch_start(_epoch_data(images, epoch))
        for _ in range(steps):
            idx = torch.from_numpy(np.sort(rng.permutation(N)[:BATCH]))
            ctx = StepContext(epoch, step, 2 * steps, steps, indices=idx)
            x = torch.from_numpy(images[idx.numpy()]).permute(0, 3, 1, 2).float() / 255.0
            views = [(x - 0.5) / 0.25 + 0.1 * torch.randn(x.shape)]
            out = method(views, ctx)
            assert out["loss"].ndim == 0 and torch.isfinite(out["loss"]), (name, step, out)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            method.before_optimizer_step(ctx)
            opt.step()
            method.after_step(ctx)
            step += 1
    assert any(not torch.equal(b, p) for b, p in zip(before, method.parameters()))
    trainable = [p for p in method.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable), "every trainable parameter is used (DDP needs it)"
    # the exported-encoder contract: the backbone alone maps images to (B, feat_dim)
    method.eval()
    assert method.backbone(views[0]).shape == (BATCH, method.feat_dim)
    # the projector accepts backbone features (collapse diagnostics rebuild and call it)
    assert method.projector(torch.randn(4, method.feat_dim)).shape[0] == 4


@pytest.mark.parametrize("name", ["deepcluster", "sela", "npid"])
def test_non_parameter_state_survives_a_checkpoint_round_trip(name, tmp_path):
    method, _ = _build(name)
    images = np.random.default_rng(1).integers(0, 256, (N, 8, 8, 1), dtype=np.uint8)
    method.on_epoch_start(_epoch_data(images))
    torch.save(method.state_dict(), tmp_path / "state.pt")
    fresh, _ = _build(name)
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    if name == "npid":
        torch.testing.assert_close(fresh.loss.bank, method.loss.bank)
    else:
        assert torch.equal(fresh.labels, method.labels)


def test_one_view_methods_and_invalid_settings():
    cfg = parse_config({"method": "rotation", "augment": {"views_per_image": 1}})
    assert cfg.method_params.all_rotations
    with pytest.raises(ConfigError, match="methods.npid.loss"):
        parse_config({"method": "npid", "methods": {"npid": {"loss": "nec"}}})
    with pytest.raises(ValueError, match="vit_tiny"):
        get_method_class("data2vec")(CNN, [32, 16], parse_config({"method": "data2vec"}).method_params)
    npid, _ = _build("npid", {"loss": "nce"})  # 4096 noise samples for 160 images
    with pytest.raises(ValueError, match="nce_k"):
        npid.on_epoch_start(_epoch_data(np.zeros((N, 8, 8, 1), dtype=np.uint8)))
    with pytest.raises(ValueError, match="top_k"):
        get_method_class("data2vec")(VIT, [32, 16], parse_config({"method": "data2vec"}).method_params)


@pytest.mark.parametrize("steps_per_epoch, relabel_steps, expected", [
    (5, 25, [0, 5, 10, 15]),  # digits (5 steps an epoch): every 5 epochs, the old epoch cadence
    (39, 25, list(range(16))),  # Fashion-MNIST 10k (39 steps): every epoch
    (10, 25, [0, 3, 5, 8, 10, 13, 15]),  # first epoch starting at/after steps 25, 50, 75, ...
])
def test_sela_relabels_at_a_cadence_counted_in_steps(steps_per_epoch, relabel_steps, expected):
    method, _ = _build("sela", {"relabel_steps": relabel_steps})
    due = [e for e in range(16) if method.relabel_due(e, steps_per_epoch)]
    assert due == expected
