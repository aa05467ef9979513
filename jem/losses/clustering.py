"""Offline pseudo-label clustering: DeepCluster's k-means and SeLa's Sinkhorn equipartition.

DeepCluster: Caron, Bojanowski, Joulin, Douze 2018, "Deep Clustering for Unsupervised Learning of
Visual Features", arXiv:1807.05520, section 3.2 eq. (2) (k-means on features), section 3.3
(avoiding trivial solutions) and the reference code (faiss k-means, 20 iterations; PCA-whitening
to 256 dims then L2 normalisation of the features before clustering).

* :func:`pca_whiten` + L2 normalisation = the reference ``preprocess_features`` (eigenvalue power
  -1/2). Deviation: ``eps`` (relative to the largest eigenvalue) is added to the eigenvalues so a
  rank-deficient feature matrix does not divide by zero.
* :func:`kmeans`: Lloyd iterations from a k-means++ seeding (deviation: faiss seeds with a random
  subset; k-means++ makes small runs far less sensitive to the draw). Empty clusters, section 3.3
  "empty clusters": an empty cluster's centroid becomes a non-empty centroid (chosen with
  probability proportional to its size, as faiss does) plus a small perturbation ``+eps d``, the
  donor moving by ``-eps d``; the donor's points are then split between the two. Because the donor
  centroid is the mean of its points, the hyperplane between ``c + eps d`` and ``c - eps d`` passes
  through that mean, so both halves are non-empty unless all of the donor's points coincide: the
  returned assignment has no empty cluster whenever there are at least ``k`` distinct points.
* :func:`balanced_weights`: section 3.3 "trivial parametrization": the reference samples images
  uniformly over pseudo-labels. The engine draws its own batches, so the same objective is
  implemented as per-sample loss weights ``w_i = N / (K' n_{c(i)})`` (``K'`` non-empty clusters,
  ``n_c`` their sizes): under uniform sampling of images, ``E[w_i l_i] = (1/K') sum_c mean_{i in
  c} l_i``, exactly the expected loss under the reference's uniform-over-clusters sampler.

SeLa: Asano, Rupprecht, Vedaldi 2020, "Self-labelling via simultaneous clustering and
representation learning", arXiv:1911.05371, section 3 eq. (5)-(7): pseudo-labels ``Q`` on the
transportation polytope (every image carries mass ``1/N``, every label ``1/K``: an equipartition)
minimising ``<Q, -log P> - (1/lambda) H(Q)``; the solution is ``Q = diag(a) P^lambda diag(b)``,
found with Sinkhorn-Knopp. :func:`sinkhorn_equipartition` runs it in the log domain (deviation:
the reference raises ``P`` to the power ``lambda = 25`` in float64, which underflows for
confident predictions; the log domain gives the same ``Q`` without underflow), stopping when every
label's mass is within ``tol`` (relative) of ``1/K``. Labels are the per-image argmax of ``Q`` (the
reference's hard labels).

Shapes: features (N, D); log-probabilities (N, K); labels (N,) int64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------------------------ DeepCluster
@torch.no_grad()
def pca_whiten(x: torch.Tensor, dim: int, eps: float = 1e-5) -> torch.Tensor:
    """(N, D) -> (N, min(dim, D)): centred, projected on the top principal axes, each scaled by
    ``(eigenvalue + eps * max eigenvalue)^(-1/2)`` (unit variance per axis). Computed in float64."""
    x64 = x.double()
    xc = x64 - x64.mean(dim=0)
    cov = xc.T @ xc / max(1, x.shape[0] - 1)  # (D, D)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    d = min(dim, x.shape[1])
    evals, evecs = evals.flip(0)[:d], evecs.flip(1)[:, :d]
    # eigenvectors are defined up to sign: fix it (largest |entry| positive) so results are reproducible
    sign = torch.sign(evecs.gather(0, evecs.abs().argmax(dim=0, keepdim=True)))
    evecs = evecs * torch.where(sign == 0, torch.ones_like(sign), sign)
    scale = (evals.clamp_min(0) + eps * evals.max().clamp_min(1e-30)).rsqrt()
    return (xc @ evecs * scale).to(x.dtype)


def preprocess_features(x: torch.Tensor, pca_dim: int) -> torch.Tensor:
    """DeepCluster's ``preprocess_features``: PCA-whitening to ``pca_dim`` then L2 normalisation."""
    return F.normalize(pca_whiten(x, pca_dim), dim=1)


