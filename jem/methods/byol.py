"""BYOL (Grill et al. 2020, arXiv:2006.07733): an online network (backbone, projector, predictor)
predicts the projection of the other view made by a target network (backbone, projector) whose
weights are an EMA of the online ones (section 3.1, eq. (1)-(2); loss in
:mod:`jem.losses.distillation`).

Deviations, adapted to small images and the digits budget (about 150 steps instead of the paper's
300k), each measured on digits (kNN top-1, seed 0; random init 0.940):

* its own optimiser recipe ``methods.byol.{optimizer,lr,weight_decay}`` = LARS, 3.0, 1e-5 (paper
  LARS, 0.2 x B/256, 1.5e-6). With the shared ``train.*`` recipe (LARS 0.3) BYOL reached 0.918:
  a slowly moving target needs a larger step to get anywhere in 150 steps. Seeds 0/1: 0.960/0.944.
* predictor hidden width ``pred_hidden`` 1024 (paper 4096 = 16 x its 256-d output); 256 gave
  0.936 at the same lr.
* ``base_momentum`` keeps the paper's 0.996 (0.99 at lr 3.0: 0.931).
BatchNorm statistics are per worker unless ``train.sync_bn`` is set (the reference synchronises
BN across replicas). Each view goes through the networks separately, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from jem._schema import OPTIMIZERS, knob
from jem.losses.distillation import BYOLLoss
from jem.methods import register
from jem.methods.base import Method, StepContext
from jem.methods.ema import cosine_momentum, ema_update_, make_teacher
from jem.models import mlp


@dataclass(frozen=True)
class BYOLParams:
    base_momentum: float = knob(0.996, lo=0.0, hi=1.0)  # tau_base (cosine -> 1), as the paper
    pred_hidden: int = knob(1024, lo=1)  # predictor hidden width; paper 4096 = 16 x the 256-d output
    optimizer: str = knob("lars", choices=OPTIMIZERS)  # replaces train.optimizer; paper LARS
    lr: float = knob(3.0, gt=0.0, hi=100.0)  # replaces train.lr; paper 0.2 (x B/256) for 1000 epochs
    weight_decay: float = knob(1.0e-5, lo=0.0, hi=1.0)  # replaces train.weight_decay; paper 1.5e-6


@register("byol", params=BYOLParams,
          description="online network predicts an EMA target's projection of the other view",
          paper="Grill et al. 2020, arXiv:2006.07733")
class BYOL(Method[BYOLParams]):
    def __init__(self, arch: dict, projector: list[int], params: BYOLParams) -> None:
        super().__init__(arch, projector, params)
        out = projector[-1]
        self.predictor = mlp(out, [params.pred_hidden, out])
        self.target_backbone = make_teacher(self.backbone)
        self.target_projector = make_teacher(self.projector)
        self.loss = BYOLLoss()

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        z1, z2 = self.embed(views[0]), self.embed(views[1])  # (B, P) online projections
        p1, p2 = self.predictor(z1), self.predictor(z2)  # (B, P) predictions
        with torch.no_grad():
            t1 = self.target_projector(self.target_backbone(views[0]))  # (B, P) targets
            t2 = self.target_projector(self.target_backbone(views[1]))
        out = self.loss(p1, p2, t1, t2)
        out["momentum"] = out["loss"].new_tensor(cosine_momentum(self.params.base_momentum, ctx.step,
                                                                 ctx.total_steps))
        return out

    @torch.no_grad()
    def after_step(self, ctx: StepContext) -> None:
        m = cosine_momentum(self.params.base_momentum, ctx.step, ctx.total_steps)
        ema_update_(self.target_backbone, self.backbone, m)
        ema_update_(self.target_projector, self.projector, m)
