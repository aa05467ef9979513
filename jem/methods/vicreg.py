"""VICReg (arXiv:2105.04906): two views through a shared backbone and expander, loss in
:mod:`jem.losses.vicreg` on the gathered global batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from jem._schema import knob
from jem.losses.vicreg import VICRegLoss
from jem.methods import register
from jem.methods.base import Method, StepContext


@dataclass(frozen=True)
class VICRegParams:
    inv_weight: float = knob(25.0, lo=0.0)  # lambda in the paper
    var_weight: float = knob(25.0, lo=0.0)  # mu
    cov_weight: float = knob(1.0, lo=0.0)  # nu
    gamma: float = knob(1.0, gt=0.0)  # target std
    eps: float = knob(1.0e-4, gt=0.0)  # epsilon in the variance term sqrt(Var + eps)


@register("vicreg", params=VICRegParams,
          description="variance-invariance-covariance regularisation of two views",
          paper="Bardes, Ponce, LeCun 2022, arXiv:2105.04906")
class VICReg(Method[VICRegParams]):
    def __init__(self, arch: dict, projector: list[int], params: VICRegParams) -> None:
        super().__init__(arch, projector, params)
        p = params
        self.loss = VICRegLoss(p.inv_weight, p.var_weight, p.cov_weight, p.gamma, p.eps)

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        z_a, z_b = self.embed(views[0]), self.embed(views[1])  # (B, P) each
        return self.loss(z_a, z_b, ctx.gather)
