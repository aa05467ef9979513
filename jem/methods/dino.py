"""DINO (Caron et al. 2021, arXiv:2104.14294, Algorithm 1): a student (backbone + DINO head) matches
the centred, sharpened output of an EMA teacher over all pairs of different views; the teacher
sees the global views only, the student the global views and ``local_crops`` local crops
(multi-crop, section 3.1). Loss and centre in :mod:`jem.losses.distillation`.

Head (section 3.1 / reference ``DINOHead``): Linear-GELU hidden layers, a Linear to the bottleneck
(``model.projector`` = [hidden..., bottleneck]; paper [2048, 2048, 256]), L2 normalisation, then a
weight-normalised Linear (no bias) to ``out_dim`` dimensions whose norm ``g`` is fixed to 1 when
``norm_last_layer``. Hidden layers get trunc-normal(0.02) weights and zero biases.

Schedules, from ``ctx``: teacher momentum ``1 - (1 - base)(cos(pi k / K) + 1) / 2`` (0.996 -> 1),
teacher temperature linear from ``warmup_teacher_temp`` to ``teacher_temp`` over
``warmup_teacher_temp_epochs`` epochs, then constant; the last layer gets no update during the first
``freeze_last_layer`` epochs (its gradients are dropped before the optimizer step).

Deviations (small data, short runs), measured on digits (kNN top-1, seed 0; random init 0.940):
its own optimiser recipe ``methods.dino.{optimizer,lr,weight_decay}`` = AdamW, 0.001, 0.04 (paper
AdamW, 0.0005 x B/256, weight decay 0.04 -> 0.4 on a cosine: here constant); ``out_dim`` 256 instead
of 65536. With the shared ``train.*`` recipe (LARS 0.3) DINO collapsed to the uniform distribution
(loss -> log K, kNN 0.911) for every head setting tried (out_dim 10-1024, teacher temperature
0.02-0.07, centre momentum 0.9/0.99, teacher momentum 0.99/0.996, BN in the head); AdamW 0.0005 at
out_dim 1024 gave 0.942, AdamW 0.001 at out_dim 256 gives 0.953 (seeds 1/2: 0.940/0.967; random init
0.940/0.944). Teacher temperature 0.04 without warm-up by default (the reference's default; the
paper's 0.04 -> 0.07 warm-up is for 100+ epochs); no gradient clipping (reference: 3.0); the exported
encoder is the student backbone (the paper evaluates the teacher). BatchNorm of the CNN backbones is
per worker unless ``train.sync_bn`` (the reference syncs BN for ResNets).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jem._schema import OPTIMIZERS, knob
from jem.losses.distillation import DINOLoss, teacher_temp_at
from jem.methods import register
from jem.methods.base import Method, StepContext
from jem.methods.ema import cosine_momentum, ema_update_, make_teacher


@dataclass(frozen=True)
class DINOParams:
    out_dim: int = knob(256, lo=2)  # K output dimensions (prototypes); paper 65536
    student_temp: float = knob(0.1, gt=0.0)  # tau_s
    teacher_temp: float = knob(0.04, gt=0.0)  # tau_t after the warm-up; paper 0.04-0.07
    warmup_teacher_temp: float = knob(0.04, gt=0.0)  # tau_t at epoch 0
    warmup_teacher_temp_epochs: int = knob(0, lo=0)  # paper 30 (of 100-800 epochs)
    center_momentum: float = knob(0.9, lo=0.0, hi=1.0)  # m in eq. (4)
    base_momentum: float = knob(0.996, lo=0.0, hi=1.0)  # teacher EMA lambda at step 0 (cosine -> 1)
    norm_last_layer: bool = knob(True)  # weight-normalised last layer with g fixed to 1
    freeze_last_layer: int = knob(1, lo=0)  # epochs during which the last layer is not updated
    head_bn: bool = knob(False)  # BatchNorm in the head MLP (the reference's use_bn_in_head)
    local_crops: int = knob(0, lo=0, hi=16)  # local views seen by the student (<= augment.multicrop.local_crops)
    optimizer: str = knob("adamw", choices=OPTIMIZERS)  # replaces train.optimizer; paper AdamW
    lr: float = knob(0.001, gt=0.0, hi=100.0)  # replaces train.lr; paper 0.0005 (x B/256)
    weight_decay: float = knob(0.04, lo=0.0, hi=1.0)  # replaces train.weight_decay; paper 0.04 -> 0.4 (cosine)


class WeightNormLinear(nn.Module):
    """``y = x W^T`` with rows ``W_k = g_k v_k / ||v_k||`` (Salimans & Kingma 2016), no bias."""

    def __init__(self, in_dim: int, out_dim: int, fix_norm: bool = True) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach().clone())
        self.weight_g = nn.Parameter(torch.ones(out_dim), requires_grad=not fix_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight_g[:, None] * F.normalize(self.weight_v, dim=1)  # (K, D)
        return F.linear(x, w)


class DINOHead(nn.Module):
    """(B, in_dim) -> (B, out_dim) logits: MLP -> L2 norm bottleneck -> weight-normalised Linear."""

    def __init__(self, in_dim: int, dims: list[int], out_dim: int, use_bn: bool = False,
                 norm_last_layer: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in dims[:-1]:
            layers += [nn.Linear(d, h), *([nn.BatchNorm1d(h)] if use_bn else []), nn.GELU()]
            d = h
        layers.append(nn.Linear(d, dims[-1]))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(dims[-1], out_dim, fix_norm=norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


@register("dino", params=DINOParams,
          description="self-distillation: student matches a centred, sharpened EMA teacher (multi-crop)",
          paper="Caron et al. 2021, arXiv:2104.14294")
class DINO(Method[DINOParams]):
    def __init__(self, arch: dict, projector: list[int], params: DINOParams) -> None:
        super().__init__(arch, projector, params)
        self.n_local = int(params.local_crops)
        self.teacher_backbone = make_teacher(self.backbone)
        self.teacher_head = make_teacher(self.projector)
        self.loss = DINOLoss(params.out_dim, params.student_temp, params.center_momentum)

    def build_projector(self, dims: list[int]) -> nn.Module:
        p = self.params
        return DINOHead(self.feat_dim, dims, p.out_dim, p.head_bn, p.norm_last_layer)

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        ng, b = self.n_global, views[0].shape[0]
        # one backbone pass per resolution (the reference's multi-crop wrapper), one head pass
        feats = [self.backbone(torch.cat(views[:ng]))]  # (ng * B, F)
        if len(views) > ng:
            feats.append(self.backbone(torch.cat(views[ng:])))  # (n_local * B, F)
        student = self.projector(torch.cat(feats)).split(b)  # n_views x (B, K)
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_backbone(torch.cat(views[:ng]))).split(b)  # ng x (B, K)
        p = self.params
        temp = teacher_temp_at(ctx.epoch, p.warmup_teacher_temp, p.teacher_temp, p.warmup_teacher_temp_epochs)
        return self.loss(list(student), list(teacher), temp, ctx.comm.all_reduce_mean)

    def before_optimizer_step(self, ctx: StepContext) -> None:
        if ctx.epoch < self.params.freeze_last_layer:
            head = self.projector
            assert isinstance(head, DINOHead)
            for q in head.last_layer.parameters():
                q.grad = None

    @torch.no_grad()
    def after_step(self, ctx: StepContext) -> None:
        m = cosine_momentum(self.params.base_momentum, ctx.step, ctx.total_steps)
        ema_update_(self.teacher_backbone, self.backbone, m)
        ema_update_(self.teacher_head, self.projector, m)

