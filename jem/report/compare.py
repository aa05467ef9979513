"""``jem compare``: every DVC experiment of a repo side by side, from ``dvc exp show --json``.

One row per run (the baseline commit(s) and their experiments; the workspace too when it holds
results no commit has), grouped by data set: the method, the params that differ between runs, the
headline metrics, and a grouped bar chart of the accuracies, one panel per data set, with the
baselines (random-init encoder, raw pixels) of each run drawn over its bars. Written as
``compare.md``, ``compare.csv`` and ``compare.png``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jem.io import flatten

DEFAULT_METRICS = ("knn.top1", "linear.top1", "semi_1pct.top1", "semi_10pct.top1")
EXTRA_COLUMNS = ("pixels.linear.top1", "collapse.collapsed", "wall_s")
MAX_PARAM_COLUMNS = 8
ALWAYS_PARAMS = ("method", "dataset")  # columns even when every run has the same value
BASELINES = (("random_init", "random init", "-"), ("pixels", "raw pixels", ":"))  # prefix, label, line style


@dataclass(frozen=True)
class Run:
    name: str
    rev: str
    params: dict[str, Any]
    metrics: dict[str, Any]


def exp_show(repo: Path, all_commits: bool = False) -> list[dict[str, Any]]:
    """Parsed ``dvc exp show --json`` of ``repo`` (run with this interpreter's DVC)."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
        raise RuntimeError(f"`dvc exp show --json` failed in {repo}: {lines[-1]}")
    try:
        rows = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"`dvc exp show --json` in {repo} printed no JSON ({exc})") from None
    return rows if isinstance(rows, list) else []


def _run(entry: dict[str, Any], fallback: str) -> Run | None:
    data = entry.get("data") or {}
    metrics: dict[str, Any] = {}
    for file in (data.get("metrics") or {}).values():
        metrics.update(flatten((file or {}).get("data") or {}))
    if not metrics:
        return None
    params: dict[str, Any] = {}
    for file in (data.get("params") or {}).values():
        params.update(flatten((file or {}).get("data") or {}))
    rev = str(entry.get("rev") or data.get("rev") or "")
    name = entry.get("name") or (rev[:7] if rev and rev != "workspace" else fallback)
    return Run(str(name), rev, params, metrics)


def collect_runs(rows: list[dict[str, Any]]) -> list[Run]:
    """Runs with metrics from ``dvc exp show --json`` rows: baselines, then their experiments;
    the workspace only when no committed run has the same params and metrics."""
    committed: list[Run] = []
    workspace: Run | None = None
    for row in rows:
        if row.get("rev") == "workspace":
            workspace = _run(row, "workspace")
            continue
        base = _run(row, "baseline")
        if base is not None:
            committed.append(base)
        for exp in row.get("experiments") or []:
            for rev in exp.get("revs") or []:
                run = _run({**rev, "name": rev.get("name") or exp.get("name")}, "experiment")
                if run is not None:
                    committed.append(run)
    if workspace is not None and not any(r.params == workspace.params and r.metrics == workspace.metrics
                                         for r in committed):
        committed.insert(0, workspace)
    return committed


def changed_params(runs: list[Run]) -> list[str]:
    """Param keys whose value differs between runs (``methods.*`` of unselected methods excluded)."""
    keys: set[str] = set()
    for run in runs:
        keys |= {k for k in run.params if not k.startswith("methods.")
                 or k.startswith(f"methods.{run.params.get('method')}.")}
    out = [k for k in sorted(keys) if len({json.dumps(r.params.get(k), sort_keys=True) for r in runs}) > 1]
    return sorted(out, key=lambda k: (k not in ("method", "dataset", "seed"), k))


