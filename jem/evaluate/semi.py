"""Semi-supervised evaluation: fine-tune the encoder and a linear head on a small labelled subset.

Protocol of SimCLR (Chen et al., 2020, arXiv:2002.05709, section 6 "semi-supervised learning" and
appendix B.5) and BYOL (Grill et al., 2020, arXiv:2006.07733, section 4.2): starting from the
pretrained weights, the whole network (backbone + a new linear classifier) is trained with
cross-entropy on the fixed 1% / 10% labelled subsets, with only light augmentation, and
top-1/top-5 are read on the test split.

Choices made here (small images, CPU-friendly):

- SGD, momentum 0.9, Nesterov, no weight decay, cosine decay of the learning rate to 0 over all
  steps; the backbone uses ``lr`` and the freshly initialised head ``10 * lr``, so the random head
  catches up without wrecking the pretrained features.
- Augmentation: random horizontal flip and random-shift crop (reflect-pad by 1/8 of the side,
  crop back to the original size; the CIFAR-style stand-in for the paper's random resized crop on
  32-px images), done as batched tensor ops on the training device.
- At least :data:`MIN_STEPS` optimiser steps: a 1% subset of a small dataset is a few batches,
  so the epochs are repeated over the subset until the minimum is reached.
- BatchNorm layers are in train mode while fine-tuning (batch statistics, running stats updated)
  and in eval mode for the test predictions.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jem.evaluate.features import check_images, extract_features, normalise_images
from jem.evaluate.knn import topk_accuracy
from jem.evaluate.linear import linear_probe
from jem.progress import progress as bar

MIN_STEPS = 50


def flip_and_shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip (p = 0.5) and random-shift crop of a batch (B, C, H, W), per sample.

    The shift pads each side by ``pad = max(1, min(H, W) // 8)`` pixels with reflection and crops
    an H x W window at a uniform random offset in ``[0, 2 * pad]`` per axis. ``generator`` must
    live on the CPU; the random draws are moved to ``x.device`` so results do not depend on it.
    """
    b, c, h, w = x.shape
    pad = max(1, min(h, w) // 8)
    flip = torch.rand(b, generator=generator) < 0.5  # (B,)
    off_y = torch.randint(0, 2 * pad + 1, (b,), generator=generator)  # (B,)
    off_x = torch.randint(0, 2 * pad + 1, (b,), generator=generator)  # (B,)
    dev = x.device
    x = torch.where(flip.to(dev).view(b, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # (B, C, H + 2p, W + 2p)
    rows = off_y.to(dev)[:, None] + torch.arange(h, device=dev)  # (B, H)
    cols = off_x.to(dev)[:, None] + torch.arange(w, device=dev)  # (B, W)
    bi = torch.arange(b, device=dev).view(b, 1, 1, 1)
    ci = torch.arange(c, device=dev).view(1, c, 1, 1)
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)


class _Classifier(nn.Module):
    """Backbone features (B, D) -> class logits (B, num_classes) through one linear layer."""

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feat_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.head(self.backbone(x).flatten(1))


def _checked_labels(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, num_classes: int, epochs: int,
                    lr: float, batch_size: int) -> torch.Tensor:
    """The training labels as an int64 tensor (N,), after checking images, labels and settings."""
    check_images(x_train, "x_train")
    check_images(x_test, "x_test")
    if epochs < 0 or lr <= 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0, lr > 0, batch_size >= 1; got {epochs}, {lr}, {batch_size}")
    y_train_t = torch.from_numpy(np.ascontiguousarray(y_train)).reshape(-1).long()  # (N,)
    if y_train_t.shape[0] != x_train.shape[0]:
        raise ValueError(f"x_train has {x_train.shape[0]} images but y_train {y_train_t.shape[0]} labels")
    if int(y_train_t.min()) < 0 or int(y_train_t.max()) >= num_classes:
        raise ValueError(f"y_train must lie in [0, {num_classes})")
    return y_train_t


def _train(model: _Classifier, x_all: torch.Tensor, y_all: torch.Tensor, gen: torch.Generator, epochs: int,
           lr: float, batch_size: int, progress: bool) -> None:
    """The fine-tuning steps: SGD (Nesterov), head at 10x the backbone's learning rate, cosine decay,
    fresh permutation per pass, flip-and-shift augmentation drawn from ``gen``."""
    n = x_all.shape[0]
    bsz = min(batch_size, n)
    steps_per_pass = n // bsz
    total = max(epochs * steps_per_pass, MIN_STEPS)
    base_lrs = [lr, 10.0 * lr]  # backbone, head
    groups = [{"params": model.backbone.parameters()}, {"params": model.head.parameters()}]
    opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=0.0)
    model.train()
    order = torch.empty(0, dtype=torch.long)
    for step in bar(range(total), desc="finetune", disable=not progress, leave=False):
        if step % steps_per_pass == 0:
            order = torch.randperm(n, generator=gen)  # a fresh pass over the subset
        idx = order[(step % steps_per_pass) * bsz : (step % steps_per_pass + 1) * bsz].to(x_all.device)
        x = flip_and_shift(x_all[idx], gen)  # (b, C, H, W)
        loss = F.cross_entropy(model(x), y_all[idx])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fine-tuning loss {loss.item()} at step {step}; lr {lr} too high?")
        cosine = 0.5 * (1.0 + math.cos(math.pi * step / total))
        for group, base in zip(opt.param_groups, base_lrs, strict=True):
            group["lr"] = base * cosine
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def finetune(
    encoder: nn.Module,
    feat_dim: int,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    num_classes: int,
    epochs: int,
    lr: float,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """Fine-tune a deep copy of ``encoder`` plus a new linear head; test top-1/top-5.

    ``x_*`` are uint8 images (N, H, W, C), ``y_*`` int labels; the encoder maps normalised
    (B, C, H, W) images to (B, feat_dim). The caller's encoder is never modified. The number of
    optimiser steps is ``max(epochs * (N_train // b), MIN_STEPS)`` with ``b = min(batch_size,
    N_train)``; each pass over the subset is a fresh permutation and drops the incomplete last
    batch (a batch of one would break BatchNorm). All randomness (head init, order, augmentation,
    dropout) comes from ``seed`` inside a forked RNG, so two calls with the same seed on the same
    CPU give the same result and the global RNG state is left untouched.

    ``epochs == 0`` means no fine-tuning: the result is then the linear probe
    (:func:`jem.evaluate.linear.linear_probe`, default ``l2``) on the frozen encoder's features of
    the labelled subset, i.e. "linear head on frozen features" trained on the same labels.
    """
    y_train_t = _checked_labels(x_train, y_train, x_test, num_classes, epochs, lr, batch_size)
    dev = torch.device(device)
    if epochs == 0:
        train_f = extract_features(encoder, x_train, mean, std, batch_size, dev, progress)
        test_f = extract_features(encoder, x_test, mean, std, batch_size, dev, progress)
        return linear_probe(train_f, y_train_t.numpy(), test_f, np.asarray(y_test), num_classes)
    n = x_train.shape[0]
    if n < 2:
        raise ValueError(f"fine-tuning needs at least 2 labelled images (BatchNorm); got {n}")

    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)  # order + augmentation, CPU-side
        model = _Classifier(copy.deepcopy(encoder), feat_dim, num_classes).to(dev)
        model.requires_grad_(True)
        x_all = normalise_images(x_train, mean, std, dev)  # (N, C, H, W)
        _train(model, x_all, y_train_t.to(dev), gen, epochs, lr, batch_size, progress)
        logits = extract_features(model, x_test, mean, std, 512, dev, progress)  # (N_test, num_classes)
    return topk_accuracy(logits, np.asarray(y_test))
