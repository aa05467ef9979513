"""VICReg (arXiv:2105.04906): two views through a shared backbone and expander, loss in
:mod:`jem.losses.vicreg` on the gathered global batch."""

from __future__ import annotations

import torch

from jem.losses.vicreg import VICRegLoss
from jem.methods import register
from jem.methods.base import Method, StepContext


@register("vicreg")
class VICReg(Method):
    def __init__(self, arch: dict, projector: list[int], params) -> None:
        super().__init__(arch, projector, params)
        p = params
        self.loss = VICRegLoss(p.inv_weight, p.var_weight, p.cov_weight, p.gamma, p.eps)

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        z_a, z_b = self.embed(views[0]), self.embed(views[1])  # (B, P) each
        return self.loss(z_a, z_b, ctx.gather)
