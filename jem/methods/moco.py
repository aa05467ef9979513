"""MoCo v2 (He et al. 2020, arXiv:1911.05722, Algorithm 1; Chen et al. 2020, arXiv:2003.04297):
a query encoder (backbone + MLP head) is trained with InfoNCE against a key from a momentum encoder
and a queue of past keys (:mod:`jem.losses.moco`).

* Key encoder: a frozen copy of backbone + head, ``theta_k <- m theta_k + (1 - m) theta_q`` after
  every optimizer step (eq. 2; only parameters, its BN statistics come from its own forward passes,
  as in the reference code). The query backbone is the exported encoder.
* Head: MoCo v2's MLP, Linear-ReLU for each hidden width then Linear, no BatchNorm (widths
  ``model.projector``; paper 2048 hidden, 128 out).
* Queue: one logical FIFO across workers. The keys of the global batch (gathered in rank order) are
  enqueued after the optimizer step, so every rank holds the same queue. Queue and pointer are
  buffers (checkpointed).
* Shuffling BN (section 3.3): the paper computes BN per GPU, shuffles the key batch across GPUs
  before the key encoder and unshuffles after, so a query and its key never share batch statistics.
  Here each worker's batch is processed in ``bn_splits`` groups with separate BN statistics (the
  per-GPU BN of the paper; the MoCo CIFAR demo's SplitBatchNorm does the same on one device), and
  the key images of the *global* batch are gathered, permuted, split into the same groups, encoded
  and unshuffled. The permutation comes from a generator seeded with the optimizer step: identical
  on every worker without a broadcast and replayed exactly on resume. Because of this grouping,
  ``W`` workers with ``bn_splits = s`` compute exactly what one worker computes on the
  concatenated batch with ``bn_splits = W * s``. On one worker with ``bn_splits = 1`` the shuffle
  cannot change anything (BN over the whole batch is permutation invariant), hence the groups.

Deviations for small data and short runs (each a hyperparameter in ``methods.moco``):
``momentum`` 0.99 (paper 0.999, for ~10^5+ steps; the CIFAR demo uses 0.99); ``queue_size`` 1024
(paper 65536): a queue longer than an epoch (digits: 1347 images) would hold keys of the anchor's own
image as negatives; ``symmetric`` (off by default, the paper's asymmetric loss) averages the two
swapped losses and enqueues both key batches, as the MoCo CIFAR demo does (which sums them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jem._schema import knob
from jem.config import Config, ConfigError
from jem.losses.moco import MoCoQueueLoss
from jem.methods import register
from jem.methods.base import Comm, Method, StepContext
from jem.methods.ema import ema_update_, make_teacher


@dataclass(frozen=True)
class MoCoParams:
    temperature: float = knob(0.2, gt=0.0, hi=10.0)  # tau; v2: 0.2
    queue_size: int = knob(1024, lo=1)  # K; paper 65536, <= the training set here (digits: 1347)
    momentum: float = knob(0.99, lo=0.0, hi=1.0)  # m; paper 0.999 (for ~10^5+ steps)
    bn_splits: int = knob(4, lo=1)  # BN groups per worker batch (shuffling BN); paper: 8 GPUs
    symmetric: bool = knob(False)  # also swap the views (MoCo CIFAR demo / v3); paper: False


def split_forward(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, splits: int) -> torch.Tensor:
    """``net`` applied to ``splits`` nearly equal groups of rows (separate BN statistics each)."""
    if x.shape[0] < 2 * splits:
        raise ValueError(f"MoCo: a batch of {x.shape[0]} per worker cannot be split into methods.moco.bn_splits "
                         f"= {splits} BatchNorm groups of at least 2 images; lower bn_splits")
    return torch.cat([net(c) for c in x.tensor_split(splits)])


@register("moco", params=MoCoParams,
          description="InfoNCE of a query against its momentum-encoded key and a queue of past keys",
          paper="He et al. 2020, arXiv:1911.05722; Chen, Fan, Girshick, He 2020 (v2), arXiv:2003.04297")
class MoCo(Method[MoCoParams]):
    @classmethod
    def validate(cls, cfg: Config) -> None:
        p: MoCoParams = cfg.method_params
        batch = cfg.train.batch_size
        if batch < 2 * p.bn_splits:
            raise ConfigError(f"train.batch_size = {batch} is too small for methods.moco.bn_splits = {p.bn_splits}; "
                              f"need at least {2 * p.bn_splits}")

    def __init__(self, arch: dict, projector: list[int], params: MoCoParams) -> None:
        super().__init__(arch, projector, params)
        self.key_encoder = make_teacher(nn.Sequential(self.backbone, self.projector))
        self.loss = MoCoQueueLoss(params.queue_size, projector[-1], params.temperature)
        self._new_keys: torch.Tensor | None = None  # global keys of the last forward, to enqueue

    def build_projector(self, dims: list[int]) -> nn.Module:
        layers: list[nn.Module] = []
        d = self.feat_dim
        for h in dims[:-1]:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
            d = h
        layers.append(nn.Linear(d, dims[-1]))
        return nn.Sequential(*layers)

    @torch.no_grad()
    def keys(self, x: torch.Tensor, seed: int, comm: Comm) -> tuple[torch.Tensor, torch.Tensor]:
        """Shuffled-BN keys: (B, P) for this worker's images and (N, P) for the global batch, both
        L2-normalised and in the original (rank-major) order."""
        x_all = comm.gather_nograd(x)  # (N, C, H, W)
        n, b, r = x_all.shape[0], x.shape[0], comm.rank
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(x.device)
        k = F.normalize(split_forward(self.key_encoder, x_all[perm[r * b:(r + 1) * b]], self.params.bn_splits), dim=1)
        k_shuffled = comm.gather_nograd(k)  # (N, P): row j is the key of image perm[j]
        k_all = k_shuffled[torch.argsort(perm)]  # unshuffle
        return k_all[r * b:(r + 1) * b], k_all

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        s = self.params.bn_splits
        q = split_forward(self.embed, views[0], s)  # (B, P)
        k, k_all = self.keys(views[1], 2 * ctx.step, ctx.comm)
        loss = self.loss(q, k)
        if self.params.symmetric:
            q2 = split_forward(self.embed, views[1], s)
            k2, k2_all = self.keys(views[0], 2 * ctx.step + 1, ctx.comm)
            loss = 0.5 * (loss + self.loss(q2, k2))
            k_all = torch.cat([k_all, k2_all])
        self._new_keys = k_all
        return {"loss": loss}

    @torch.no_grad()
    def after_step(self, ctx: StepContext) -> None:
        ema_update_(self.key_encoder, nn.Sequential(self.backbone, self.projector), self.params.momentum)
        if self._new_keys is not None:
            self.loss.enqueue(self._new_keys)
            self._new_keys = None
