"""Frozen-encoder feature extraction: uint8 images in, float32 features out.

Every evaluation protocol (kNN, linear probe, baselines) reads the encoder through
:func:`extract_features`, so the input normalisation is defined exactly once, here, and matches
what the encoder saw during pretraining: ``(x / 255 - mean) / std`` per channel, NCHW layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from jem.progress import progress as bar


def check_images(images: np.ndarray, name: str = "images") -> None:
    """Raise one clear ``ValueError`` unless ``images`` is a non-empty uint8 array (N, H, W, C)."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = f"{type(images).__name__} {getattr(images, 'dtype', '?')} {getattr(images, 'shape', '?')}"
        raise ValueError(f"{name} must be a uint8 array of shape (N, H, W, C); got {got}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {images.shape})")


def normalise_images(
    images: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) on ``device``, normalised ``(x/255 - mean)/std``."""
    channels = images.shape[-1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"mean/std have {len(mean)}/{len(std)} entries but the images have {channels} channels"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive per channel; got {list(std)}")
    dev = torch.device(device)
    mean_t = torch.tensor(list(mean), dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    x = torch.from_numpy(np.ascontiguousarray(images)).to(dev)  # (N, H, W, C) uint8
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (N, C, H, W) in [0, 1]
    return (x - mean_t) / std_t


def extract_features(
    encoder: nn.Module,
    images: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Features of a frozen encoder: uint8 images (N, H, W, C) -> float32 array (N, D).

    The encoder runs in eval mode (BatchNorm uses running statistics, dropout is off) under
    ``torch.no_grad``; its previous train/eval mode is restored afterwards. Outputs with more than
    two dimensions are flattened to (N, D). The encoder is expected to live on ``device`` already.
    """
    check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    was_training = encoder.training
    encoder.eval()
    chunks: list[np.ndarray] = []
    starts = range(0, images.shape[0], batch_size)
    try:
        with torch.no_grad():
            for start in bar(starts, desc="features", disable=not progress, leave=False):
                x = normalise_images(images[start : start + batch_size], mean, std, device)  # (B, C, H, W)
                feats = encoder(x).flatten(1)  # (B, D)
                chunks.append(feats.float().cpu().numpy())
    finally:
        encoder.train(was_training)
    return np.concatenate(chunks, axis=0)  # (N, D)
