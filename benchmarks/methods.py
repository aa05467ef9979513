"""Measure every method through the real pipeline: ``dvc exp run -S method=<name>`` per method.

    python -m benchmarks.methods --dataset digits
    python -m benchmarks.methods --dataset fashion-mnist --set data.max_train=5000 --set train.epochs=5

Works in a fresh ``git clone`` of the repository's HEAD (so it measures committed code and leaves
this checkout alone), runs the experiments one after another, and writes
``benchmarks/results/methods-<dataset>.{json,md}``: per method the evaluation stage's kNN and
linear top-1, the random-init and raw-pixel baselines of the same run, whether kNN beats random
init, the collapse flag, pretraining seconds and views/s, and the wall time of the whole
``dvc exp run``. A method whose run fails gets its error line in the table; the others go on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from jem.method_params import METHOD_PARAMS

ROOT = Path(__file__).resolve().parents[1]


def _get(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def measure(clone: Path, method: str, dataset: str, sets: list[str]) -> dict[str, Any]:
    """One ``dvc exp run`` in ``clone``; its metrics, or the error line."""
    subprocess.run(["git", "checkout", "-q", "HEAD", "--", "params.yaml"], cwd=clone, check=True)
    cmd = ["dvc", "exp", "run", "-S", f"method={method}", "-S", f"dataset={dataset}"]
    for s in sets:
        cmd += ["-S", s]
    # the clone's own package, not an editable install of this checkout, runs the stages
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(clone), os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=clone, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    row: dict[str, Any] = {"method": method, "command": " ".join(cmd), "wall_s": round(wall, 1)}
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        row["error"] = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "failed")
        return row
    ev = json.loads((clone / "metrics" / "eval.json").read_text())
    pt = json.loads((clone / "metrics" / "pretrain.json").read_text())
    for key in ("knn.top1", "linear.top1", "knn200.top1", "random_init.knn.top1", "random_init.linear.top1",
                "pixels.knn.top1", "pixels.linear.top1", "semi_1pct.top1", "semi_10pct.top1", "collapse.collapsed"):
        row[key] = _get(ev, key)
    for key in ("train_s", "views_per_s", "final_loss", "optimizer", "base_lr", "epochs"):
        row[key] = pt.get(key)
    if row["knn.top1"] is not None and row["random_init.knn.top1"] is not None:
        row["beats_random_init"] = bool(row["knn.top1"] > row["random_init.knn.top1"])
    return row


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:.4f}" if v < 10 else f"{v:.0f}"
    return str(v)


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    cols = ["method", "knn.top1", "linear.top1", "random_init.knn.top1", "pixels.knn.top1", "beats_random_init",
            "collapse.collapsed", "train_s", "views_per_s", "wall_s"]
    out = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['method']} | failed: {r['error']} |" + " |" * (len(cols) - 2))
        else:
            out.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--methods", default="all", help="comma-separated names, or 'all' (every registered method)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra `dvc exp run -S` for every method (the budget), e.g. train.epochs=5")
    ap.add_argument("--out", default=None, help="output stem (default benchmarks/results/methods-<dataset>)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone (its experiments stay there)")
    args = ap.parse_args(argv)
    names = sorted(METHOD_PARAMS) if args.methods == "all" else [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in names if m not in METHOD_PARAMS]
    if unknown:
        sys.exit(f"error: unknown method(s) {', '.join(unknown)}; `jem methods` lists them")
    for s in args.set:
        if "=" not in s:
            sys.exit(f"error: --set {s!r}: expected KEY=VALUE, e.g. train.epochs=5")
    stem = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"methods-{args.dataset}"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="jem-methods-"))
    clone = tmp / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # re-measuring some methods with the same budget keeps the other rows of an earlier run
    old = json.loads(stem.with_suffix(".json").read_text()) if stem.with_suffix(".json").exists() else {}
    rows: list[dict[str, Any]] = old.get("rows", []) if old.get("sets") == args.set else []
    for r in rows:
        r.setdefault("commit", old.get("commit", "?"))
    for name in tqdm(names, desc="methods", unit="run"):
        row = dict(measure(clone, name, args.dataset, args.set), commit=commit)
        rows = sorted([r for r in rows if r["method"] != name] + [row], key=lambda r: r["method"])
        tqdm.write(json.dumps(row))
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".json").write_text(json.dumps({"dataset": args.dataset, "sets": args.set, "rows": rows},
                                                        indent=2) + "\n")
    budget = " ".join(f"-S {s}" for s in args.set) or "the shipped defaults"
    commits = ", ".join(sorted({r.get("commit", commit) for r in rows}))
    header = (f"### {args.dataset}: every method through `dvc exp run -S method=<name>` (commits {commits}, "
              f"budget: {budget})\n\nCommand: `python -m benchmarks.methods --dataset {args.dataset}"
              + "".join(f" --set {s}" for s in args.set) + "`")
    stem.with_suffix(".md").write_text(markdown(rows, header))
    print(markdown(rows, header))
    if not args.keep:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    else:
        print(f"clone kept at {clone}")


if __name__ == "__main__":
    main()
