"""Smoke and behaviour tests of byol, simsiam, dino and swav through the Method interface, the way
the engine drives them: forward (global views, then local crops), backward,
before_optimizer_step, optimizer step, after_step."""

import copy

import pytest
import torch

from jem.config import parse_config
from jem.engine.loop import build_method
from jem.engine.optim import build_optimizer
from jem.methods.base import StepContext
from jem.methods.ema import cosine_momentum

B = 16


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster and immune to a busy machine's contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _setup(name, **overrides):
    raw = {"method": name, "methods": {name: overrides}} if overrides else {"method": name}
    if overrides.get("local_crops"):  # the view cache must hold the local crops the method consumes
        raw["augment"] = {"multicrop": {"local_crops": overrides["local_crops"]}}
    cfg = parse_config(raw)
    torch.manual_seed(0)
    method = build_method(cfg, in_channels=1, image_size=8)
    return method, build_optimizer(method, cfg.train, 0.05)


def _views(method, seed):
    g = torch.Generator().manual_seed(seed)
    return ([torch.randn(B, 1, 8, 8, generator=g) for _ in range(method.n_global)]
            + [torch.randn(B, 1, 4, 4, generator=g) for _ in range(method.n_local)])


def _step(method, opt, ctx, seed=0):
    out = method(_views(method, seed), ctx)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    method.before_optimizer_step(ctx)
    opt.step()
    method.after_step(ctx)
    return out


def _dist(a, b):
    return sum((p - q).pow(2).sum() for p, q in zip(a.parameters(), b.parameters())).sqrt().item()


@pytest.mark.parametrize("name", ["byol", "simsiam", "dino", "swav"])
def test_defaults_parse_and_a_few_steps_run(name):
    cfg = parse_config({"method": name})
    assert cfg.method_params == type(cfg.method_params)()  # defaults accepted as they are
    extra = {"local_crops": 2} if name in ("dino", "swav") else {}
    method, opt = _setup(name, **extra)
    assert method.n_local == extra.get("local_crops", 0)
    total = 4
    for step in range(total):
        out = _step(method, opt, StepContext(step // 2, step, total, 2), seed=step)
        assert torch.isfinite(out["loss"]), (name, step)
    # the exported backbone has trained parameters and no frozen copy in the optimizer
    opt_ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in opt_ids for p in method.backbone.parameters())
    assert all(not p.requires_grad for n, p in method.named_parameters() if n.startswith(("target_", "teacher_")))


@pytest.mark.parametrize("name,teacher,student", [("byol", "target_backbone", "backbone"),
                                                  ("byol", "target_projector", "projector"),
                                                  ("dino", "teacher_backbone", "backbone"),
                                                  ("dino", "teacher_head", "projector")])
def test_ema_teacher_moves_toward_the_student(name, teacher, student):
    method, opt = _setup(name)
    total = 10
    ctx = StepContext(1, 3, total, 2)
    _step(method, opt, StepContext(1, 2, total, 2))  # teacher and student now differ
    method(_views(method, 5), ctx)["loss"].backward()
    opt.step()
    t, s = getattr(method, teacher), getattr(method, student)
    before = _dist(t, s)
    method.after_step(ctx)
    m = cosine_momentum(method.params.base_momentum, 3, total)
    assert before > 0
    assert _dist(t, s) == pytest.approx(m * before, rel=1e-4)  # ||m t + (1-m) s - s|| = m ||t - s||


def test_simsiam_has_no_momentum_encoder_and_projector_ends_in_bn():
    method, _ = _setup("simsiam")
    assert not any(n.startswith(("target_", "teacher_")) for n, _ in method.named_parameters())
    assert isinstance(method.projector[-1], torch.nn.BatchNorm1d)


def test_dino_freezes_the_last_layer_in_the_first_epoch_and_keeps_the_centre():
    method, opt = _setup("dino", freeze_last_layer=1)
    last = copy.deepcopy(method.projector.last_layer.weight_v)
    _step(method, opt, StepContext(0, 0, 10, 5))
    torch.testing.assert_close(method.projector.last_layer.weight_v, last, atol=0, rtol=0)
    assert method.loss.center.abs().sum() > 0  # the centre moved after one forward
    assert "loss.center" in method.state_dict()  # checkpointed
    _step(method, opt, StepContext(1, 5, 10, 5))
    assert not torch.equal(method.projector.last_layer.weight_v, last)
    assert not method.projector.last_layer.weight_g.requires_grad  # norm_last_layer: g fixed to 1


def test_dino_teacher_temperature_follows_the_epoch():
    method, _ = _setup("dino", warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=4)
    temps = [method(_views(method, 0), StepContext(e, e, 10, 1))["teacher_temp"].item() for e in (0, 3, 7)]
    assert temps == pytest.approx([0.04, 0.07, 0.07])


def test_swav_prototypes_frozen_then_trained_and_kept_on_the_sphere():
    method, opt = _setup("swav", freeze_prototypes_iters=2)
    w0 = method.prototypes.weight.detach().clone()
    torch.testing.assert_close(w0.norm(dim=1), torch.ones(w0.shape[0]))
    for step in range(2):
        _step(method, opt, StepContext(0, step, 10, 5), seed=step)
    assert (method.prototypes.weight - w0).abs().max() < 1e-7  # only re-normalised (rounding)
    _step(method, opt, StepContext(0, 2, 10, 5))
    assert (method.prototypes.weight - w0).abs().max() > 1e-6  # one small LARS step
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(w0.shape[0]))


def test_swav_queue_fills_then_is_used_and_is_checkpointed():
    method, opt = _setup("swav", queue_length=24, epoch_queue_starts=1, local_crops=1)
    used = []
    for step in range(4):
        used.append(_step(method, opt, StepContext(step, step, 10, 1), seed=step)["queue_used"].item())
    # epoch 0: queue off; epoch 1: 16 of 24 rows filled; epoch 2: not yet full when the codes are
    # computed (then filled); epoch 3: full -> used (the reference's order: use, then enqueue)
    assert used == [0.0, 0.0, 0.0, 1.0]
    assert int(method.queue_count) == 24
    assert "queue" in method.state_dict() and method.queue.shape == (2, 24, method.prototypes.in_features)
    torch.testing.assert_close(method.queue.norm(dim=-1), torch.ones(2, 24))
