"""data2vec for images (Baevski et al. 2022, arXiv:2202.03555, section 3) on the ``vit_tiny``
backbone: the student sees the image with a ``mask_ratio`` of its patch tokens replaced by a
learned mask embedding and regresses, at the masked tokens, the average of the top ``top_k``
layer-normalised block outputs of an EMA teacher that sees the whole image (loss in
:mod:`jem.losses.masked`).

* Teacher: an EMA copy of the whole student backbone (the reference averages only the transformer
  blocks and shares the patch embedding), run in evaluation mode. Its EMA rate is annealed linearly
  from ``ema_decay`` to ``ema_end_decay`` over training (reference ``get_annealed_rate``).
* Student head: ``Linear(D, D)`` regression on the final-normalised tokens (the paper's linear
  projection; saved as this method's projector).
* Masks: uniformly random with exactly ``round(mask_ratio * T)`` masked tokens per image, drawn from
  a generator keyed by (seed, step, rank). The paper uses BEiT block-wise masks; on the 4x4 to 8x8
  token grids of small images a block would cover most of the grid.
* Optimiser: its own recipe ``methods.data2vec.{optimizer,lr,weight_decay}`` = AdamW, 0.001, 0.05
  (the paper trains with Adam; with the shared LARS 0.3 the digits kNN fell to 0.287, below the
  random-init ViT's 0.393). ``target_norm: instance`` normalises each block output over the tokens
  instead of over the channels (the paper's speech setting, data2vec 2.0's for all modalities).
* Defaults for short runs: EMA 0.99 -> 0.999 (paper 0.999 -> 0.9998 over 375k updates); with a
  few hundred steps the paper's rates would leave the teacher at its random initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from jem._schema import OPTIMIZERS, knob
from jem.augment.masking import keyed_generator
from jem.config import Config, ConfigError
from jem.losses.masked import Data2VecLoss
from jem.methods import register
from jem.methods.base import Method, StepContext
from jem.methods.ema import ema_update_, make_teacher
from jem.models.masking import random_token_mask
from jem.models.vit import ViT


@dataclass(frozen=True)
class Data2VecParams:
    views = 1  # global views per image it consumes (a class attribute, not a knob)
    mask_ratio: float = knob(0.6, gt=0.0, hi=0.95)  # fraction of patch tokens masked; paper 0.6
    top_k: int = knob(6, lo=1)  # teacher blocks averaged; paper 6 (ViT-B, 12 blocks)
    beta: float = knob(2.0, lo=0.0)  # Smooth L1 beta (0 = squared error); reference vision 2
    ema_decay: float = knob(0.99, lo=0.0, hi=1.0)  # teacher EMA at step 0; paper 0.999 (375k steps)
    ema_end_decay: float = knob(0.999, lo=0.0, hi=1.0)  # ... annealed linearly to this; paper 0.9998
    norm_average: bool = knob(False)  # also layer-normalise the averaged target (reference vision config)
    target_norm: str = knob("layer", choices=("layer", "instance"))  # per-block norm: vision layer, speech/2.0 instance
    optimizer: str = knob("adamw", choices=OPTIMIZERS)  # replaces train.optimizer; paper Adam (ViT)
    lr: float = knob(0.001, gt=0.0, hi=100.0)  # replaces train.lr (the usual ViT AdamW lr at batch 256)
    weight_decay: float = knob(0.05, lo=0.0, hi=1.0)  # replaces train.weight_decay (ViT AdamW: 0.05)


def annealed_rate(start: float, end: float, step: int, total_steps: int) -> float:
    """Linear from ``start`` at step 0 to ``end`` at ``total_steps`` (then constant)."""
    t = min(1.0, max(0, step) / max(1, total_steps))
    return start + (end - start) * t


@register("data2vec", params=Data2VecParams,
          description="masked prediction of the EMA teacher's averaged top-K layer-normalised block outputs (ViT)",
          paper="Baevski et al. 2022, arXiv:2202.03555")
class Data2Vec(Method[Data2VecParams]):
    backbones = ("vit_tiny",)  # masks patch tokens: needs a transformer (the config selects it)

    @classmethod
    def validate(cls, cfg: Config) -> None:
        p: Data2VecParams = cfg.method_params
        if p.top_k > cfg.model.depth:
            raise ConfigError(f"methods.data2vec.top_k = {p.top_k} exceeds model.depth = {cfg.model.depth} "
                              "(the teacher blocks it averages)")

    def __init__(self, arch: dict, projector: list[int], params: Data2VecParams) -> None:
        if arch.get("backbone") != "vit_tiny":
            raise ValueError(f"method data2vec needs model.backbone = vit_tiny (masked tokens); got "
                             f"{arch.get('backbone')!r}")
        super().__init__(arch, projector, params)
        depth = len(cast(ViT, self.backbone).blocks)
        if params.top_k > depth:
            raise ValueError(f"methods.data2vec.top_k = {params.top_k} exceeds the {depth} blocks of vit_tiny "
                             "(model.depth)")
        self.mask_token = nn.Parameter(torch.zeros(self.feat_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.teacher = make_teacher(self.backbone)
        self.loss = Data2VecLoss(params.top_k, params.beta, params.norm_average, params.target_norm)
        self.seed = int(torch.randint(0, 2**31 - 1, (1,)))

    def build_projector(self, dims: list[int]) -> nn.Module:
        return nn.Linear(self.feat_dim, self.feat_dim)  # regression head

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        x = views[0]
        vit, teacher = cast(ViT, self.backbone), cast(ViT, self.teacher)
        mask = random_token_mask(x.shape[0], vit.num_tokens, self.params.mask_ratio,
                                 keyed_generator(self.seed, ctx.step, ctx.comm.rank), x.device)  # (B, T)
        with torch.no_grad():
            teacher.eval()
            _, layers = teacher.forward_tokens(x, return_layers=True)
        tokens, _ = vit.forward_tokens(x, mask, self.mask_token)  # (B, T, D)
        pred = self.projector(tokens[mask])  # (M, D)
        out = self.loss(pred, layers, mask)
        out["ema"] = out["loss"].new_tensor(self.ema_rate(ctx))
        return out

    def ema_rate(self, ctx: StepContext) -> float:
        return annealed_rate(self.params.ema_decay, self.params.ema_end_decay, ctx.step, ctx.total_steps)

    @torch.no_grad()
    def after_step(self, ctx: StepContext) -> None:
        ema_update_(self.teacher, self.backbone, self.ema_rate(ctx))
