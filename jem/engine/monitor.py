"""Online kNN monitor: a cheap kNN top-1 of the current backbone on the validation split,
computed on rank 0 every ``eval.monitor_every`` epochs and logged as ``monitor/val_knn_top1``.

It is what sweeps select on (ASHA, the leaderboard, ``best_params``), so it never reads the test
split: the bank is a fixed sample of the training split, the queries a fixed sample of the
validation split (``val_x.npy``, carved out of the training split by ``prepare``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from jem.config import EvalConfig


class KNNMonitor:
    """Bank = up to ``max_bank`` training images, queries = up to ``max_query`` validation images
    (both fixed, stratification-free seeded samples), so successive values are comparable."""

    def __init__(self, prepared: Path, ecfg: EvalConfig, mean: list[float], std: list[float], num_classes: int,
                 seed: int, max_bank: int = 5000, max_query: int = 1000) -> None:
        rng = np.random.default_rng(seed + 7)
        tx, ty = np.load(prepared / "train_x.npy", mmap_mode="r"), np.load(prepared / "train_y.npy")
        vx, vy = np.load(prepared / "val_x.npy", mmap_mode="r"), np.load(prepared / "val_y.npy")
        bi = np.sort(rng.permutation(len(ty))[:max_bank])
        qi = np.sort(rng.permutation(len(vy))[:max_query])
        self.bank_x, self.bank_y = np.asarray(tx[bi]), ty[bi]
        self.query_x, self.query_y = np.asarray(vx[qi]), vy[qi]
        self.ecfg, self.mean, self.std, self.num_classes = ecfg, mean, std, num_classes

    def __call__(self, backbone: nn.Module, device: torch.device) -> float:
        from jem.evaluate.features import extract_features
        from jem.evaluate.knn import knn_eval

        was_training = backbone.training
        f_bank = extract_features(backbone, self.bank_x, self.mean, self.std, self.ecfg.batch_size, device=device)
        f_query = extract_features(backbone, self.query_x, self.mean, self.std, self.ecfg.batch_size, device=device)
        backbone.train(was_training)
        res = knn_eval(f_bank, self.bank_y, f_query, self.query_y, self.ecfg.knn_k[0], self.ecfg.knn_temperature,
                       self.num_classes)
        return float(res["top1"])
