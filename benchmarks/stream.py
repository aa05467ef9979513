"""The uncurated stream (``data.pretrain_root``): peak memory against the folder's size, and
throughput against the view cache (issue 17's targets).

1. Memory: generated folders of 64-px PNGs (default 5,000 and 20,000 images); for each, the stage
   scripts ``prepare``, ``stream`` and ``pretrain`` run as subprocesses with the same params, and
   the peak resident memory of each stage's process tree (the stage, the Ray instance it starts and
   its workers; sampled every 20 ms) is recorded. Target: the peak grows by less than 30% when the
   folder grows 4x.
2. Throughput: the prepared training images of the labelled set written out as PNGs, so the stream
   and the view cache train on the same images; ``views_per_s`` of the pretrain stage through the
   stream against the same run through the view cache (``augment`` stage first), and against
   on-device augmentation (``augment.views_per_image: 0``: fresh views every epoch, as the stream).
   Target: within 20% of the view cache. ``views_per_s`` is over each whole epoch, so the stream's
   start-up per pass (Ray Data tasks, their imports) counts against it.

Peak memory is the sum of the resident sets of the stage's process tree: Ray's processes map the
shared object store, so the absolute numbers over-count; compare the two sizes, not with other
benchmarks.

Evaluation runs on ``--dataset`` (digits by default: the stream is decoded to its side and
channels). Runs in a scratch folder; the repository's own outputs are not touched. One JSON line
per run, and everything in ``--out``:

    python -m benchmarks.stream --out /tmp/stream-bench.json            # 15-25 min on 2 CPUs (estimate)
    python -m benchmarks.stream --sizes 300 1200 --epochs 1 --out /tmp/s.json   # smoke: 3 min 49 s measured
    python -m benchmarks.stream --parts costs --dataset fashion-mnist --out /tmp/c.json   # 3. alone

3. Costs: CPU milliseconds per view, on one thread in one process, of what only the stream does
   every epoch (decode a file and render its views, as the Ray Data tasks do) and of the training
   step. With every core busy the stream reaches at most ``train / (train + render)`` of the view
   cache's throughput before any Ray Data overhead: the bound the throughput target is read against.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from benchmarks.run import ProcessMonitor

ROOT = Path(__file__).resolve().parents[1]


def write_folder(root: Path, n: int, side: int, seed: int) -> None:
    """``n`` smooth random RGB PNGs of ``side`` px (blurred noise: sizes like photos', not like noise),
    100 per sub-folder."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((side, side), Image.Resampling.BILINEAR)
        folder = root / f"{i // 100:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        (folder / f"{i:06d}.png").write_bytes(buf.getvalue())


def write_prepared_as_pngs(prepared: Path, root: Path) -> int:
    """The prepared training images as PNG files (the same images the view cache is built from)."""
    x = np.load(prepared / "train_x.npy")
    root.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(x):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(root / f"{i:05d}.png")
    return len(x)


def stage(args: list[str], work: Path) -> tuple[float, float]:
    """Run ``python stages/<args>`` from the repository root; (peak RSS of its process tree in MB, s)."""
    t0 = time.perf_counter()
    with ProcessMonitor() as mon:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env={**_env(), "DVC_ROOT": str(work)})
        out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({proc.returncode}):\n{out[-3000:]}")
    return mon.peak / 2**20, time.perf_counter() - t0


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def params_file(work: Path, base: dict[str, Any], **sets: Any) -> Path:
    raw = json.loads(json.dumps(base))
    for key, value in sets.items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path = work / f"params-{abs(hash(json.dumps(sets, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def pipeline(params: Path, work: Path, tag: str, stream: bool, views: bool) -> dict[str, Any]:
    """prepare (+ augment) (+ stream) + pretrain with ``params``; peaks and the pretrain summary."""
    d = work / tag
    prepared, cache, manifest = d / "prepared", d / "views", d / "manifest.json"
    row: dict[str, Any] = {"run": tag}
    row["prepare_peak_mb"], row["prepare_s"] = stage(["stages/prepare.py", "--params", str(params),
                                                     "--out", str(prepared)], work)
    if views:
        row["augment_peak_mb"], _ = stage(["stages/augment.py", "--params", str(params), "--prepared", str(prepared),
                                           "--out", str(cache)], work)
    if stream:
        row["stream_peak_mb"], row["stream_s"] = stage(["stages/stream.py", "--params", str(params),
                                                        "--out", str(manifest)], work)
    row["pretrain_peak_mb"], row["pretrain_s"] = stage(
        ["stages/pretrain.py", "--params", str(params), "--prepared", str(prepared), "--views", str(cache),
         "--stream", str(manifest), "--out", str(d / "encoder"), "--metrics", str(d / "pretrain.json"),
         "--full", str(d / "pretrain-full.json"), "--live", str(d / "live")], work)
    full = json.loads((d / "pretrain-full.json").read_text())
    curve = (d / "live" / "plots" / "metrics" / "train" / "views_per_s.tsv").read_text().split()
    row["last_epoch_views_per_s"] = float(curve[-1])  # after the stream's start-up (with --epochs >= 2)
    row.update({k: full.get(k) for k in ("views_per_s", "final_loss", "stream_files", "skipped_files",
                                        "stream_images", "stream_max_rows_held", "steps_per_epoch")})
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs=2, default=[5000, 20000], help="the two folder sizes (images)")
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--max-train", type=int, default=0, help="data.max_train of the labelled set (0: all)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--parts", default="memory,throughput,costs",
                    help="which measurements, comma-separated: memory, throughput, costs")
    ap.add_argument("--rounds", type=int, default=1, help="throughput: interleaved cache/stream rounds")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"memory", "throughput", "costs"}:
        raise SystemExit(f"error: --parts {args.parts!r}: expected a comma-separated subset of memory,throughput,costs")
    work = args.work or Path(tempfile.mkdtemp(prefix="jem-stream-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    # one CPU per training worker in every run: on a 2-core machine the stream needs the other for
    # Ray Data's read and render tasks, and the view cache gets no more, so both train alike
    common = {"dataset": args.dataset, "data.max_train": args.max_train, "train.epochs": args.epochs,
              "train.cpus_per_worker": 1, "eval.monitor_every": 0, "ray.log_to_driver": False,
              "ray.storage": str(work / "ray")}
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"epochs": args.epochs, "side": args.side, "dataset": args.dataset}
    if "memory" in parts:
        result["memory"] = measure_memory(args, work, base, common, rows)
    if "throughput" in parts:
        result["throughput"] = measure_throughput(work, base, common, rows, args.rounds)
    if "costs" in parts:
        result["costs"] = measure_costs(work, base, args.dataset, args.max_train)
    args.out.write_text(json.dumps({"runs": rows, **result}, indent=2))


def measure_memory(args: argparse.Namespace, work: Path, base: dict[str, Any], common: dict[str, Any],
                   rows: list[dict[str, Any]]) -> dict[str, Any]:
    """1. peak memory of prepare, stream and pretrain against the folder's size."""
    for n in args.sizes:
        folder = work / f"folder-{n}"
        if not folder.exists():
            write_folder(folder, n, args.side, seed=n)
        params = params_file(work, base, **common, **{"data.pretrain_root": str(folder)})
        rows.append(pipeline(params, work, f"stream-{n}", stream=True, views=True))
    peak = [max(r["prepare_peak_mb"], r["stream_peak_mb"], r["pretrain_peak_mb"]) for r in rows[-2:]]
    memory = {"sizes": args.sizes, "peak_mb": peak, "growth": peak[1] / peak[0] - 1,
              "per_stage_peak_mb": [{k: r[k] for k in ("prepare_peak_mb", "stream_peak_mb", "pretrain_peak_mb")}
                                    for r in rows[-2:]]}
    print(json.dumps({"memory": memory}), flush=True)
    return memory


def measure_throughput(work: Path, base: dict[str, Any], common: dict[str, Any],
                       rows: list[dict[str, Any]], rounds: int = 1) -> dict[str, Any]:
    """2. throughput on the same small set: the view cache against the stream of its own images as PNGs,
    ``rounds`` times interleaved (cache, stream, cache, stream, ...), so that a load change on a shared
    machine moves both sides of a round alike; then on-device augmentation once."""
    pairs = []
    pngs = work / "prepared-as-png"
    for r in range(rounds):
        cached = pipeline(params_file(work, base, **common), work, f"cache-{r}", stream=False, views=True)
        cached["loadavg_after"] = os.getloadavg()[0]
        if r == 0:
            write_prepared_as_pngs(work / "cache-0" / "prepared", pngs)
        streamed = pipeline(params_file(work, base, **common, **{"data.pretrain_root": str(pngs)}), work,
                            f"stream-same-set-{r}", stream=True, views=True)
        streamed["loadavg_after"] = os.getloadavg()[0]
        rows += [cached, streamed]
        pairs.append({"round": r, "cache_views_per_s": cached["views_per_s"],
                      "stream_views_per_s": streamed["views_per_s"],
                      "stream_over_cache": streamed["views_per_s"] / cached["views_per_s"],
                      "last_epoch_stream_over_cache": streamed["last_epoch_views_per_s"]
                      / cached["last_epoch_views_per_s"],
                      "loadavg_after": [cached["loadavg_after"], streamed["loadavg_after"]]})
        print(json.dumps({"round": pairs[-1]}), flush=True)
    # fresh views every epoch without Ray Data: on-device augmentation of the same prepared images
    device = pipeline(params_file(work, base, **common, **{"augment.views_per_image": 0}), work, "device",
                      stream=False, views=True)
    rows.append(device)
    speed = {"rounds": pairs, "device_views_per_s": device["views_per_s"],
             "stream_over_cache_median": statistics.median(p["stream_over_cache"] for p in pairs),
             "last_epoch_stream_over_cache_median": statistics.median(p["last_epoch_stream_over_cache"]
                                                                      for p in pairs)}
    print(json.dumps({"throughput": speed}), flush=True)
    return speed


def _cpu_ms_per_view(fn: Any, views: int, repeats: int = 3) -> float:
    """Median CPU time (this process, 1 torch thread) of ``fn()`` per view, in ms."""
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return 1000 * sorted(times)[len(times) // 2] / views


def measure_costs(work: Path, base: dict[str, Any], dataset: str, max_train: int) -> dict[str, Any]:
    """3. why the stream cannot match the view cache on a machine whose cores are all busy: the CPU
    cost per view of what only the stream does every epoch (decode a file, render its views:
    :func:`jem.engine.stream.render_batch`, in :data:`~jem.engine.stream.RENDER_ROWS`-row batches
    as Ray Data calls it) against the training step's (forward, loss, backward, LARS; the shipped
    method and model, batch 256, the default layout), both on one thread in this process. With
    both pipelines keeping the same cores busy, the stream reaches at most
    ``train / (train + render)`` of the cache's views/s, before any Ray Data overhead."""
    import torch

    from benchmarks.step import Variant
    from jem.config import parse_config
    from jem.engine.stream import RENDER_ROWS, StreamSpec, render_batch

    torch.set_num_threads(1)
    params = params_file(work, base, **{"dataset": dataset, "data.max_train": max_train})
    prepared = work / "costs" / "prepared"
    if not prepared.exists():
        stage(["stages/prepare.py", "--params", str(params), "--out", str(prepared)], work)
    pngs = work / "costs" / "png"
    n = write_prepared_as_pngs(prepared, pngs) if not pngs.exists() else len(list(pngs.glob("*.png")))
    files = sorted(pngs.glob("*.png"))[:1024]
    blobs = [np.frombuffer(f.read_bytes(), dtype=np.uint8) for f in files]
    cfg = parse_config(yaml.safe_load(params.read_text()))
    _, side, _, channels = np.load(prepared / "train_x.npy", mmap_mode="r").shape
    spec = StreamSpec.for_run(cfg, side, channels)
    n_views = spec.n_global + spec.n_local

    def render_all() -> None:
        for i in range(0, len(blobs), RENDER_ROWS):
            render_batch({"bytes": np.array(blobs[i:i + RENDER_ROWS], dtype=object)}, spec)

    render_ms = _cpu_ms_per_view(render_all, len(blobs) * n_views)
    # the training step as benchmarks.step times it: the shipped method and model, random input of the
    # data set's shape, channels_last (the default layout), fp32, eager
    step = Variant("fp32-channels_last", argparse.Namespace(
        method=cfg.method, backbone=cfg.model.backbone, width=cfg.model.width, channels=int(channels), size=int(side),
        batch=cfg.train.batch_size, seed=0))
    step.run(1)  # warm-up
    train_ms = _cpu_ms_per_view(lambda: step.run(3), 3 * step.views_per_step)
    costs = {"dataset": dataset, "method": cfg.method, "images": n, "rendered": len(blobs), "views_per_image": n_views,
             "render_ms_per_view": render_ms, "train_ms_per_view": train_ms,
             "bound_stream_over_cache": train_ms / (train_ms + render_ms)}
    print(json.dumps({"costs": costs}), flush=True)
    return costs


if __name__ == "__main__":
    main()
