"""Smoke runs of moco, barlow, wmse, vicreg and simclr through the Method interface the engine uses
(forward, backward, before_optimizer_step, optimizer step, after_step) on random 8x8x1 images with
the default hyperparameters, plus the params each method accepts."""

import pytest
import torch

from jem.config import ConfigError, parse_config
from jem.engine.optim import build_optimizer
from jem.methods import get_method_class
from jem.methods.base import StepContext

METHODS = ["moco", "barlow", "wmse", "vicreg", "simclr"]
ARCH = {"backbone": "small_cnn", "width": 4, "in_channels": 1, "image_size": 8}
BATCH = 40  # > wmse's default emb_dim (32): one whitening sub-batch of 40 rows


@pytest.mark.parametrize("name", METHODS)
def test_method_trains_a_few_steps_with_its_defaults(name):
    cfg = parse_config({"method": name})
    torch.manual_seed(0)
    method = get_method_class(name)(ARCH, [32, 16], cfg.method_params)
    assert method.name == name
    assert method.n_global == (4 if name == "wmse" else 2) and method.n_local == 0
    opt = build_optimizer(method, cfg.train, 0.1)  # the engine's LARS, frozen parameters excluded
    before = [p.detach().clone() for p in method.parameters()]
    key_before = [p.clone() for p in method.key_encoder.parameters()] if name == "moco" else []
    g = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 1, 8, 8, generator=g)
    steps = 3
    for step in range(steps):
        ctx = StepContext(0, step, steps, steps)
        views = [images + 0.3 * torch.randn(images.shape, generator=g) for _ in range(method.n_global)]
        out = method(views, ctx)
        assert out["loss"].ndim == 0 and torch.isfinite(out["loss"]), (name, step, out["loss"])
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        method.before_optimizer_step(ctx)
        opt.step()
        method.after_step(ctx)
    moved = [not torch.equal(b, p) for b, p in zip(before, method.parameters())]
    assert any(moved)
    if name == "moco":
        assert int(method.loss.ptr) == steps * BATCH % cfg.method_params.queue_size
        key = list(method.key_encoder.parameters())
        assert all(not p.requires_grad for p in key)
        assert not any(p in set(opt.param_groups[0]["params"]) for p in key)
        assert all(p.grad is None for p in key)
        assert any(not torch.equal(a, b) for a, b in zip(key, key_before))  # the EMA moved it


def test_views_and_defaults_validate():
    cfg = parse_config({"method": "wmse", "methods": {"wmse": {"views": 2, "w_size": 96}}})
    assert cfg.method_params.views == 2 and cfg.method_params.w_size == 96
    with pytest.raises(ConfigError, match="views_per_image"):
        parse_config({"method": "wmse", "augment": {"views_per_image": 2}})  # W-MSE 4 needs 4 views
    with pytest.raises(ConfigError, match="methods.moco.queue_sise"):
        parse_config({"method": "moco", "methods": {"moco": {"queue_sise": 10}}})
    with pytest.raises(ConfigError, match="methods.barlow.offdiag_weight"):
        parse_config({"method": "barlow", "methods": {"barlow": {"offdiag_weight": -1.0}}})
    with pytest.raises(ValueError, match="w_size"):
        params = parse_config({"method": "wmse", "methods": {"wmse": {"w_size": 32}}}).method_params
        get_method_class("wmse")(ARCH, [32, 16], params)  # 32 rows cannot whiten 32-d embeddings
