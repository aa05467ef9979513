"""One optimizer step: forward (under optional bf16 autocast), a finite-loss check, backward, the
method's hooks around the optimizer step. The loop and the benchmarks share it."""

from __future__ import annotations

import torch
from torch import nn

from jem.methods.base import Method, StepContext


class NonFiniteLoss(RuntimeError):
    """The loss of a step is NaN or infinite; raised before the update, so the weights stay finite."""


def train_step(model: nn.Module, method: Method, optimizer: torch.optim.Optimizer, views: list[torch.Tensor],
               ctx: StepContext, amp: bool = False) -> torch.Tensor:
    """One optimizer step on a batch of views (forward under optional bf16 autocast, backward, hooks,
    optimizer step); returns the detached float32 loss. Raises :class:`NonFiniteLoss` before the update.

    ``model`` is ``method`` itself on one worker, its DistributedDataParallel wrapper on several."""
    with torch.autocast(views[0].device.type, dtype=torch.bfloat16, enabled=amp):
        out = model(views, ctx)
    loss = out["loss"].float()
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"non-finite loss {loss.item()} at step {ctx.step} (epoch {ctx.epoch}) of method "
                            f"{method.name}: the learning rate ({optimizer.param_groups[0]['lr']:.3g}) is "
                            "probably too high, or an embedding collapsed to zero variance")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    method.before_optimizer_step(ctx)
    optimizer.step()
    method.after_step(ctx)
    return loss.detach()
