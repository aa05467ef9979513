"""Stage `evaluate`: kNN (k=20/200), linear probe, semi-supervised fine-tuning on the 1%/10%
subsets, collapse diagnostics of backbone and projector outputs, the arrays the report draws, and
the baselines (raw pixels, random-init encoder) copied from the `baselines` stage.

Writes metrics/eval.json (the DVC metrics `dvc exp show` compares: top-1 of each protocol, the
collapse verdict, the baselines) and metrics/eval-full.json (everything: top-5, every k,
the collapse diagnostics)."""

import argparse
import json
from pathlib import Path

from jem.config import load_config
from jem.errors import run_main
from jem.lastgood import keep_last_good

# what `dvc exp show` lists for every run; eval-full.json has every key
METRICS = ("knn.top1", "linear.top1", "semi_1pct.top1", "semi_10pct.top1", "collapse.collapsed",
           "random_init.knn.top1", "random_init.knn.top5", "random_init.linear.top1", "random_init.linear.top5",
           "random_init.semi_1pct.top1", "random_init.semi_10pct.top1",
           "pixels.knn.top1", "pixels.knn.top5", "pixels.linear.top1", "pixels.linear.top5",
           # audio-visual methods only (absent keys are skipped)
           "audio.knn.top1", "audio.linear.top1", "raw.audio.knn.top1",
           *(f"{p}xmodal.{d}.r{k}" for p in ("", "random_init.") for d in ("a2v", "v2a") for k in (1, 5)),
           "random_init.audio.knn.top1", "random_init.audio.linear.top1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--views", type=Path, default=Path("data/views"))
    ap.add_argument("--encoder", type=Path, default=Path("models/encoder"))
    ap.add_argument("--baselines", type=Path, default=Path("data/baselines.json"))
    ap.add_argument("--out", type=Path, default=Path("metrics/eval.json"))
    ap.add_argument("--full", type=Path, default=Path("metrics/eval-full.json"))
    ap.add_argument("--artefacts", type=Path, default=Path("data/eval"))
    args = ap.parse_args()
    # a failure puts back the outputs of the last good run (DVC deleted them before running)
    with keep_last_good("evaluate", [args.out, args.full]):
        cfg = load_config(args.params)
        for p in (args.prepared / "stats.json", args.encoder / "encoder.json", args.baselines):
            if not p.exists():
                raise FileNotFoundError(f"{p} not found: run the prepare, baselines and pretrain stages first")
        from jem.evaluate_run import evaluate
        from jem.io import pick, write_json

        metrics = evaluate(args.prepared, args.encoder, cfg.eval, cfg.seed, artefacts=args.artefacts, views=args.views,
                           augment=cfg.augment, method_params=cfg.method_params,
                           baselines=json.loads(args.baselines.read_text()))
        # which encoder these numbers are for: `jem info` compares it with models/encoder
        recorded = json.loads((args.encoder / "encoder.json").read_text()).get("sha256", {})
        metrics["encoder_sha256"] = recorded.get("encoder.safetensors")
        write_json(args.full, metrics)
        write_json(args.out, pick(metrics, METRICS))
        col = metrics["collapse"]
        print(f"kNN top-1 {metrics['knn']['top1']:.4f} (random init {metrics['random_init']['knn']['top1']:.4f}, "
              f"pixels {metrics['pixels']['knn']['top1']:.4f}); linear top-1 {metrics['linear']['top1']:.4f}; "
              f"RankMe {col['backbone']['rankme']:.1f}" + ("; WARNING: collapsed" if col["collapsed"] else ""))


if __name__ == "__main__":
    run_main(main)
