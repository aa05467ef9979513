"""Reconstruction loss of the autoencoder baseline: Hinton, Salakhutdinov 2006, "Reducing the
Dimensionality of Data with Neural Networks", Science 313(5786); the generative family of the seed
notes ("Generative Models - Autoencoder"), against which joint-embedding methods are compared.

``L = (1/(B C H W)) sum (x_hat - x)^2``: the mean squared error between the decoder's output and
the (normalised) input view, over every pixel and channel. Shapes: (B, C, H, W) both.
"""

from __future__ import annotations

import torch
from torch import nn


def reconstruction_mse(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements; (B, ...) x2 -> scalar."""
    return (recon - target).pow(2).mean()


class ReconstructionLoss(nn.Module):
    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": reconstruction_mse(recon, target.detach())}
