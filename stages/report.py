"""Stage `report`: reports/report.md and a self-contained reports/report.html (metrics against the
baselines, collapse diagnostics, params that differ from the defaults, training curves, t-SNE map,
retrieval grid, correlation heat-maps, augmented views, per-class accuracy) plus the CSV files
declared as DVC plots."""

import argparse
import json
from pathlib import Path

import yaml

from jem.errors import run_main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--pretrain", type=Path, default=Path("metrics/pretrain.json"))
    ap.add_argument("--eval", type=Path, default=Path("metrics/eval.json"))
    ap.add_argument("--live", type=Path, default=Path("dvclive/pretrain"))
    ap.add_argument("--artefacts", type=Path, default=Path("data/eval"))
    ap.add_argument("--out", type=Path, default=Path("reports"))
    args = ap.parse_args()
    for p in (args.pretrain, args.eval):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: run the pretrain and evaluate stages first")
    from jem.report.build import build_report

    params = yaml.safe_load(Path(args.params).read_text())
    path = build_report(args.out, params, json.loads(args.pretrain.read_text()),
                        json.loads(args.eval.read_text()), args.live, args.artefacts)
    print(f"report written to {path} and {path.with_suffix('.html')}")


if __name__ == "__main__":
    run_main(main)
