"""Context prediction (Doersch, Gupta, Efros 2015, arXiv:1505.05192): given a centre patch and one
of its 8 neighbours in a 3x3 grid, predict the neighbour's relative position (patches and labels
in :mod:`jem.losses.pretext`).

Network (the paper's late-fusion pair network, section 3.1): both patches go through the shared
backbone and projector MLP (per-patch fc6), the two embeddings are concatenated and a head MLP
(fc7, fc8) predicts one of 8 positions. The grid's position in the image (when it does not fill
it), the neighbour and the per-patch jitter come from a generator keyed by (seed, step, rank).

Small images: ``patch`` 0 / ``gap`` -1 pick (size - 2 gap) // 3 px patches and max(1, size // 16) px
gaps: 2-px patches with 1-px gaps fill 8x8 digits exactly; 28x28 gets 8-px patches, 1-px gaps. The
paper uses 96-px patches, 48-px gaps and up to 7 px of jitter; its chromatic-aberration counter-
measures (colour dropping/projection) are not used (digits and Fashion-MNIST are grey).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from jem._schema import knob
from jem.augment.masking import keyed_generator
from jem.losses.pretext import NEIGHBOURS, PretextLoss, context_geometry, context_pairs
from jem.methods import register
from jem.methods.base import Method, StepContext
from jem.models import mlp


@dataclass(frozen=True)
class ContextParams:
    views = 1  # global views per image it consumes (a class attribute, not a knob)
    patch: int = knob(0, lo=0)  # patch px; 0 -> (size - 2 gap) // 3 (8x8: 2); paper 96 on ~400-px images
    gap: int = knob(-1, lo=-1)  # px between patches; -1 -> max(1, size // 16); paper 48
    jitter: int = knob(0, lo=0)  # max px of random shift per patch; paper 7


@register("context", params=ContextParams,
          description="predict the relative position (8 neighbours) of a second patch",
          paper="Doersch, Gupta, Efros 2015, arXiv:1505.05192")
class Context(Method[ContextParams]):
    def __init__(self, arch: dict, projector: list[int], params: ContextParams) -> None:
        super().__init__(arch, projector, params)
        self.size = int(arch["image_size"])
        self.patch, self.gap = context_geometry(self.size, params.patch, params.gap)
        self.slack = self.size - (3 * self.patch + 2 * self.gap)
        self.head = mlp(2 * projector[-1], [projector[0], len(NEIGHBOURS)])
        self.loss = PretextLoss()
        self.seed = int(torch.randint(0, 2**31 - 1, (1,)))

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        x = views[0]
        b, j = x.shape[0], self.params.jitter
        gen = keyed_generator(self.seed, ctx.step, ctx.comm.rank)
        labels = torch.randint(len(NEIGHBOURS), (b,), generator=gen)
        origin = torch.randint(self.slack + 1, (b, 2), generator=gen)
        jitter = torch.randint(-j, j + 1, (b, 2, 2), generator=gen)
        labels, origin, jitter = labels.to(x.device), origin.to(x.device), jitter.to(x.device)
        centre, neighbour = context_pairs(x, self.patch, self.gap, labels, origin, jitter)  # (B, C, p, p) x2
        z = self.embed(torch.cat([centre, neighbour]))  # (2B, P)
        return self.loss(self.head(torch.cat([z[:b], z[b:]], dim=1)), labels)
