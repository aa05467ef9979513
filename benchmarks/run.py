"""End-to-end pretraining throughput: jem's data paths against a peer-style pipeline, side by side.

    python -m benchmarks.run --dataset digits --methods all           # CPU, this machine
    python -m benchmarks.run --dataset fashion-mnist --methods all
    python -m benchmarks.run --preset gpu                              # one GPU: ResNet-18, 32 px

For every method (default: all registered) and every pipeline it trains the same model with the
same loss, optimizer and batch size through the training loop's own step
(:func:`jem.engine.step.train_step`) and counts views/s end to end: data, augmentation, forward,
backward, optimizer step. The pipelines:

* ``jem-cache``: the CPU path, :class:`~jem.engine.sources.CachedViews` over a view cache built
  beforehand (``augment.views_per_image`` = K; its one-off build time is reported separately);
* ``jem-device``: :class:`~jem.engine.sources.DeviceAugment`, batched augmentation on the
  training device (``augment.views_per_image: 0``, the GPU path);
* ``reference``: per-image torchvision v2 transforms of the same recipes in a DataLoader with
  worker processes (:mod:`benchmarks.reference`), as the peers do.

All pipelines of a method live in this one process and are measured interleaved: each of
``--repeats`` rounds runs every pipeline (rotating the order) for ``--warmup`` untimed steps
(long enough to drain the reference loader's prefetch queue) and ``--steps`` timed steps; the
table reports medians. Peak RSS (this process + loader workers, sampled every 20 ms during the
timed steps) and peak GPU memory (``torch.cuda.max_memory_allocated``) are per pipeline; on a GPU,
MFU = views/s x backbone training FLOPs per view / the device's peak bf16 FLOP/s.
Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from benchmarks.common import (
    DATASETS,
    SYNTHETIC,
    jem_batches,
    load_data,
    machine,
    merge,
    method_config,
    parse_sets,
    views_needed,
)
from benchmarks.reference import reference_loader
from jem.augment.cache import ViewCache, build_view_cache
from jem.config import Config, to_dict
from jem.engine.device import configure_threads, speed_settings
from jem.engine.loop import build_method
from jem.engine.optim import build_optimizer, effective_lr, lr_at, set_lr
from jem.engine.sources import CachedViews, DeviceAugment
from jem.engine.step import compile_method, train_step
from jem.methods import image_methods
from jem.methods.base import EpochData, StepContext
from jem.models import build_backbone

PIPELINES = ("jem-cache", "jem-device", "reference")
REFERENCE = "reference"
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "4090": 165.0}
PRESETS: dict[str, dict[str, Any]] = {
    "gpu": {"dataset": SYNTHETIC, "device": "cuda", "batch_size": 512, "steps": 50, "warmup": 10,
            "pipelines": "jem-device,reference",
            "sets": ["model.backbone=resnet18", "augment.view_a.flip_p=0.5", "augment.view_b.flip_p=0.5"]},
}


class ProcessMonitor:
    """Peak resident memory of this process plus its children (loader workers), sampled in a thread,
    and their CPU time (a load-independent cost: CPU-seconds spent per view)."""

    def __init__(self, period: float = 0.02) -> None:
        self.proc, self.period, self.peak = psutil.Process(), period, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def current(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:  # a worker that just exited
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.peak = max(self.peak, self.current())

    def __enter__(self) -> ProcessMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        self.peak = self.current()

    def cpu_seconds(self) -> float:
        """User + system CPU time of this process and its live children so far."""
        total = 0.0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def pss(self) -> int:
        """Proportional set size of this process plus children now (shared pages split between
        them; slow to read, so not sampled)."""
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += getattr(p.memory_full_info(), "pss", 0)
            except psutil.Error:
                pass
        return total


class Runner:
    """One pipeline training one method: its own model and optimizer, fed by its own batch stream,
    stepped like the training loop (lr schedule, ``on_epoch_start`` at each new epoch, train_step)."""

    def __init__(self, cfg: Config, batches: Iterator[tuple[list[torch.Tensor], np.ndarray, int]],
                 channels: int, size: int, n_images: int, data_images: np.ndarray, mean: list[float],
                 std: list[float], device: torch.device, total_steps: int, warmup_steps: int | None = None) -> None:
        self.amp, channels_last = speed_settings(cfg.train, device)
        torch.manual_seed(cfg.seed)  # the same initial weights for every pipeline
        self.method = build_method(cfg, channels, size).to(device)
        if channels_last:
            self.method = self.method.to(memory_format=torch.channels_last)
        self.model, _ = compile_method(self.method, cfg.train.compile)  # train.compile: none | backbone | step
        self.method.train()
        self.epoch_data = (data_images, mean, std, device)
        self.peak_lr = effective_lr(cfg.train, 1)
        self.optimizer = build_optimizer(self.method, cfg.train, self.peak_lr)
        self.batches, self.device, self.total = batches, device, total_steps
        self.steps_per_epoch = max(1, n_images // cfg.train.batch_size)
        self.warmup = total_steps // 4 if warmup_steps is None else warmup_steps
        self.step, self.epoch = 0, -1

    @property
    def n_views(self) -> int:
        return self.method.n_global + self.method.n_local

    def run(self, steps: int) -> None:
        for _ in range(steps):
            views, idx, epoch = next(self.batches)
            if epoch != self.epoch:
                self.epoch = epoch
                self.method.on_epoch_start(EpochData(epoch, *self.epoch_data))
            ctx = StepContext(epoch, self.step, self.total, self.steps_per_epoch,
                              indices=torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(self.device))
            set_lr(self.optimizer, lr_at(min(self.step, self.total - 1), self.total, self.warmup, self.peak_lr))
            train_step(self.model, self.method, self.optimizer, views, ctx, self.amp)
            self.step += 1


def reference_stream(loader: Any, device: torch.device, channels_last: bool
                     ) -> Iterator[tuple[list[torch.Tensor], np.ndarray, int]]:
    """A peer's ``for epoch: for views, idx in loader``, views moved to the device."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    epoch = 0
    while True:
        for views, idx in loader:
            yield [v.to(device, non_blocking=True).contiguous(memory_format=fmt) for v in views], idx.numpy(), epoch
        epoch += 1


