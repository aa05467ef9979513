"""Masking as an augmentation, for the methods: the patch-token masks of :mod:`jem.models.masking`
(re-exported here; the ViT backbone applies them, so they live beside the models) and
:func:`keyed_generator`, the seeded generator methods draw their masks, tile offsets and noise
indices from.
"""

from __future__ import annotations

import torch

from jem.models.masking import drop_tokens, num_masked, random_token_mask, replace_tokens, set_mask_ratio

__all__ = ["drop_tokens", "keyed_generator", "num_masked", "random_token_mask", "replace_tokens", "set_mask_ratio"]


def keyed_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from integer keys (e.g. method seed, step, rank): random masks, tile
    offsets and noise indices are then reproducible, identical on every worker that passes the same
    keys, and replayed exactly after a resume from a checkpoint."""
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)
