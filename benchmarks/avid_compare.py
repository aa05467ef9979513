"""AVID against AVID + CMA at the shipped budget over seeds: the ablation of Morgado et al. 2021.

Runs the pipeline's own library steps in this process (no DVC, no Ray): prepare and the image and
audio view caches once per seed, then for each method the engine's ``setup``/``run_epoch`` for
``train.epochs`` epochs, the export, and the test-split evaluation (image kNN, audio kNN/linear,
cross-modal recall). For seed 0 it gives the numbers of ``dvc exp run -S dataset=av-digits
-S method=avid_cma`` exactly (same seeds, same code path). Prints one JSON line per run and writes
them all to ``--out``:

    python -m benchmarks.avid_compare --audio-root ../shared/data/fsdd/recordings --out /tmp/avid.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml


class _Quiet:
    def step(self) -> None:
        pass


def run(raw: dict[str, Any], work: Path) -> dict[str, float]:
    from jem.augment.audio import build_audio_cache
    from jem.augment.cache import build_view_cache
    from jem.baselines import knn_protocol
    from jem.config import parse_config
    from jem.engine.checkpoint import save_encoder
    from jem.engine.loop import run_epoch, setup
    from jem.evaluate.audiovisual import evaluate_av
    from jem.evaluate.features import extract_features
    from jem.export import load_encoder, load_projector
    from jem.prepare import prepare

    cfg = parse_config(raw)
    prepared, views = work / f"seed{cfg.seed}" / "prepared", work / f"seed{cfg.seed}" / "views"
    if not (views / "audio_meta.json").exists():  # shared by both methods of a seed
        prepared.mkdir(parents=True, exist_ok=True)
        views.mkdir(exist_ok=True)
        stats = prepare(cfg, prepared)
        build_view_cache(np.load(prepared / "train_x.npy"), cfg.augment, views, cfg.seed)
        build_audio_cache(np.load(prepared / "train_audio.npy"), stats["audio"]["sample_rate"], cfg.augment.audio,
                          cfg.augment.views_per_image, views, cfg.seed)
    stats = json.loads((prepared / "stats.json").read_text())
    t0 = time.perf_counter()
    w = setup(cfg, 0, 1, prepared, views)
    rows = [run_epoch(w, e, _Quiet()) for e in range(cfg.train.epochs)]  # type: ignore[arg-type]
    enc = work / f"seed{cfg.seed}" / f"encoder-{cfg.method}"
    enc.mkdir(exist_ok=True)
    save_encoder(enc, w.method.eval(), stats)
    net = load_encoder(enc)
    av = evaluate_av(prepared, views, enc, net, load_projector(enc, cfg.method_params), cfg.eval, cfg.seed)

    def feats(name: str) -> np.ndarray:
        return extract_features(net, np.load(prepared / f"{name}_x.npy"), stats["mean"], stats["std"], 512,
                                progress=False)

    knn = knn_protocol(feats("train"), np.load(prepared / "train_y.npy"), feats("test"), np.load(prepared / "test_y.npy"),
                       cfg.eval, int(stats["num_classes"]), with_all_k=False)["knn"]["top1"]
    return {"knn.top1": knn, "audio.knn.top1": av["audio"]["knn"]["top1"],
            "audio.linear.top1": av["audio"]["linear"]["top1"],
            **{f"xmodal.{d}.r{k}": av["xmodal"][d][f"r{k}"] for d in ("a2v", "v2a") for k in (1, 5)},
            "final_loss": rows[-1]["loss"], "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio-root", required=True, help="the FSDD recordings folder")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--work", default="/tmp/jem-avid-compare", help="scratch folder for arrays and encoders")
    ap.add_argument("--out", required=True, help="JSON file of every run's metrics")
    a = ap.parse_args(argv)
    base = yaml.safe_load(Path(a.params).read_text())
    results: dict[str, Any] = {}
    for seed in (int(s) for s in a.seeds.split(",")):
        for method in ("avid", "avid_cma"):
            raw = dict(base, seed=seed, method=method, dataset="av-digits",
                       data=dict(base["data"], audio_root=str(Path(a.audio_root).resolve())))
            results[f"{method}/{seed}"] = run(raw, Path(a.work))
            print(method, seed, json.dumps(results[f"{method}/{seed}"]), flush=True)
            Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
