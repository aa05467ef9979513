"""AVID (Morgado, Vasconcelos, Misra 2021, arXiv:2004.12943): audio-visual instance discrimination,
on the audio-visual data sets (``av-digits``, ``avfolder``); AVID + CMA builds on it in
:mod:`jem.methods.avid_cma`. Losses, banks and the positive set: :mod:`jem.losses.avid`.

Two encoders: the image backbone of ``model.backbone`` (what the rest of jem exports and evaluates)
and :class:`AudioCNN`, a small 2-D CNN over log-mel spectrograms (the reference's audio network is
a 2-D CNN over spectrograms too, 10 layers deep for AudioSet; this one is sized for 1-second
clips). Each feeds its own head ``mlp(feat, model.projector[:-1] + [dim])`` (the reference: a
non-linear projection to 128) and L2 normalisation. One image view and one audio view per sample
and step.

Two registered names, so the paper's ablation is ``-S method=avid`` against ``-S method=avid_cma``
with everything else equal (rather than a flag inside one block: the method column of
``dvc exp show`` then says which was run). ``avid``: cross-modal instance discrimination only.

The banks are created at the first ``on_epoch_start`` (N random unit vectors per modality,
identical on every worker: seeded from the method's seed), updated after every optimizer step with
every worker's batch, and checkpointed with the positive set through the loss module's extra state.
NCE negatives come from a generator keyed by (seed, step, rank).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from jem._schema import knob
from jem.augment.masking import keyed_generator
from jem.losses.avid import AVIDLoss
from jem.methods import register
from jem.methods.base import EpochData, Method, StepContext
from jem.methods.deepcluster import require_indices
from jem.models import mlp

if TYPE_CHECKING:
    from jem.config import Config

AV_DATASETS = ("av-digits", "avfolder")


class AudioCNN(nn.Module):
    """Log-mel spectrograms (B, 1, M, T) -> features (B, 4 width): three 3x3 conv-BN-ReLU blocks of
    width, 2 width and 4 width channels (the first with stride 2, 2x2 max-pooling after the second),
    then global average pooling: about 12 MFLOP per 40 x 63 spectrogram at width 16."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i, c in enumerate((width, 2 * width, 4 * width)):
            layers += [nn.Conv2d(c_in, c, 3, stride=2 if i == 0 else 1, padding=1, bias=False), nn.BatchNorm2d(c),
                       nn.ReLU(inplace=True)]
            if i == 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feat_dim = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass(frozen=True)
class AVIDParams:
    views = 1  # image views per sample it consumes (a class attribute, not a knob; plus AVID.n_audio = 1)
    dim: int = knob(128, lo=1)  # embedding width of both heads; paper 128
    temperature: float = knob(0.07, gt=0.0, hi=10.0)  # tau; reference 0.07
    momentum: float = knob(0.5, lo=0.0, hi=1.0)  # bank update momentum; reference 0.5 (AVID-CMA configs)
    loss: str = knob("softmax", choices=("softmax", "nce"))  # full softmax over the bank, or NCE as the reference
    num_negatives: int = knob(1024, lo=1)  # NCE negatives K; reference 1024
    audio_width: int = knob(16, lo=4, hi=512)  # AudioCNN base channels


@register("avid", params=AVIDParams,
          description="audio-visual instance discrimination: each modality's embedding picks its own sample "
                      "out of the other modality's memory bank",
          paper="Morgado, Vasconcelos, Misra 2021, arXiv:2004.12943")
class AVID(Method[AVIDParams]):
    n_audio = 1  # one audio view (log-mel spectrogram) per sample, after the image view

    def __init__(self, arch: dict, projector: list[int], params: AVIDParams) -> None:
        super().__init__(arch, projector, params)
        self.audio = AudioCNN(params.audio_width)
        self.audio_projector = mlp(self.audio.feat_dim, [*projector[:-1], params.dim])
        self.loss = self.make_loss(params)
        self.seed = int(torch.randint(0, 2**31 - 1, (1,)))
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @staticmethod
    def make_loss(p: Any) -> AVIDLoss:
        return AVIDLoss(p.temperature, p.momentum, p.loss, p.num_negatives, within_weight=0.0)

    def build_projector(self, dims: list[int]) -> nn.Module:
        return mlp(self.feat_dim, [*dims[:-1], self.params.dim])

    @classmethod
    def validate(cls, cfg: Config) -> None:
        from jem.config import ConfigError

        if cfg.dataset not in AV_DATASETS:
            raise ConfigError(f"method {cfg.method} needs an audio-visual data set (dataset: {' | '.join(AV_DATASETS)}), "
                              f"not {cfg.dataset}")
        if cfg.augment.views_per_image == 0:
            raise ConfigError(f"method {cfg.method} reads its audio views from the view cache; "
                              "set augment.views_per_image > 0")

    def export_extra(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
        """The audio encoder and head for the exported encoder folder (read by jem.evaluate.audiovisual)."""
        tensors = {f"encoder.{k}": v for k, v in self.audio.state_dict().items()}
        tensors.update({f"projector.{k}": v for k, v in self.audio_projector.state_dict().items()})
        arch = {"width": self.params.audio_width, "feat_dim": self.audio.feat_dim,
                "projector": [*self.projector_dims[:-1], self.params.dim]}
        return {"audio.safetensors": tensors}, {"audio": arch}

    def on_epoch_start(self, data: EpochData) -> None:
        n = data.images.shape[0]
        p = self.params
        if p.loss == "nce" and p.num_negatives >= n:
            raise ValueError(f"methods.{self.name}.num_negatives = {p.num_negatives} needs more than the {n} training "
                             f"samples for NCE; lower it or use methods.{self.name}.loss: softmax")
        self.loss.init_banks(n, p.dim, keyed_generator(self.seed), data.device)

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        idx = require_indices(ctx, self.name)
        image, spec = views[0], views[self.n_global]  # (B, C, H, W), (B, 1, M, T)
        fv = F.normalize(self.embed(image), dim=1)  # (B, dim)
        fa = F.normalize(self.audio_projector(self.audio(spec)), dim=1)  # (B, dim)
        out = self.loss(fv, fa, idx, keyed_generator(self.seed, ctx.step, ctx.comm.rank), ctx.comm.all_reduce_mean)
        self._last = (fv.detach(), fa.detach(), idx)
        return out

    @torch.no_grad()
    def after_step(self, ctx: StepContext) -> None:
        if self._last is not None:
            self.loss.update(*self._last, gather=ctx.comm.gather_nograd)
            self._last = None


