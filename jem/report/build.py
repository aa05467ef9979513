"""The run report: ``report.md`` (readable on GitHub) with a metrics table against the baselines
and PNG plots (loss curve, accuracy bars)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

ROWS = [("kNN top-1 (k=20)", ("knn", "top1")), ("kNN top-5 (k=20)", ("knn", "top5")),
        ("kNN top-1 (k=200)", ("knn200", "top1")), ("linear top-1", ("linear", "top1")),
        ("linear top-5", ("linear", "top5")), ("semi-sup. 1% top-1", ("semi_1pct", "top1")),
        ("semi-sup. 10% top-1", ("semi_10pct", "top1"))]


def _get(d: dict[str, Any], *keys: str) -> float | None:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return float(d)  # type: ignore[arg-type]


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}"


def metrics_table(ev: dict[str, Any]) -> str:
    lines = ["| metric | pretrained | random init | raw pixels |", "|---|---:|---:|---:|"]
    for label, keys in ROWS:
        lines.append(f"| {label} | {_fmt(_get(ev, *keys))} | {_fmt(_get(ev, 'random_init', *keys))} | "
                     f"{_fmt(_get(ev, 'pixels', *keys))} |")
    return "\n".join(lines)


def plot_loss(live_dir: Path, out: Path) -> bool:
    tsv = live_dir / "plots" / "metrics" / "train" / "loss.tsv"
    if not tsv.exists():
        return False
    df = pd.read_csv(tsv, sep="\t")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(df["step"] + 1, df["loss"], marker="o", ms=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def plot_accuracy(ev: dict[str, Any], out: Path) -> None:
    groups = [("kNN", ("knn", "top1")), ("linear", ("linear", "top1"))]
    series = {"pretrained": [], "random init": [], "raw pixels": []}
    for _, keys in groups:
        series["pretrained"].append(_get(ev, *keys) or 0.0)
        series["random init"].append(_get(ev, "random_init", *keys) or 0.0)
        series["raw pixels"].append(_get(ev, "pixels", *keys) or 0.0)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.25
    for i, (name, vals) in enumerate(series.items()):
        xs = [g + (i - 1) * width for g in range(len(groups))]
        bars = ax.bar(xs, vals, width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(range(len(groups)), [g for g, _ in groups])
    ax.set_ylabel("top-1 accuracy")
    ax.set_ylim(0, 1.08)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def build_report(out_dir: Path, params: dict[str, Any], pretrain: dict[str, Any], ev: dict[str, Any],
                 live_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    has_loss = plot_loss(live_dir, out_dir / "loss.png")
    plot_accuracy(ev, out_dir / "accuracy.png")
    collapse = ev.get("collapse", {})
    md = [f"# jem report: {params.get('method')} on {params.get('dataset')}", "",
          f"seed {params.get('seed')}; {pretrain.get('epochs')} epochs (started at {pretrain.get('start_epoch')}); "
          f"effective batch {pretrain.get('effective_batch')}, effective lr {pretrain.get('effective_lr', 0):.4g}; "
          f"final loss {pretrain.get('final_loss', float('nan')):.4f}; {pretrain.get('views_per_s', 0):.0f} views/s; "
          f"wall {pretrain.get('wall_s', 0):.0f} s.", "", "## Metrics", "", metrics_table(ev), ""]
    if collapse:
        md += [f"Collapse diagnostics (test embeddings): std {collapse.get('std', 0):.4f} "
               f"(healthy ≈ {collapse.get('std_healthy', 0):.4f}), RankMe {collapse.get('rankme', 0):.1f}.", ""]
        if collapse.get("collapsed"):
            md += ["**Warning: the embeddings look collapsed.**", ""]
    if has_loss:
        md += ["## Training loss", "", "![loss](loss.png)", ""]
    md += ["## Accuracy against the baselines", "", "![accuracy](accuracy.png)", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(md))
    return path
