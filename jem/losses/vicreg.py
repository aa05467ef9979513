"""VICReg: Bardes, Ponce, LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", arXiv:2105.04906, section 3.1, eqs. (1)-(6), and Algorithm 1.

Symbols: ``inv_weight`` = lambda, ``var_weight`` = mu, ``cov_weight`` = nu, ``gamma`` = gamma,
``eps`` = epsilon. Inputs ``z_a``, ``z_b``: (N, D) embeddings of the two views (expander outputs).

Deliberate choices, all following the authors' reference code (which the published coefficients
25/25/1 were tuned for) rather than the literal equations:
* invariance is ``mean((z_a - z_b)^2)`` over samples *and* dimensions (eq. 5 sums over dimensions);
* the variance term is averaged over the two branches, ``(v(Z_a) + v(Z_b)) / 2``, so constant
  embeddings give ``gamma - sqrt(eps)`` (not twice that): the "factor of two" of the docs;
* the covariance terms of the two branches are summed, ``c(Z_a) + c(Z_b)``, each ``1/D`` times the
  sum of squared off-diagonal entries of the (N-1)-normalised covariance (eq. 4);
* variances use the unbiased (N-1) estimator.
Under data parallelism all three terms are computed on the gathered global batch, so the loss is
exactly the single-process loss of the concatenated batch.
"""

from __future__ import annotations

import torch
from torch import nn

from jem.dist import Gather


def invariance_term(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between the two views' embeddings, (N, D) x2 -> scalar."""
    return (z_a - z_b).pow(2).mean()


def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Eq. (1)-(2): mean over dimensions of ``relu(gamma - sqrt(Var(z_j) + eps))``; (N, D) -> scalar."""
    std = torch.sqrt(z.var(dim=0) + eps)  # (D,)
    return torch.relu(gamma - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """Eq. (3)-(4): ``1/D * sum_{i != j} C(z)_{ij}^2`` with ``C`` the (N-1)-normalised covariance."""
    n, d = z.shape
    zc = z - z.mean(dim=0)
    cov = zc.T @ zc / (n - 1)  # (D, D)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.pow(2).sum() / d


def vicreg_loss(z_a: torch.Tensor, z_b: torch.Tensor, inv_weight: float = 25.0, var_weight: float = 25.0,
                cov_weight: float = 1.0, gamma: float = 1.0, eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """Eq. (6) with the reference code's normalisation; returns the total and each term."""
    inv = invariance_term(z_a, z_b)
    var = 0.5 * (variance_term(z_a, gamma, eps) + variance_term(z_b, gamma, eps))
    cov = covariance_term(z_a) + covariance_term(z_b)
    loss = inv_weight * inv + var_weight * var + cov_weight * cov
    return {"loss": loss, "inv": inv.detach(), "var": var.detach(), "cov": cov.detach()}


class VICRegLoss(nn.Module):
    """Thin module: keeps the hyperparameters and gathers the global batch before the terms."""

    def __init__(self, inv_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0,
                 gamma: float = 1.0, eps: float = 1e-4) -> None:
        super().__init__()
        self.inv_weight, self.var_weight, self.cov_weight = inv_weight, var_weight, cov_weight
        self.gamma, self.eps = gamma, eps

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor, gather: Gather = lambda t: t
                ) -> dict[str, torch.Tensor]:
        return vicreg_loss(gather(z_a), gather(z_b), self.inv_weight, self.var_weight, self.cov_weight,
                           self.gamma, self.eps)