def train_gflop_per_view(cfg: Config, channels: int, size: int) -> float:
    """Backbone forward + backward GFLOP per view (torch's FLOP counter, batch of 2 on the CPU)."""
    from torch.utils.flop_counter import FlopCounterMode

    net, _ = build_backbone({"backbone": cfg.model.backbone, "width": cfg.model.width, "in_channels": channels,
                             "image_size": size})
    x = torch.randn(2, channels, size, size)
    with FlopCounterMode(display=False) as counter:
        net(x).sum().backward()
    return counter.get_total_flops() / 2 / 1e9


def peak_tflops(device: torch.device, given: float) -> float | None:
    if given > 0:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_method(name: str, raws: dict[str, dict[str, Any]], k_views: int, args: argparse.Namespace, data: Any,
                 sources: dict[str, CachedViews | DeviceAugment], device: torch.device, mon: ProcessMonitor,
                 tflops: float | None) -> dict[str, Any]:
    """Measure every pipeline on method ``name`` (``raws``: params of the jem pipelines and of the
    reference); failures are reported, not raised."""
    row: dict[str, Any] = {"method": name, "pipelines": {}, "ratio": {}, "paired_ratio": {}, "cpu_cost_ratio": {},
                           "error": None}
    runners: dict[str, Runner] = {}
    try:
        cfgs = {k: method_config(raw, name, k_views) for k, raw in raws.items()}
        cfg = cfgs[REFERENCE]
        total = 1 + args.repeats * (args.warmup + args.steps) + args.warmup
        channels, size = int(data.train_x.shape[3]), int(data.train_x.shape[1])
        n = len(data.train_x)
        probe = build_method(cfg, channels, size)  # n_global / n_local of this method
        ng, nl = probe.n_global, probe.n_local
        del probe
        for kind in args.pipelines:
            if kind == REFERENCE:
                amp, cl = speed_settings(cfg.train, device)
                loader = reference_loader(data.train_x, cfg.augment, ng, nl, data.mean, data.std,
                                          cfg.train.batch_size, args.loader_workers, device.type == "cuda", cfg.seed)
                batches = reference_stream(loader, device, cl)
            else:
                batches = jem_batches(sources[kind], n, cfg.train.batch_size, ng, nl, cfg.seed)
            runners[kind] = Runner(cfgs["jem" if kind != REFERENCE else REFERENCE], batches, channels, size, n,
                                   data.train_x, data.mean, data.std, device, total)
            runners[kind].run(1)  # builds, compiles, starts the loader workers: a failure shows here
        rounds: dict[str, list[float]] = {k: [] for k in runners}
        cpu_ms: dict[str, list[float]] = {k: [] for k in runners}
        peaks: dict[str, dict[str, float]] = {k: {"rss": 0.0, "pss": 0.0, "gpu": 0.0} for k in runners}
        kinds = list(runners)
        batch = cfg.train.batch_size
        for r in range(args.repeats):
            for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
                runner = runners[kind]
                warm = max(args.warmup, 2 * args.loader_workers + 1) if kind == REFERENCE else args.warmup
                runner.run(warm)
                _sync(device)
                mon.reset()
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                c0, t0 = mon.cpu_seconds(), time.perf_counter()
                runner.run(args.steps)
                _sync(device)
                dt, cpu = time.perf_counter() - t0, mon.cpu_seconds() - c0
                views = args.steps * batch * runner.n_views
                rounds[kind].append(views / dt)
                cpu_ms[kind].append(1000 * cpu / views)
                peaks[kind]["rss"] = max(peaks[kind]["rss"], max(mon.peak, mon.current()) / 2**20)
                peaks[kind]["pss"] = max(peaks[kind]["pss"], mon.pss() / 2**20)
                if device.type == "cuda":
                    peaks[kind]["gpu"] = max(peaks[kind]["gpu"], torch.cuda.max_memory_allocated(device) / 2**20)
                print(f"  {name:10s} {kind:10s} round {r + 1}: {rounds[kind][-1]:9.0f} views/s", flush=True)
        for kind, vals in rounds.items():
            med = statistics.median(vals)
            entry: dict[str, Any] = {"views_per_s": med, "rounds": vals,
                                     "cpu_ms_per_view": statistics.median(cpu_ms[kind]),
                                     "peak_rss_mb": peaks[kind]["rss"], "pss_mb": peaks[kind]["pss"],
                                     "views_per_step": runners[kind].n_views}
            if device.type == "cuda":
                entry["peak_gpu_mb"] = peaks[kind]["gpu"]
                entry["mfu"] = med * args.gflop_per_view * 1e9 / (tflops * 1e12) if tflops else None
            row["pipelines"][kind] = entry
        if REFERENCE in rounds:
            ref = row["pipelines"][REFERENCE]["views_per_s"]
            row["ratio"] = {k: v["views_per_s"] / ref for k, v in row["pipelines"].items() if k != REFERENCE}
            # each round's jem / reference measured minutes apart: robust to slow drifts in machine load
            row["paired_ratio"] = {k: statistics.median(a / b for a, b in zip(v, rounds[REFERENCE]))
                                   for k, v in rounds.items() if k != REFERENCE}
            # CPU-seconds per view, reference / jem: what the wall-clock ratio becomes when both
            # pipelines keep every core busy, independent of how much of a shared machine each got
            ref_cpu = row["pipelines"][REFERENCE]["cpu_ms_per_view"]
            row["cpu_cost_ratio"] = {k: ref_cpu / v["cpu_ms_per_view"] for k, v in row["pipelines"].items()
                                     if k != REFERENCE}
    except Exception as exc:  # a method under construction elsewhere must not stop the benchmark
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        print(f"  {name}: FAILED ({row['error']})", flush=True)
    finally:
        runners.clear()
        gc.collect()  # shuts the reference loader's workers down
    return row


