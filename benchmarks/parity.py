"""Accuracy parity: the same pretraining budget through jem's data paths and the reference pipeline,
then the same kNN evaluation.

    python -m benchmarks.parity --dataset fashion-mnist --max-train 10000 --epochs 10 --seeds 0,1

For each seed and pipeline (``jem-cache``: K cached views per image; ``jem-device``: fresh batched
views every step; ``reference``: fresh per-image torchvision views in a DataLoader) it trains the
same method from the same initial weights for the same number of steps with the training loop's
schedule (warm-up + cosine, :class:`benchmarks.run.Runner`), then scores the backbone with the
evaluate stage's protocol: weighted kNN (``eval.knn_k[0]``, ``eval.knn_temperature``) on
L2-normalised backbone features of the full test set against the pretraining images as the bank
(:func:`jem.evaluate.features.extract_features`, :func:`jem.evaluate.knn.knn_eval`). A raw-pixel
kNN is the floor. Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import DATASETS, jem_batches, load_data, machine, merge, method_config, parse_sets, views_needed
from benchmarks.reference import reference_loader
from benchmarks.run import REFERENCE, Runner, reference_stream
from jem.augment.cache import ViewCache, build_view_cache
from jem.config import Config, to_dict
from jem.engine.device import configure_threads, speed_settings
from jem.engine.loop import build_method
from jem.engine.sources import CachedViews, DeviceAugment
from jem.evaluate.features import extract_features, normalise_images
from jem.evaluate.knn import knn_eval

PIPELINES = ("jem-cache", "jem-device", REFERENCE)


def knn_top1(feats_train: np.ndarray, y_train: np.ndarray, feats_test: np.ndarray, y_test: np.ndarray,
             cfg: Config, num_classes: int) -> float:
    res = knn_eval(feats_train, y_train, feats_test, y_test, cfg.eval.knn_k[0], cfg.eval.knn_temperature, num_classes)
    return float(res["top1"])


def pretrain_and_score(kind: str, cfg: Config, data: Any, epochs: int, device: torch.device, loader_workers: int,
                       cache_dir: Path | None) -> dict[str, Any]:
    """Pretrain with pipeline ``kind`` for ``epochs`` epochs; returns kNN top-1 and timings."""
    n, size, channels = len(data.train_x), int(data.train_x.shape[1]), int(data.train_x.shape[3])
    batch = cfg.train.batch_size
    spe = n // batch
    total = spe * epochs
    warmup = min(cfg.train.warmup_epochs * spe, total // 2)
    mean_t = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
    amp, channels_last = speed_settings(cfg.train, device)
    probe = build_method(cfg, channels, size)  # n_global / n_local of the method
    ng, nl = probe.n_global, probe.n_local
    del probe
    if kind == REFERENCE:
        loader = reference_loader(data.train_x, cfg.augment, ng, nl, data.mean, data.std, batch, loader_workers,
                                  device.type == "cuda", cfg.seed)
        batches = reference_stream(loader, device, channels_last)
    else:
        source: CachedViews | DeviceAugment
        if kind == "jem-cache":
            assert cache_dir is not None
            source = CachedViews(ViewCache(cache_dir), mean_t, std_t, device, channels_last)
        else:
            source = DeviceAugment(data.train_x, cfg.augment, mean_t, std_t, device, channels_last)
        batches = jem_batches(source, n, batch, ng, nl, cfg.seed)
    runner = Runner(cfg, batches, channels, size, n, data.train_x, data.mean, data.std, device, total, warmup)
    t0 = time.perf_counter()
    runner.run(total)
    train_s = time.perf_counter() - t0
    del batches, runner.batches  # stops the reference loader's workers
    backbone = runner.method.backbone
    feats_train = extract_features(backbone, data.train_x, data.mean, data.std, device=device)
    feats_test = extract_features(backbone, data.test_x, data.mean, data.std, device=device)
    top1 = knn_top1(feats_train, data.train_y, feats_test, data.test_y, cfg, data.num_classes)
    return {"knn_top1": top1, "train_s": train_s, "steps": total, "views_per_s": total * batch * (ng + nl) / train_s,
            "bf16": amp, "channels_last": channels_last}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.parity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist", choices=[d for d in DATASETS if d != "cifar-synthetic"])
    ap.add_argument("--max-train", type=int, default=10000, help="random pretraining subset (0 = all)")
    ap.add_argument("--method", default="vicreg")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", default="0", help="comma list; each seed is a full set of runs")
    ap.add_argument("--pipelines", default=",".join(PIPELINES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--loader-workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="params override for every pipeline (as dvc exp run -S); repeatable")
    ap.add_argument("--jem-set", dest="jem_sets", action="append", default=[], metavar="KEY=VALUE",
                    help="params override for the jem pipelines only, e.g. train.precision=bf16 (the reference keeps "
                         "--set); repeatable")
    ap.add_argument("--out", type=Path, default=None, help="output stem (default benchmarks/results/parity-<dataset>)")
    args = ap.parse_args(argv)
    configure_threads(args.threads)
    device = torch.device(args.device)
    kinds = [k for k in args.pipelines.split(",") if k]
    if bad := set(kinds) - set(PIPELINES):
        raise SystemExit(f"unknown pipeline(s) {sorted(bad)}; choose from {', '.join(PIPELINES)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    raw = parse_sets(args.sets)
    raw_jem = merge(raw, parse_sets(args.jem_sets))
    out = args.out or Path("benchmarks/results") / f"parity-{args.dataset}"
    out.parent.mkdir(parents=True, exist_ok=True)
    k_views = max(int(raw.get("augment", {}).get("views_per_image", 4) or 4), views_needed(raw, args.method))
    data = load_data(args.dataset, args.max_train, 0)
    base = method_config(raw, args.method, k_views)
    pixels = lambda x: normalise_images(x, data.mean, data.std).flatten(1).numpy()  # noqa: E731
    floor = knn_top1(pixels(data.train_x), data.train_y, pixels(data.test_x), data.test_y, base, data.num_classes)
    result: dict[str, Any] = {
        "command": "python -m benchmarks.parity " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(device),
        "settings": {"dataset": args.dataset, "n_pretrain": len(data.train_x), "n_test": len(data.test_x),
                     "method": args.method, "epochs": args.epochs, "seeds": seeds, "pipelines": kinds,
                     "views_per_image": k_views, "knn_k": base.eval.knn_k[0], "sets": args.sets,
                     "jem_sets": args.jem_sets,
                     "model": to_dict(base.model), "train": to_dict(base.train), "augment": to_dict(base.augment)},
        "raw_pixels_knn_top1": floor, "runs": []}
    print(f"parity: {args.method} on {args.dataset} ({len(data.train_x)} pretraining images), {args.epochs} epochs, "
          f"seeds {seeds}; raw-pixel kNN top-1 {floor:.4f}", flush=True)
    for seed in seeds:
        cfg = method_config({**raw, "seed": seed}, args.method, k_views)
        cfg_jem = method_config({**raw_jem, "seed": seed}, args.method, k_views)
        with tempfile.TemporaryDirectory(prefix="jem-parity-") as tmp:
            cache_dir = None
            if "jem-cache" in kinds:
                t0 = time.perf_counter()
                build_view_cache(data.train_x, cfg_jem.augment, Path(tmp), seed, progress=False)
                print(f"  seed {seed}: view cache built in {time.perf_counter() - t0:.0f} s", flush=True)
                cache_dir = Path(tmp)
            for kind in kinds:
                run_cfg = cfg if kind == REFERENCE else cfg_jem
                run = pretrain_and_score(kind, run_cfg, data, args.epochs, device, args.loader_workers, cache_dir)
                run.update(seed=seed, pipeline=kind)
                result["runs"].append(run)
                out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")  # progress so far
                print(f"  seed {seed} {kind:10s} kNN top-1 {run['knn_top1']:.4f}  ({run['train_s']:.0f} s, "
                      f"{run['views_per_s']:.0f} views/s)", flush=True)
    summary = {}
    for kind in kinds:
        vals = [r["knn_top1"] for r in result["runs"] if r["pipeline"] == kind]
        summary[kind] = {"mean": statistics.mean(vals), "per_seed": vals}
    if REFERENCE in summary:
        for kind in kinds:
            summary[kind]["minus_reference_points"] = 100 * (summary[kind]["mean"] - summary[REFERENCE]["mean"])
    result["summary"] = summary
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    lines = [f"{args.method} on {args.dataset}: {len(data.train_x)} pretraining images, {args.epochs} epochs "
             f"(batch {base.train.batch_size}), seeds {seeds}; kNN k={base.eval.knn_k[0]} on {len(data.test_x)} test "
             f"images; raw pixels {100 * floor:.2f}"
             + (f"; jem overrides {' '.join(args.jem_sets)}" if args.jem_sets else "")
             + (f"; overrides {' '.join(args.sets)}" if args.sets else ""), "",
             "| pipeline | kNN top-1 (mean) | per seed | vs reference (points) |", "|---|---:|---|---:|"]
    for kind, s in summary.items():
        per = ", ".join(f"{100 * v:.2f}" for v in s["per_seed"])
        diff = f"{s['minus_reference_points']:+.2f}" if "minus_reference_points" in s else "n/a"
        lines.append(f"| {kind} | {100 * s['mean']:.2f} | {per} | {diff} |")
    table = "\n".join(lines) + "\n"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(table)
    print("\n" + table)
    return result


if __name__ == "__main__":
    main()
