"""What is watched while training runs: rank 0's :class:`Monitor` (the online kNN monitor, the
DVCLive curves, the progress bar) and, at the end, the replicas' agreement.

Online kNN monitor: a cheap kNN top-1 of the current backbone on the validation split, computed on
rank 0 every ``eval.monitor_every`` epochs and logged as ``monitor/val_knn_top1``. It is what
sweeps select on (ASHA, the leaderboard, ``best_params``), so it never reads the test split: the
bank is a fixed sample of the training split, the queries a fixed sample of the validation split
(``val_x.npy``, carved out of the training split by ``prepare``).

DVCLive: on resume the curve is replayed from the checkpoint's history, so the plot is whole even
though DVC cleared the folder before re-running the stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jem.config import Config, EvalConfig


class KNNMonitor:
    """Bank = up to ``max_bank`` training images, queries = up to ``max_query`` validation images
    (both fixed, stratification-free seeded samples), so successive values are comparable."""

    def __init__(self, prepared: Path, ecfg: EvalConfig, mean: list[float], std: list[float], num_classes: int,
                 seed: int, max_bank: int = 5000, max_query: int = 1000) -> None:
        rng = np.random.default_rng(seed + 7)
        tx, ty = np.load(prepared / "train_x.npy", mmap_mode="r"), np.load(prepared / "train_y.npy")
        vx, vy = np.load(prepared / "val_x.npy", mmap_mode="r"), np.load(prepared / "val_y.npy")
        bi = np.sort(rng.permutation(len(ty))[:max_bank])
        qi = np.sort(rng.permutation(len(vy))[:max_query])
        self.bank_x, self.bank_y = np.asarray(tx[bi]), ty[bi]
        self.query_x, self.query_y = np.asarray(vx[qi]), vy[qi]
        self.ecfg, self.mean, self.std, self.num_classes = ecfg, mean, std, num_classes

    def __call__(self, backbone: nn.Module, device: torch.device) -> float:
        from jem.evaluate.features import extract_features
        from jem.evaluate.knn import knn_eval

        was_training = backbone.training
        f_bank = extract_features(backbone, self.bank_x, self.mean, self.std, self.ecfg.batch_size, device=device)
        f_query = extract_features(backbone, self.query_x, self.mean, self.std, self.ecfg.batch_size, device=device)
        backbone.train(was_training)
        res = knn_eval(f_bank, self.bank_y, f_query, self.query_y, self.ecfg.knn_k[0], self.ecfg.knn_temperature,
                       self.num_classes)
        return float(res["top1"])


class Monitor:
    """Rank 0's view of a training run; on the other ranks every part is off and it does nothing.

    ``knn`` runs every ``every`` epochs and after the last one, adding ``val_knn_top1`` to the
    epoch's row; ``live`` (DVCLive) logs every row; ``bar`` counts optimizer steps."""

    def __init__(self, knn: KNNMonitor | None, every: int, epochs: int, live: Any, bar: Any,
                 lines: bool = False) -> None:
        self.knn, self.every, self.epochs, self.live, self.bar = knn, every, epochs, live, bar
        self.lines = lines  # one plain line per epoch instead of the bar (the driver is not on a terminal)

    @classmethod
    def for_rank(cls, rank: int, cfg: Config, config: dict[str, Any], stats: dict[str, Any],
                 history: list[dict[str, float]], total_steps: int, steps_done: int) -> Monitor:
        """The monitor of worker ``rank`` (``config``: the worker's ``live`` dir and ``progress`` flag);
        ``history`` (of a resumed run) is replayed into DVCLive, ``steps_done`` into the bar."""
        if rank != 0:
            return cls(None, 0, cfg.train.epochs, None, None)
        live = live_logger(config.get("live"), history)
        every = cfg.eval.monitor_every
        knn = (KNNMonitor(Path(config["prepared"]), cfg.eval, stats["mean"], stats["std"], int(stats["num_classes"]),
                          cfg.seed) if every else None)
        mode = config.get("progress", "bar")  # "bar" | "lines" | "off" (jem.engine.run.progress_mode)
        bar = progress_bar(total_steps, steps_done, mode == "bar")
        return cls(knn, every, cfg.train.epochs, live, bar, lines=mode == "lines")

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def end_epoch(self, row: dict[str, float], epoch: int, backbone: nn.Module, device: torch.device) -> None:
        if self.knn is not None and ((epoch + 1) % self.every == 0 or epoch == self.epochs - 1):
            row["val_knn_top1"] = self.knn(backbone, device)
        if self.live is not None:
            log_epoch(self.live, row)
        if self.lines:
            shown = "".join(f" {k} {row[k]:.4g}" for k in ("loss", "val_knn_top1") if k in row)
            print(f"pretrain: epoch {epoch + 1}/{self.epochs}{shown}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.live is not None:
            self.live.end()


def progress_bar(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:  # renders properly on the Ray driver's terminal
        from ray.experimental.tqdm_ray import tqdm as bar_class
    except ImportError:  # pragma: no cover
        from tqdm import tqdm as bar_class  # type: ignore[no-redef]
    bar = bar_class(total=total, desc="pretrain", unit="step")
    bar.update(initial)
    return bar


def live_logger(path: str | None, history: list[dict[str, float]]) -> Any:
    """Rank-0 DVCLive logger writing to ``path`` (None: no logging), ``history`` replayed first."""
    if not path:
        return None
    from dvclive import Live

    live = Live(dir=path, dvcyaml=None, save_dvc_exp=False, report=None)
    for row in history:
        log_epoch(live, row)
    return live


def log_epoch(live: Any, row: dict[str, float]) -> None:
    live.step = int(row["epoch"])
    for key in ("loss", "lr", "views_per_s"):
        live.log_metric(f"train/{key}", row[key])
    if "val_knn_top1" in row:
        live.log_metric("monitor/val_knn_top1", row["val_knn_top1"])
    live.make_summary()


def replica_report(method: nn.Module, world: int) -> dict[str, float]:
    """How many Ray nodes the workers ran on, and the largest difference of a parameter checksum
    between replicas (0 when DDP kept them in sync). A collective: every worker calls it."""
    if world == 1:
        return {"nodes": 1, "replica_param_spread": 0.0}
    import ray
    import torch.distributed as torch_dist

    mine = (ray.get_runtime_context().get_node_id(), float(sum(p.detach().double().sum() for p in
                                                               method.parameters())))
    allv: list[Any] = [None] * world
    torch_dist.all_gather_object(allv, mine)
    sums = [v[1] for v in allv]
    return {"nodes": len({v[0] for v in allv}), "replica_param_spread": max(sums) - min(sums)}
