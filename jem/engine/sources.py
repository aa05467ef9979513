"""Where training batches come from. The loop asks a source for the views of a batch of image
indices; it does not care whether they are read from the view cache or made on the device.

* :class:`CachedViews`: memory-mapped view cache (``augment.views_per_image`` = K > 0), vectorised
  numpy gathers, one host->device copy per view.
"""

from __future__ import annotations

import numpy as np
import torch

from jem.augment.cache import ViewCache


def to_input(batch: np.ndarray, mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, C) -> normalised float (B, C, H, W) on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(batch))
    if device.type == "cuda":
        x = x.pin_memory()
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean) / std


class CachedViews:
    """Views read from the cache: ``n_global`` distinct cached views per image plus local crops."""

    def __init__(self, cache: ViewCache, mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> None:
        self.cache, self.mean, self.std, self.device = cache, mean, std, device

    def views(self, idx: np.ndarray, n_global: int, n_local: int, rng: np.random.Generator) -> list[torch.Tensor]:
        arrays = self.cache.gather(idx, self.cache.pick_views(n_global, len(idx), rng))
        if n_local:
            arrays += self.cache.gather_locals(idx, n_local, rng)
        return [to_input(a, self.mean, self.std, self.device) for a in arrays]
