"""Weighted kNN (InstDisc arXiv:1805.01978 / DINO) against a slow reference and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from jem.evaluate.knn import knn_eval, knn_scores, topk_accuracy


def reference_scores(train, labels, test, k, temperature, num_classes):
    """Slow double loop written from the protocol's definition, independent of the torch code."""
    out = np.zeros((len(test), num_classes))
    train_n = []
    for row in train.tolist():
        norm = math.sqrt(sum(v * v for v in row))
        train_n.append([v / norm for v in row])
    for j, q in enumerate(test.tolist()):
        qn = math.sqrt(sum(v * v for v in q))
        sims = [sum(a * b for a, b in zip(q, t, strict=True)) / qn for t in train_n]
        nearest = sorted(range(len(sims)), key=lambda i: -sims[i])[: min(k, len(sims))]
        for i in nearest:
            out[j, labels[i]] += math.exp(sims[i] / temperature)
    return out


def blobs(rng, n, d, num_classes, spread):
    centres = rng.normal(size=(num_classes, d))
    y = rng.integers(0, num_classes, size=n)
    return centres[y] + spread * rng.normal(size=(n, d)), y


@pytest.mark.parametrize("k,temperature", [(20, 0.07), (5, 0.5), (1, 1.0)])
def test_scores_match_reference_float64(k, temperature):
    rng = np.random.default_rng(0)
    train, labels = rng.normal(size=(120, 16)), rng.integers(0, 5, size=120)
    test = rng.normal(size=(30, 16))
    ours = knn_scores(train, labels, test, k, temperature, num_classes=5, chunk=7)
    ref = reference_scores(train, labels, test, k, temperature, 5)
    assert ours.shape == (30, 5) and ours.dtype == np.float64
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_scores_float32_inputs_match_reference_to_float32_precision():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(100, 8)).astype(np.float32)
    labels = rng.integers(0, 4, size=100)
    test = rng.normal(size=(20, 8)).astype(np.float32)
    ours = knn_scores(train, labels, test, 10, 0.07, num_classes=4)
    assert ours.dtype == np.float32
    ref = reference_scores(train.astype(np.float64), labels, test.astype(np.float64), 10, 0.07, 4)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_top1_agrees_with_sklearn_weighted_cosine_knn():
    rng = np.random.default_rng(2)
    x, y = blobs(rng, 1500, 24, 10, spread=1.5)
    train, test, y_train = x[:1000], x[1000:], y[:1000]
    k, temperature = 20, 0.07
    clf = KNeighborsClassifier(
        n_neighbors=k, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1 - d) / temperature)
    ).fit(train, y_train)
    scores = knn_scores(train, y_train, test, k, temperature, num_classes=10)
    agreement = (scores.argmax(axis=1) == clf.predict(test)).mean()
    assert agreement >= 0.99, agreement
    # sklearn's predict_proba is the same vote, normalised per row
    proba = scores / scores.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(proba, clf.predict_proba(test), atol=1e-9)
    acc = knn_eval(train, y_train, test, y[1000:], k, temperature, 10)["top1"]
    assert acc == pytest.approx((clf.predict(test) == y[1000:]).mean(), abs=0.01)


def test_k_larger_than_train_set_uses_every_point():
    rng = np.random.default_rng(3)
    train, labels = rng.normal(size=(7, 5)), np.array([0, 1, 2, 0, 1, 2, 0])
    test = rng.normal(size=(4, 5))
    with pytest.warns(UserWarning, match="k = 200 exceeds the 7 training features; using k = 7"):
        big = knn_scores(train, labels, test, k=200, temperature=0.1, num_classes=3)
    np.testing.assert_allclose(big, knn_scores(train, labels, test, k=7, temperature=0.1, num_classes=3))
    np.testing.assert_allclose(big, reference_scores(train, labels, test, 7, 0.1, 3), rtol=1e-12)
    # every training point votes once: the row sums are the full partition sums
    tn = train / np.linalg.norm(train, axis=1, keepdims=True)
    qn = test / np.linalg.norm(test, axis=1, keepdims=True)
    np.testing.assert_allclose(big.sum(axis=1), np.exp(qn @ tn.T / 0.1).sum(axis=1), rtol=1e-12)


def test_scale_invariance_and_class_without_neighbours():
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    labels = np.array([0, 1])
    test = np.array([[3.0, 0.0]])  # norm 3: cosine ignores it
    scores = knn_scores(train, labels, test, k=1, temperature=0.5, num_classes=3)
    np.testing.assert_allclose(scores, [[math.exp(2.0), 0.0, 0.0]])


def test_topk_accuracy_hand_example():
    scores = np.array(
        [
            [0.1, 0.7, 0.2, 0.0, 0.0, 0.0],  # label 1: top-1 hit
            [0.5, 0.1, 0.4, 0.3, 0.2, 0.0],  # label 2: 2nd best -> top-5 hit only
            [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # label 0: 6th best -> miss
            [0.3, 0.3, 0.0, 0.0, 0.0, 0.0],  # label 1: tie with class 0, lower index wins -> top-5 only
        ]
    )
    labels = np.array([1, 2, 0, 1])
    assert topk_accuracy(scores, labels) == {"top1": 0.25, "top5": 0.75}
    assert topk_accuracy(scores[:, :3], np.array([1, 2, 0, 1]), ks=(1, 5)) == {"top1": 0.25, "top5": 1.0}
    assert topk_accuracy(scores, labels, ks=(2,)) == {"top2": 0.75}


def test_bad_inputs_raise():
    x = np.zeros((3, 2)) + 1.0
    with pytest.raises(ValueError, match="train_labels"):
        knn_scores(x, np.array([0, 1, 5]), x, 1, 0.1, num_classes=3)
    with pytest.raises(ValueError, match="dims"):
        knn_scores(x, np.array([0, 1, 2]), np.ones((2, 3)), 1, 0.1, num_classes=3)
    with pytest.raises(ValueError, match="k must"):
        knn_scores(x, np.array([0, 1, 2]), x, 0, 0.1, num_classes=3)
