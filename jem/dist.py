"""Autograd-aware collectives. Every one is the identity on a single worker.

Why this file exists: a raw ``torch.distributed.all_reduce`` / ``all_gather`` is invisible to
autograd. Losses built on batch statistics (negatives, covariance, cross-correlation, whitening,
Sinkhorn) must see the *global* batch, and their gradients must flow back to each worker's own
samples with the right scale. Convention used throughout jem:

* every worker computes the same global loss ``L`` from gathered tensors;
* :func:`gather` concatenates in rank order; its backward sums the incoming gradient over workers
  (each worker's copy of ``L`` contributes) and returns this worker's slice;
* DDP then *averages* parameter gradients over the ``W`` workers.

Sum-then-average gives exactly the single-process gradient of ``L`` on the concatenated batch
(tested with real 2-process gloo groups in ``tests/losses/test_dist_gather.py`` and, per method,
``tests/losses/test_dist_exact_*.py``). Skipping the backward sum would silently divide the
gradient by ``W``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

Gather = Callable[[torch.Tensor], torch.Tensor]


def world_size() -> int:
    return torch_dist.get_world_size() if torch_dist.is_available() and torch_dist.is_initialized() else 1


def rank() -> int:
    return torch_dist.get_rank() if torch_dist.is_available() and torch_dist.is_initialized() else 0


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ws = torch_dist.get_world_size()
        ctx.rank, ctx.n = torch_dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(ws)]
        torch_dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        torch_dist.all_reduce(grad, op=torch_dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from all workers along dim 0 -> (W*B, ...), gradient-aware.

    All workers must pass the same shape. Identity on one worker.
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather_nograd(x: torch.Tensor) -> torch.Tensor:
    """Concatenate detached tensors from all workers (queues, banks, centres)."""
    if world_size() == 1:
        return x.detach()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    torch_dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_mean_nograd(x: torch.Tensor) -> torch.Tensor:
    """Mean of a detached tensor over workers (statistics such as DINO's centre)."""
    if world_size() == 1:
        return x.detach()
    y = x.detach().clone()
    torch_dist.all_reduce(y, op=torch_dist.ReduceOp.SUM)
    return y / world_size()


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average ``.grad`` over workers in place (what DDP does), for tests and non-DDP paths."""
    ws = world_size()
    if ws == 1:
        return
    for p in params:
        if p.grad is not None:
            torch_dist.all_reduce(p.grad, op=torch_dist.ReduceOp.SUM)
            p.grad /= ws


@dataclass(frozen=True)
class Comm:
    """Everything a method may use to talk to the other workers, handed to it by the engine in
    :class:`jem.methods.base.StepContext` and :class:`jem.methods.base.EpochData` (methods never
    reach for the process group themselves)."""

    rank: int
    world_size: int
    gather: Gather  # autograd-aware concatenation in rank order (:func:`gather`)
    gather_nograd: Gather  # detached concatenation (queues, banks, cluster labels)
    all_reduce_mean: Gather  # detached mean over workers (DINO's centre)


def current_comm() -> Comm:
    """The collectives of the current process group (identities on a single worker)."""
    return Comm(rank(), world_size(), gather, gather_nograd, all_reduce_mean_nograd)
