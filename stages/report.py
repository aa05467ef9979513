"""Stage `report`: reports/report.md and a self-contained reports/report.html (metrics against the
baselines, collapse diagnostics, params that differ from the defaults, training curves, t-SNE map,
retrieval grid, correlation heat-maps, augmented views, per-class accuracy, confusion matrix,
provenance: commit, date, machine, versions, stage times) plus the CSV files declared as DVC plots.

With ``--runs`` (run folders or `dvc exp show --json` output; see jem/report/seeds.py) the report
adds means and error bars over the seeds of this experiment."""

import argparse
import json
import os
from pathlib import Path

import yaml

from jem.errors import run_main
from jem.lastgood import keep_last_good


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--pretrain", type=Path, default=Path("metrics/pretrain.json"))
    ap.add_argument("--eval", type=Path, default=Path("metrics/eval.json"))
    ap.add_argument("--live", type=Path, default=Path("dvclive/pretrain"))
    ap.add_argument("--artefacts", type=Path, default=Path("data/eval"))
    ap.add_argument("--out", type=Path, default=Path("reports"))
    ap.add_argument("--times", type=Path, default=None,
                    help="stage time records (default: $DVC_ROOT or . / .jem/stage_times)")
    ap.add_argument("--runs", action="append", default=[], metavar="GLOB",
                    help="other runs of this experiment (other seeds): run folders holding params.yaml and "
                         "metrics/*.json, or files written by `dvc exp show --json`; repeatable")
    args = ap.parse_args()
    # a failure puts back the outputs of the last good run (DVC deleted them before running)
    with keep_last_good("report", [args.out]):
        for p in (args.pretrain, args.eval):
            if not p.exists():
                raise FileNotFoundError(f"{p} not found: run the pretrain and evaluate stages first")
        from jem.errors import STAGE_TIMES
        from jem.report.build import build_report
        from jem.report.seeds import load_runs

        runs = load_runs(args.runs)  # a pattern that matches nothing fails here, before any drawing
        root = Path(os.environ.get("DVC_ROOT") or ".")
        params = yaml.safe_load(Path(args.params).read_text())
        path = build_report(args.out, params, json.loads(args.pretrain.read_text()),
                            json.loads(args.eval.read_text()), args.live, args.artefacts,
                            times_dir=args.times or root / STAGE_TIMES, root=root, runs=runs)
        print(f"report written to {path} and {path.with_suffix('.html')}")


if __name__ == "__main__":
    run_main(main)
