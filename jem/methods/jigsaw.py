"""Jigsaw puzzles (Noroozi, Favaro 2016, arXiv:1603.09246): cut a ``grid x grid`` puzzle from the
view, shuffle the tiles by a permutation from a fixed maximal-Hamming-distance set, predict its
index (tiles, permutation set and labels in :mod:`jem.losses.pretext`).

Network (the paper's context-free network, section 3): every tile goes through the shared backbone
and the projector MLP (the paper's per-tile fc6), the ``grid^2`` tile embeddings are concatenated
in shuffled order and a head MLP (fc7, fc8) predicts the permutation. Tile positions inside their
cells (``gap`` px of play) and the permutation per image come from a generator keyed by (seed,
step, rank); the permutation set from a fixed seed, so it is the same on every worker and run.

Small images: the default 2x2 grid cuts 8x8 digits into 4x4 tiles (24 permutations, all of 4!);
the paper uses 3x3 tiles of 64 px in 75-px cells and 1000 of the 9! permutations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from jem._schema import knob
from jem.augment.masking import keyed_generator
from jem.losses.pretext import PretextLoss, cut_tiles, hamming_permutations, normalise_tiles, shuffle_tiles
from jem.methods import register
from jem.methods.base import Method, StepContext
from jem.models import mlp


@dataclass(frozen=True)
class JigsawParams:
    views = 1  # global views per image it consumes (a class attribute, not a knob)
    grid: int = knob(2, lo=2, hi=4)  # tiles per side; paper 3 (2 for 8x8 images: 4x4 tiles)
    n_permutations: int = knob(24, lo=2)  # permutation set size; paper 1000 (of 9!); 2x2 has 24
    gap: int = knob(-1, lo=-1)  # px cut from each cell (random tile position); -1 -> cell // 7 (paper 75 -> 64)
    tile_norm: bool = knob(True)  # normalise each tile on its own (paper)


@register("jigsaw", params=JigsawParams,
          description="predict which permutation (of a fixed maximal-Hamming set) shuffled the tiles",
          paper="Noroozi, Favaro 2016, arXiv:1603.09246")
class Jigsaw(Method[JigsawParams]):
    def __init__(self, arch: dict, projector: list[int], params: JigsawParams) -> None:
        super().__init__(arch, projector, params)
        g, size = params.grid, int(arch["image_size"])
        self.cell = size // g
        self.gap = params.gap if params.gap >= 0 else self.cell // 7
        self.tile = self.cell - self.gap
        if self.tile < 1:
            raise ValueError(f"methods.jigsaw: {size}-px images in a {g}x{g} grid leave no tile after a "
                             f"{self.gap}-px gap")
        perms = hamming_permutations(g * g, params.n_permutations)
        self.register_buffer("perms", torch.tensor(perms, dtype=torch.int64), persistent=False)  # (P, g^2)
        self.head = mlp(g * g * projector[-1], [projector[0], params.n_permutations])
        self.loss = PretextLoss()
        self.seed = int(torch.randint(0, 2**31 - 1, (1,)))

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        x = views[0]
        b, t = x.shape[0], self.params.grid ** 2
        gen = keyed_generator(self.seed, ctx.step, ctx.comm.rank)
        offsets = torch.randint(self.gap + 1, (b, t, 2), generator=gen).to(x.device)
        perms = self.get_buffer("perms")  # (P, g^2)
        labels = torch.randint(perms.shape[0], (b,), generator=gen).to(x.device)
        tiles = cut_tiles(x, self.params.grid, self.tile, offsets)  # (B, T, C, t, t)
        if self.params.tile_norm:
            tiles = normalise_tiles(tiles)
        shuffled = shuffle_tiles(tiles, perms[labels])
        z = self.embed(shuffled.flatten(0, 1))  # (B*T, P)
        return self.loss(self.head(z.view(b, -1)), labels)
