"""One optimizer step: forward (under optional bf16 autocast), a finite-loss check, backward, the
method's hooks around the optimizer step. The loop and the benchmarks share it.

``train.compile`` (:func:`compile_method`) chooses what ``torch.compile`` covers:

- ``none``: eager (the default).
- ``backbone``: the backbone's forward (and its backward); heads and loss stay eager.
- ``step``: the method's whole forward -- backbone, heads and loss -- as one graph
  (``fullgraph=True``: a graph break is an error, never a silent partial compile); AOTAutograd
  compiles its backward with it, so forward, loss and backward run as inductor kernels. The
  finite-loss check, the hooks and the optimizer stay eager around it: the check needs the loss on
  the host, the hooks carry Python-side state, and the LARS update is ~0.4% of a CPU step
  (``benchmarks/step.py --profile``), not worth its compilation.

``step`` needs a method whose forward is plain tensor code (:data:`STEP_COMPILABLE`): no
Python-side state written in forward (queues, memory banks, cluster assignments), no per-step value
read from the step context (a step or epoch number read in forward would recompile every step) and
no random generator keyed per step. Any other method, and a run on several workers, falls back with
one warning line to what is safe (eager, or the backbone under DDP).
"""

from __future__ import annotations

import warnings
from typing import cast

import torch
from torch import nn

from jem.methods.base import Method, StepContext

COMPILE_MODES = ("none", "backbone", "step")
# Methods whose forward is plain tensor code (see the module docstring); each one's compiled step is
# checked against its eager step in tests/engine/test_compiled_step.py. BYOL is not among them: its
# forward reports the EMA momentum of ctx.step, which would recompile every step.
STEP_COMPILABLE = frozenset({"vicreg", "barlow", "simclr", "simsiam"})


class NonFiniteLoss(RuntimeError):
    """The loss of a step is NaN or infinite; raised before the update, so the weights stay finite."""


def resolve_compile(mode: str, method_name: str, world: int) -> str:
    """The compile mode that runs for ``mode`` (``train.compile``): ``step`` falls back, with one
    warning line, to ``none`` for a method outside :data:`STEP_COMPILABLE` and to ``backbone`` on
    several workers (the whole step under DDP is not covered by tests here)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"train.compile = {mode!r}; choose one of: {', '.join(COMPILE_MODES)}")
    if mode != "step":
        return mode
    if method_name not in STEP_COMPILABLE:
        warnings.warn(f"train.compile=step: method {method_name} keeps Python-side state or per-step values in its "
                      f"forward; it runs eager (step compile covers: {', '.join(sorted(STEP_COMPILABLE))})",
                      stacklevel=2)
        return "none"
    if world > 1:
        warnings.warn(f"train.compile=step on {world} workers: only the backbone is compiled (the whole-step "
                      "compile runs on one worker)", stacklevel=2)
        return "backbone"
    return "step"


def compile_method(method: Method, mode: str, world: int = 1) -> tuple[nn.Module, str]:
    """Apply ``train.compile`` = ``mode`` to ``method``: (the module the step calls in place of
    ``method`` on one worker, the mode that runs). ``backbone`` compiles ``method.backbone`` in
    place (state-dict keys unchanged); ``step`` returns ``torch.compile(method, fullgraph=True)``,
    which shares ``method``'s parameters (save and load ``method``, not the wrapper). Compilation
    happens at the first call, so the first step pays it."""
    mode = resolve_compile(mode, method.name, world)
    if mode == "backbone":
        method.backbone.compile()
    if mode == "step":
        return cast(nn.Module, torch.compile(method, fullgraph=True)), mode  # an OptimizedModule
    return method, mode


def train_step(model: nn.Module, method: Method, optimizer: torch.optim.Optimizer, views: list[torch.Tensor],
               ctx: StepContext, amp: bool = False) -> torch.Tensor:
    """One optimizer step on a batch of views (forward under optional bf16 autocast, backward, hooks,
    optimizer step); returns the detached float32 loss. Raises :class:`NonFiniteLoss` before the update.

    ``model`` is ``method`` itself on one worker (or its compiled form, :func:`compile_method`), its
    DistributedDataParallel wrapper on several."""
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