def _sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(N, D), (K, D) -> (N, K) squared Euclidean distances."""
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ c.T + c.pow(2).sum(1)).clamp_min(0)


@torch.no_grad()
def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur, Vassilvitskii 2007): (N, D) -> (K, D) initial centroids."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [x[first]]
    d2 = _sq_dists(x, x[first:first + 1]).squeeze(1)  # (N,)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than clusters: duplicates, left to the empty-cluster rule
            j = int(torch.randint(n, (1,), generator=generator))
        else:
            j = int(torch.multinomial((d2 / total).double().cpu(), 1, generator=generator))
        centroids.append(x[j])
        d2 = torch.minimum(d2, _sq_dists(x, x[j:j + 1]).squeeze(1))
    return torch.stack(centroids)


@torch.no_grad()
def reseed_empty_clusters(centroids: torch.Tensor, counts: torch.Tensor, generator: torch.Generator,
                          eps: float = 1.0 / 1024) -> torch.Tensor:
    """Section 3.3: every empty cluster gets a donor (probability proportional to the donor's size
    among clusters with at least 2 points); the two centroids become ``c +- eps * s * u`` with ``u``
    a random unit direction and ``s`` the donor centroid's norm (faiss uses a relative ``eps`` of
    1/1024 too). Sizes are halved in the bookkeeping so one donor is not split forever.
    Returns new centroids (K, D); ``counts`` (K,) is not modified."""
    centroids, counts = centroids.clone(), counts.clone().double()
    for j in torch.nonzero(counts == 0).flatten().tolist():
        weights = (counts - 1).clamp_min(0)
        if weights.sum() <= 0:
            break  # no cluster can be split
        donor = int(torch.multinomial(weights.cpu(), 1, generator=generator))
        u = torch.randn(centroids.shape[1], generator=generator, dtype=torch.float64).to(centroids)
        step = eps * centroids[donor].norm().clamp_min(1e-12) * u / u.norm()
        centroids[j] = centroids[donor] + step
        centroids[donor] = centroids[donor] - step
        counts[j] = counts[donor] / 2
        counts[donor] = counts[donor] - counts[j]
    return centroids


def _update_centroids(x: torch.Tensor, labels: torch.Tensor, c: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Means of the assigned points; empty clusters keep their centroid (re-seeded afterwards)."""
    sums = torch.zeros_like(c).index_add_(0, labels, x)
    return torch.where((counts > 0)[:, None], sums / counts.clamp_min(1)[:, None].to(x.dtype), c)


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int = 20, generator: torch.Generator | None = None,
           max_repairs: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with empty-cluster re-seeding. (N, D) -> (centroids (K, D), labels (N,)).

    Each iteration: assign to the nearest centroid, move centroids to their points' means, re-seed
    empty clusters. A final assignment follows; while it still leaves a cluster empty (possible
    after several splits of one donor), another update + re-seed + assign round runs (at most
    ``max_repairs``).
    """
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k-means: {k} clusters for {x.shape[0]} points")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    c = kmeans_plus_plus(x, k, g)
    labels = _sq_dists(x, c).argmin(1)
    for it in range(iters + max_repairs):
        counts = torch.bincount(labels, minlength=k)
        if it >= iters and bool((counts > 0).all()):
            break  # the Lloyd iterations are done and no cluster is empty
        c = _update_centroids(x, labels, c, counts)
        if bool((counts == 0).any()):
            c = reseed_empty_clusters(c, counts, g)
        labels = _sq_dists(x, c).argmin(1)
    return c, labels


def balanced_weights(labels: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) labels -> (N,) weights ``N / (K' n_{c(i)})`` (mean 1): uniform sampling over clusters."""
    counts = torch.bincount(labels, minlength=k).to(torch.float64)
    k_nonempty = int((counts > 0).sum())
    return (labels.numel() / (k_nonempty * counts[labels])).float()


# ------------------------------------------------------------------------------------------- SeLa
@torch.no_grad()
def sinkhorn_equipartition(log_p: torch.Tensor, lamb: float = 25.0, tol: float = 1e-2, max_iters: int = 1000
                           ) -> torch.Tensor:
    """Eq. (7): ``Q = diag(a) P^lambda diag(b)`` with image marginals ``1/N`` and label marginals
    ``1/K``. (N, K) log-probabilities -> (N, K) ``log Q`` (float64).

    Alternates the label-side and image-side scalings in the log domain; stops once every label's
    mass ``sum_i Q_ik`` is within ``tol`` relative of ``1/K`` (after an image-side step, so the image
    marginals are exact) or after ``max_iters`` alternations.
    """
    n, k = log_p.shape
    scores = lamb * log_p.double()  # log P^lambda
    log_r, log_c = -torch.log(torch.tensor(float(k), dtype=torch.float64)), -torch.log(
        torch.tensor(float(n), dtype=torch.float64))
    a = torch.zeros(n, 1, dtype=torch.float64, device=log_p.device)  # image-side log scaling
    b = torch.zeros(1, k, dtype=torch.float64, device=log_p.device)  # label-side log scaling
    for _ in range(max_iters):
        b = log_r - torch.logsumexp(scores + a, dim=0, keepdim=True)
        a = log_c - torch.logsumexp(scores + b, dim=1, keepdim=True)
        label_mass = torch.logsumexp(scores + a + b, dim=0).exp()  # (K,)
        if float((label_mass * k - 1).abs().max()) < tol:
            break
    return scores + a + b


def sela_labels(log_p: torch.Tensor, lamb: float = 25.0, tol: float = 1e-2, max_iters: int = 1000) -> torch.Tensor:
    """(N, K) log-probabilities -> (N,) hard pseudo-labels: per image, the argmax of ``Q``."""
    return sinkhorn_equipartition(log_p, lamb, tol, max_iters).argmax(dim=1)


# ------------------------------------------------------------------------------------------- loss
def pseudo_label_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None
                               ) -> torch.Tensor:
    """``(1/B) sum_i w_i CE(logits_i, y_i)`` (w = 1 without weights). (B, K), (B,), (B,) -> scalar.

    Divided by B, not by ``sum w``, so that the per-worker means averaged by DDP equal the
    single-process value on the whole batch and the estimate of the balanced objective is unbiased.
    """
    ce = F.cross_entropy(logits, labels, reduction="none")  # (B,)
    return (ce * weights).mean() if weights is not None else ce.mean()


class PseudoLabelLoss(nn.Module):
    """Thin module: (optionally weighted) cross-entropy on pseudo-labels plus the batch accuracy
    against them (a training diagnostic: near 1 means the labels are easy or collapsed)."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        loss = pseudo_label_cross_entropy(logits, labels, weights)
        acc = (logits.detach().argmax(dim=1) == labels).float().mean()
        return {"loss": loss, "label_acc": acc}
