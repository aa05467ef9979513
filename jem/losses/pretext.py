"""Pretext tasks: labels made from the image itself, learned by classification.

* Rotation: Gidaris, Singh, Komodakis 2018, "Unsupervised Representation Learning by Predicting
  Image Rotations", arXiv:1803.07728, section 2.2: every image of the batch is fed at the four
  rotations 0, 90, 180, 270 degrees (the paper's best variant) and the network predicts which.
  Label ``k`` means a rotation by ``k * 90`` degrees counter-clockwise (``torch.rot90`` over
  (H, W)): :func:`rotate_batch`.
* Jigsaw: Noroozi, Favaro 2016, "Unsupervised Learning of Visual Representations by Solving
  Jigsaw Puzzles", arXiv:1603.09246, section 3: a ``grid x grid`` puzzle whose tiles are shuffled
  by one permutation of a fixed set chosen by the greedy maximal average Hamming distance
  (Algorithm 1, :func:`hamming_permutations`); the label is the permutation's index. Each tile is
  cut at a random offset inside its cell (``cell - gap`` pixels wide: the paper's 64-px tiles in
  75-px cells stop edge continuity from solving the puzzle) and normalised on its own (mean/std,
  the paper's guard against low-level statistics). Convention: shuffled position ``j`` holds the
  original tile ``perm[j]`` (:func:`shuffle_tiles`; :func:`unshuffle_tiles` inverts it).
* Context: Doersch, Gupta, Efros 2015, "Unsupervised Visual Representation Learning by Context
  Prediction", arXiv:1505.05192, section 3: a centre patch and one of its 8 neighbours in a 3x3
  grid of ``patch``-px patches separated by ``gap`` px, each jittered by up to ``jitter`` px;
  predict the neighbour's position, labels 0..7 in reading order (:data:`NEIGHBOURS`):
  ``0 1 2 / 3 . 4 / 5 6 7``. :func:`context_pairs`.

Small-image adaptations (defaults of the methods, documented in docs/methods.md): 8x8 digits use
a 2x2 jigsaw grid (4x4 tiles, all 24 permutations) and 2-px context patches with 1-px gaps (the
paper: 96-px patches, 48-px gaps, 7-px jitter on ~400-px images).

The loss for all three is the cross-entropy of the prediction; :class:`PretextLoss` also reports
the batch accuracy on the pretext labels.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# (row, col) offsets of the 8 neighbours of the centre cell, label = position in this tuple
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


# --------------------------------------------------------------------------------------- rotation
def rotate_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, S, S) -> all four rotations (4B, C, S, S), grouped by angle, and labels (4B,) in
    {0, 1, 2, 3} = rotation by 0/90/180/270 degrees counter-clockwise."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation needs square images; got {tuple(x.shape[-2:])}")
    rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return rotated, labels


# ----------------------------------------------------------------------------------------- jigsaw
@functools.lru_cache(maxsize=8)
def hamming_permutations(n_tiles: int, n_perms: int, seed: int = 0) -> tuple[tuple[int, ...], ...]:
    """Algorithm 1 of Noroozi & Favaro: start from a random permutation, then repeatedly add the
    candidate with the largest *average* Hamming distance to those chosen (ties: the first in
    lexicographic order). Deterministic for a given seed; cached."""
    candidates = np.array(list(itertools.permutations(range(n_tiles))), dtype=np.int8)  # (n!, n)
    if not 1 <= n_perms <= len(candidates):
        raise ValueError(f"jigsaw: {n_perms} permutations requested but {n_tiles} tiles have "
                         f"{len(candidates)}")
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(candidates)))]
    dist_sum = np.zeros(len(candidates), dtype=np.int64)
    available = np.ones(len(candidates), dtype=bool)
    for _ in range(n_perms - 1):
        last = candidates[chosen[-1]]
        available[chosen[-1]] = False
        dist_sum += (candidates != last).sum(axis=1)
        j = int(np.argmax(np.where(available, dist_sum, -1)))
        chosen.append(j)
    return tuple(tuple(int(v) for v in candidates[i]) for i in chosen)


def cut_tiles(x: torch.Tensor, grid: int, tile: int, offsets: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) -> (B, grid^2, C, tile, tile): tile ``t = r * grid + c`` (reading order) is cut
    from cell (r, c) of size ``S // grid`` at pixel offset ``offsets[b, t]`` = (dy, dx) inside it."""
    b, ch, s, _ = x.shape
    cell = s // grid
    if tile > cell:
        raise ValueError(f"jigsaw: tile {tile} px does not fit a {cell}-px cell")
    cells = torch.arange(grid * grid, device=x.device)
    top = (cells // grid) * cell + offsets[..., 0]  # (B, T)
    left = (cells % grid) * cell + offsets[..., 1]
    ar = torch.arange(tile, device=x.device)
    rows = (top[..., None] + ar)[:, :, :, None]  # (B, T, tile, 1)
    cols = (left[..., None] + ar)[:, :, None, :]  # (B, T, 1, tile)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    patches = x.permute(0, 2, 3, 1)[bi, rows, cols]  # (B, T, tile, tile, C)
    return patches.permute(0, 1, 4, 2, 3)


def shuffle_tiles(tiles: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) tiles and (B, T) permutations -> shuffled tiles, ``out[b, j] = tiles[b, perms[b, j]]``."""
    idx = perms.view(*perms.shape, *([1] * (tiles.dim() - 2))).expand_as(tiles)
    return tiles.gather(1, idx)


def unshuffle_tiles(shuffled: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`shuffle_tiles`: ``out[b, perms[b, j]] = shuffled[b, j]``."""
    return shuffle_tiles(shuffled, perms.argsort(dim=1))


def normalise_tiles(tiles: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per tile zero mean and unit std over its pixels and channels: (B, T, C, t, t) -> same."""
    flat = tiles.flatten(2)
    mean, std = flat.mean(dim=2, keepdim=True), flat.std(dim=2, keepdim=True, unbiased=False)
    return ((flat - mean) / (std + eps)).view_as(tiles)


# ---------------------------------------------------------------------------------------- context
def context_geometry(size: int, patch: int = 0, gap: int = -1) -> tuple[int, int]:
    """(patch, gap) for ``size``-px images; ``patch`` 0 / ``gap`` -1 mean automatic:
    ``gap = max(1, size // 16)``, ``patch = (size - 2 gap) // 3`` (8 px -> 2-px patches, 1-px gaps;
    28 -> 8, 1; 32 -> 9, 2)."""
    g = gap if gap >= 0 else max(1, size // 16)
    p = patch or (size - 2 * g) // 3
    if p < 1 or 3 * p + 2 * g > size:
        raise ValueError(f"context: a 3x3 grid of {p}-px patches with {g}-px gaps does not fit {size}-px images")
    return p, g


def context_pairs(x: torch.Tensor, patch: int, gap: int, positions: torch.Tensor, origin: torch.Tensor,
                  jitter: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and neighbour patches of each image.

    x (B, C, S, S); positions (B,) labels in 0..7 (index into :data:`NEIGHBOURS`); origin (B, 2)
    top-left pixel of the 3x3 grid; jitter (B, 2, 2) extra (dy, dx) of the centre and the
    neighbour patch. Returns (centre, neighbour), each (B, C, patch, patch). Offsets are clamped to
    the image.
    """
    b, _, s, _ = x.shape
    step = patch + gap
    nb = torch.tensor(NEIGHBOURS, device=x.device)[positions]  # (B, 2)
    cells = torch.stack([torch.ones_like(nb), 1 + nb], dim=1)  # (B, 2 patches, 2) grid cell (row, col)
    corners = (origin[:, None, :] + cells * step + jitter).clamp(0, s - patch)  # (B, 2, 2)
    ar = torch.arange(patch, device=x.device)
    rows = (corners[..., 0, None] + ar)[:, :, :, None]  # (B, 2, p, 1)
    cols = (corners[..., 1, None] + ar)[:, :, None, :]  # (B, 2, 1, p)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    patches = x.permute(0, 2, 3, 1)[bi, rows, cols].permute(0, 1, 4, 2, 3)  # (B, 2, C, p, p)
    return patches[:, 0], patches[:, 1]


# ------------------------------------------------------------------------------------------- loss
class PretextLoss(nn.Module):
    """Cross-entropy of the pretext prediction and its accuracy. (B, K) logits, (B,) labels."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        acc = (logits.detach().argmax(dim=1) == labels).float().mean()
        return {"loss": F.cross_entropy(logits, labels), "pretext_acc": acc}
