"""W-MSE (Ermolov et al. 2021, arXiv:2007.06346): ``views`` positives per image through a shared
backbone and head, Cholesky whitening of the global batch in sub-batches, MSE of the normalised
whitened positives (:mod:`jem.losses.wmse`).

As in the reference code, each view goes through the backbone separately and the head sees all
views concatenated (its BatchNorm statistics span every view). The head is Linear-BN-ReLU for the
hidden widths of ``model.projector`` and a final Linear to ``emb_dim`` (paper: 1024 hidden, 64 out
on CIFAR/STL). ``emb_dim`` replaces the last ``model.projector`` width because whitening needs
sub-batches larger than the embedding (``w_size`` > ``emb_dim``; paper 128 > 64), and the shared
projector default (256) would not fit the paper's ``w_size``.

Defaults adapted to small data (``methods.wmse``): ``emb_dim`` 32 and ``w_size`` 64 (paper 64 and 128,
same ratio; 32 was the reference code's first default embedding): with the default batch of 256 this
whitens four sub-batches per step instead of two, and measured better on digits (kNN top-1 0.933
against 0.907 at 64/128, 30 epochs; the same 0.933 at a second seed). ``views`` 4 is W-MSE 4, the
reference code's default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from jem._schema import knob
from jem.config import Config, ConfigError
from jem.losses.wmse import WMSELoss
from jem.methods import register
from jem.methods.base import Method, StepContext


@dataclass(frozen=True)
class WMSEParams:
    views: int = knob(4, lo=2, hi=16)  # positives per image d; paper W-MSE 2 and 4 (reference default 4)
    emb_dim: int = knob(32, lo=1)  # whitened embedding width; paper 64 (CIFAR/STL), early reference code 32
    w_size: int = knob(64, lo=2)  # whitening sub-batch; paper 128 (= 2 x emb), must exceed emb_dim
    w_iter: int = knob(1, lo=1, hi=16)  # whitening partitions per step; paper 1
    w_eps: float = knob(1.0e-6, lo=0.0)  # added to the covariance diagonal; reference 0


@register("wmse", params=WMSEParams,
          description="MSE of normalised positives after Cholesky whitening of the batch",
          paper="Ermolov, Siarohin, Sangineto, Sebe 2021, arXiv:2007.06346")
class WMSE(Method[WMSEParams]):
    @classmethod
    def validate(cls, cfg: Config) -> None:
        p: WMSEParams = cfg.method_params
        batch = cfg.train.batch_size
        if p.w_size <= p.emb_dim:
            raise ConfigError(f"methods.wmse.w_size = {p.w_size} must exceed methods.wmse.emb_dim = {p.emb_dim} "
                              "(the whitening covariance would be singular)")
        if cfg.train.workers * batch <= p.emb_dim:
            raise ConfigError(f"train.batch_size = {batch} x {cfg.train.workers} worker(s) must exceed "
                              f"methods.wmse.emb_dim = {p.emb_dim} for W-MSE whitening")

    def __init__(self, arch: dict, projector: list[int], params: WMSEParams) -> None:
        if params.w_size <= params.emb_dim:
            raise ValueError(f"methods.wmse.w_size = {params.w_size} must exceed methods.wmse.emb_dim = "
                             f"{params.emb_dim}: the covariance of fewer rows than dimensions is singular")
        super().__init__(arch, [*projector[:-1], params.emb_dim], params)
        self.loss = WMSELoss(params.w_size, params.w_iter, params.w_eps)

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        h = torch.cat([self.backbone(v) for v in views])  # (d*B, F)
        z = self.projector(h).chunk(len(views))  # d x (B, emb_dim)
        return self.loss(list(z), ctx.step, ctx.gather)
