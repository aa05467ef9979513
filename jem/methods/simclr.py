"""SimCLR (arXiv:2002.05709): two views, projector, NT-Xent with negatives from all workers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from jem._schema import knob
from jem.losses.contrastive import NTXentLoss
from jem.methods import register
from jem.methods.base import Method, StepContext


@dataclass(frozen=True)
class SimCLRParams:
    temperature: float = knob(0.2, gt=0.0, hi=10.0)  # tau in eq. (1); paper 0.1 at batch 4096, 0.2-0.5 on CIFAR


@register("simclr", params=SimCLRParams,
          description="contrastive NT-Xent over two views, negatives from all workers",
          paper="Chen, Kornblith, Norouzi, Hinton 2020, arXiv:2002.05709")
class SimCLR(Method[SimCLRParams]):
    def __init__(self, arch: dict, projector: list[int], params: SimCLRParams) -> None:
        super().__init__(arch, projector, params)
        self.loss = NTXentLoss(params.temperature)

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        z_a, z_b = self.embed(views[0]), self.embed(views[1])  # (B, P) each
        return self.loss(z_a, z_b, ctx.gather)
