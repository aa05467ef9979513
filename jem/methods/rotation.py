"""RotNet (Gidaris, Singh, Komodakis 2018, arXiv:1803.07728): predict the rotation (0, 90, 180, 270
degrees) applied to an image; loss and labels in :mod:`jem.losses.pretext`.

The head is ``mlp(feat_dim, model.projector[:-1] + [4])`` (the projector's hidden widths, four
outputs), saved as this method's projector. With ``all_rotations`` every image of the batch is fed
at all four rotations (the paper's best variant, section 2.2; effective batch 4B); otherwise each
image gets one rotation drawn from a generator keyed by (seed, step, rank). Images must be square.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from jem._schema import knob
from jem.augment.masking import keyed_generator
from jem.losses.pretext import PretextLoss, rotate_batch
from jem.methods import register
from jem.methods.base import Method, StepContext
from jem.models import mlp


@dataclass(frozen=True)
class RotationParams:
    views = 1  # global views per image it consumes (a class attribute, not a knob)
    all_rotations: bool = knob(True)  # all four rotations of every image per batch (paper); else one random


@register("rotation", params=RotationParams,
          description="predict which of 0/90/180/270 degrees an image was rotated by",
          paper="Gidaris, Singh, Komodakis 2018, arXiv:1803.07728")
class Rotation(Method[RotationParams]):
    def __init__(self, arch: dict, projector: list[int], params: RotationParams) -> None:
        super().__init__(arch, projector, params)
        self.loss = PretextLoss()
        self.seed = int(torch.randint(0, 2**31 - 1, (1,)))

    def build_projector(self, dims: list[int]) -> nn.Module:
        return mlp(self.feat_dim, [*dims[:-1], 4])

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        x, labels = rotate_batch(views[0])  # (4B, C, S, S), (4B,)
        if not self.params.all_rotations:  # one random rotation per image
            b = views[0].shape[0]
            k = torch.randint(4, (b,), generator=keyed_generator(self.seed, ctx.step, ctx.comm.rank)).to(x.device)
            pick = k * b + torch.arange(b, device=x.device)
            x, labels = x[pick], labels[pick]
        return self.loss(self.embed(x), labels)
