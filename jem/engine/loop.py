"""The one training loop, run by every Ray Train worker. Read it top to bottom.

Data: every epoch each worker takes its own shard of a seeded permutation of the training images
(same permutation on every worker, disjoint shards), so the effective batch is
``workers x batch_size``. A source (:mod:`jem.engine.sources`) turns a batch of image ids into
normalised views with vectorised ops (no per-sample Python): with a view cache it picks
``n_global`` distinct cached views per image from the memory map (one even and one odd id for two
views: the asymmetric BYOL/VICReg pair) plus any local crops; with ``augment.views_per_image: 0``
it renders fresh views on the training device.

Speed switches: ``train.precision`` (bf16 autocast of the forward pass, loss included, as the
VICReg/Barlow Twins reference code does), ``train.memory_format`` (channels_last model and views)
-- both ``auto`` = on for GPU workers, off on CPU -- and ``train.compile`` (``torch.compile`` of the
backbone, its state-dict keys unchanged).

Reproducibility: model init from ``seed``; batch order and view choice from ``(seed, epoch,
rank)``; so a run resumed from an epoch-``e`` checkpoint replays the same data as an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jem import dist
from jem.config import Config, TrainConfig, parse_config
from jem.engine.checkpoint import load_state, save_encoder, save_state
from jem.engine.monitor import KNNMonitor
from jem.engine.optim import build_optimizer, effective_lr, lr_at, set_lr
from jem.engine.sources import epoch_shards, make_source
from jem.methods import get_method_class
from jem.methods.base import EpochData, Method, StepContext
from jem.models.masking import set_mask_ratio


def build_method(cfg: Config, in_channels: int, image_size: int) -> Method:
    """The configured method; ``vit_tiny`` gets ``model.depth`` / ``model.patch_size`` in its arch (so
    the exported ``encoder.json`` rebuilds the same network) and ``model.mask_ratio`` token masking
    in training mode (the masking augmentation, usable by every method)."""
    arch: dict[str, Any] = {"backbone": cfg.model.backbone, "width": cfg.model.width, "in_channels": in_channels,
                            "image_size": image_size}
    if cfg.model.backbone == "vit_tiny":
        arch.update(depth=cfg.model.depth, patch_size=cfg.model.patch_size)
    method = get_method_class(cfg.method)(arch, list(cfg.model.projector), cfg.method_params)
    if cfg.model.mask_ratio > 0:
        set_mask_ratio(method.backbone, cfg.model.mask_ratio)
    return method


class NonFiniteLoss(RuntimeError):
    pass


def _test_kill_epoch(rank: int, world: int) -> int | None:
    """Test hook for the fault-tolerance tests: with ``JEM_TEST_KILL_EPOCH=k`` and
    ``JEM_TEST_KILL_MARKER=<path>`` the last rank SIGKILLs itself halfway through epoch ``k``,
    once (it creates the marker file first, so the restarted worker trains on). It waits 3 s
    before the kill: Ray's controller polls workers for reports every 2 s, and a checkpoint it has
    not collected yet is lost with the worker."""
    epoch, marker = os.environ.get("JEM_TEST_KILL_EPOCH"), os.environ.get("JEM_TEST_KILL_MARKER")
    if epoch is None or not marker or rank != world - 1 or os.path.exists(marker):
        return None
    return int(epoch)


def _maybe_kill(kill_epoch: int | None, epoch: int, step_in_epoch: int, steps: int) -> None:
    if kill_epoch == epoch and step_in_epoch == steps // 2:
        Path(os.environ["JEM_TEST_KILL_MARKER"]).write_text(f"killed pid {os.getpid()} in epoch {epoch}\n")
        time.sleep(3.0)
        os.kill(os.getpid(), signal.SIGKILL)


def _replica_report(method: nn.Module, world: int) -> dict[str, float]:
    """How many Ray nodes the workers ran on, and the largest difference of a parameter checksum
    between replicas (0 when DDP kept them in sync)."""
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


def configure_threads(cpus: float) -> None:
    """Intra-op threads = the worker's CPUs (Ray's ``cpus_per_worker``, at least 1), one inter-op
    thread (the loop never runs ops concurrently), so workers sharing a node do not oversubscribe it."""
    torch.set_num_threads(max(1, int(cpus)))
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel region
        torch.set_num_interop_threads(1)


def speed_settings(tcfg: TrainConfig, device: torch.device) -> tuple[bool, bool]:
    """(bf16 autocast, channels_last) from ``train.precision`` / ``train.memory_format``; ``auto``
    turns each on for CUDA devices and off on the CPU."""
    gpu = device.type == "cuda"
    amp = tcfg.precision == "bf16" or (tcfg.precision == "auto" and gpu)
    channels_last = tcfg.memory_format == "channels_last" or (tcfg.memory_format == "auto" and gpu)
    if amp and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn("train.precision=bf16 on a CPU without native bf16 (AVX512-BF16 or AMX): autocast is emulated "
                      "there and about 10x slower than fp32; use train.precision=fp32 (or auto) on this machine",
                      RuntimeWarning, stacklevel=2)
    return amp, channels_last


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX). Where torch cannot
    tell, assume it does (no warning rather than a wrong one)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def train_step(model: nn.Module, method: Method, optimizer: torch.optim.Optimizer, views: list[torch.Tensor],
               ctx: StepContext, amp: bool = False) -> torch.Tensor:
    """One optimizer step on a batch of views (forward under optional bf16 autocast, backward, hooks,
    optimizer step); returns the detached float32 loss. Raises :class:`NonFiniteLoss` before the update."""
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


def _progress(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:  # renders properly on the Ray driver's terminal
        from ray.experimental.tqdm_ray import tqdm
    except ImportError:  # pragma: no cover
        from tqdm import tqdm
    bar = tqdm(total=total, desc="pretrain", unit="step")
    bar.update(initial)
    return bar


def _live(path: str | None, history: list[dict[str, float]]) -> Any:
    """Rank-0 DVCLive logger; on resume the curve is replayed from the checkpoint's history so the
    plot is whole even though DVC cleared the folder before re-running the stage."""
    if not path:
        return None
    from dvclive import Live

    live = Live(dir=path, dvcyaml=None, save_dvc_exp=False, report=None)
    for row in history:
        _log_epoch(live, row)
    return live


def _log_epoch(live: Any, row: dict[str, float]) -> None:
    live.step = int(row["epoch"])
    for key in ("loss", "lr", "views_per_s"):
        live.log_metric(f"train/{key}", row[key])
    if "val_knn_top1" in row:
        live.log_metric("monitor/val_knn_top1", row["val_knn_top1"])
    live.make_summary()


def train_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train worker entry point. ``config``: {"params": raw params mapping, "prepared": dir,
    "views": dir, "live": dvclive dir or None, "progress": bool}."""
    import ray.train

    cfg = parse_config(config["params"])
    tcfg = cfg.train
    tctx = ray.train.get_context()
    rank, world = tctx.get_world_rank(), tctx.get_world_size()
    configure_threads(tcfg.cpus_per_worker)
    if tcfg.use_gpu:
        import ray.train.torch

        device = ray.train.torch.get_device()
    else:
        device = torch.device("cpu")

    stats = json.loads((Path(config["prepared"]) / "stats.json").read_text())
    mean = torch.tensor(stats["mean"], device=device).view(1, -1, 1, 1)
    std = torch.tensor(stats["std"], device=device).view(1, -1, 1, 1)
    amp, channels_last = speed_settings(tcfg, device)
    source = make_source(cfg, Path(config["prepared"]), Path(config["views"]), mean, std, device, channels_last)
    n_images = source.num_images
    prepared = Path(config["prepared"])
    pretrain_file = prepared / "pretrain_x.npy"
    train_images = np.load(pretrain_file if pretrain_file.exists() else prepared / "train_x.npy", mmap_mode="r")

    torch.manual_seed(cfg.seed)
    method = build_method(cfg, source.channels, source.size).to(device)
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    if tcfg.compile:
        method.backbone.compile()
    if tcfg.sync_bn and world > 1:
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    model: nn.Module = method
    if world > 1:
        model = nn.parallel.DistributedDataParallel(method, device_ids=[device.index] if tcfg.use_gpu else None)
    comm = dist.current_comm()  # what methods may use to talk to the other workers
    peak_lr = effective_lr(tcfg, world)
    optimizer = build_optimizer(method, tcfg, peak_lr)

    batch = tcfg.batch_size
    steps_per_epoch = n_images // (world * batch)
    if steps_per_epoch == 0:
        raise ValueError(f"train.batch_size = {batch} x {world} worker(s) exceeds the {n_images} training "
                         "images; lower train.batch_size")
    total_steps = steps_per_epoch * tcfg.epochs
    warmup = min(tcfg.warmup_epochs * steps_per_epoch, total_steps // 2)

    start_epoch, history = 0, []
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start_epoch, history = load_state(Path(d), method, optimizer)

    live = _live(config.get("live"), history) if rank == 0 else None
    every = cfg.eval.monitor_every
    monitor = (KNNMonitor(Path(config["prepared"]), cfg.eval, stats["mean"], stats["std"], int(stats["num_classes"]),
                          cfg.seed) if every and rank == 0 else None)
    bar = _progress(total_steps, start_epoch * steps_per_epoch, rank == 0 and config.get("progress", True))
    n_views = method.n_global + method.n_local
    kill_epoch = _test_kill_epoch(rank, world)
    t_run = time.perf_counter()
    for epoch in range(start_epoch, tcfg.epochs):
        model.train()
        shards = epoch_shards(cfg.seed, epoch, n_images, steps_per_epoch, world, batch)[:, rank]
        view_rng = np.random.default_rng([cfg.seed, epoch, rank, 1])
        method.on_epoch_start(EpochData(epoch, train_images, stats["mean"], stats["std"], device, comm))
        loss_sum = torch.zeros((), dtype=torch.float64)
        t0 = time.perf_counter()
        for i in range(steps_per_epoch):
            _maybe_kill(kill_epoch, epoch, i, steps_per_epoch)
            step = epoch * steps_per_epoch + i
            idx = np.sort(shards[i])
            ctx = StepContext(epoch, step, total_steps, steps_per_epoch, indices=torch.from_numpy(idx).to(device),
                              comm=comm)
            views = source.views(idx, method.n_global, method.n_local, view_rng)
            set_lr(optimizer, lr_at(step, total_steps, warmup, peak_lr, tcfg.min_lr_ratio))
            loss = train_step(model, method, optimizer, views, ctx, amp)
            loss_sum += loss.double().cpu()
            if bar is not None:
                bar.update(1)
        elapsed = time.perf_counter() - t0
        mean_loss = float(dist.all_reduce_mean_nograd(loss_sum)) / steps_per_epoch
        row = {"epoch": epoch, "loss": mean_loss, "lr": optimizer.param_groups[0]["lr"],
               "views_per_s": steps_per_epoch * batch * world * n_views / elapsed, "epoch_s": elapsed}
        if monitor is not None and ((epoch + 1) % every == 0 or epoch == tcfg.epochs - 1):
            row["val_knn_top1"] = monitor(method.backbone, device)
        history.append(row)
        if live is not None:
            _log_epoch(live, row)
        last = epoch == tcfg.epochs - 1
        if last or (epoch + 1) % tcfg.checkpoint_every == 0:
            with tempfile.TemporaryDirectory() as tmp:
                if rank == 0:
                    save_state(Path(tmp), method, optimizer, epoch + 1, history)
                    if last:
                        save_encoder(Path(tmp), method, stats)
                ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)
        else:
            ray.train.report(row)
    if bar is not None:
        bar.close()
    if live is not None:
        live.end()
    replicas = _replica_report(method, world)
    if rank != 0:
        return None
    done = history[start_epoch:] if start_epoch < tcfg.epochs else history[-1:]
    views = sum(r["views_per_s"] * r["epoch_s"] for r in done)
    secs = sum(r["epoch_s"] for r in done)
    return {"start_epoch": start_epoch, "epochs": tcfg.epochs, "final_loss": history[-1]["loss"],
            "views_per_s": views / secs if secs > 0 else math.nan, "train_s": time.perf_counter() - t_run,
            "effective_lr": peak_lr, "effective_batch": world * batch, "workers": world,
            "steps_per_epoch": steps_per_epoch, "pid": os.getpid(), **replicas}