def _cell(v: Any, metric: bool = False) -> str:
    """Metrics: 4 decimals below 10 (accuracies), whole numbers above (seconds, views/s); params as
    written (``1e-06`` stays readable)."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and metric:
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.0f}"
    return json.dumps(v) if isinstance(v, list | dict) else str(v)


def dataset_of(run: Run) -> str:
    return str(run.params.get("dataset", "?"))


def group_by_dataset(runs: list[Run]) -> list[Run]:
    """Runs of one data set together, data sets in order of first appearance, runs in their order."""
    order = list(dict.fromkeys(dataset_of(r) for r in runs))
    return sorted(runs, key=lambda r: order.index(dataset_of(r)))


def compare_table(runs: list[Run], metrics: tuple[str, ...] = DEFAULT_METRICS) -> tuple[list[str], list[list[str]]]:
    """Header and rows: experiment, method, dataset, the other changed params, metrics."""
    always = [k for k in ALWAYS_PARAMS if any(k in r.params for r in runs)]
    params = always + [k for k in changed_params(runs) if k not in always][:MAX_PARAM_COLUMNS]
    extra = [k for k in EXTRA_COLUMNS if any(k in r.metrics for r in runs)]
    cols = [m for m in metrics if any(m in r.metrics for r in runs)] + extra
    header = ["experiment", *params, *cols]
    rows = [[r.name, *[_cell(r.params.get(p)) for p in params], *[_cell(r.metrics.get(m), metric=True) for m in cols]]
            for r in runs]
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows])


def plot_compare(runs: list[Run], metrics: tuple[str, ...], out: Path) -> list[tuple[str, str, float]]:
    """Grouped bars, one panel per data set: one group per run, one bar per metric, and over each
    bar its run's baselines for that metric (``random_init.<metric>`` solid, ``pixels.<metric>``
    dotted) where the run has them. Returns the baseline marks drawn as (run, key, value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [m for m in metrics if any(m in r.metrics for r in runs)]
    groups: dict[str, list[Run]] = {}
    for run in group_by_dataset(runs):
        groups.setdefault(dataset_of(run), []).append(run)
    widest = max(len(g) for g in groups.values())
    fig, axes = plt.subplots(len(groups), 1, squeeze=False,
                             figsize=(max(6.5, 1.3 * widest * max(1, len(keys)) / 2 + 2), 4.2 * len(groups)))
    width = 0.8 / max(1, len(keys))
    drawn: list[tuple[str, str, float]] = []
    values = [float(v) for r in runs for k in keys for p in ("", "random_init.", "pixels.")
              if isinstance(v := r.metrics.get(p + k), int | float)]
    low = max(0.0, min(values, default=0.0) - 0.1) // 0.1 * 0.1
    for ax, (dataset, group) in zip(axes[:, 0], groups.items()):
        labelled: set[str] = set()  # one legend entry per baseline and panel
        for i, key in enumerate(keys):
            xs = [g + (i - (len(keys) - 1) / 2) * width for g in range(len(group))]
            vals = [float(r.metrics.get(key) or 0.0) for r in group]
            bars = ax.bar(xs, vals, width, label=key, zorder=2)
            ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
            for prefix, label, style in BASELINES:
                for x, run in zip(xs, group):
                    v = run.metrics.get(f"{prefix}.{key}")
                    if isinstance(v, int | float):
                        ax.hlines(float(v), x - width / 2, x + width / 2, colors="black", linestyles=style,
                                  linewidth=1.6, zorder=3,
                                  label=None if prefix in labelled else f"{label} (same protocol)")
                        labelled.add(prefix)
                        drawn.append((run.name, f"{prefix}.{key}", float(v)))
        labels = [r.name + (f"\n{r.params['method']}" if "method" in r.params else "") for r in group]
        ax.set_xticks(range(len(group)), labels, fontsize=8)
        ax.set_ylim(low, 1.0 + (1.0 - low) * 0.25)
        ax.set_ylabel("top-1 accuracy (test split)")
        ax.set_title(f"{dataset}: {len(group)} run{'s' if len(group) != 1 else ''} (dvc exp show)", fontsize=10)
        ax.legend(fontsize=8, ncols=min(3, max(1, len(keys) + 2)), loc="upper center")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return drawn


def compare(repo: Path, out: Path, all_commits: bool = False,
            metrics: tuple[str, ...] = DEFAULT_METRICS) -> tuple[str, list[Run]]:
    """Write ``compare.md``, ``compare.csv`` and ``compare.png`` to ``out``; returns (markdown, runs)."""
    import csv

    runs = collect_runs(exp_show(repo, all_commits))
    if not runs:
        raise RuntimeError(f"no runs with metrics in {repo}: run `dvc repro` or `dvc exp run` first")
    runs = group_by_dataset(runs)
    header, rows = compare_table(runs, metrics)
    parts = [f"# {len(runs)} run{'s' if len(runs) != 1 else ''} in {repo.resolve().name}", ""]
    for dataset in dict.fromkeys(dataset_of(r) for r in runs):
        mine = [row for run, row in zip(runs, rows) if dataset_of(run) == dataset]
        parts += [f"## {dataset}", "", markdown_table(header, mine), ""]
    md = "\n".join(parts + ["![comparison](compare.png)", ""])
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(md)
    with (out / "compare.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    plot_compare(runs, metrics, out / "compare.png")
    return md, runs
