"""The reference data pipeline, built the way the peers build theirs (solo-learn, lightly, the FAIR
repos): a per-image ``torchvision.transforms.v2`` pipeline per view inside a
``torch.utils.data.DataLoader`` with worker processes.

It renders the same recipes as jem (:class:`~jem.config.ViewConfig`: same crop scale and ratio,
flip, jitter, grayscale, blur and solarisation probabilities, same blur sigma scaling and kernel
size, same local-crop recipe and size, same normalisation) so that a benchmark compares the cost of
the two ways of producing views, not two different augmentations. Images are fed as uint8
``tv_tensors.Image`` tensors, the input torchvision recommends for speed (PIL would be the other
peer choice). Each item is ``(views, index)``: ``n_global`` global views (view_a, view_b,
alternating, as jem's on-device path) then ``n_local`` local crops, each normalised float
(C, S, S).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from jem.augment.cache import local_recipe, local_size
from jem.augment.ops import blur_kernel_size
from jem.augment.recipe import BLUR_REF_PX
from jem.config import AugmentConfig, ViewConfig


def view_transform(recipe: ViewConfig, out_size: int, blur_ref: int, mean: list[float], std: list[float]
                   ) -> Callable[[torch.Tensor], torch.Tensor]:
    """One view of ``recipe`` as a per-image v2 pipeline: uint8 (C, H, W) -> normalised float (C, S, S).

    SimCLR/BYOL order (RandomResizedCrop -> flip -> ColorJitter with p -> grayscale -> blur with p ->
    solarise), the blur sigma scaled from 224 px to ``blur_ref`` px and jem's kernel size.
    """
    scale = blur_ref / BLUR_REF_PX
    return v2.Compose([
        v2.RandomResizedCrop(out_size, scale=tuple(recipe.crop_scale), ratio=tuple(recipe.crop_ratio),
                             antialias=True),
        v2.RandomHorizontalFlip(p=recipe.flip_p),
        v2.RandomApply([v2.ColorJitter(recipe.brightness, recipe.contrast, recipe.saturation, recipe.hue)],
                       p=recipe.jitter_p),
        v2.RandomGrayscale(p=recipe.grayscale_p),
        v2.RandomApply([v2.GaussianBlur(blur_kernel_size(blur_ref),
                                        sigma=(recipe.blur_sigma[0] * scale, recipe.blur_sigma[1] * scale))],
                       p=recipe.blur_p),
        v2.RandomSolarize(threshold=128, p=recipe.solarize_p),  # 0.5 of the uint8 range
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])


class MultiViewDataset(Dataset):
    """uint8 (N, H, W, C) images -> ``([view_0, ..., view_{n-1}], index)`` through per-image transforms."""

    def __init__(self, images: np.ndarray, transforms: list[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        self.images, self.transforms = images, transforms

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[list[torch.Tensor], int]:
        img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1))
        return [t(img).as_subclass(torch.Tensor) for t in self.transforms], i


def reference_transforms(aug: AugmentConfig, size: int, n_global: int, n_local: int, mean: list[float],
                         std: list[float]) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The per-view transforms of jem's recipes: view_a / view_b alternating, then local crops."""
    glob = [view_transform(aug.view_a if j % 2 == 0 else aug.view_b, size, size, mean, std) for j in range(n_global)]
    loc = view_transform(local_recipe(aug), local_size(aug, size), size, mean, std)
    return glob + [loc] * n_local


def reference_loader(images: np.ndarray, aug: AugmentConfig, n_global: int, n_local: int, mean: list[float],
                     std: list[float], batch_size: int, num_workers: int | None = None, pin_memory: bool = False,
                     seed: int = 0) -> DataLoader:
    """Peer-style loader: shuffled, drop_last, ``num_workers`` worker processes (default: the CPU
    count), persistent workers, default prefetching, pinned memory when training on a GPU."""
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    ds = MultiViewDataset(images, reference_transforms(aug, images.shape[1], n_global, n_local, mean, std))
    return DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed))

