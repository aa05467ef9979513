"""Linear probe: multinomial logistic regression on frozen, standardised features.

The standard linear evaluation of self-supervised encoders, in the form used for the transfer
experiments of SimCLR (Chen et al., 2020, arXiv:2002.05709, appendix) and of Kornblith, Shlens &
Le (2019, arXiv:1805.08974): an L2-regularised multinomial logistic regression fitted with L-BFGS
on frozen features. The problem is convex, so it is solved to
convergence with full-batch L-BFGS in float64 instead of SGD with a tuned schedule: the result
depends on the features and ``l2`` only, not on optimiser settings. The objective is the one
scikit-learn's ``LogisticRegression(C=1 / (l2 * N))`` minimises, so the two can be cross-checked.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from jem.evaluate.knn import topk_accuracy


def standardise(
    train_feats: np.ndarray | torch.Tensor, test_feats: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale both splits with the TRAIN per-dimension mean and std (float64).

    Dimensions that are constant on the train split (std 0) are only centred, never divided by 0.
    """
    train = np.asarray(train_feats, dtype=np.float64)  # (N_train, D)
    test = np.asarray(test_feats, dtype=np.float64)  # (N_test, D)
    mean = train.mean(axis=0)  # (D,)
    std = train.std(axis=0)  # (D,)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def logistic_objective(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, l2: float
) -> torch.Tensor:
    """``mean_i CE(x_i W + b, y_i) + l2 / 2 * ||W||_F^2``; x (N, D), y (N,), W (D, C), b (C,).

    The bias is not penalised. Equal to scikit-learn's lbfgs objective divided by ``C * N`` when
    ``C = 1 / (l2 * N)``.
    """
    return F.cross_entropy(x @ weight + bias, y) + 0.5 * l2 * weight.pow(2).sum()


def fit_logistic(
    x: np.ndarray, y: np.ndarray, num_classes: int, l2: float = 1e-4, max_iter: int = 500
) -> tuple[np.ndarray, np.ndarray, float]:
    """Minimise :func:`logistic_objective` with full-batch L-BFGS (strong Wolfe) in float64.

    ``x`` (N, D) float, ``y`` (N,) int labels in [0, num_classes). Starts from W = 0, b = 0 (the
    problem is convex, so the start only affects speed). ``max_iter`` bounds L-BFGS iterations;
    it stops earlier when the largest gradient entry falls below 1e-10 or the loss stops changing
    by more than 1e-14. Returns ``(W (D, C), b (C,), final objective)``.
    """
    if l2 < 0 or max_iter < 1:
        raise ValueError(f"need l2 >= 0 and max_iter >= 1; got l2={l2}, max_iter={max_iter}")
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))  # (N, D)
    yt = torch.from_numpy(np.ascontiguousarray(y)).reshape(-1).long()  # (N,)
    if xt.ndim != 2 or xt.shape[0] != yt.shape[0] or xt.shape[0] == 0:
        raise ValueError(f"features (N, D) and labels (N,) mismatch: {tuple(xt.shape)} vs {tuple(yt.shape)}")
    if int(yt.min()) < 0 or int(yt.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}); got [{int(yt.min())}, {int(yt.max())}]")
    weight = torch.zeros(xt.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        history_size=100,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = logistic_objective(xt, yt, weight, bias, l2)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        final = float(logistic_objective(xt, yt, weight, bias, l2))
    return weight.detach().numpy(), bias.detach().numpy(), final


def linear_logits(
    train_feats: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    test_feats: np.ndarray | torch.Tensor,
    num_classes: int,
    l2: float = 1e-4,
    max_iter: int = 500,
) -> np.ndarray:
    """Test-split logits (N_test, C) of the linear probe: standardise, fit, apply.

    Features (N, D) are standardised with the train statistics (:func:`standardise`), then a
    multinomial logistic regression (:func:`fit_logistic`, penalty ``l2 / 2 * ||W||^2`` on the
    mean cross-entropy) is fitted on the train split and applied to the test split.
    """
    x_train, x_test = standardise(train_feats, test_feats)
    weight, bias, _ = fit_logistic(x_train, np.asarray(train_labels), num_classes, l2, max_iter)
    return x_test @ weight + bias  # (N_test, C)


def linear_probe(
    train_feats: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    test_feats: np.ndarray | torch.Tensor,
    test_labels: np.ndarray | torch.Tensor,
    num_classes: int,
    l2: float = 1e-4,
    max_iter: int = 500,
) -> dict[str, float]:
    """Linear-probe top-1/top-5 accuracy on the test split, as ``{"top1": .., "top5": ..}``
    (:func:`linear_logits` + :func:`jem.evaluate.knn.topk_accuracy`)."""
    logits = linear_logits(train_feats, train_labels, test_feats, num_classes, l2, max_iter)
    return topk_accuracy(logits, np.asarray(test_labels))
