"""Several seeds of one experiment: find the runs that differ from this one only in ``seed`` and
summarise each metric as mean and standard deviation over the seeds.

Other runs come from ``--runs`` patterns: a run folder (a checkout after ``dvc repro``: its
``params.yaml`` and every ``metrics/*.json``) or the JSON that ``dvc exp show --json`` prints
(every experiment in it). Runs are compared on their params with the schema defaults filled in,
ignoring ``seed``, ``ray.*`` (where a run ran, not what it computed) and the hyperparameters of
methods that were not selected.
"""

from __future__ import annotations

import glob
import json
import math
from pathlib import Path
from typing import Any

import yaml

from jem.io import flatten

IGNORED_PREFIXES = ("ray.",)


def _folder_run(folder: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    params_path = folder / "params.yaml"
    metric_files = sorted((folder / "metrics").glob("*.json"))
    if not params_path.is_file() or not metric_files:
        return None
    metrics: dict[str, Any] = {}
    for path in metric_files:
        metrics.update(flatten(json.loads(path.read_text())))
    return flatten(yaml.safe_load(params_path.read_text()) or {}), metrics


def load_runs(patterns: list[str]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(name, flat params, flat metrics)`` of every run the glob ``patterns`` match; a pattern that
    matches nothing usable raises FileNotFoundError (one line)."""
    from jem.report.compare import collect_runs

    runs = []
    for pattern in patterns:
        found = []
        for match in sorted(glob.glob(pattern)):
            path = Path(match)
            if path.is_dir():
                run = _folder_run(path)
                if run is not None:
                    found.append((str(path), *run))
            elif path.suffix == ".json":
                rows = json.loads(path.read_text())
                if isinstance(rows, list):  # `dvc exp show --json`
                    found += [(f"{path.name}:{r.name}", r.params, r.metrics) for r in collect_runs(rows)]
        if not found:
            raise FileNotFoundError(f"--runs {pattern!r} matches no run folder (params.yaml + metrics/*.json) "
                                    "and no `dvc exp show --json` output")
        runs += found
    return runs


def _identity(params: dict[str, Any], defaults: dict[str, Any]) -> str:
    full = {**defaults, **params}
    method = full.get("method")
    keep = {k: v for k, v in full.items() if k != "seed" and not k.startswith(IGNORED_PREFIXES)
            and (not k.startswith("methods.") or k.startswith(f"methods.{method}."))}
    return json.dumps(keep, sort_keys=True, default=str)


def seed_group(params: dict[str, Any], metrics: dict[str, Any], runs: list[tuple[str, dict[str, Any], dict[str, Any]]],
               defaults: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """``{seed: flat metrics}`` of this run and every run with the same params but its seed (this
    run's own metrics win for its seed; the first run found wins for the others)."""
    flat_defaults = flatten(defaults)
    me = flatten(params)
    ident = _identity(me, flat_defaults)
    group: dict[int, dict[str, Any]] = {int(me.get("seed", flat_defaults.get("seed", 0))): metrics}
    for _, p, m in runs:
        if _identity(p, flat_defaults) == ident:
            group.setdefault(int(p.get("seed", flat_defaults.get("seed", 0))), m)
    return group


def mean_std(group: dict[int, dict[str, Any]], key: str) -> tuple[float, float, int] | None:
    """(mean, sample standard deviation, n) of ``key`` over the seeds that have it; None if none."""
    vals = [float(m[key]) for m in group.values() if isinstance(m.get(key), (int, float))
            and not isinstance(m.get(key), bool)]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return mean, std, len(vals)
