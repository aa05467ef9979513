"""Stage `report`: reports/report.md with the metrics table against the baselines and PNG plots."""

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
    ap.add_argument("--out", type=Path, default=Path("reports"))
    args = ap.parse_args()
    for p in (args.pretrain, args.eval):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: run the pretrain and evaluate stages first")
    from jem.report.build import build_report

    params = yaml.safe_load(Path(args.params).read_text())
    path = build_report(args.out, params, json.loads(args.pretrain.read_text()),
                        json.loads(args.eval.read_text()), args.live)
    print(f"report written to {path}")


if __name__ == "__main__":
    run_main(main)
