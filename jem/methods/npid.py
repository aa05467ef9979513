"""NPID / instance discrimination (Wu et al. 2018, arXiv:1805.01978): backbone -> linear head to
``dim`` (128) -> L2 normalisation, classified among all N training images against a memory bank
(non-parametric softmax or NCE, optional proximal term; :mod:`jem.losses.npid`).

One augmented view per image and step (the reference's training transform). The bank is created
at the first ``on_epoch_start`` (N random unit vectors, identical on every worker: seeded from the
method's seed) and updated after every optimizer step with the features of every worker's batch
(gathered), so all workers keep the same bank; it is checkpointed through the loss module's extra
state. NCE noise indices come from a generator keyed by (seed, step, rank). NCE approximates the
softmax only when the noise samples are a small fraction of the data (the paper: m = 4096 of 1.28M
ImageNet images; CIFAR uses the full softmax, the default here), so ``nce_k >= N`` is refused.

Deviation: the head is ``nn.Linear(feat_dim, dim)`` as in the paper, so ``model.projector`` is not
used by this method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jem._schema import knob
from jem.augment.masking import keyed_generator
from jem.losses.npid import NPIDLoss
from jem.methods import register
from jem.methods.base import EpochData, Method, StepContext
from jem.methods.deepcluster import require_indices


@dataclass(frozen=True)
class NPIDParams:
    views = 1  # global views per image it consumes (a class attribute, not a knob)
    dim: int = knob(128, lo=1)  # embedding width (linear head); paper 128
    temperature: float = knob(0.07, gt=0.0, hi=10.0)  # tau; paper 0.07
    momentum: float = knob(0.5, lo=0.0, hi=1.0)  # bank update momentum; reference 0.5
    loss: str = knob("softmax", choices=("softmax", "nce"))  # full non-parametric softmax (paper CIFAR) or NCE
    nce_k: int = knob(4096, lo=1)  # noise samples m for NCE; paper 4096
    prox_weight: float = knob(0.0, lo=0.0)  # proximal regularisation lambda; paper studies 0-50, reference 0


@register("npid", params=NPIDParams,
          description="instance discrimination against a memory bank of all images' features (softmax or NCE)",
          paper="Wu, Xiong, Yu, Lin 2018, arXiv:1805.01978")
class NPID(Method[NPIDParams]):
    def __init__(self, arch: dict, projector: list[int], params: NPIDParams) -> None:
        super().__init__(arch, projector, params)
        p = params
        self.loss = NPIDLoss(p.temperature, p.momentum, p.loss, p.nce_k, p.prox_weight)
        self.seed = int(torch.randint(0, 2**31 - 1, (1,)))
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def build_projector(self, dims: list[int]) -> nn.Module:
        return nn.Linear(self.feat_dim, self.params.dim)

    def on_epoch_start(self, data: EpochData) -> None:
        n = data.images.shape[0]
        if self.params.loss == "nce" and self.params.nce_k >= n:
            raise ValueError(f"methods.npid.nce_k = {self.params.nce_k} noise samples need more than the {n} training "
                             "images for NCE to approximate the softmax; lower it or use methods.npid.loss: softmax")
        self.loss.init_bank(n, self.params.dim, keyed_generator(self.seed), data.device)

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        idx = require_indices(ctx, "npid")
        f = F.normalize(self.embed(views[0]), dim=1)  # (B, dim)
        out = self.loss(f, idx, keyed_generator(self.seed, ctx.step, ctx.comm.rank))
        self._last = (f.detach(), idx)
        return out

    @torch.no_grad()
    def after_step(self, ctx: StepContext) -> None:
        if self._last is not None:
            self.loss.update(*self._last)
            self._last = None
