"""Training checkpoints and the exported encoder.

A checkpoint folder holds ``state.pt`` (method state dict, optimizer state, epochs done, per-epoch
history); loaded with ``weights_only=True``. The exported encoder is ``encoder.safetensors`` (the
backbone's tensors) plus ``encoder.json`` (its architecture), loadable without pickle by
:func:`jem.export.load_encoder`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn


def save_state(folder: Path, method: nn.Module, optimizer: torch.optim.Optimizer, epochs_done: int,
               history: list[dict[str, float]]) -> None:
    torch.save({"model": method.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epochs_done,
                "history": history}, folder / "state.pt")


def load_state(folder: Path, method: nn.Module, optimizer: torch.optim.Optimizer
               ) -> tuple[int, list[dict[str, float]]]:
    """Restore in place; returns (epochs done, history)."""
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    method.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["epoch"]), list(state["history"])


def save_encoder(folder: Path, method: Any, stats: dict[str, Any] | None = None) -> None:
    """Write ``encoder.safetensors`` + ``encoder.json`` (arch, feature dim, method, and the input
    normalisation ``mean``/``std`` when ``stats`` is given, so the export is self-contained)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in method.backbone.state_dict().items()}
    save_file(tensors, str(folder / "encoder.safetensors"))
    projector = getattr(method, "projector", None)
    if isinstance(projector, nn.Module):  # kept for collapse diagnostics of projector outputs
        save_file({k: v.detach().cpu().contiguous() for k, v in projector.state_dict().items()},
                  str(folder / "projector.safetensors"))
    meta = {"arch": method.arch, "feat_dim": method.feat_dim, "method": method.name,
            "projector": list(getattr(method, "projector_dims", []))}
    if stats is not None:
        meta.update(mean=list(stats["mean"]), std=list(stats["std"]))
    (folder / "encoder.json").write_text(json.dumps(meta, indent=2) + "\n")

