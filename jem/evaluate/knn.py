"""Weighted k-nearest-neighbour evaluation of frozen features.

Protocol of InstDisc (Wu, Xiong, Yu & Lin, 2018, arXiv:1805.01978, section 3.4 "weighted kNN"),
as used by DINO (Caron et al., 2021, arXiv:2104.14294, ``eval_knn.py``): features are
L2-normalised, the k training points with the highest cosine similarity ``s_i`` to a test point
vote for their class with weight ``exp(s_i / T)``, and the class with the largest summed vote wins.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """CPU tensor view of an array or tensor (numpy views with negative strides are copied)."""
    return x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _as_features(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = _as_tensor(x)
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D); got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return t


def _as_labels(y: np.ndarray | torch.Tensor, n: int, num_classes: int, name: str) -> torch.Tensor:
    t = _as_tensor(y).reshape(-1).long()
    if t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} entries for {n} feature rows")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}); got [{int(t.min())}, {int(t.max())}]")
    return t


def knn_scores(
    train_feats: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    test_feats: np.ndarray | torch.Tensor,
    k: int,
    temperature: float,
    num_classes: int,
    chunk: int = 1024,
) -> np.ndarray:
    """Class scores of the weighted kNN vote, shape (N_test, num_classes).

    ``score[j, c] = sum over the k nearest training points i of test point j with label c of
    exp(s_ij / temperature)``, where ``s_ij`` is the cosine similarity (dot product of
    L2-normalised features). ``k`` larger than ``N_train`` is clipped to it with a warning naming
    both. Computation is chunked over test rows
    (``chunk`` rows at a time, so memory is ``chunk x N_train``) on the CPU with torch. The
    precision follows the inputs: float64 if either feature array is float64, else float32
    (``exp(1/0.07)`` is about 1.6e6, so float32 scores carry about 1e-6 relative error; ranking is
    unaffected in practice).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    if num_classes < 1 or chunk < 1:
        raise ValueError(f"num_classes and chunk must be >= 1; got {num_classes}, {chunk}")
    train = _as_features(train_feats, "train_feats")
    test = _as_features(test_feats, "test_feats")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"feature dims differ: train {train.shape[1]} vs test {test.shape[1]}")
    labels = _as_labels(train_labels, train.shape[0], num_classes, "train_labels")
    dtype = torch.float64 if torch.float64 in (train.dtype, test.dtype) else torch.float32
    train = F.normalize(train.to(dtype), dim=1)  # (N_train, D)
    test = F.normalize(test.to(dtype), dim=1)  # (N_test, D)
    if k > train.shape[0]:  # never silently: the caller learns which k the scores are for
        warnings.warn(f"kNN: k = {k} exceeds the {train.shape[0]} training features; using k = {train.shape[0]}",
                      stacklevel=2)
        k = train.shape[0]
    out = torch.empty(test.shape[0], num_classes, dtype=dtype)
    for start in range(0, test.shape[0], chunk):
        sim = test[start : start + chunk] @ train.T  # (B, N_train)
        top_sim, top_idx = sim.topk(k, dim=1)  # (B, k)
        weights = (top_sim / temperature).exp()  # (B, k)
        votes = torch.zeros(sim.shape[0], num_classes, dtype=dtype)
        votes.scatter_add_(1, labels[top_idx], weights)  # (B, num_classes)
        out[start : start + chunk] = votes
    return out.numpy()


def topk_accuracy(
    scores: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Fraction of rows whose label is among the ``k`` highest scores, as ``{"top1": .., "top5": ..}``.

    Ties are broken towards the lower class index (a stable sort on descending score, the same
    rule as ``np.argmax`` for top-1), so tied scores never count as several correct guesses.
    ``k`` larger than the number of classes is clipped (the result is then 1.0) but keeps its
    name, so metric keys stay stable across datasets.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels).reshape(-1)
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0] or scores.shape[0] == 0:
        raise ValueError(f"scores (N, C) and labels (N,) mismatch: {scores.shape} vs {labels.shape}")
    order = np.argsort(-scores, axis=1, kind="stable")  # (N, C), best class first
    hits = order == labels[:, None]  # (N, C), one True per row at most
    return {f"top{k}": float(hits[:, : min(k, scores.shape[1])].any(axis=1).mean()) for k in ks}


def knn_eval(
    train_feats: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    test_feats: np.ndarray | torch.Tensor,
    test_labels: np.ndarray | torch.Tensor,
    k: int,
    temperature: float,
    num_classes: int,
) -> dict[str, float]:
    """Weighted kNN top-1/top-5 accuracy on the test split: :func:`knn_scores` + :func:`topk_accuracy`."""
    scores = knn_scores(train_feats, train_labels, test_feats, k, temperature, num_classes)
    return topk_accuracy(scores, np.asarray(test_labels))
