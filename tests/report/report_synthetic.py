"""Synthetic inputs for the report builder: every file the report stage reads, with known content."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ["zero", "one", "two", "three", "four", "five"]


def eval_metrics(collapsed: bool = False) -> dict[str, Any]:
    def acc(top1: float) -> dict[str, float]:
        return {"top1": top1, "top5": min(1.0, top1 + 0.05)}

    section = {"std": 0.001 if collapsed else 0.05, "std_healthy": 0.0884, "rankme": 1.2 if collapsed else 60.0,
               "rankme_ratio": 0.009 if collapsed else 0.47, "alignment": 0.3, "uniformity": -1.1,
               "collapsed": 1.0 if collapsed else 0.0}
    return {"knn": acc(0.91), "knn200": acc(0.85), "linear": acc(0.93), "semi_1pct": acc(0.55),
            "semi_10pct": acc(0.8), "random_init": {"knn": acc(0.6), "linear": acc(0.7)},
            "pixels": {"knn": acc(0.8), "linear": acc(0.82)},
            "collapse": {"backbone": section, "projector": {**section, "std_healthy": 0.0625},
                         "collapsed": int(collapsed)}}


def make_run(root: Path, rgb: bool = True, collapsed: bool = False, seed: int = 0) -> dict[str, Any]:
    """Write live/ and eval/ under ``root``; return the build_report keyword arguments."""
    rng = np.random.default_rng(seed)
    live = root / "live" / "plots" / "metrics"
    (live / "train").mkdir(parents=True)
    (live / "monitor").mkdir(parents=True)
    (live / "train" / "loss.tsv").write_text("step\tloss\n" + "".join(f"{i}\t{5 - 0.4 * i}\n" for i in range(6)))
    (live / "monitor" / "val_knn_top1.tsv").write_text("step\tval_knn_top1\n1\t0.5\n3\t0.7\n5\t0.8\n")

    art = root / "eval"
    art.mkdir()
    c, size, n_cls, n = (3 if rgb else 1), 16, len(CLASSES), 120
    labels = np.arange(n) % n_cls

    def images(count: int) -> np.ndarray:
        return rng.integers(0, 256, size=(count, size, size, c), dtype=np.uint8)

    y_pred = np.where(rng.random(n) < 0.8, labels, (labels + 1) % n_cls)
    np.savez(art / "predictions.npz", y_true=labels, linear_pred=y_pred, knn_pred=labels)
    np.savez(art / "tsne.npz", xy=(rng.normal(size=(n, 2)) + labels[:, None] * 3).astype(np.float32), labels=labels)
    np.savez(art / "retrieval.npz", query_x=images(6), query_y=np.arange(6), neigh_x=images(48).reshape(6, 8, size,
             size, c), neigh_y=rng.integers(0, n_cls, size=(6, 8)), neigh_sim=rng.random((6, 8)).astype(np.float32))
    np.savez(art / "correlation.npz", backbone=np.corrcoef(rng.normal(size=(32, 200))).astype(np.float32),
             projector_xcorr=np.eye(48, dtype=np.float32))
    np.savez(art / "views.npz", originals=images(4), views=images(16).reshape(4, 4, size, size, c),
             locals=images(8).reshape(4, 2, size, size, c)[:, :, :8, :8], source=np.array("cache"))
    (art / "meta.json").write_text(json.dumps({"classes": CLASSES, "dataset": "digits"}))

    params = {"dataset": "digits", "method": "simclr", "seed": 3, "train": {"epochs": 3, "lr": 0.3},
              "eval": {"knn_k": [20, 200], "semi_epochs": 1}, "methods": {"simclr": {"temperature": 0.5},
                                                                          "vicreg": {"inv_weight": 1.0}}}
    pretrain = {"epochs": 3, "start_epoch": 0, "effective_batch": 256, "effective_lr": 0.3, "final_loss": 4.1,
                "views_per_s": 1500.0, "wall_s": 12.0}
    return {"params": params, "pretrain": pretrain, "ev": eval_metrics(collapsed), "live_dir": root / "live",
            "artefacts": art}
