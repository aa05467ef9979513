"""Stage `evaluate`: kNN (k=20/200), linear probe, semi-supervised fine-tuning on the 1%/10%
subsets, the same kNN/linear protocol on raw pixels and on a randomly initialised encoder,
collapse diagnostics of backbone and projector outputs, and the arrays the report draws."""

import argparse
from pathlib import Path

from jem.config import load_config
from jem.errors import run_main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--views", type=Path, default=Path("data/views"))
    ap.add_argument("--encoder", type=Path, default=Path("models/encoder"))
    ap.add_argument("--out", type=Path, default=Path("metrics/eval.json"))
    ap.add_argument("--artefacts", type=Path, default=Path("data/eval"))
    args = ap.parse_args()
    cfg = load_config(args.params)
    for p in (args.prepared / "stats.json", args.encoder / "encoder.json"):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: run the prepare and pretrain stages first")
    from jem.evaluate_run import evaluate
    from jem.io import write_json

    metrics = evaluate(args.prepared, args.encoder, cfg.eval, cfg.seed, artefacts=args.artefacts, views=args.views,
                       augment=cfg.augment, method_params=cfg.method_params)
    write_json(args.out, metrics)
    col = metrics["collapse"]
    print(f"kNN top-1 {metrics['knn']['top1']:.4f} (random init {metrics['random_init']['knn']['top1']:.4f}, "
          f"pixels {metrics['pixels']['knn']['top1']:.4f}); linear top-1 {metrics['linear']['top1']:.4f}; "
          f"RankMe {col['backbone']['rankme']:.1f}" + ("; WARNING: collapsed" if col["collapsed"] else ""))


if __name__ == "__main__":
    run_main(main)
