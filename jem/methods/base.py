"""What the engine needs from a method, and the pieces most methods share.

A method is an ``nn.Module`` holding the backbone, its heads and its loss, generic over its params
dataclass (``class VICReg(Method[VICRegParams])``; see :mod:`jem.methods` for the module layout and
the registration). Before any compute the validate stage calls the class's :meth:`Method.validate`
with the whole config, for checks across sections (batch size, backbone depth, view counts). The
engine calls ``forward(views, ctx)`` (through DDP) to get the loss and ``after_step(ctx)`` after
the optimizer step (EMA teachers, queues). ``views`` are normalised float tensors: ``n_global`` global views
(B, C, H, W) followed by ``n_local`` local crops. Schedules (EMA momentum, teacher temperature)
are computed from ``ctx`` so a resumed run continues them exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from torch import nn

from jem.dist import Comm, Gather, current_comm
from jem.models import build_backbone, mlp

if TYPE_CHECKING:
    from jem.config import Config

P = TypeVar("P")  # the method's params dataclass


@dataclass(frozen=True)
class StepContext:
    epoch: int  # 0-based
    step: int  # global optimizer step, 0-based
    total_steps: int
    steps_per_epoch: int
    indices: torch.Tensor | None = None  # (B,) int64 dataset indices of this worker's batch
    comm: Comm = field(default_factory=current_comm)  # the engine's collectives, rank and world size

    @property
    def gather(self) -> Gather:
        """Autograd-aware gather over workers (identity on one worker)."""
        return self.comm.gather

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1)."""
        return self.step / max(1, self.total_steps)


ImageBatches = Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]]


@dataclass(frozen=True)
class EpochData:
    """What ``on_epoch_start`` may use: the un-augmented training images and how to feed them.

    View-cache path: ``images`` is the memory-mapped training array. Stream path
    (``data.pretrain_root``): ``images`` has no rows, ``stream_files`` is the manifest's file count
    (the index space of ``StepContext.indices``) and ``stream`` starts one pass over this worker's
    share of the folder's decoded images (set for methods with ``feature_pass``).
    :meth:`image_batches` reads either."""

    epoch: int
    images: Any  # uint8 (N, H, W, C) array (memory-mapped); no rows on the stream path
    mean: list[float]
    std: list[float]
    device: torch.device
    comm: Comm = field(default_factory=current_comm)
    steps_per_epoch: int = 1  # training steps per epoch (for cadences counted in steps)
    stream_files: int | None = None  # the stream's file count; None on the view-cache path
    stream: ImageBatches | None = None  # batch size -> this worker's (file indices, uint8 images) of one pass

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def world_size(self) -> int:
        return self.comm.world_size

    @property
    def num_images(self) -> int:
        """N, the size of the index space: training images, or the stream's files (those that do not
        decode included: they keep their index and never reach a batch)."""
        return int(self.images.shape[0]) if self.stream_files is None else self.stream_files

    def image_batches(self, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This worker's share of the un-augmented images as ((b,) int64 indices, uint8 (b, H, W, C)).

        View cache: images ``r * ceil(N/W) ...`` of worker ``r`` in order, the last shard padded by
        repeating the last image so all shards have the same size. Stream: one pass over the
        worker's share of the folder (which files is up to Ray Data; every file reaches exactly one
        worker), only the files that decoded."""
        if self.stream_files is not None:
            if self.stream is None:
                raise ValueError("this method reads every image at epoch starts, but the stream was started without "
                                 "its feature pass (Method.feature_pass is False)")
            yield from self.stream(batch)
            return
        n = self.images.shape[0]
        per = -(-n // self.world_size)
        idx = np.minimum(np.arange(self.rank * per, (self.rank + 1) * per), n - 1)
        for s in range(0, per, batch):
            yield idx[s:s + batch], np.ascontiguousarray(self.images[idx[s:s + batch]])


class Method(nn.Module, Generic[P]):
    """Base: a backbone plus a projector MLP (``model.projector`` widths).

    Class attributes a method may set: ``backbones``, the backbones it can run on (empty: any; else
    the first is used when ``model.backbone`` is not among them, e.g. data2vec's ``("vit_tiny",)``);
    ``feature_pass`` (below).
    A params field or class attribute ``views`` says how many global views per image it consumes
    (default 2) and a field ``local_crops`` how many local crops; the config checks both against
    ``augment``. Params fields ``optimizer``, ``lr`` and ``weight_decay`` are the paper's own
    optimiser recipe: they replace ``train.*`` for this method (:attr:`jem.config.Config.train_overrides`).
    """

    name: ClassVar[str] = ""  # set by jem.methods.register
    backbones: ClassVar[tuple[str, ...]] = ()
    # True: on_epoch_start reads the training images only through EpochData.image_batches (a pass
    # of features over every image, e.g. DeepCluster's clustering) and EpochData.num_images, so it
    # runs on the data.pretrain_root stream too (the stream then carries a decode-only dataset for it)
    feature_pass: ClassVar[bool] = False
    n_local: int = 0
    n_audio: int = 0  # audio views per sample after the image views (audio-visual methods)
    params: P

    def __init__(self, arch: dict[str, Any], projector: list[int], params: P) -> None:
        super().__init__()
        self.arch, self.params = dict(arch), params
        self.backbone, self.feat_dim = build_backbone(arch)
        self.projector_dims = list(projector)
        self.projector = self.build_projector(projector)

    @classmethod
    def validate(cls, cfg: Config) -> None:
        """Checks of ``cfg.method_params`` against the rest of ``cfg`` (``cfg.method`` is this
        method); raise :class:`jem.config.ConfigError` with one line naming the keys. Default: none."""

    @property
    def n_global(self) -> int:
        return int(getattr(self.params, "views", 2))

    def build_projector(self, dims: list[int]) -> nn.Module:
        return mlp(self.feat_dim, dims)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> projector output (B, P)."""
        return self.projector(self.backbone(x))

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        """Returns a dict with the scalar ``"loss"`` to minimise plus detached logging terms."""
        raise NotImplementedError

    def on_epoch_start(self, data: EpochData) -> None:
        """Hook before each epoch (e.g. DeepCluster re-clusters features of all images). Default: nothing."""

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """Hook after backward, before the optimizer step (e.g. SwAV zeroes the prototypes'
        gradients while they are frozen). Default: nothing."""

    @torch.no_grad()
    def after_step(self, ctx: StepContext) -> None:
        """Hook after the optimizer step (EMA, queues). Default: nothing."""
