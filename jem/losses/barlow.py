"""Barlow Twins: Zbontar, Jing, Misra, LeCun, Deny 2021, "Barlow Twins: Self-Supervised Learning via
Redundancy Reduction", arXiv:2103.03230, section 2, eqs. (1)-(2) and Algorithm 1.

Inputs ``z_a``, ``z_b``: (N, D) projector outputs of the two views. Each is standardised along the
batch (mean 0, std 1 per dimension), then

    C_ij = sum_b za_bi zb_bj / N                                            (eq. 2)
    L    = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2                (eq. 1)

Symbols: ``offdiag_weight`` = lambda (paper 5e-3; the reference code's final default 0.0051).
``scale_loss`` multiplies the whole loss: the code the authors developed Barlow Twins with had it
(released with ``--scale-loss 0.024``, lambda 0.0051); their final code drops it and gives biases and
BatchNorm parameters a learning rate 0.024 times the weights' instead (0.0048 vs 0.2), which is
about the same thing because LARS's trust ratio cancels the loss scale for the adapted weights.
The functions here default to 1.0 (eq. 1 as printed); ``methods.barlow.scale_loss`` defaults to 0.05,
of the order of the released 0.024, because the engine's LARS also leaves biases and BatchNorm
parameters unadapted (on digits, 30 epochs: kNN top-1 0.85 with 1.0, 0.91 with 0.024); 0.05
measured better than 0.024 with the current defaults (docs/methods.md: 0.956 against 0.942).

Standardisation follows the reference code, which applies a non-affine ``BatchNorm1d`` in training
mode: biased (1/N) variance and ``eps`` = 1e-5 inside the square root. The reference converts the
model to SyncBatchNorm, so the statistics are over the *global* batch; here every worker gathers
both views (autograd-aware) and computes the full loss of the global batch, which is exactly the
single-process loss and gradient of the concatenated batch (the reference instead sums per-GPU
parts of C with a raw ``all_reduce``, which autograd does not see).
"""

from __future__ import annotations

import torch
from torch import nn

from jem.dist import Gather


def standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(N, D) -> (N, D) with zero mean and unit (biased) variance per column, like BatchNorm1d."""
    zc = z - z.mean(dim=0)
    return zc / torch.sqrt(zc.pow(2).mean(dim=0) + eps)


def cross_correlation(z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Eq. (2): (N, D) x2 -> (D, D) cross-correlation of the batch-standardised embeddings."""
    return standardize(z_a, eps).T @ standardize(z_b, eps) / z_a.shape[0]


def barlow_twins_loss(z_a: torch.Tensor, z_b: torch.Tensor, offdiag_weight: float = 5e-3,
                      scale_loss: float = 1.0, eps: float = 1e-5) -> dict[str, torch.Tensor]:
    """Eq. (1); returns the total and the two terms (invariance ``on_diag``, redundancy ``off_diag``)."""
    c = cross_correlation(z_a, z_b, eps)  # (D, D)
    diag = torch.diagonal(c)
    on_diag = (1 - diag).pow(2).sum()
    off_diag = (c - torch.diag(diag)).pow(2).sum()
    loss = scale_loss * (on_diag + offdiag_weight * off_diag)
    return {"loss": loss, "on_diag": on_diag.detach(), "off_diag": off_diag.detach()}


class BarlowTwinsLoss(nn.Module):
    """Thin module: keeps the hyperparameters and gathers the global batch before the loss."""

    def __init__(self, offdiag_weight: float = 5e-3, scale_loss: float = 1.0) -> None:
        super().__init__()
        self.offdiag_weight, self.scale_loss = offdiag_weight, scale_loss

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor, gather: Gather = lambda t: t
                ) -> dict[str, torch.Tensor]:
        return barlow_twins_loss(gather(z_a), gather(z_b), self.offdiag_weight, self.scale_loss)
