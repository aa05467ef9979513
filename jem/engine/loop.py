"""The one training loop, run by every Ray Train worker. Read it top to bottom.

:func:`train_worker` sets the worker up (:func:`setup`: device, data source, model, optimizer,
schedule), resumes from the last checkpoint, then runs the epochs: :func:`run_epoch` trains one,
the :class:`~jem.engine.monitor.Monitor` watches it and :func:`~jem.engine.checkpoint.report_epoch`
reports it to Ray Train with a checkpoint every ``train.checkpoint_every`` epochs. Its parts:
:mod:`~jem.engine.sources` (the data), :mod:`~jem.engine.step` (one optimizer step),
:mod:`~jem.engine.checkpoint`, :mod:`~jem.engine.monitor` and :mod:`~jem.engine.device`.

Data: every epoch each worker takes its own shard of a seeded permutation of the training images
(same permutation on every worker, disjoint shards), so the effective batch is
``workers x batch_size``. A source (:mod:`jem.engine.sources`) turns a batch of image ids into
normalised views with vectorised ops (no per-sample Python): with a view cache it picks
``n_global`` distinct cached views per image from the memory map (one even and one odd id for two
views: the asymmetric BYOL/VICReg pair) plus any local crops; with ``augment.views_per_image: 0``
it renders fresh views on the training device.

Speed switches: ``train.precision`` (bf16 autocast of the forward pass, loss included, as the
VICReg/Barlow Twins reference code does; ``auto`` = on GPU workers only), ``train.memory_format``
(channels_last model and views; ``auto`` = everywhere: :mod:`jem.engine.device`) and
``train.compile`` (``torch.compile`` of the backbone or of the whole step,
:func:`jem.engine.step.compile_method`; state-dict keys unchanged).

Reproducibility: model init from ``seed``; batch order and view choice from ``(seed, epoch,
rank)``; so a run resumed from an epoch-``e`` checkpoint replays the same data as an
uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jem import dist
from jem.config import Config, TrainConfig, parse_config
from jem.engine.checkpoint import report_epoch, resume
from jem.engine.device import configure_threads, speed_settings, worker_device
from jem.engine.monitor import Monitor, replica_report
from jem.engine.optim import build_optimizer, effective_lr, lr_at, set_lr
from jem.engine.sources import CachedAudio, CachedViews, DeviceAugment, StreamFeed, StreamViews, epoch_shards, make_source
from jem.engine.step import compile_method, train_step
from jem.methods import get_method_class
from jem.methods.base import EpochData, Method, StepContext
from jem.models import backbone_arch
from jem.models.masking import set_mask_ratio


def build_method(cfg: Config, in_channels: int, image_size: int) -> Method:
    """The configured method; ``vit_tiny`` gets ``model.depth`` / ``model.patch_size`` in its arch (so
    the exported ``encoder.json`` rebuilds the same network) and ``model.mask_ratio`` token masking
    in training mode (the masking augmentation, usable by every method)."""
    arch = backbone_arch(cfg.model, in_channels, image_size)
    method = get_method_class(cfg.method)(arch, list(cfg.model.projector), cfg.method_params)
    if cfg.model.mask_ratio > 0:
        set_mask_ratio(method.backbone, cfg.model.mask_ratio)
    return method


@dataclass
class Worker:
    """Everything one Ray Train worker trains with, built once by :func:`setup`."""

    cfg: Config
    rank: int
    world: int
    device: torch.device
    stats: dict[str, Any]  # the prepare stage's stats.json (mean, std, num_classes)
    source: CachedViews | DeviceAugment | StreamViews
    train_images: np.ndarray  # uint8 (N, H, W, C), memory-mapped: what on_epoch_start may read
    method: Method
    model: nn.Module  # ``method``, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    comm: dist.Comm  # what methods may use to talk to the other workers
    amp: bool
    peak_lr: float
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    audio: CachedAudio | None = None  # the audio views of audio-visual methods (``method.n_audio`` > 0)
    channels_last: bool = False  # the memory format of the model and its input views
    compiled: str = "none"  # the train.compile mode that runs (after its fallbacks)


def _load_data(cfg: Config, prepared: Path, views: Path, device: torch.device, channels_last: bool,
               feed: StreamFeed | None = None) -> tuple[dict[str, Any], CachedViews | DeviceAugment | StreamViews,
                                                        np.ndarray]:
    """(stats.json, the batch source, the un-augmented training images). A streamed run (``feed``)
    reads no file: its stats come with the feed, and it has no training-image array (methods with a
    feature pass read the folder's decoded images through the feed; the others that would read the
    array are refused with ``data.pretrain_root``)."""
    stats = feed.stats if feed is not None else json.loads((prepared / "stats.json").read_text())
    mean = torch.tensor(stats["mean"], device=device).view(1, -1, 1, 1)
    std = torch.tensor(stats["std"], device=device).view(1, -1, 1, 1)
    source = make_source(cfg, prepared, views, mean, std, device, channels_last, feed)
    if feed is not None:
        return stats, source, np.zeros((0, feed.size, feed.size, feed.channels), dtype=np.uint8)
    pretrain_file = prepared / "pretrain_x.npy"
    train_images = np.load(pretrain_file if pretrain_file.exists() else prepared / "train_x.npy", mmap_mode="r")
    return stats, source, train_images


def _build_model(cfg: Config, source: CachedViews | DeviceAugment | StreamViews, device: torch.device, world: int,
                 channels_last: bool) -> tuple[Method, nn.Module, str]:
    """The seeded method on ``device`` (channels_last, compiled backbone, SyncBatchNorm as configured),
    the module to call (the method itself, its compiled form, or its DDP wrapper on several workers)
    and the ``train.compile`` mode that runs (after fallbacks)."""
    tcfg = cfg.train
    torch.manual_seed(cfg.seed)
    method = build_method(cfg, source.channels, source.size).to(device)
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    model, compiled = compile_method(method, tcfg.compile, world)  # ``step``: the compiled method; else ``method``
    if tcfg.sync_bn and world > 1:
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(method, device_ids=[device.index] if tcfg.use_gpu else None)
    return method, model, compiled


def _schedule(tcfg: TrainConfig, n_images: int, world: int) -> tuple[int, int, int]:
    """(steps per epoch, total steps, warmup steps) of ``world`` workers sharing ``n_images``."""
    steps_per_epoch = n_images // (world * tcfg.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(f"train.batch_size = {tcfg.batch_size} x {world} worker(s) exceeds the {n_images} training "
                         "images; lower train.batch_size")
    total_steps = steps_per_epoch * tcfg.epochs
    return steps_per_epoch, total_steps, min(tcfg.warmup_epochs * steps_per_epoch, total_steps // 2)


def setup(cfg: Config, rank: int, world: int, prepared: Path, views: Path, feed: StreamFeed | None = None) -> Worker:
    """Device and threads, data, model, optimizer and learning-rate schedule of worker ``rank``
    (``feed``: this worker's share of the ``data.pretrain_root`` stream, when it is set)."""
    tcfg = cfg.train
    configure_threads(tcfg.cpus_per_worker)
    device = worker_device(tcfg)
    amp, channels_last = speed_settings(tcfg, device)
    stats, source, train_images = _load_data(cfg, prepared, views, device, channels_last, feed)
    method, model, compiled = _build_model(cfg, source, device, world, channels_last)
    comm = dist.current_comm()
    peak_lr = effective_lr(tcfg, world)
    optimizer = build_optimizer(method, tcfg, peak_lr)
    steps_per_epoch, total_steps, warmup_steps = _schedule(tcfg, source.num_images, world)
    audio = CachedAudio(views, device) if method.n_audio else None
    return Worker(cfg, rank, world, device, stats, source, train_images, method, model, optimizer, comm, amp,
                  peak_lr, steps_per_epoch, total_steps, warmup_steps, audio, channels_last, compiled)


def run_epoch(w: Worker, epoch: int, monitor: Monitor) -> dict[str, float]:
    """Train one epoch on this worker's shard; returns its row (mean loss over all workers, last
    learning rate, throughput, seconds)."""
    if isinstance(w.source, StreamViews):
        return run_stream_epoch(w, w.source, epoch, monitor)
    cfg, method, steps = w.cfg, w.method, w.steps_per_epoch
    w.model.train()
    shards = epoch_shards(cfg.seed, epoch, w.source.num_images, steps, w.world, cfg.train.batch_size)[:, w.rank]
    view_rng = np.random.default_rng([cfg.seed, epoch, w.rank, 1])
    method.on_epoch_start(EpochData(epoch, w.train_images, w.stats["mean"], w.stats["std"], w.device, w.comm,
                                     w.steps_per_epoch))
    loss_sum = torch.zeros((), dtype=torch.float64)
    t0 = time.perf_counter()
    for i in range(steps):
        step = epoch * steps + i
        idx = np.sort(shards[i])
        ctx = StepContext(epoch, step, w.total_steps, steps, indices=torch.from_numpy(idx).to(w.device), comm=w.comm)
        views = w.source.views(idx, method.n_global, method.n_local, view_rng)
        if w.audio is not None:  # audio-visual methods: audio views after the image views
            views += w.audio.views(idx, method.n_audio, view_rng)
        set_lr(w.optimizer, lr_at(step, w.total_steps, w.warmup_steps, w.peak_lr, cfg.train.min_lr_ratio))
        loss = train_step(w.model, method, w.optimizer, views, ctx, w.amp)
        loss_sum += loss.double().cpu()
        monitor.step()
    elapsed = time.perf_counter() - t0
    mean_loss = float(dist.all_reduce_mean_nograd(loss_sum)) / steps
    n_views = method.n_global + method.n_local
    return {"epoch": epoch, "loss": mean_loss, "lr": w.optimizer.param_groups[0]["lr"],
            "views_per_s": steps * cfg.train.batch_size * w.world * n_views / elapsed, "epoch_s": elapsed}


def _all_workers(flag: bool) -> bool:
    """Whether ``flag`` holds on every worker (a stream's workers end an epoch together: DDP needs
    the same number of steps on each)."""
    return float(dist.all_reduce_mean_nograd(torch.tensor(float(flag), dtype=torch.float64))) == 1.0


def run_stream_epoch(w: Worker, source: StreamViews, epoch: int, monitor: Monitor) -> dict[str, float]:
    """One epoch on the ``data.pretrain_root`` stream: one pass over the folder. Steps run while every
    worker has a full batch, at most the planned ``steps_per_epoch`` (which keeps the learning-rate
    schedule's step numbering); then each worker reads the rest of its share, so the files that did
    not decode are all counted (``skipped_files``: summed over workers, per pass; ``stream_images``:
    the images trained on in this pass). ``StepContext.indices`` are the batch's file indices
    (positions in the manifest's file list); ``on_epoch_start`` gets the stream's feature pass
    (:meth:`~jem.engine.sources.StreamViews.image_batches`) when the method has one."""
    cfg, method = w.cfg, w.method
    w.model.train()
    feature_pass = source.image_batches if source.feed.plain is not None else None
    method.on_epoch_start(EpochData(epoch, w.train_images, w.stats["mean"], w.stats["std"], w.device, w.comm,
                                     w.steps_per_epoch, stream_files=source.num_images, stream=feature_pass))
    loss_sum = torch.zeros((), dtype=torch.float64)
    batches = source.epoch(cfg.train.batch_size)
    done = 0
    t0 = time.perf_counter()
    for i in range(w.steps_per_epoch):
        got = next(batches, None)
        if not _all_workers(got is not None):
            break
        assert got is not None
        idx, arrays = got
        step = epoch * w.steps_per_epoch + i
        ctx = StepContext(epoch, step, w.total_steps, w.steps_per_epoch, indices=torch.from_numpy(idx).to(w.device),
                          comm=w.comm)
        set_lr(w.optimizer, lr_at(step, w.total_steps, w.warmup_steps, w.peak_lr, cfg.train.min_lr_ratio))
        loss = train_step(w.model, method, w.optimizer, source.to_views(arrays), ctx, w.amp)
        loss_sum += loss.double().cpu()
        monitor.step()
        done += 1
    elapsed = time.perf_counter() - t0
    for _ in batches:  # the rest of this worker's share: one whole pass, every bad file counted
        pass
    skipped = float(dist.all_reduce_mean_nograd(torch.tensor(float(source.skipped), dtype=torch.float64))) * w.world
    if done == 0:
        raise ValueError(f"the data.pretrain_root stream gave no full batch of {cfg.train.batch_size} images per worker "
                         f"in epoch {epoch} ({skipped:.0f} of its files did not decode); lower train.batch_size")
    mean_loss = float(dist.all_reduce_mean_nograd(loss_sum)) / done
    n_views = method.n_global + method.n_local
    return {"epoch": epoch, "loss": mean_loss, "lr": w.optimizer.param_groups[0]["lr"],
            "views_per_s": done * cfg.train.batch_size * w.world * n_views / elapsed, "epoch_s": elapsed,
            "steps": done, "skipped_files": skipped, "stream_images": done * cfg.train.batch_size * w.world}


def train_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train worker entry point. ``config``: {"params": raw params mapping, "prepared": dir,
    "views": dir, "live": dvclive dir or None, "progress": "bar" | "lines" | "off", and with
    ``data.pretrain_root`` "stream": {"files", "columns", "size", "channels", "stats", "features"}}.
    Returns the run summary on rank 0."""
    import ray.train

    cfg = parse_config(config["params"])
    if config.get("cpus_per_worker"):  # what the trainer reserved per worker (``auto`` resolved by the driver)
        cfg = replace(cfg, train=replace(cfg.train, cpus_per_worker=float(config["cpus_per_worker"])))
    tctx = ray.train.get_context()
    feed = None
    if config.get("stream"):  # data.pretrain_root: this worker's share of the Ray Data stream
        shard = ray.train.get_dataset_shard("train")
        meta = config["stream"]
        plain = ray.train.get_dataset_shard("features") if meta.get("features") else None  # the feature pass
        feed = StreamFeed(lambda n: shard.iter_batches(batch_size=n, batch_format="numpy", prefetch_batches=1),
                          int(meta["files"]), tuple(meta["columns"]), int(meta["size"]), int(meta["channels"]),
                          dict(meta["stats"]),
                          None if plain is None else
                          lambda n: plain.iter_batches(batch_size=n, batch_format="numpy", prefetch_batches=1))
    w = setup(cfg, tctx.get_world_rank(), tctx.get_world_size(), Path(config["prepared"]), Path(config["views"]),
              feed)
    start_epoch, history = resume(w.method, w.optimizer)
    epochs, every = cfg.train.epochs, cfg.train.checkpoint_every
    monitor = Monitor.for_rank(w.rank, cfg, config, w.stats, history, w.total_steps, start_epoch * w.steps_per_epoch)
    t_run = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        row = run_epoch(w, epoch, monitor)
        monitor.end_epoch(row, epoch, w.method.backbone, w.device)
        history.append(row)
        last = epoch == epochs - 1
        report_epoch(row, epoch + 1, rank=w.rank, save=last or (epoch + 1) % every == 0, final=last,
                     method=w.method, optimizer=w.optimizer, history=history, stats=w.stats)
    monitor.close()
    replicas = replica_report(w.method, w.world)
    if w.rank != 0:
        return None
    return _summary(w, history, start_epoch, time.perf_counter() - t_run) | replicas


def _summary(w: Worker, history: list[dict[str, float]], start_epoch: int, train_s: float) -> dict[str, Any]:
    """Rank 0's run summary: throughput over the epochs this run trained (the last epoch's when it
    resumed a finished run)."""
    epochs = w.cfg.train.epochs
    done = history[start_epoch:] if start_epoch < epochs else history[-1:]
    n_views = sum(r["views_per_s"] * r["epoch_s"] for r in done)
    secs = sum(r["epoch_s"] for r in done)
    stream = {}
    if isinstance(w.source, StreamViews):  # per pass over the folder (the last epoch's)
        stream = {"stream_files": w.source.num_images, "skipped_files": int(history[-1]["skipped_files"]),
                  "stream_images": int(history[-1]["stream_images"]), "stream_max_rows_held": w.source.max_rows_held}
    return stream | {"start_epoch": start_epoch, "epochs": epochs, "final_loss": history[-1]["loss"],
            "views_per_s": n_views / secs if secs > 0 else math.nan, "train_s": train_s,
            "effective_lr": w.peak_lr, "effective_batch": w.world * w.cfg.train.batch_size, "workers": w.world,
            "steps_per_epoch": w.steps_per_epoch, "pid": os.getpid(),
            # what actually ran (``auto`` resolved): the settings a throughput number belongs to
            "precision": "bf16" if w.amp else "fp32", "memory_format": "channels_last" if w.channels_last else "contiguous",
            "threads": torch.get_num_threads(), "compile": w.compiled, "device": w.device.type}
