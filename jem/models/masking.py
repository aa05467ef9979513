"""Patch-token masking of a ViT: the augmentation that replaces random cropping for transformers.

It lives beside the models because the backbone applies it (:mod:`jem.models.vit` drops or
replaces tokens in its forward pass); :mod:`jem.augment.masking` re-exports it for the methods.

The seed notes (and MAE, He et al. 2021, arXiv:2111.06377; MSN, Assran et al. 2022,
arXiv:2204.07141) point out that masking most patches of a ViT input removes spatial redundancy
the way a random crop does for a convnet, without the artificial edges a convnet would see. Two
ways of applying a mask of patch tokens are provided:

* :func:`drop_tokens` keeps only the visible tokens (MAE/MSN style): cheaper, and what a ViT
  backbone does in training mode when its ``mask_ratio`` is set (:func:`set_mask_ratio`), so any
  joint-embedding method (SimCLR, VICReg, BYOL, DINO ...) gets masked views for free;
* :func:`replace_tokens` substitutes a learned mask embedding at the masked positions and keeps
  the sequence length (BEiT / data2vec style, used by :mod:`jem.methods.data2vec`).

Masks are *uniformly random* with exactly ``round(ratio * T)`` masked tokens per image (so the
visible sequences of a batch have equal length). BEiT/data2vec use block-wise masks of at least 16
patches per block; with the 4x4 to 8x8 token grids of small images a block would cover most of
the grid, so uniform masking is used instead (a deliberate deviation, stated in data2vec's docs).
"""

from __future__ import annotations

import torch
from torch import nn


def num_masked(n_tokens: int, ratio: float) -> int:
    """How many of ``n_tokens`` a mask with ``ratio`` hides: ``round(ratio * T)``, at most ``T - 1``
    so at least one token stays visible."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1); got {ratio}")
    return min(int(round(ratio * n_tokens)), n_tokens - 1)


def random_token_mask(batch: int, n_tokens: int, ratio: float, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, T) bool mask, True = masked, with exactly ``num_masked(T, ratio)`` True per row,
    positions uniformly random (argsort of uniform noise, as in MAE)."""
    k = num_masked(n_tokens, ratio)
    noise = torch.rand(batch, n_tokens, generator=generator)  # drawn on CPU: same stream on any device
    order = noise.argsort(dim=1)  # (B, T)
    mask = torch.zeros(batch, n_tokens, dtype=torch.bool)
    mask.scatter_(1, order[:, :k], True)
    return mask.to(device)


def drop_tokens(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep the visible tokens: (B, T, D) and (B, T) mask with the same count per row -> (B, V, D),
    visible tokens in their original order."""
    b, t, d = tokens.shape
    visible = ~mask
    counts = visible.sum(dim=1)
    if not bool((counts == counts[0]).all()):
        raise ValueError("drop_tokens needs the same number of visible tokens in every row")
    return tokens[visible].view(b, int(counts[0]), d)


def replace_tokens(tokens: torch.Tensor, mask: torch.Tensor, mask_token: torch.Tensor) -> torch.Tensor:
    """Substitute ``mask_token`` (D,) or (1, 1, D) at masked positions: (B, T, D) -> (B, T, D)."""
    w = mask.unsqueeze(-1).to(tokens.dtype)  # (B, T, 1)
    return tokens * (1.0 - w) + mask_token.reshape(1, 1, -1) * w


def set_mask_ratio(backbone: nn.Module, ratio: float) -> None:
    """Turn on masking augmentation for a backbone: in training mode it then drops a random
    ``ratio`` of its patch tokens per image (evaluation mode never masks). Only ViT backbones
    support it; a convnet would see masked patches as artificial edges (seed notes)."""
    if not hasattr(backbone, "mask_ratio"):
        raise ValueError(f"model.mask_ratio = {ratio} needs a ViT backbone (model.backbone: vit_tiny); "
                         f"{type(backbone).__name__} has no patch tokens to mask")
    num_masked(16, ratio)  # validates the range
    backbone.mask_ratio = float(ratio)  # type: ignore[assignment]
