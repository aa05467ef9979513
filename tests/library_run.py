"""A short real pretraining through the pipeline's own library steps, in this process (no DVC, no
Ray): prepare, the view cache, the engine's ``setup``/``run_epoch``, and the kNN protocol on the
test (or validation) split for the trained encoder and for the same seeded encoder before training (random init)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


class _Quiet:
    def step(self) -> None:
        pass


def pretrain_and_knn(raw: dict[str, Any], work: Path, split: str = "test") -> dict[str, float]:
    """kNN on ``split`` ("test", or "val" for anything that tunes) of the trained and the random-init encoder."""
    from jem.augment.cache import build_view_cache
    from jem.baselines import knn_protocol
    from jem.config import parse_config
    from jem.engine.loop import run_epoch, setup
    from jem.evaluate.features import extract_features
    from jem.prepare import prepare

    cfg = parse_config(raw)
    prepared, views = work / "prepared", work / "views"
    prepared.mkdir(parents=True, exist_ok=True)
    views.mkdir(exist_ok=True)
    prepare(cfg, prepared)
    build_view_cache(np.load(prepared / "train_x.npy"), cfg.augment, views, cfg.seed, progress=False)
    stats = json.loads((prepared / "stats.json").read_text())

    def knn(backbone: torch.nn.Module) -> float:
        backbone.eval()

        def feats(name: str) -> np.ndarray:
            return extract_features(backbone, np.load(prepared / f"{name}_x.npy"), stats["mean"], stats["std"], 256,
                                    progress=False)

        out = knn_protocol(feats("train"), np.load(prepared / "train_y.npy"), feats(split),
                           np.load(prepared / f"{split}_y.npy"), cfg.eval, int(stats["num_classes"]), with_all_k=False)
        return float(out["knn"]["top1"])

    t0 = time.perf_counter()
    w = setup(cfg, 0, 1, prepared, views)
    random_knn = knn(w.method.backbone)
    rows = [run_epoch(w, e, _Quiet()) for e in range(cfg.train.epochs)]  # type: ignore[arg-type]
    return {"knn": knn(w.method.backbone), "random_knn": random_knn, "first_loss": rows[0]["loss"],
            "final_loss": rows[-1]["loss"], "seconds": time.perf_counter() - t0}
