"""The `evaluate` step: every protocol of DESIGN section 7 on the pretrained encoder, the two
baselines (raw pixels, a randomly initialised encoder of the same architecture: computed once by
the ``baselines`` stage, :mod:`jem.baselines`, and copied in), collapse diagnostics of the backbone
and projector outputs, and the arrays the report draws (predictions, t-SNE map, retrieval,
correlation matrices, a sample of the training views).

Artefacts folder (``artefacts``; the DVC out ``data/eval``), all ``.npz`` unless noted:

- ``meta.json``: class names, dataset, sizes, which artefacts exist.
- ``predictions``: ``y_true``, ``linear_pred``, ``knn_pred`` on the whole test split.
- ``tsne``: ``xy`` (M, 2) and ``labels`` (M,) for at most 2000 test images.
- ``retrieval``: ``query_x`` (8, H, W, C), ``query_y``, ``neigh_x`` (8, 8, H, W, C), ``neigh_y``,
  ``neigh_sim`` (cosine similarity of backbone features).
- ``correlation``: ``backbone`` (D', D') correlation of test backbone features and, with a
  projector, ``projector_xcorr`` (P', P') cross-correlation of the projector outputs of two
  augmented views (D', P' <= 256: the first dimensions).
- ``views``: ``originals`` (n, H, W, C), ``views`` (n, K', S, S, C), optional ``locals``, ``source``.
- ``audiovisual`` (audio-visual methods only): test spectrograms beside their images and the
  cross-modal top-5 neighbours (:func:`jem.evaluate.audiovisual.report_arrays`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from jem.baselines import compute_baselines, knn_protocol, linear_protocol
from jem.config import AugmentConfig, EvalConfig
from jem.io import verify_prepared
from jem.progress import Steps

MAX_DIAG_POINTS = 4096  # test rows used for the collapse diagnostics (RankMe is O(N D^2))
MAX_TSNE_POINTS = 2000
MAX_CORR_DIMS = 256
N_QUERIES, N_NEIGHBOURS, N_VIEW_IMAGES = 8, 8, 8


def _project(head: torch.nn.Module, feats: np.ndarray, batch_size: int) -> np.ndarray:
    """Projector outputs (N, P) of backbone features (N, D), eval mode, no grad."""
    with torch.no_grad():
        parts = [head(torch.from_numpy(feats[i : i + batch_size])).float().numpy()
                 for i in range(0, len(feats), batch_size)]
    return np.concatenate(parts, axis=0)


def _diagnostics(z: np.ndarray, pair: tuple[np.ndarray, np.ndarray] | None, seed: int) -> dict[str, float]:
    from jem.evaluate.collapse import alignment, collapse_report

    report = collapse_report(z, seed=seed)
    if pair is not None:
        report["alignment"] = alignment(*pair)
    return {k: float(v) for k, v in report.items()}


def _verdict(collapse: dict[str, Any]) -> int:
    """Top-level ``collapse.collapsed``: the backbone's verdict (the representation every protocol
    evaluates), or a *complete* collapse of the projector head (std < 0.2 / sqrt(P): near-constant
    outputs, a failed run whatever the head). Dimensional collapse of the projector alone is not
    flagged: projectors are routinely lower-rank than the backbone (Jing et al., 2022,
    arXiv:2110.09348), and pretext heads (rotation: 4 logits) are low-dimensional by design."""
    from jem.evaluate.collapse import STD_COLLAPSE_FRACTION

    proj = collapse.get("projector")
    complete = proj is not None and proj["std"] < STD_COLLAPSE_FRACTION * proj["std_healthy"]
    return int(bool(collapse["backbone"]["collapsed"]) or complete)


def evaluate(prepared: Path, encoder_dir: Path, ecfg: EvalConfig, seed: int, progress: bool = True, *,
             artefacts: Path | None = None, views: Path | None = None, augment: AugmentConfig | None = None,
             method_params: Any = None, baselines: dict[str, Any] | None = None) -> dict[str, Any]:
    """All metrics as a nested dict (see the module docstring for ``artefacts``).

    ``augment`` (the run's view recipes) enables alignment and the projector cross-correlation on
    two augmented views (``view_a``, ``view_b``) of the test images; ``method_params`` helps
    rebuild the projector head (:func:`jem.export.load_projector`). ``baselines`` is the
    ``baselines`` stage's result (:func:`jem.baselines.compute_baselines`): its ``random_init`` and
    ``pixels`` are copied in when its architecture is the encoder's; otherwise (``None``, or a
    method that needs another backbone than ``model.backbone``) they are computed here.
    """
    from jem.evaluate.features import extract_features
    from jem.evaluate.semi import finetune
    from jem.export import load_encoder, load_projector

    verify_prepared(prepared)
    stats = json.loads((prepared / "stats.json").read_text())
    mean, std, n_cls = stats["mean"], stats["std"], int(stats["num_classes"])
    tx, ty = np.load(prepared / "train_x.npy"), np.load(prepared / "train_y.npy")
    # the test split: read here and nowhere else (selection uses the validation split, never this)
    vx, vy = np.load(prepared / "test_x.npy"), np.load(prepared / "test_y.npy")
    encoder = load_encoder(encoder_dir)
    projector = load_projector(encoder_dir, method_params)
    arch = json.loads((encoder_dir / "encoder.json").read_text())["arch"]
    if baselines is not None and baselines.get("arch") != arch:
        print(f"note: the baselines were computed for {baselines.get('arch')}; this encoder is {arch}: "
              "computing its random-init baseline here")
        baselines = None
    steps = ["features", "kNN", "linear probe", "collapse", "semi-sup. 1%", "semi-sup. 10%"]
    steps += ["report artefacts"] if artefacts is not None else []
    bar = Steps("evaluate", steps, disable=not progress)

    def feats(net: torch.nn.Module, images: np.ndarray) -> np.ndarray:
        return extract_features(net, images, mean, std, ecfg.batch_size, progress=progress)

    metrics: dict[str, Any] = {}
    train_f, test_f = feats(encoder, tx), feats(encoder, vx)
    bar.advance()
    preds: dict[str, np.ndarray] = {"y_true": vy}
    metrics.update(knn_protocol(train_f, ty, test_f, vy, ecfg, n_cls, predictions=preds))
    bar.advance()
    metrics["linear"] = linear_protocol(train_f, ty, test_f, vy, ecfg, n_cls, predictions=preds)
    bar.advance()
    metrics["collapse"], correlation = _collapse(encoder, projector, test_f, vx, feats, ecfg.batch_size, augment, seed)
    bar.advance()
    for frac in ("1pct", "10pct"):
        idx = np.load(prepared / f"subset_{frac}.npy")
        metrics[f"semi_{frac}"] = finetune(encoder, train_f.shape[1], tx[idx], ty[idx], vx, vy, mean, std, n_cls,
                                           ecfg.semi_epochs, ecfg.semi_lr, seed=seed, progress=progress)
        bar.advance()
    av = None
    if views is not None and (prepared / "train_audio.npy").exists() and (encoder_dir / "audio.safetensors").exists():
        from jem.evaluate.audiovisual import evaluate_av  # audio-visual methods: audio, cross-modal, raw audio

        av = evaluate_av(prepared, views, encoder_dir, encoder, projector, ecfg, seed,
                         audio_cfg=augment.audio if augment is not None else None)
    av_report = av.pop("_report") if av is not None else None
    if artefacts is not None:
        _write_artefacts(artefacts, prepared, views, augment, seed, stats, preds, correlation,
                         (tx, ty, train_f), (vx, vy, test_f), av_report)
        bar.advance()
    bar.close()
    if baselines is None:
        baselines = compute_baselines(prepared, None, ecfg, seed, progress, arch=arch)
    metrics["random_init"], metrics["pixels"] = baselines["random_init"], baselines["pixels"]
    if av is not None:
        metrics["random_init"] = {**metrics["random_init"], **av.pop("random_init")}
        metrics.update(av)
    return metrics


def _collapse(encoder: torch.nn.Module, projector: torch.nn.Module | None, test_f: np.ndarray, vx: np.ndarray,
              feats: Any, batch_size: int, augment: AugmentConfig | None, seed: int
              ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Collapse diagnostics on a seeded subset of the test split, clean images and two views, of the
    backbone and the projector, with the verdict; and the correlation matrices the report draws."""
    from jem.evaluate.artefacts import augmented_pairs, subsample
    from jem.evaluate.collapse import correlation_matrix, cross_correlation

    sub = subsample(len(vx), MAX_DIAG_POINTS, seed)
    pair_f = None
    if augment is not None:
        xa, xb = augmented_pairs(vx[sub], augment.view_a, augment.view_b, seed)
        pair_f = (feats(encoder, xa), feats(encoder, xb))
    collapse: dict[str, Any] = {"backbone": _diagnostics(test_f[sub], pair_f, seed)}
    correlation = {"backbone": correlation_matrix(test_f[sub][:, :MAX_CORR_DIMS])}
    if projector is not None:
        proj_pair = None if pair_f is None else (_project(projector, pair_f[0], batch_size),
                                                 _project(projector, pair_f[1], batch_size))
        collapse["projector"] = _diagnostics(_project(projector, test_f[sub], batch_size), proj_pair, seed)
        if proj_pair is not None:
            correlation["projector_xcorr"] = cross_correlation(proj_pair[0][:, :MAX_CORR_DIMS],
                                                               proj_pair[1][:, :MAX_CORR_DIMS])
    collapse["collapsed"] = _verdict(collapse)
    return collapse, correlation


