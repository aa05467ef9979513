"""LARS against a slow per-tensor reference written from the paper; the lr schedule against its formula."""

import math

import pytest
import torch

from jem.config import TrainConfig
from jem.engine.optim import LARS, build_optimizer, effective_lr, lr_at


def _slow_lars(params, grads, bufs, lr, momentum, wd, eta, adapt):
    out = []
    for p, g, b, a in zip(params, grads, bufs, adapt):
        p, g = p.double(), g.double()
        if a:
            d = g + wd * p
            wn, dn = math.sqrt(float((p * p).sum())), math.sqrt(float((d * d).sum()))
            d = d * (eta * wn / dn if wn > 0 and dn > 0 else 1.0)
        else:
            d = g
        b = d if b is None else momentum * b + d
        out.append((p - lr * b, b))
    return out


def test_lars_matches_slow_reference_over_steps():
    torch.manual_seed(0)
    w, bias = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    pw, pb = torch.nn.Parameter(w.clone()), torch.nn.Parameter(bias.clone())
    opt = LARS([{"params": [pw]}, {"params": [pb], "lars": False, "weight_decay": 0.0}], lr=0.5, momentum=0.9,
               weight_decay=1e-2, eta=0.001)
    ref = [(w.clone(), None), (bias.clone(), None)]
    for _ in range(3):
        gw, gb = torch.randn_like(w), torch.randn_like(bias)
        pw.grad, pb.grad = gw.clone(), gb.clone()
        opt.step()
        (rw, bw), = _slow_lars([ref[0][0]], [gw], [ref[0][1]], 0.5, 0.9, 1e-2, 0.001, [True])
        (rb, bb), = _slow_lars([ref[1][0]], [gb], [ref[1][1]], 0.5, 0.9, 0.0, 0.001, [False])
        ref = [(rw, bw), (rb, bb)]
        torch.testing.assert_close(pw.data, rw, atol=1e-12, rtol=0)
        torch.testing.assert_close(pb.data, rb, atol=1e-12, rtol=0)


def test_lars_many_tensors_zero_grads_and_missing_grads_match_slow_reference():
    """Several tensors per group (the multi-tensor path), one with an all-zero gradient (trust ratio
    1), one whose gradient is missing on the second step (skipped, its momentum buffer kept)."""
    torch.manual_seed(1)
    shapes = [(5, 3), (2, 2, 3, 3), (7, 1)]
    init = [torch.randn(s, dtype=torch.float64) for s in shapes]
    params = [torch.nn.Parameter(w.clone()) for w in init]
    opt = LARS([{"params": params}], lr=0.3, momentum=0.8, weight_decay=0.0, eta=0.02)
    ref = [(w.clone(), None) for w in init]
    for step in range(3):
        grads = [torch.randn_like(w) for w in init]
        grads[1] = torch.zeros_like(init[1])  # d = g + 0 * w = 0: no adaptation
        for i, (p, g) in enumerate(zip(params, grads)):
            p.grad = None if (step == 1 and i == 2) else g.clone()
        opt.step()
        for i, p in enumerate(params):
            if step == 1 and i == 2:
                torch.testing.assert_close(p.data, ref[i][0], atol=0, rtol=0)  # untouched
                continue
            (rw, rb), = _slow_lars([ref[i][0]], [grads[i]], [ref[i][1]], 0.3, 0.8, 0.0, 0.02, [True])
            ref[i] = (rw, rb)
            torch.testing.assert_close(p.data, rw, atol=1e-12, rtol=0)
            torch.testing.assert_close(opt.state[p]["momentum_buffer"], rb, atol=1e-12, rtol=0)


def test_biases_and_norms_are_excluded_from_decay():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    for name in ("sgd", "adamw", "lars"):
        opt = build_optimizer(model, TrainConfig(optimizer=name, weight_decay=0.1), 0.1)
        decayed = [p for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]]
        assert [p.ndim for p in decayed] == [2], name


def test_lr_schedule_formula():
    peak, total, warm = 2.0, 100, 10
    assert lr_at(0, total, warm, peak) == pytest.approx(peak / warm)
    assert lr_at(9, total, warm, peak) == pytest.approx(peak)
    assert lr_at(10, total, warm, peak) == pytest.approx(peak)  # cosine starts at the peak
    mid = 10 + 45
    assert lr_at(mid, total, warm, peak) == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(total, total, warm, peak, min_ratio=0.1) == pytest.approx(0.2)


def test_effective_lr_scaling_rules():
    assert effective_lr(TrainConfig(lr=0.3, batch_size=128), 4) == pytest.approx(0.3 * 512 / 256)
    assert effective_lr(TrainConfig(lr=0.3, batch_size=128, lr_scaling="sqrt"), 4) == pytest.approx(0.3 * math.sqrt(2))
    assert effective_lr(TrainConfig(lr=0.3, batch_size=128, lr_scaling="none"), 4) == pytest.approx(0.3)
