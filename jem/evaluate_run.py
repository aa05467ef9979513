"""The `evaluate` step: every protocol of DESIGN section 7 on the pretrained encoder and on the
two baselines (raw pixels, a randomly initialised encoder of the same architecture)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jem.config import EvalConfig


def _protocols(train_f: np.ndarray, train_y: np.ndarray, test_f: np.ndarray, test_y: np.ndarray,
               ecfg: EvalConfig, num_classes: int, with_all_k: bool = True) -> dict[str, Any]:
    from jem.evaluate.knn import knn_eval
    from jem.evaluate.linear import linear_probe

    out: dict[str, Any] = {}
    ks = ecfg.knn_k if with_all_k else ecfg.knn_k[:1]
    for i, k in enumerate(ks):
        out["knn" if i == 0 else f"knn{k}"] = knn_eval(train_f, train_y, test_f, test_y, k,
                                                       ecfg.knn_temperature, num_classes)
    out["linear"] = linear_probe(train_f, train_y, test_f, test_y, num_classes, ecfg.linear_l2,
                                 ecfg.linear_max_iter)
    return out


def evaluate(prepared: Path, encoder_dir: Path, ecfg: EvalConfig, seed: int, progress: bool = True
             ) -> dict[str, Any]:
    from jem.engine.checkpoint import load_encoder
    from jem.evaluate.collapse import collapse_report
    from jem.evaluate.features import extract_features
    from jem.evaluate.semi import finetune
    from jem.models import build_backbone

    stats = json.loads((prepared / "stats.json").read_text())
    mean, std, n_cls = stats["mean"], stats["std"], int(stats["num_classes"])
    tx, ty = np.load(prepared / "train_x.npy"), np.load(prepared / "train_y.npy")
    vx, vy = np.load(prepared / "test_x.npy"), np.load(prepared / "test_y.npy")
    encoder = load_encoder(encoder_dir)
    arch = json.loads((encoder_dir / "encoder.json").read_text())["arch"]

    def feats(net: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
        return (extract_features(net, tx, mean, std, ecfg.batch_size, progress=progress),
                extract_features(net, vx, mean, std, ecfg.batch_size, progress=progress))

    metrics: dict[str, Any] = {}
    train_f, test_f = feats(encoder)
    metrics.update(_protocols(train_f, ty, test_f, vy, ecfg, n_cls))
    metrics["collapse"] = {k: float(v) for k, v in collapse_report(test_f).items()}
    for frac in ("1pct", "10pct"):
        idx = np.load(prepared / f"subset_{frac}.npy")
        metrics[f"semi_{frac}"] = finetune(encoder, train_f.shape[1], tx[idx], ty[idx], vx, vy, mean, std, n_cls,
                                           ecfg.semi_epochs, ecfg.semi_lr, seed=seed, progress=progress)

    torch.manual_seed(seed)
    random_net, _ = build_backbone(arch)
    rf_train, rf_test = feats(random_net.eval())
    metrics["random_init"] = _protocols(rf_train, ty, rf_test, vy, ecfg, n_cls, with_all_k=False)

    def pixels(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).astype(np.float32) / 255.0

    metrics["pixels"] = _protocols(pixels(tx), ty, pixels(vx), vy, ecfg, n_cls, with_all_k=False)
    return metrics
