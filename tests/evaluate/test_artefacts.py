"""The report's arrays: augmented pairs, per-class picks, retrieval, t-SNE, correlation matrices,
and the linear-probe logits behind the per-class accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from jem.config import ViewConfig
from jem.evaluate.artefacts import augmented_pairs, pick_per_class, retrieval, subsample, tsne_map
from jem.evaluate.collapse import correlation_matrix, cross_correlation
from jem.evaluate.knn import topk_accuracy
from jem.evaluate.linear import linear_logits, linear_probe


def test_pick_per_class_covers_classes_first_and_is_seeded():
    labels = np.repeat(np.arange(5), 20)
    idx = pick_per_class(labels, 8, seed=3)
    assert len(set(idx.tolist())) == 8
    assert sorted(labels[idx[:5]].tolist()) == [0, 1, 2, 3, 4]
    assert np.array_equal(idx, pick_per_class(labels, 8, seed=3))
    assert not np.array_equal(idx, pick_per_class(labels, 8, seed=4))
    assert len(pick_per_class(labels[:3], 8, 0)) == 3


def test_subsample_sorted_subset():
    assert np.array_equal(subsample(5, 10, 0), np.arange(5))
    s = subsample(100, 10, 1)
    assert len(s) == 10 and np.all(np.diff(s) > 0) and np.array_equal(s, subsample(100, 10, 1))


def test_retrieval_matches_brute_force_cosine():
    rng = np.random.default_rng(0)
    train, query = rng.normal(size=(200, 16)), rng.normal(size=(7, 16))
    idx, sims = retrieval(train, query, k=8)
    cos = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ (train / np.linalg.norm(train, axis=1,
                                                                                           keepdims=True)).T
    ref = np.argsort(-cos, axis=1)[:, :8]
    assert np.array_equal(idx, ref)
    assert np.allclose(sims, np.take_along_axis(cos, ref, axis=1), atol=1e-5)
    assert retrieval(train[:3], query, k=8)[0].shape == (7, 3)


def test_tsne_map_separates_clusters_and_is_deterministic():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20)) * 5
    labels = np.repeat(np.arange(3), 40)
    feats = centres[labels] + rng.normal(size=(120, 20)) * 0.3
    xy, idx = tsne_map(feats, max_points=100, seed=0)
    assert xy.shape == (100, 2) and xy.dtype == np.float32 and len(idx) == 100
    xy2, _ = tsne_map(feats, max_points=100, seed=0)
    assert np.allclose(xy, xy2)
    lab = labels[idx]
    # each point's nearest map neighbour has its class: t-SNE keeps well-separated clusters
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1) + np.eye(len(xy)) * 1e9
    assert (lab[d.argmin(1)] == lab).mean() > 0.95


def test_augmented_pairs_seeded_and_distinct():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 12, 12, 3), dtype=np.uint8)
    a, b = augmented_pairs(images, ViewConfig(), ViewConfig(blur_p=0.1, solarize_p=0.2), seed=1, chunk=4)
    assert a.shape == b.shape == images.shape and a.dtype == np.uint8
    a2, b2 = augmented_pairs(images, ViewConfig(), ViewConfig(blur_p=0.1, solarize_p=0.2), seed=1, chunk=4)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    assert not np.array_equal(a, b)


def test_cross_correlation_closed_forms():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 6)) * rng.uniform(0.1, 10, size=6) + 3.0
    assert np.allclose(correlation_matrix(z), np.corrcoef(z, rowvar=False), atol=1e-12)
    w = rng.normal(size=(500, 4))
    ref = np.corrcoef(np.concatenate([z, w], axis=1), rowvar=False)[:6, 6:]
    assert np.allclose(cross_correlation(z, w), ref, atol=1e-12)
    assert np.allclose(cross_correlation(z, 2 * z - 1), np.corrcoef(z, rowvar=False), atol=1e-12)
    q, _ = np.linalg.qr(rng.normal(size=(100, 5)))
    q -= q.mean(0)  # centred, still (nearly) orthogonal columns -> cross-correlation ~ identity
    c = cross_correlation(q, q)
    assert np.allclose(np.diag(c), 1.0)
    const = np.concatenate([z[:, :2], np.ones((500, 1))], axis=1)
    assert np.all(correlation_matrix(const)[2] == 0.0)
    with pytest.raises(ValueError, match="same number of rows"):
        cross_correlation(z, w[:10])


def test_linear_logits_agree_with_linear_probe():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=300)
    x = rng.normal(size=(300, 8)) + y[:, None] * 0.8
    logits = linear_logits(x[:200], y[:200], x[200:], 4)
    assert logits.shape == (100, 4)
    assert topk_accuracy(logits, y[200:]) == linear_probe(x[:200], y[:200], x[200:], y[200:], 4)
