"""Sweep results: the leaderboard rows of a finished sweep, the files the sweep stage writes
(leaderboard.csv/.md, curves.csv/.png, best.json, best_params.yaml), and the best configuration as
``-S`` arguments for ``dvc exp run`` (``python -m jem.sweep --set-args``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from jem.io import flatten
from jem.sweep.space import Dim, SweepConfig, relevant, set_dotted


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def leaderboard(log: Any, trial_base: dict, dims: list[Dim], scfg: SweepConfig) -> list[dict[str, Any]]:
    """One row per trial of ``log`` (a :class:`jem.sweep.tune.TrialLog`). ``status``: ``completed``
    (full budget), ``early-stopped`` (by ASHA), ``error``. Ranked completed first, then by the
    metric of the last epoch."""
    rows = []
    sign = 1.0 if scfg.mode == "max" else -1.0
    for tid, config in log.config.items():
        hist = log.rows.get(tid, [])
        params = set_dotted(trial_base, config)
        method, budget = params["method"], int(params["train"]["epochs"])
        values = [r[scfg.metric] for r in hist if r.get(scfg.metric) is not None]
        status = log.status.get(tid, "error")
        if status != "error":
            status = "completed" if len(hist) >= budget else "early-stopped"
        rows.append({"trial": tid, "status": status, "epochs": len(hist), "budget": budget,
                     scfg.metric: values[-1] if values else None,
                     f"best_{scfg.metric}": (max if scfg.mode == "max" else min)(values) if values else None,
                     "loss": hist[-1]["loss"] if hist else None, "seconds": round(log.seconds.get(tid, 0.0), 1),
                     "method": method,
                     **{d.key: config[d.key] if relevant(d.key, method) else None for d in dims if d.key != "method"},
                     "error": log.error.get(tid, ""), "history": hist})
    order = {"completed": 0, "early-stopped": 1, "error": 2}
    rows.sort(key=lambda r: (order[r["status"]], -sign * r[scfg.metric] if r[scfg.metric] is not None else math.inf))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def best_params(row: dict[str, Any], dims: list[Dim]) -> dict[str, Any]:
    """The searched keys of a leaderboard row that apply to its method, as nested params."""
    flat = {d.key: (row["method"] if d.key == "method" else row[d.key]) for d in dims
            if relevant(d.key, row["method"])}
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


APPLY_HINT = "dvc exp run $(python -m jem.sweep --set-args {path})"


def set_args(params: dict[str, Any]) -> list[str]:
    """Nested params -> ``-S key=value`` words for ``dvc exp run`` (no quoting needed)."""
    words = []
    for key, value in flatten(params).items():
        text = json.dumps(value, separators=(",", ":")) if isinstance(value, (list, bool)) else str(value)
        if any(c.isspace() for c in text):
            raise ValueError(f"{key} = {value!r} contains whitespace; pass it to dvc exp run -S by hand")
        words += ["-S", f"{key}={text}"]
    return words


def write_results(rows: list[dict[str, Any]], dims: list[Dim], scfg: SweepConfig, out: Path, wall_s: float,
                  best_params_path: str) -> dict[str, Any]:
    """Write leaderboard.csv/.md, curves.csv/.png, best.json and best_params.yaml into ``out``;
    returns the best.json content."""
    import csv

    out.mkdir(parents=True, exist_ok=True)
    keys = [d.key for d in dims if d.key != "method"]
    cols = ["rank", "trial", "status", "epochs", "budget", scfg.metric, f"best_{scfg.metric}", "loss", "seconds",
            "method", *keys, "error"]
    _atomic(out / "leaderboard.csv", lambda f: _csv(f, csv, cols, rows))
    with_metric = [r for r in rows if r[scfg.metric] is not None]
    best = with_metric[0] if with_metric else None
    counts = {s: sum(r["status"] == s for r in rows) for s in ("completed", "early-stopped", "error")}
    summary = {"metric": scfg.metric, "mode": scfg.mode, "trials": len(rows), "completed": counts["completed"],
               "early_stopped": counts["early-stopped"], "errored": counts["error"], "wall_s": round(wall_s, 1),
               "best": ({"trial": best["trial"], "method": best["method"], scfg.metric: best[scfg.metric],
                         "epochs": best["epochs"]} if best else None)}
    _atomic(out / "best.json", lambda f: f.write(json.dumps(summary, indent=2, sort_keys=True) + "\n"))
    params = best_params(best, dims) if best else {}
    header = (f"# Best of {len(rows)} sweep trial(s): {best['trial']} ({scfg.metric} {best[scfg.metric]:.4f} after "
              f"{best['epochs']} epochs).\n# Apply as a DVC experiment (full budget of params.yaml):\n#   "
              f"{APPLY_HINT.format(path=best_params_path)}\n" if best else "# no trial reported a metric\n")
    _atomic(out / "best_params.yaml", lambda f: f.write(header + (yaml.safe_dump(params, sort_keys=True)
                                                                   if params else "")))
    _atomic(out / "leaderboard.md", lambda f: f.write(_markdown(rows, cols, summary, best_params_path)))
    _atomic(out / "curves.csv", lambda f: _csv(f, csv, ["trial", "method", "epoch", "val_knn_top1", "loss"],
                                               [{"trial": r["trial"], "method": r["method"], **h}
                                                for r in rows for h in r["history"]]))
    _plot_curves(rows, scfg.metric, out / "curves.png")
    return summary


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        write(f)
    tmp.replace(path)


def _csv(f: Any, csv: Any, cols: list[str], rows: list[dict[str, Any]]) -> None:
    w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})


def _markdown(rows: list[dict[str, Any]], cols: list[str], summary: dict[str, Any], best_path: str) -> str:
    cols = [c for c in cols if c != "error"]
    lines = [f"# Sweep leaderboard ({summary['metric']}, {summary['mode']})", "",
             f"{summary['trials']} trials: {summary['completed']} completed, {summary['early_stopped']} stopped "
             f"early by ASHA (marked *early-stopped*: their metric is from fewer epochs), {summary['errored']} "
             f"failed; {summary['wall_s']:.0f} s.", "",
             "Ranked on the validation split (`val_knn_top1`: the online kNN monitor, bank from the training "
             "split, queries from `data/prepared/val_*`); the test split is not read by the sweep. Measure the "
             "winner on the test split with the evaluate stage (below).", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"**{r[c]}**" if c == "status" and r[c] != "completed" else fmt(r.get(c)) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    errors = [r for r in rows if r["error"]]
    if errors:
        lines += ["", "Failed trials:", ""] + [f"- {r['trial']}: {r['error']}" for r in errors]
    lines += ["", "Apply the best configuration as a DVC experiment (it trains with the full budget of "
              "params.yaml, not the sweep's shortened one):", "", "```", APPLY_HINT.format(path=best_path), "```", ""]
    return "\n".join(lines)


def _plot_curves(rows: list[dict[str, Any]], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for r in rows:
        pts = [(h["epoch"] + 1, h[metric]) for h in r["history"] if h.get(metric) is not None]
        if pts:
            ax.plot(*zip(*pts), marker=".", linestyle="-" if r["status"] == "completed" else ":",
                    label=f"{r['rank']}. {r['method']} ({r['status']})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title("sweep trials (dotted: stopped early / failed)")
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
