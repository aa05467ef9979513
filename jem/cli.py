"""The ``jem`` command line. Pipelines run through ``dvc repro``; this is for everything around
them: listing methods, checking params, summarising a run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jem.errors import run_main


def _cmd_methods(args: argparse.Namespace) -> None:
    from jem.method_params import METHOD_PARAMS

    for name in sorted(METHOD_PARAMS):
        _, description, paper = METHOD_PARAMS[name]
        print(f"{name:<12} {description} ({paper})")


def _cmd_validate(args: argparse.Namespace) -> None:
    from jem.config import load_config

    cfg = load_config(args.params)
    print(f"{args.params} ok: dataset={cfg.dataset} method={cfg.method} seed={cfg.seed}")


def _cmd_info(args: argparse.Namespace) -> None:
    root = Path(args.root)
    found = False
    for name in ("pretrain", "eval"):
        path = root / "metrics" / f"{name}.json"
        if path.exists():
            found = True
            print(f"== {path}")
            for key, value in _flatten(json.loads(path.read_text())).items():
                print(f"{key:<28} {value:.4f}" if isinstance(value, float) else f"{key:<28} {value}")
    if not found:
        raise FileNotFoundError(f"no metrics under {root / 'metrics'}: run `dvc repro` first")


def _flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jem", description="Joint-embedding self-supervised learning: DVC "
                                 "pipelines (`dvc repro`, `dvc exp run -S method=...`) plus these helpers.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("methods", help="list registered methods: name, description, paper")
    p.set_defaults(func=_cmd_methods)
    p = sub.add_parser("validate", help="check a params file without running anything")
    p.add_argument("params", nargs="?", default="params.yaml")
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser("info", help="summary of the run in a repo (metrics/pretrain.json, metrics/eval.json)")
    p.add_argument("root", nargs="?", default=".")
    p.set_defaults(func=_cmd_info)
    return ap


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_main(lambda: args.func(args))


if __name__ == "__main__":
    main()