def markdown(result: dict[str, Any]) -> str:
    s, m = result["settings"], result["machine"]
    gpu = "gpu" in m
    lines = [f"{s['dataset']} ({s['n_images']} images, {s['image_size']} px, {s['channels']} ch), {s['backbone']}, "
             f"batch {s['batch_size']}, device {s['device']} ({m.get('gpu', m['cpu'])}, {m['cpu_count']} CPUs"
             + (f", {m['cpu_capability']}{', native bf16' if m.get('cpu_native_bf16') else ''}"
                if "cpu_capability" in m else "") + "); "
             f"median of {s['repeats']} interleaved rounds of {s['steps']} steps; reference loader workers "
             f"{s['loader_workers']}, torch threads {s['threads']}; bf16 autocast jem {s['jem_bf16']} / reference "
             f"{s['reference_bf16']}, channels_last jem {s['jem_channels_last']} / reference "
             f"{s['reference_channels_last']}"
             + (f"; jem overrides {' '.join(s['jem_sets'])}" if s["jem_sets"] else ""),
             "",
             "| method | pipeline | views/s | rounds (min-max) | x reference | paired x ref | CPU ms/view "
             "| x ref (CPU cost) | peak RSS MiB | PSS MiB" + (" | peak GPU MiB | MFU |" if gpu else " |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if gpu else "")]
    for row in result["results"]:
        if row["error"]:
            lines.append(f"| {row['method']} | failed: {row['error']} |" + " |" * (9 + 2 * gpu))
            continue
        for kind, e in row["pipelines"].items():
            ratio = f"{row['ratio'][kind]:.2f}" if kind in row["ratio"] else "1"
            paired = f"{row['paired_ratio'][kind]:.2f}" if kind in row["paired_ratio"] else "1"
            cost = f"{row['cpu_cost_ratio'][kind]:.2f}" if kind in row["cpu_cost_ratio"] else "1"
            cells = [row["method"], kind, f"{e['views_per_s']:.0f}", f"{min(e['rounds']):.0f}-{max(e['rounds']):.0f}",
                     ratio, paired, f"{e['cpu_ms_per_view']:.2f}", cost, f"{e['peak_rss_mb']:.0f}",
                     f"{e['pss_mb']:.0f}"]
            if gpu:
                cells += [f"{e['peak_gpu_mb']:.0f}", f"{e['mfu']:.3f}" if e.get("mfu") is not None else "n/a"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), help="gpu: ResNet-18 (CIFAR stem) on synthetic 32x32x3 "
                    "data, batch 512, jem-device vs reference on CUDA")
    ap.add_argument("--dataset", default="digits", choices=DATASETS)
    ap.add_argument("--max-train", type=int, default=0, help="random training subset (0 = all)")
    ap.add_argument("--methods", default="all", help="'all' (every registered image method) or a comma list")
    ap.add_argument("--pipelines", default="", help=f"comma list of {', '.join(PIPELINES)} (default: all three on "
                    "CPU; jem-device and reference on CUDA)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per pipeline per round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before each timed round")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (the table shows medians)")
    ap.add_argument("--batch-size", type=int, default=0, help="0 = train.batch_size (256)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of the training "
                    "process (jem.engine.device.configure_threads; default: all CPUs, one Ray worker)")
    ap.add_argument("--loader-workers", type=int, default=os.cpu_count() or 1, help="reference DataLoader workers")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="params override, as dvc exp run -S (e.g. model.backbone=resnet18); repeatable")
    ap.add_argument("--jem-set", dest="jem_sets", action="append", default=[], metavar="KEY=VALUE",
                    help="params override for the jem pipelines only, e.g. train.precision=bf16 (the reference "
                    "keeps --set); repeatable")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="device peak bf16 TFLOP/s for MFU "
                    "(default: known from the GPU name, e.g. H100/H200 989)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None,
                    help="output stem (default benchmarks/results/<dataset>-<device>)")
    return ap


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = build_parser()
    first = ap.parse_args(argv)
    if first.preset:
        preset = dict(PRESETS[first.preset])
        preset["sets"] = preset["sets"] + first.sets
        ap.set_defaults(**preset)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    configure_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU")
    args.pipelines = ([p for p in args.pipelines.split(",") if p] if args.pipelines
                      else (["jem-device", REFERENCE] if device.type == "cuda" else list(PIPELINES)))
    if bad := set(args.pipelines) - set(PIPELINES):
        raise SystemExit(f"unknown pipeline(s) {sorted(bad)}; choose from {', '.join(PIPELINES)}")
    names = image_methods() if args.methods == "all" else [m for m in args.methods.split(",") if m]
    raw: dict[str, Any] = parse_sets(args.sets)
    raw.setdefault("seed", args.seed)
    if args.batch_size:
        raw.setdefault("train", {})["batch_size"] = args.batch_size
    out = args.out or Path("benchmarks/results") / f"{args.dataset}-{device.type}"
    out.parent.mkdir(parents=True, exist_ok=True)

    data = load_data(args.dataset, args.max_train, args.seed)
    needs = []
    for m in names:
        try:
            needs.append(views_needed(raw, m))
        except Exception:  # reported per method below
            needs.append(2)
    k_views = max([int(raw.get("augment", {}).get("views_per_image", 4) or 4), *needs])
    raw_jem = merge(raw, parse_sets(args.jem_sets))
    base = method_config(raw_jem, "vicreg", k_views)  # the jem pipelines' augmentation / model / train settings
    amp, channels_last = speed_settings(base.train, device)
    ref_amp, ref_cl = speed_settings(method_config(raw, "vicreg", k_views).train, device)
    mean_t = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
    size, channels = int(data.train_x.shape[1]), int(data.train_x.shape[3])
    args.gflop_per_view = train_gflop_per_view(base, channels, size)
    tflops = peak_tflops(device, args.peak_tflops)
    settings = {"dataset": args.dataset, "n_images": len(data.train_x), "image_size": size, "channels": channels,
                "backbone": base.model.backbone, "width": base.model.width, "batch_size": base.train.batch_size,
                "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "device": str(device),
                "jem_bf16": amp, "jem_channels_last": channels_last, "reference_bf16": ref_amp,
                "reference_channels_last": ref_cl, "compile": base.train.compile,
                "threads": args.threads, "loader_workers": args.loader_workers, "pipelines": args.pipelines,
                "views_per_image": k_views, "gflop_per_view": args.gflop_per_view, "peak_tflops": tflops,
                "sets": args.sets, "jem_sets": args.jem_sets, "augment": to_dict(base.augment)}
    result: dict[str, Any] = {"command": "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv),
                              "machine": machine(device), "settings": settings, "cache": None, "results": []}
    print(f"benchmark: {args.dataset} {settings['n_images']} x {size}px, {base.model.backbone}, batch "
          f"{base.train.batch_size}, {device}, pipelines {', '.join(args.pipelines)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="jem-bench-") as tmp:
        sources: dict[str, CachedViews | DeviceAugment] = {}
        if "jem-cache" in args.pipelines:
            t0 = time.perf_counter()
            meta = build_view_cache(data.train_x, base.augment, Path(tmp), args.seed, progress=False)
            build_s = time.perf_counter() - t0
            n_rendered = meta["num_images"] * (meta["views_per_image"] + meta["local_crops"])
            result["cache"] = {"build_s": build_s, "views_per_image": k_views, "views_rendered": n_rendered,
                               "views_per_s": n_rendered / build_s}
            print(f"view cache: {n_rendered} views in {build_s:.1f} s (one-off, not in the timings)", flush=True)
            sources["jem-cache"] = CachedViews(ViewCache(tmp), mean_t, std_t, device, channels_last)
        if "jem-device" in args.pipelines:
            sources["jem-device"] = DeviceAugment(data.train_x, base.augment, mean_t, std_t, device, channels_last)
        raws = {"jem": raw_jem, REFERENCE: raw}
        with ProcessMonitor() as mon:
            for name in names:
                result["results"].append(bench_method(name, raws, k_views, args, data, sources, device, mon, tflops))
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    table = markdown(result)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(table)
    print("\n" + table)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
