"""W-MSE: Ermolov, Siarohin, Sangineto, Sebe 2021, "Whitening for Self-Supervised Representation
Learning", arXiv:2007.06346, section 3 (eqs. (1)-(6): Cholesky whitening, the MSE of normalised
whitened positives) and section 3.1 (batch slicing), following the authors' reference code
(github.com/htdt/self-supervised, ``methods/w_mse.py``, ``methods/whitening.py``).

Inputs: ``d`` views, each (N, D) embeddings of the same N images (``d`` positives per image).
For ``w_iter`` iterations the batch indices are randomly partitioned into sub-batches of about
``w_size`` rows; within each sub-batch every view is whitened on its own (as the reference code
does): with mean ``mu`` and covariance ``Sigma`` of the sub-batch's rows (unbiased, 1/(M-1)),

    Sigma + eps I = L L^T  (Cholesky),   W = L^{-1},   z_hat = W (z - mu)                (eqs. 3-5)

so the whitened rows have identity covariance. The loss is the mean over all ``d(d-1)/2`` pairs of
views, all images and the ``w_iter`` iterations of ``||z_hat_i/|z_hat_i| - z_hat_j/|z_hat_j|||^2
= 2 - 2 cos(z_hat_i, z_hat_j)`` (eq. 6; reference ``norm_mse_loss``).

Deviations and choices:
* regularisation ``Sigma + eps I`` (``w_eps``), where the reference code shrinks
  ``(1 - eps) Sigma + eps I`` with eps = 0 by default; both are identical at eps = 0;
* the covariance and Cholesky factorisation run in float64 (the embedding is cast back), so small
  sub-batches do not make the factorisation fail in float32;
* under data parallelism every worker gathers all views (autograd-aware) and whitens sub-batches of
  the *global* batch, so the covariance is estimated from ``w_size`` rows however small the
  per-worker batch is, and the loss and gradients are exactly the single-process ones on the
  concatenated batch. The partition comes from a generator seeded with the optimizer step, so it is
  identical on every worker without communication and replays exactly on resume;
* if the global batch is not a multiple of ``w_size`` the ``N // w_size`` sub-batches are of nearly
  equal size, each at least ``w_size`` rows (the reference requires a multiple); a sub-batch of no
  more rows than embedding dimensions (singular covariance) is an error, not a silent blow-up.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from jem.dist import Gather


def whiten(z: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Cholesky whitening (eqs. 3-5) of the rows of ``z`` (M, D) -> (M, D); float64 inside."""
    z64 = z.double()
    zc = z64 - z64.mean(dim=0)  # (M, D)
    cov = zc.T @ zc / (z.shape[0] - 1)  # (D, D)
    chol = torch.linalg.cholesky(cov + eps * torch.eye(z.shape[1], dtype=cov.dtype, device=cov.device))
    # z_hat^T = L^{-1} zc^T, solved rather than inverted
    return torch.linalg.solve_triangular(chol, zc.T, upper=False).T.to(z.dtype)


def norm_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``||a/|a| - b/|b|||^2 = 2 - 2 cos(a, b)``; (N, D) x2 -> scalar."""
    return 2 - 2 * (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(dim=1).mean()


def sub_batches(n: int, w_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A random partition of ``range(n)`` into ``max(1, n // w_size)`` nearly equal index sets."""
    perm = torch.randperm(n, generator=generator)
    return list(perm.tensor_split(max(1, n // w_size)))


def wmse_loss(views: list[torch.Tensor], partitions: list[list[torch.Tensor]], eps: float = 0.0
              ) -> torch.Tensor:
    """Eq. (6) averaged over view pairs and partitions (one partition per whitening iteration).

    views: ``d`` tensors (N, D), row ``i`` of each is the same image; partitions: ``w_iter`` lists
    of index tensors, each list a partition of ``range(N)``.
    """
    total = views[0].new_zeros(())
    pairs = list(itertools.combinations(range(len(views)), 2))
    for parts in partitions:
        white = [torch.empty_like(v) for v in views]
        for idx in parts:
            for v, w in zip(views, white):
                w[idx] = whiten(v[idx], eps)
        for i, j in pairs:
            total = total + norm_mse(white[i], white[j])
    return total / (len(partitions) * len(pairs))


class WMSELoss(nn.Module):
    """Thin module: hyperparameters, the step-seeded partitions, and the gather."""

    def __init__(self, w_size: int = 128, w_iter: int = 1, eps: float = 0.0) -> None:
        super().__init__()
        self.w_size, self.w_iter, self.eps = w_size, w_iter, eps

    def forward(self, views: list[torch.Tensor], step: int, gather: Gather = lambda t: t
                ) -> dict[str, torch.Tensor]:
        views = [gather(v) for v in views]  # (N, D) each, N = global batch
        n, d = views[0].shape
        rows = n // max(1, n // self.w_size)  # the smallest sub-batch
        if rows <= d:
            raise ValueError(f"W-MSE cannot whiten {d}-d embeddings in sub-batches of {rows} rows (the "
                             f"covariance of at most {d} centred rows is singular): the global batch ({n}) "
                             f"and methods.wmse.w_size ({self.w_size}) must exceed methods.wmse.emb_dim")
        g = torch.Generator().manual_seed(step)
        partitions = [[i.to(views[0].device) for i in sub_batches(views[0].shape[0], self.w_size, g)]
                      for _ in range(self.w_iter)]
        return {"loss": wmse_loss(views, partitions, self.eps)}
