"""``python -m jem.sweep --set-args best_params.yaml``: the ``-S`` arguments that apply a sweep's
best configuration, ``dvc exp run $(python -m jem.sweep --set-args FILE)``."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    """Print the ``dvc exp run -S`` arguments of a sweep's best_params.yaml."""
    import yaml

    from jem.sweep.leaderboard import set_args

    ap = argparse.ArgumentParser(prog="python -m jem.sweep", description=main.__doc__)
    ap.add_argument("--set-args", type=Path, required=True, metavar="BEST_PARAMS_YAML")
    args = ap.parse_args(argv)
    if not args.set_args.is_file():
        raise FileNotFoundError(f"{args.set_args} not found: run `dvc repro pipelines/sweep/dvc.yaml` first")
    print(" ".join(set_args(yaml.safe_load(args.set_args.read_text()) or {})))


if __name__ == "__main__":
    from jem.errors import run_main

    run_main(main)
