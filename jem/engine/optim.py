"""Optimizers (SGD, AdamW, LARS) and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from jem.config import TrainConfig


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You, Gitman, Ginsburg 2017, arXiv:1708.03888), in the form
    used by SimCLR/BYOL/VICReg: for parameters with ``lars=True`` the update direction
    ``g + wd * w`` is rescaled by the trust ratio ``eta * ||w|| / ||g + wd * w||``; parameters
    with ``lars=False`` (biases, norm layers) get plain momentum SGD without weight decay."""

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                                      lars=True))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        # One multi-tensor (``torch._foreach_*``) call per operation and parameter group instead of a
        # few small kernels per parameter: about 60 tensors x 8 ops per step otherwise, which is
        # launch-bound on a GPU at small models.
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["lars"]:
                d = torch._foreach_add(grads, params, alpha=group["weight_decay"])
                w_norm = torch.stack(torch._foreach_norm(params))
                d_norm = torch.stack(torch._foreach_norm(d))
                trust = torch.where((w_norm > 0) & (d_norm > 0), group["eta"] * w_norm / d_norm,
                                    torch.ones_like(w_norm))
                torch._foreach_mul_(d, list(trust.to(d[0].dtype).unbind()))
            else:
                d = grads
            # a fresh buffer starts at zero, so its first update leaves exactly d in it
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p)
            bufs = [self.state[p]["momentum_buffer"] for p in params]
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, d)
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
        return None


def _split_decay(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Weights (ndim > 1) get weight decay / LARS adaptation; biases and norm parameters do not."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return decay, no_decay


def effective_lr(cfg: TrainConfig, world_size: int) -> float:
    """Base lr scaled to the effective batch (``world_size x batch_size``) by ``lr_scaling``."""
    ratio = world_size * cfg.batch_size / 256
    return cfg.lr * {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[cfg.lr_scaling]


def build_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    decay, no_decay = _split_decay(model)
    if cfg.optimizer == "lars":
        return LARS([{"params": decay}, {"params": no_decay, "lars": False, "weight_decay": 0.0}],
                    lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=lr)


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float, min_ratio: float = 0.0) -> float:
    """Linear warm-up from ~0 to ``peak`` over ``warmup_steps``, then cosine decay to ``min_ratio * peak``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
