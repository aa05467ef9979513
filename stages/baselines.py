"""Stage `baselines`: raw pixels and a randomly initialised encoder of the configured architecture
through kNN, the linear probe and the 1 % / 10 % semi-supervised fine-tuning, once per data set,
architecture (`model`) and `eval` params. It reads no method code, so `dvc exp run -S method=...`
never re-runs it; every experiment's `evaluate` copies its results into metrics/eval.json."""

import argparse
from pathlib import Path

from jem.errors import run_main
from jem.sections import load_base_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--out", type=Path, default=Path("data/baselines.json"))
    args = ap.parse_args()
    cfg = load_base_config(args.params)
    if not (args.prepared / "stats.json").exists():
        raise FileNotFoundError(f"{args.prepared / 'stats.json'} not found: run the prepare stage first")
    from jem.baselines import compute_baselines
    from jem.io import write_json

    out = compute_baselines(args.prepared, cfg.model, cfg.eval, cfg.seed)
    write_json(args.out, out)
    r, p = out["random_init"], out["pixels"]
    print(f"baselines ({out['arch']['backbone']}): random init kNN {r['knn']['top1']:.4f}, linear "
          f"{r['linear']['top1']:.4f}, semi 1% {r['semi_1pct']['top1']:.4f}, 10% {r['semi_10pct']['top1']:.4f}; "
          f"raw pixels kNN {p['knn']['top1']:.4f}, linear {p['linear']['top1']:.4f}")


if __name__ == "__main__":
    run_main(main)