def _write_artefacts(out: Path, prepared: Path, views: Path | None, augment: AugmentConfig | None, seed: int,
                     stats: dict[str, Any], preds: dict[str, np.ndarray], correlation: dict[str, np.ndarray],
                     train: tuple[np.ndarray, np.ndarray, np.ndarray],
                     test: tuple[np.ndarray, np.ndarray, np.ndarray],
                     av_report: dict[str, np.ndarray] | None = None) -> None:
    from jem.evaluate.artefacts import pick_per_class, retrieval, tsne_map, view_samples
    from jem.io import atomic_dir

    tx, ty, train_f = train
    vx, vy, test_f = test
    xy, idx = tsne_map(test_f, MAX_TSNE_POINTS, seed)
    queries = pick_per_class(vy, N_QUERIES, seed)
    neigh, sims = retrieval(train_f, test_f[queries], N_NEIGHBOURS)  # (Q, k)
    sample = view_samples(prepared, views, augment, N_VIEW_IMAGES, seed)
    with atomic_dir(out) as tmp:
        np.savez(tmp / "predictions.npz", **cast(Any, preds))
        np.savez(tmp / "tsne.npz", xy=xy, labels=vy[idx])
        np.savez(tmp / "retrieval.npz", query_x=vx[queries], query_y=vy[queries], neigh_x=tx[neigh],
                 neigh_y=ty[neigh], neigh_sim=sims)
        np.savez(tmp / "correlation.npz", **cast(Any, {k: v.astype(np.float32) for k, v in correlation.items()}))
        if sample:
            np.savez(tmp / "views.npz", **cast(Any, sample))
        if av_report is not None:  # audio-visual methods only
            np.savez_compressed(tmp / "audiovisual.npz", **cast(Any, av_report))
        meta = {"dataset": stats.get("dataset"), "classes": [str(c) for c in stats["classes"]],
                "n_train": int(len(ty)), "n_val": stats.get("n_val"), "n_test": int(len(vy)),
                "n_tsne": int(len(idx)), "image_size": int(vx.shape[1]),
                "channels": int(vx.shape[3]), "views_source": str(sample.get("source", "none")),
                "files": sorted(p.name for p in tmp.iterdir())}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
