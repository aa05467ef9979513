""":func:`keyed_generator`, the seeded generator methods draw their masks, tile offsets and noise
indices from. (The patch-token masks themselves live in :mod:`jem.models.masking`, beside the ViT
that applies them.)
"""

from __future__ import annotations

import torch

__all__ = ["keyed_generator"]


def keyed_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from integer keys (e.g. method seed, step, rank): random masks, tile
    offsets and noise indices are then reproducible, identical on every worker that passes the same
    keys, and replayed exactly after a resume from a checkpoint."""
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)
