"""The report's figures, one function per PNG. Each takes plain arrays / dicts and a path, draws
with matplotlib's Agg backend and returns nothing; callers decide what exists."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 110
PAGE_W = 10.5  # inches: at DPI 110 a figure is about as wide as the report page (1100 px)
OK_COLOUR, BAD_COLOUR = "#2a9d3f", "#d62828"


def _save(fig: Figure, out: Path) -> None:
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


def _show_image(ax: Any, img: np.ndarray) -> None:
    """uint8 (H, W, C) with C in {1, 3} into an axis, without ticks."""
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _frame(ax: Any, colour: str, width: float = 3.0) -> None:
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def plot_curve(df: pd.DataFrame, column: str, ylabel: str, out: Path, title: str) -> None:
    """One DVCLive series (``step`` is the 0-based epoch) against the epoch number."""
    fig, ax = plt.subplots(figsize=(PAGE_W, 3.4))
    ax.plot(df["step"] + 1, df[column], marker="o", ms=3)
    ax.set_xlim(0.5, float(df["step"].max()) + 1.5)  # whole epochs, also for a single point
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out)


def accuracy_range(values: Sequence[float], pad: float = 0.25, min_span: float = 0.05) -> tuple[float, float]:
    """The zoomed accuracy axis: the data range widened by ``pad`` of itself on each side (at
    least ``min_span`` wide), kept inside [0, 1]."""
    lo, hi = min(values), max(values)
    span = max(hi - lo, min_span)
    lo, hi = lo - pad * span, hi + pad * span
    if hi > 1.0:
        lo, hi = lo - (hi - 1.0), 1.0
    return max(0.0, lo), hi


def plot_accuracy(series: Mapping[str, Sequence[float | None]], groups: Sequence[str], out: Path,
                  errors: Mapping[str, Sequence[float | None]] | None = None, title: str = "") -> None:
    """One panel per protocol (``groups``), one dot per encoder (``series``: pretrained and the
    baselines), values printed. Each panel's x axis is zoomed to that protocol's values
    (:func:`accuracy_range`) so that 0.958 and 0.976 are visibly apart; ``errors`` (one std per
    value) draws error bars. A missing value (None) is left out."""
    names = list(series)
    n = max(1, len(groups))
    fig, axes = plt.subplots(n, 1, figsize=(PAGE_W, 0.5 + n * (0.3 * len(names) + 0.55)), squeeze=False)
    for g, (ax, group) in enumerate(zip(axes[:, 0], groups)):
        pts = []  # (row, value, std or None)
        for i, name in enumerate(names):
            v = series[name][g]
            errs = (errors or {}).get(name, [])
            if v is not None:
                pts.append((i, v, errs[g] if g < len(errs) else None))
        lo, hi = accuracy_range([v + sign * (e or 0.0) for _, v, e in pts for sign in (-1, 1)] or [0.0, 1.0])
        for i, v, e in pts:
            y = len(names) - 1 - i
            ax.errorbar([v], [y], xerr=None if e is None else [[e], [e]], fmt="o", color=f"C{i}", ms=7, capsize=4)
            ax.annotate(f"{v:.3f}" + ("" if e is None else f" ± {e:.3f}"), (v + (e or 0.0), y), xytext=(7, 0),
                        textcoords="offset points", va="center", fontsize=8, color=f"C{i}")
        ax.set_yticks(range(len(names)), list(reversed(names)), fontsize=8)
        ax.set_ylim(-0.7, len(names) - 0.3)
        ax.set_xlim(lo, hi + 0.15 * (hi - lo))  # room for the value labels
        ax.set_ylabel(group, rotation=0, ha="right", va="center", fontsize=9, fontweight="bold")
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("top-1 accuracy on the test split (each panel zoomed to its own values, not from 0)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, out)


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str], out: Path, title: str) -> None:
    """Confusion matrix: rows = true class, columns = predicted; colour = share of the row (recall),
    counts written in the cells (up to 20 classes)."""
    k = len(classes)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    side = min(PAGE_W, max(5.0, 0.45 * k + 3.0))
    fig, ax = plt.subplots(figsize=(PAGE_W, side))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(k), list(classes), rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center",
                  fontsize=8)
    ax.set_yticks(range(k), list(classes), fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7 if k > 10 else 8,
                            color="white" if share[i, j] > 0.5 else "black")
    acc = float(np.trace(counts) / max(counts.sum(), 1))
    ax.set_title(f"{title} (top-1 {acc:.3f} on {int(counts.sum())} test images)", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class")
    fig.tight_layout()
    _save(fig, out)


def plot_tsne(xy: np.ndarray, labels: np.ndarray, classes: Sequence[str], out: Path) -> None:
    """t-SNE scatter (M, 2), one colour per class, legend with the class names."""
    fig, ax = plt.subplots(figsize=(PAGE_W, 6.5))
    n_cls = max(len(classes), int(labels.max()) + 1 if len(labels) else 1)
    cmap = plt.get_cmap("tab10" if n_cls <= 10 else "tab20")
    for c in range(n_cls):
        sel = labels == c
        if sel.any():
            name = classes[c] if c < len(classes) else str(c)
            ax.scatter(xy[sel, 0], xy[sel, 1], s=9, color=cmap(c % cmap.N), label=name, alpha=0.8, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of {len(xy)} test embeddings (backbone, cosine)", fontsize=10)
    if n_cls <= 20:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2, frameon=False)
    fig.tight_layout()
    _save(fig, out)


def plot_retrieval(query_x: np.ndarray, query_y: np.ndarray, neigh_x: np.ndarray, neigh_y: np.ndarray,
                   neigh_sim: np.ndarray, classes: Sequence[str], out: Path) -> None:
    """Grid: each row a test query (first column, black frame) and its nearest training images;
    a neighbour's frame is green when its class matches the query's, red otherwise."""
    q, k = neigh_y.shape
    fig, axes = plt.subplots(q, k + 1, figsize=(1.15 * (k + 1), 1.3 * q), squeeze=False)
    for i in range(q):
        ax = axes[i, 0]
        _show_image(ax, query_x[i])
        _frame(ax, "black")
        ax.set_title(f"query: {classes[int(query_y[i])]}", fontsize=7)
        for j in range(k):
            ax = axes[i, j + 1]
            _show_image(ax, neigh_x[i, j])
            same = int(neigh_y[i, j]) == int(query_y[i])
            _frame(ax, OK_COLOUR if same else BAD_COLOUR)
            ax.set_title(f"{classes[int(neigh_y[i, j])]} {neigh_sim[i, j]:.2f}", fontsize=6)
    fig.suptitle("nearest training neighbours (cosine similarity of backbone features)", fontsize=9)
    fig.tight_layout()
    _save(fig, out)


def plot_correlation(mats: dict[str, np.ndarray], out: Path) -> None:
    """Heat-maps in [-1, 1] side by side, each titled with its mean |off-diagonal| entry."""
    fig, axes = plt.subplots(1, len(mats), figsize=(4.4 * len(mats) + 0.8, 4.2), squeeze=False,
                             layout="constrained")
    im = None
    for ax, (title, m) in zip(axes[0], mats.items()):
        im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        off_diag = np.eye(m.shape[0], m.shape[1]) == 0
        off = float(np.abs(m[off_diag]).mean()) if min(m.shape) > 1 else 0.0
        ax.set_title(f"{title}\n{m.shape[0]}x{m.shape[1]}, mean |off-diag| {off:.3f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=list(axes[0]), shrink=0.8)
    _save(fig, out)


def plot_views(originals: np.ndarray, views: np.ndarray, locals_: np.ndarray | None, source: str,
               out: Path) -> None:
    """Grid: each row an original pretraining image, its global views and (if any) local crops."""
    n, k = views.shape[:2]
    n_loc = 0 if locals_ is None else locals_.shape[1]
    cols = 1 + k + n_loc
    fig, axes = plt.subplots(n, cols, figsize=(1.1 * cols, 1.15 * n), squeeze=False)
    for i in range(n):
        _show_image(axes[i, 0], originals[i])
        _frame(axes[i, 0], "black")
        for j in range(k):
            _show_image(axes[i, 1 + j], views[i, j])
        for j in range(n_loc):
            _show_image(axes[i, 1 + k + j], locals_[i, j])  # type: ignore[index]
    if n:
        axes[0, 0].set_title("original", fontsize=7)
        for j in range(k):
            axes[0, 1 + j].set_title(f"view {j} ({'a' if j % 2 == 0 else 'b'})", fontsize=7)
        for j in range(n_loc):
            axes[0, 1 + k + j].set_title(f"local {j}", fontsize=7)
    how = "from the view cache" if source == "cache" else "rendered with the same recipes (on-device mode)"
    fig.suptitle(f"what the method saw: augmented views {how}", fontsize=9)
    fig.tight_layout()
    _save(fig, out)


def plot_per_class(per_class: pd.DataFrame, out: Path) -> None:
    """Bars per class: linear-probe and kNN accuracy (columns ``class``, ``linear``, ``knn``)."""
    n = len(per_class)
    fig, ax = plt.subplots(figsize=(max(PAGE_W, 0.45 * n + 2), 3.8))
    xs = np.arange(n)
    ax.bar(xs - 0.2, per_class["linear"], 0.4, label="linear probe")
    ax.bar(xs + 0.2, per_class["knn"], 0.4, label="kNN")
    ax.set_xticks(xs, list(per_class["class"]), rotation=45 if n > 12 else 0, ha="right" if n > 12 else "center",
                  fontsize=8)
    ax.set_ylim(0, 1.18)
    ax.set_ylabel("test accuracy")
    ax.set_title("per-class accuracy (test split)", fontsize=10)
    ax.legend(loc="upper center", fontsize=8, ncols=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, out)


def _show_spec(ax: Any, spec: np.ndarray, labels: bool = True, lim: tuple[float, float] | None = None) -> Any:
    """A (mel bins, frames) log-mel spectrogram, low bins at the bottom, colour range ``lim`` (default:
    its own); axes named when ``labels``."""
    spec = np.asarray(spec, dtype=np.float32)
    lo, hi = lim if lim is not None else (float(spec.min()), float(spec.max()))
    im = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", interpolation="nearest", vmin=lo, vmax=hi)
    if labels:
        ax.set_xlabel("frame", fontsize=7)
        ax.set_ylabel("mel bin", fontsize=7)
        ax.tick_params(labelsize=6)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    return im


def plot_spectrograms(images: np.ndarray, labels: np.ndarray, clean: np.ndarray, views: np.ndarray | None,
                      classes: Sequence[str], out: Path) -> None:
    """One row per test pair: its image, the clean log-mel spectrogram of its recording and (when
    given) one augmented view of the recording; the digit named in the titles."""
    n, cols = len(labels), 2 if views is None else 3
    fig, axes = plt.subplots(n, cols, figsize=(PAGE_W, 1.9 * n + 0.4), squeeze=False,
                             gridspec_kw={"width_ratios": [1] + [3] * (cols - 1)}, layout="constrained")
    for i in range(n):
        name = classes[int(labels[i])]
        _show_image(axes[i, 0], images[i])
        axes[i, 0].set_title(f"paired image: {name}", fontsize=8)
        both = [np.asarray(clean[i], dtype=np.float32)] + ([] if views is None else [np.asarray(views[i], np.float32)])
        lim = (min(float(b.min()) for b in both), max(float(b.max()) for b in both))  # one colour bar per row
        im = _show_spec(axes[i, 1], clean[i], lim=lim)
        axes[i, 1].set_title(f"recording of digit {name}: log-mel (clean)", fontsize=8)
        if views is not None:
            _show_spec(axes[i, 2], views[i], lim=lim)
            axes[i, 2].set_title(f"digit {name}: one augmented view", fontsize=8)
        fig.colorbar(im, ax=list(axes[i, 1:]), shrink=0.9, pad=0.01).ax.tick_params(labelsize=6)
    _save(fig, out)


def plot_xmodal_retrieval(arrays: Mapping[str, np.ndarray], classes: Sequence[str], out: Path) -> None:
    """Cross-modal retrieval pairs: audio queries (spectrogram, black frame) with their top-k test
    images, then image queries with the spectrograms of their top-k test recordings; a retrieved
    item is framed green when it shows the query's digit, red otherwise."""
    qa, qv = len(arrays["a2v_query"]), len(arrays["v2a_query"])
    k = int(arrays["a2v_neigh"].shape[1])
    fig = plt.figure(figsize=(PAGE_W, 1.25 * (qa + qv) + 0.9), layout="constrained")
    subs: Any = fig.subfigures(2, 1, height_ratios=[qa, qv])
    top, bottom = subs[0], subs[1]
    for sub, d, q in ((top, "a2v", qa), (bottom, "v2a", qv)):
        axes = sub.subplots(q, k + 1, squeeze=False, gridspec_kw={"width_ratios": [1.6] + [1] * k})
        for i in range(q):
            qy = int(arrays[f"{d}_query_y"][i])
            ax = axes[i, 0]
            if d == "a2v":
                _show_spec(ax, arrays["a2v_query_spec"][i], labels=i == q - 1)
            else:
                _show_image(ax, arrays["v2a_query_x"][i])
            _frame(ax, "black")
            ax.set_title(f"query: {classes[qy]}", fontsize=7)
            for j in range(k):
                ax = axes[i, j + 1]
                if d == "a2v":
                    _show_image(ax, arrays["a2v_neigh_x"][i, j])
                else:
                    _show_spec(ax, arrays["v2a_neigh_spec"][i, j], labels=False)
                ny = int(arrays[f"{d}_neigh_y"][i, j])
                _frame(ax, OK_COLOUR if ny == qy else BAD_COLOUR)
                ax.set_title(f"#{j + 1}: {classes[ny]} (cos {float(arrays[f'{d}_sim'][i, j]):.2f})", fontsize=6)
        sub.suptitle(f"audio -> image: query recordings and their top-{k} test images" if d == "a2v" else
                     f"image -> audio: query images and the log-mel spectrograms of their top-{k} test recordings",
                     fontsize=9)
    _save(fig, out)
