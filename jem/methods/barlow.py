"""Barlow Twins (Zbontar et al. 2021, arXiv:2103.03230): two views through a shared backbone and
projector, cross-correlation loss (:mod:`jem.losses.barlow`) on the gathered global batch.

Projector: the paper's is three linear layers of 8192 units, BN + ReLU after the first two, no bias
on the last (reference code), followed by the loss's batch standardisation. Here the widths are
``model.projector`` (default [256, 256], i.e. two layers) to suit small images and CPU budgets; the
shape is otherwise the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from jem._schema import knob
from jem.losses.barlow import BarlowTwinsLoss
from jem.methods import register
from jem.methods.base import Method, StepContext
from jem.models import mlp


@dataclass(frozen=True)
class BarlowParams:
    offdiag_weight: float = knob(5.0e-3, lo=0.0)  # lambda; paper 5e-3 (reference code 0.0051)
    scale_loss: float = knob(0.05, gt=0.0)  # eq. (1): 1.0; reference code 0.024 (8192-d); 0.05 measured best here


@register("barlow", params=BarlowParams,
          description="cross-correlation of two views' standardised embeddings pushed to identity",
          paper="Zbontar, Jing, Misra, LeCun, Deny 2021, arXiv:2103.03230")
class BarlowTwins(Method[BarlowParams]):
    def __init__(self, arch: dict, projector: list[int], params: BarlowParams) -> None:
        super().__init__(arch, projector, params)
        self.loss = BarlowTwinsLoss(params.offdiag_weight, params.scale_loss)

    def build_projector(self, dims: list[int]) -> nn.Module:
        return mlp(self.feat_dim, dims, last_bias=False)

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        z_a, z_b = self.embed(views[0]), self.embed(views[1])  # (B, P) each
        return self.loss(z_a, z_b, ctx.gather)
