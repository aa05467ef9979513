"""Training checkpoints and the exported encoder, and how they travel through Ray Train.

A checkpoint folder holds ``state.pt`` (method state dict, optimizer state, epochs done, per-epoch
history) and its SHA-256 in ``state.pt.sha256``; on resume it is checked against the sum, then
loaded with ``weights_only=True``. The final one also holds the exported encoder:
``encoder.safetensors`` (the backbone's tensors) plus ``encoder.json`` (its architecture),
loadable without pickle by :func:`jem.export.load_encoder`.

Every worker reports every epoch (:func:`report_epoch`); on checkpoint epochs rank 0 attaches the
folder. A (re)started worker group resumes from the last checkpoint Ray's controller collected
(:func:`resume`), which replays the same data as an uninterrupted run.
"""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from jem.errors import DataError
from jem.io import sha256_file

STATE, STATE_SUM = "state.pt", "state.pt.sha256"


def save_state(folder: Path, method: nn.Module, optimizer: torch.optim.Optimizer, epochs_done: int,
               history: list[dict[str, float]]) -> None:
    """Write ``state.pt`` and, beside it, ``state.pt.sha256`` (its SHA-256, checked on resume)."""
    torch.save({"model": method.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epochs_done,
                "history": history}, folder / STATE)
    (folder / STATE_SUM).write_text(sha256_file(folder / STATE) + "\n")


def verify_state(folder: Path) -> None:
    """:class:`~jem.errors.DataError` naming ``state.pt`` when its SHA-256 differs from the one
    :func:`save_state` recorded (a checkpoint written before sums were recorded is not checked)."""
    path, record = folder / STATE, folder / STATE_SUM
    if record.is_file() and sha256_file(path) != record.read_text().strip():
        raise DataError(f"training checkpoint {path} does not match its recorded SHA-256 (damaged): remove its "
                        "run folder under .jem/ray_results to start the run over")


def load_state(folder: Path, method: nn.Module, optimizer: torch.optim.Optimizer
               ) -> tuple[int, list[dict[str, float]]]:
    """Restore in place after :func:`verify_state`; returns (epochs done, history)."""
    verify_state(folder)
    try:
        state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise DataError(f"training checkpoint {folder / STATE} cannot be read ({str(exc).splitlines()[0]}): "
                        "remove its run folder under .jem/ray_results to start the run over") from None
    method.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["epoch"]), list(state["history"])


def save_encoder(folder: Path, method: Any, stats: dict[str, Any] | None = None) -> None:
    """Write ``encoder.safetensors`` + ``encoder.json`` (arch, feature dim, method, the SHA-256 of each
    weight file, and the input normalisation ``mean``/``std`` when ``stats`` is given, so the export
    is self-contained)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in method.backbone.state_dict().items()}
    save_file(tensors, str(folder / "encoder.safetensors"))
    projector = getattr(method, "projector", None)
    if isinstance(projector, nn.Module):  # kept for collapse diagnostics of projector outputs
        save_file({k: v.detach().cpu().contiguous() for k, v in projector.state_dict().items()},
                  str(folder / "projector.safetensors"))
    meta = {"arch": method.arch, "feat_dim": method.feat_dim, "method": method.name,
            "projector": list(getattr(method, "projector_dims", []))}
    extra_files: dict[str, dict[str, torch.Tensor]] = {}
    if hasattr(method, "export_extra"):  # further networks of the method (avid: the audio encoder and head)
        extra_files, extra_meta = method.export_extra()
        meta.update(extra_meta)
        for name, extra in extra_files.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in extra.items()}, str(folder / name))
    if stats is not None:
        meta.update(mean=list(stats["mean"]), std=list(stats["std"]))
    # every loader checks these (jem.export.verify_weights): a corrupt or truncated copy is one error line
    weights = ("encoder.safetensors", "projector.safetensors", *extra_files)
    meta["sha256"] = {name: sha256_file(folder / name) for name in weights if (folder / name).is_file()}
    (folder / "encoder.json").write_text(json.dumps(meta, indent=2) + "\n")


def resume(method: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, list[dict[str, float]]]:
    """Restore the Ray Train checkpoint this worker group starts from into ``method`` and
    ``optimizer``; returns (epochs done, history), ``(0, [])`` on a fresh run."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return 0, []
    with ckpt.as_directory() as d:
        return load_state(Path(d), method, optimizer)


def report_epoch(row: dict[str, float], epochs_done: int, *, rank: int, save: bool, final: bool, method: Any,
                 optimizer: torch.optim.Optimizer, history: list[dict[str, float]], stats: dict[str, Any]) -> None:
    """Report an epoch's ``row`` to Ray Train (every worker calls it). With ``save`` rank 0 attaches
    a checkpoint of ``method``, ``optimizer``, ``epochs_done`` and ``history``, plus the exported
    encoder when ``final``."""
    import ray.train

    if not save:
        ray.train.report(row)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if rank == 0:
            save_state(Path(tmp), method, optimizer, epochs_done, history)
            if final:
                save_encoder(Path(tmp), method, stats)
        ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)
