"""Momentum (EMA) teachers shared by BYOL and DINO.

* BYOL (Grill et al. 2020, arXiv:2006.07733), section 3.1 and eq. (1): the target parameters
  follow ``xi <- tau xi + (1 - tau) theta`` with ``tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2``,
  ``k`` the current step and ``K`` the total number of steps (so ``tau`` rises from ``tau_base`` at
  ``k = 0`` to 1 at ``k = K``).
* DINO (Caron et al. 2021, arXiv:2104.14294), section 3.1: the same rule and the same cosine
  schedule, from 0.996 to 1.

Only parameters are averaged. Buffers (BatchNorm running statistics) of the teacher are left to its
own forward passes, as in both reference implementations; they never reach the exported encoder.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """``1 - (1 - base) * (cos(pi k / K) + 1) / 2`` with ``k = step``, ``K = total_steps``."""
    k = min(max(step, 0), max(1, total_steps))
    return 1.0 - (1.0 - base) * (math.cos(math.pi * k / max(1, total_steps)) + 1.0) / 2.0


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen deep copy of ``student`` (``requires_grad`` False, so no optimizer sees it)."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place: ``t <- m t + (1 - m) s`` for every parameter pair (same order, same shapes)."""
    t_params, s_params = list(teacher.parameters()), list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student have different parameter lists")
    for t, s in zip(t_params, s_params):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)
