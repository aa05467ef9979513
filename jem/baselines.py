"""The baselines every run is measured against (DESIGN section 7): raw pixels and a randomly
initialised encoder of the run's architecture, through the same protocols as the pretrained
encoder (kNN, linear probe, semi-supervised fine-tuning on the 1 % / 10 % subsets).

They depend on the prepared data, the architecture (``model``), the ``eval`` params and the seed,
never on the method: the ``baselines`` stage computes them once and every experiment's
``evaluate`` copies them into ``metrics/eval.json``. This module never imports the method registry.

Result keys (nested; flattened in eval.json): ``random_init.knn``, ``random_init.linear``,
``random_init.semi_1pct``, ``random_init.semi_10pct`` and ``pixels.knn``, ``pixels.linear``, each
``{"top1", "top5"}``; ``arch`` records the random-init encoder's architecture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jem.io import verify_prepared
from jem.progress import Steps

SEMI_FRACTIONS = ("1pct", "10pct")


def pixels(x: np.ndarray) -> np.ndarray:
    """Raw-pixel features: uint8 images (N, H, W, C) -> (N, H*W*C) float32 in [0, 1]."""
    return x.reshape(len(x), -1).astype(np.float32) / 255.0


def knn_protocol(train_f: np.ndarray, train_y: np.ndarray, test_f: np.ndarray, test_y: np.ndarray, ecfg: Any,
                 num_classes: int, with_all_k: bool = True,
                 predictions: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """kNN for each ``eval.knn_k`` (first k -> ``knn``, others -> ``knn<k>``; only the first unless
    ``with_all_k``); the first k's test predictions go to ``predictions["knn_pred"]`` when given."""
    from jem.evaluate.knn import knn_scores, topk_accuracy

    out: dict[str, Any] = {}
    ks = ecfg.knn_k if with_all_k else ecfg.knn_k[:1]
    for i, k in enumerate(ks):
        scores = knn_scores(train_f, train_y, test_f, k, ecfg.knn_temperature, num_classes)  # (N, C)
        out["knn" if i == 0 else f"knn{k}"] = topk_accuracy(scores, test_y)
        if i == 0 and predictions is not None:
            predictions["knn_pred"] = scores.argmax(axis=1)
    return out


def linear_protocol(train_f: np.ndarray, train_y: np.ndarray, test_f: np.ndarray, test_y: np.ndarray, ecfg: Any,
                    num_classes: int, predictions: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """The linear probe's test top-1/top-5; its predictions go to ``predictions["linear_pred"]``."""
    from jem.evaluate.knn import topk_accuracy
    from jem.evaluate.linear import linear_logits

    logits = linear_logits(train_f, train_y, test_f, num_classes, ecfg.linear_l2, ecfg.linear_max_iter)
    if predictions is not None:
        predictions["linear_pred"] = logits.argmax(axis=1)
    return topk_accuracy(logits, test_y)


def random_encoder(arch: dict[str, Any], seed: int) -> tuple[torch.nn.Module, int]:
    """The seeded random-init encoder of ``arch`` in eval mode, and its feature dimension."""
    from jem.models import build_backbone

    torch.manual_seed(seed)
    net, feat_dim = build_backbone(arch)
    net.eval()
    return net, feat_dim


def compute_baselines(prepared: Path, model: Any, ecfg: Any, seed: int, progress: bool = True,
                      arch: dict[str, Any] | None = None, semi: bool = True) -> dict[str, Any]:
    """Both baselines on the prepared split (train -> test), as documented in the module docstring.

    ``model`` is the ``model`` params section (its architecture is built for the data's channels
    and size) unless ``arch`` is given; ``semi=False`` skips the fine-tuning baselines."""
    from jem.evaluate.features import extract_features
    from jem.evaluate.semi import finetune

    verify_prepared(prepared)
    stats = json.loads((prepared / "stats.json").read_text())
    mean, std, n_cls = stats["mean"], stats["std"], int(stats["num_classes"])
    tx, ty = np.load(prepared / "train_x.npy"), np.load(prepared / "train_y.npy")
    vx, vy = np.load(prepared / "test_x.npy"), np.load(prepared / "test_y.npy")
    if arch is None:
        from jem.models import backbone_arch

        arch = backbone_arch(model, int(tx.shape[3]), int(tx.shape[1]))
    steps = ["random-init features", "random-init kNN", "random-init linear probe"]
    steps += [f"random-init semi-sup. {f.replace('pct', '%')}" for f in SEMI_FRACTIONS] if semi else []
    steps += ["raw-pixel kNN", "raw-pixel linear probe"]
    bar = Steps("baselines", steps, disable=not progress)

    net, feat_dim = random_encoder(arch, seed)
    train_f = extract_features(net, tx, mean, std, ecfg.batch_size, progress=progress)  # (N, D)
    test_f = extract_features(net, vx, mean, std, ecfg.batch_size, progress=progress)
    bar.advance()
    rand: dict[str, Any] = knn_protocol(train_f, ty, test_f, vy, ecfg, n_cls, with_all_k=False)
    bar.advance()
    rand["linear"] = linear_protocol(train_f, ty, test_f, vy, ecfg, n_cls)
    bar.advance()
    for frac in SEMI_FRACTIONS if semi else ():
        idx = np.load(prepared / f"subset_{frac}.npy")
        rand[f"semi_{frac}"] = finetune(net, feat_dim, tx[idx], ty[idx], vx, vy, mean, std, n_cls, ecfg.semi_epochs,
                                        ecfg.semi_lr, seed=seed, progress=progress)
        bar.advance()
    px_train, px_test = pixels(tx), pixels(vx)
    pix: dict[str, Any] = knn_protocol(px_train, ty, px_test, vy, ecfg, n_cls, with_all_k=False)
    bar.advance()
    pix["linear"] = linear_protocol(px_train, ty, px_test, vy, ecfg, n_cls)
    bar.advance()
    bar.close()
    return {"random_init": rand, "pixels": pix, "arch": arch}
