"""Stage `pretrain`: Ray Train (TorchTrainer) pretraining of the selected method.

Writes the exported encoder folder, the DVCLive curves, metrics/pretrain.json (the DVC metrics
`dvc exp show` compares: final loss, throughput, wall time, epochs, effective lr and batch) and
metrics/pretrain-full.json (every fact of the run, bookkeeping too: Ray run name, pid, workers,
nodes, replica checksum spread, resumed epoch, the optimiser recipe used, ...)."""

import argparse
import os
import time
from pathlib import Path

import yaml

from jem.config import load_config, method_notes
from jem.errors import run_main
from jem.lastgood import keep_last_good

# what `dvc exp show` lists for every run: results and the run facts worth comparing
METRICS = ("epochs", "final_loss", "views_per_s", "wall_s", "effective_lr", "effective_batch", "precision",
           "memory_format", "threads", "compile")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--views", type=Path, default=Path("data/views"))
    ap.add_argument("--stream", type=Path, default=Path("data/stream/manifest.json"),
                    help="the stream stage's manifest of data.pretrain_root (read only when it is set)")
    ap.add_argument("--out", type=Path, default=Path("models/encoder"))
    ap.add_argument("--metrics", type=Path, default=Path("metrics/pretrain.json"))
    ap.add_argument("--full", type=Path, default=Path("metrics/pretrain-full.json"))
    ap.add_argument("--live", type=Path, default=Path("dvclive/pretrain"))
    args = ap.parse_args()
    # a failure puts back the outputs of the last good run (DVC deleted them before running)
    with keep_last_good("pretrain", [args.metrics, args.full, args.live, args.out]):
        cfg = load_config(args.params)
        raw = yaml.safe_load(Path(args.params).read_text())
        # the validation split feeds the online monitor; the test split is never read here
        for p in (args.prepared / "stats.json", args.prepared / "val_x.npy", args.views / "meta.json"):
            if not p.exists():
                raise FileNotFoundError(f"{p} not found: run the prepare and augment stages first")
        from jem.engine.run import pretrain, resolve_storage
        from jem.io import pick, write_json

        storage = resolve_storage(cfg.ray.storage, Path(os.environ.get("DVC_ROOT", ".")))
        t0 = time.perf_counter()
        manifest = args.stream if cfg.data.pretrain_root else None
        if manifest is not None and not manifest.exists():
            raise FileNotFoundError(f"{manifest} not found: run the stream stage first (data.pretrain_root is set)")
        summary = pretrain(cfg, raw, args.prepared, args.views, args.out, args.live, storage, stream_manifest=manifest)
        summary["wall_s"] = time.perf_counter() - t0
        summary["notes"] = method_notes(cfg, raw)  # what the method changed of the params (as validate says)
        write_json(args.full, summary)
        write_json(args.metrics, pick(summary, METRICS))
        resumed = f", resumed at epoch {summary['start_epoch']}" if summary["start_epoch"] else ""
        print(f"pretrained {cfg.method}: final loss {summary['final_loss']:.4f}, {summary['workers']} worker(s), "
              f"effective batch {summary['effective_batch']}, {summary['views_per_s']:.0f} views/s, "
              f"{summary['wall_s']:.0f} s{resumed}")


if __name__ == "__main__":
    run_main(main)
