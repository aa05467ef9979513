"""SimCLR (arXiv:2002.05709): two views, projector, NT-Xent with negatives from all workers."""

from __future__ import annotations

import torch

from jem.losses.contrastive import NTXentLoss
from jem.methods import register
from jem.methods.base import Method, StepContext


@register("simclr")
class SimCLR(Method):
    def __init__(self, arch: dict, projector: list[int], params) -> None:
        super().__init__(arch, projector, params)
        self.loss = NTXentLoss(params.temperature)

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        z_a, z_b = self.embed(views[0]), self.embed(views[1])  # (B, P) each
        return self.loss(z_a, z_b, ctx.gather)
