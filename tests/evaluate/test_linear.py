"""Linear probe against scikit-learn's LogisticRegression on the same objective and features."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from jem.evaluate.linear import fit_logistic, linear_probe, standardise


def numpy_objective(x, y, weight, bias, l2):
    """mean CE + l2/2 ||W||^2 in numpy (log-sum-exp), W (D, C), written independently of torch."""
    logits = x @ weight + bias
    m = logits.max(axis=1, keepdims=True)
    log_z = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(log_z - logits[np.arange(len(y)), y]) + 0.5 * l2 * (weight**2).sum())


def sklearn_fit(x, y, l2):
    """Same objective: sklearn minimises C * sum CE + ||W||^2 / 2, i.e. ours times C * N.

    Single-threaded: sklearn's and torch's separate OpenMP runtimes otherwise spin against each
    other on a 2-core machine and slow the torch fit that follows by 10-50x.
    """
    with threadpool_limits(limits=1):
        return LogisticRegression(C=1.0 / (l2 * len(x)), tol=1e-10, max_iter=20000).fit(x, y)


def digits_split():
    x, y = load_digits(return_X_y=True)
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


def gaussian_3class(seed=0, n=900, d=10):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=0.8, size=(3, d))  # overlapping classes: accuracy well below 1
    y = rng.integers(0, 3, size=n)
    x = centres[y] + rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d) + 5.0
    return x[:600], x[600:], y[:600], y[600:]


@pytest.mark.parametrize("problem", ["digits", "gauss3"])
@pytest.mark.parametrize("l2", [1e-4, 1e-2])
def test_matches_sklearn_accuracy_and_objective(problem, l2):
    x_tr, x_te, y_tr, y_te = digits_split() if problem == "digits" else gaussian_3class()
    num_classes = int(y_tr.max()) + 1
    s_tr, s_te = standardise(x_tr, x_te)
    clf = sklearn_fit(s_tr, y_tr, l2)
    sk_top1 = float((clf.predict(s_te) == y_te).mean())

    ours = linear_probe(x_tr, y_tr, x_te, y_te, num_classes, l2=l2)
    assert abs(ours["top1"] - sk_top1) <= 0.005, (ours["top1"], sk_top1)
    assert 0.5 < ours["top1"] < 1.0  # a non-trivial problem, so agreement means something

    weight, bias, loss = fit_logistic(s_tr, y_tr, num_classes, l2)
    assert ((s_te @ weight + bias).argmax(axis=1) == clf.predict(s_te)).mean() >= 0.99
    sk_loss = numpy_objective(s_tr, y_tr, clf.coef_.T, clf.intercept_, l2)
    assert loss == pytest.approx(numpy_objective(s_tr, y_tr, weight, bias, l2), abs=1e-12)
    assert loss <= sk_loss + 1e-6, (loss, sk_loss)


def test_top5_with_fewer_than_five_classes_is_one():
    x_tr, x_te, y_tr, y_te = gaussian_3class(seed=1)
    assert linear_probe(x_tr, y_tr, x_te, y_te, num_classes=3)["top5"] == 1.0


def test_standardise_uses_train_statistics_only():
    train = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])  # mean (2, 1), std (sqrt(8/3), 0)
    test = np.array([[2.0 + np.sqrt(8 / 3), 3.0]])
    s_tr, s_te = standardise(train, test)
    np.testing.assert_allclose(s_tr.mean(axis=0), [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(s_tr.std(axis=0), [1.0, 0.0], atol=1e-12)  # constant dim only centred
    np.testing.assert_allclose(s_te, [[1.0, 2.0]])


def test_separable_toy_problem_and_bias_unpenalised():
    # one feature, two classes split at x = 3 (not at 0): needs the (unpenalised) bias
    x = np.array([[1.0], [2.0], [4.0], [5.0]])
    y = np.array([0, 0, 1, 1])
    weight, bias, _ = fit_logistic(x, y, 2, l2=1e-3)
    pred = (x @ weight + bias).argmax(axis=1)
    np.testing.assert_array_equal(pred, y)
    # stationarity: the gradient of the bias is zero, so predicted probs sum to the label counts
    logits = x @ weight + bias
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p.sum(axis=0), [2.0, 2.0], atol=1e-6)
