"""Autoencoder baseline (Hinton, Salakhutdinov 2006): a decoder reconstructs the input view from
the backbone's pooled feature; mean squared error (:mod:`jem.losses.reconstruction`). The encoder
is evaluated exactly like every joint-embedding method's backbone.

Decoder (saved as this method's projector; it returns flattened images so projector diagnostics
see (N, C*H*W) vectors): ``Linear(D, 2w * s * s)`` with ``s = ceil(size / 4)``, then two
(nearest x2 upsampling, 3x3 conv, BN, ReLU) stages (2w -> w channels), a 3x3 conv to the image
channels, and a bilinear resize to the exact size when ``size`` is not a multiple of 4.
``w`` = ``decoder_width``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jem._schema import knob
from jem.losses.reconstruction import ReconstructionLoss
from jem.methods import register
from jem.methods.base import Method, StepContext


@dataclass(frozen=True)
class AutoencoderParams:
    views = 1  # global views per image it consumes (a class attribute, not a knob)
    decoder_width: int = knob(64, lo=4)  # channels of the upsampling conv decoder


class ConvDecoder(nn.Module):
    def __init__(self, feat_dim: int, channels: int, size: int, width: int) -> None:
        super().__init__()
        self.channels, self.size, self.width = channels, size, width
        self.start = math.ceil(size / 4)
        self.fc = nn.Linear(feat_dim, 2 * width * self.start ** 2)
        up = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * width, width, 3, 1, 1, bias=False),
              nn.BatchNorm2d(width), nn.ReLU(inplace=True),
              nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, 1, 1, bias=False),
              nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.Conv2d(width, channels, 3, 1, 1)]
        self.up = nn.Sequential(*up)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, C*H*W)
        y = self.up(F.relu(self.fc(h)).view(h.shape[0], 2 * self.width, self.start, self.start))
        if y.shape[-1] != self.size:
            y = F.interpolate(y, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return y.flatten(1)


@register("autoencoder", params=AutoencoderParams,
          description="generative baseline: reconstruct the image from the backbone feature (MSE)",
          paper="Hinton, Salakhutdinov 2006, Science 313(5786); review: Bengio, Courville, Vincent 2013, arXiv:1206.5538")
class Autoencoder(Method[AutoencoderParams]):
    def __init__(self, arch: dict, projector: list[int], params: AutoencoderParams) -> None:
        super().__init__(arch, projector, params)
        self.loss = ReconstructionLoss()

    def build_projector(self, dims: list[int]) -> nn.Module:
        return ConvDecoder(self.feat_dim, int(self.arch["in_channels"]), int(self.arch["image_size"]),
                           self.params.decoder_width)

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        x = views[0]
        recon = self.embed(x).view_as(x)  # (B, C, H, W)
        return self.loss(recon, x)
