"""DeepCluster (Caron et al. 2018, arXiv:1807.05520): alternate k-means on the features of all
training images and classification of the cluster indices (sections 3.2-3.3, Algorithm in fig. 1).

Per clustering (every ``recluster_every`` epochs, in ``on_epoch_start``):
1. features of *all* N training images (un-augmented, evaluation mode, as the reference's
   ``compute_features``): backbone -> projector (the reference clusters the output of its MLP
   classifier without the final ReLU). Each worker embeds a contiguous shard and the shards are
   gathered (``gather_nograd``), so every worker clusters the same global matrix;
2. PCA-whitening to ``pca_dim``, L2 normalisation, k-means with empty-cluster re-seeding
   (:mod:`jem.losses.clustering`); rank 0's labels are kept (gathered again) so the pseudo-labels
   are bit-identical on every worker;
3. the classification head (``ReLU`` then ``Linear(P, k)``, weights ~ N(0, 0.01), zero bias, as the
   reference's ``top_layer``) is re-initialised, because cluster indices are arbitrary.

Training: cross-entropy of ``head(ReLU(projector(backbone(view))))`` against the image's
pseudo-label, weighted for uniform sampling over pseudo-labels (``balanced``; the equivalent of
the reference's sampler, see :func:`jem.losses.clustering.balanced_weights`).

Deviations: the head's optimizer momentum is not reset after re-initialisation (the engine owns one
optimizer; the reference builds a fresh one for the top layer each epoch); k-means++ seeding; no
Sobel pre-filter (digits and Fashion-MNIST are grey already). Pseudo-labels live on the method and
are checkpointed through ``get_extra_state``.

Adapted to short runs, measured on digits (kNN top-1, seed 0; random init 0.940): the paper's own
optimiser (``methods.deepcluster.{optimizer,lr,weight_decay}`` = SGD, 0.1, 5e-4; paper SGD 0.05,
1e-5) instead of the shared LARS, whose trust ratio makes the updates of the freshly re-initialised
0.01-scale head tiny (the loss stayed at log k: 0.918); and ``recluster_every`` 5 epochs instead of
1, because a digits epoch is 5 steps and the new head needs more than that to fit the new labels
(SGD with recluster_every 1: 0.918; with 5: 0.969, seed 1: 0.976).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jem._schema import OPTIMIZERS, knob
from jem.augment.masking import keyed_generator
from jem.losses.clustering import PseudoLabelLoss, balanced_weights, kmeans, preprocess_features
from jem.methods import register
from jem.methods.base import EpochData, Method, StepContext


@dataclass(frozen=True)
class DeepClusterParams:
    views = 1  # global views per image it consumes (a class attribute, not a knob)
    n_clusters: int = knob(100, lo=2)  # k; paper 10000 for ImageNet (10x the classes)
    recluster_every: int = knob(5, lo=1)  # epochs between clusterings; paper 1 (= ~5000 steps; digits: 5 steps)
    pca_dim: int = knob(64, lo=1)  # PCA-whitening dims before k-means; paper 256 (of 4096-d features)
    kmeans_iters: int = knob(20, lo=1)  # Lloyd iterations; reference (faiss) 20
    balanced: bool = knob(True)  # uniform sampling over pseudo-labels, as loss weights; paper: on
    optimizer: str = knob("sgd", choices=OPTIMIZERS)  # replaces train.optimizer; paper SGD
    lr: float = knob(0.1, gt=0.0, hi=100.0)  # replaces train.lr; paper 0.05
    weight_decay: float = knob(5.0e-4, lo=0.0, hi=1.0)  # replaces train.weight_decay; paper 1e-5


@torch.no_grad()
def all_features(fn: Callable[[torch.Tensor], torch.Tensor], data: EpochData, batch: int = 512) -> torch.Tensor:
    """``fn`` of every training image, (N, D) float32 on ``data.device``, identical on all workers.

    Worker ``r`` embeds images ``r * ceil(N/W) ...`` (the last shard padded by repeating the last
    image so all shards have the same size), then the shards are concatenated in rank order.
    """
    images = data.images
    n = images.shape[0]
    per = -(-n // data.world_size)
    idx = np.minimum(np.arange(data.rank * per, (data.rank + 1) * per), n - 1)
    mean = torch.tensor(data.mean, device=data.device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=data.device).view(1, -1, 1, 1)
    parts = []
    for s in range(0, per, batch):
        x = torch.from_numpy(np.ascontiguousarray(images[idx[s:s + batch]])).to(data.device)
        x = (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std  # (b, C, H, W)
        parts.append(fn(x).float())
    return data.comm.gather_nograd(torch.cat(parts))[:n]


def require_indices(ctx: StepContext, name: str) -> torch.Tensor:
    if ctx.indices is None:
        raise ValueError(f"{name} needs the dataset indices of the batch (StepContext.indices)")
    return ctx.indices


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """The module in evaluation mode inside the block, its previous mode restored afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@torch.no_grad()
def reinit_heads(heads: Sequence[nn.Linear], seed: int, epoch: int) -> None:
    """Classifier heads re-initialised for a new clustering (the reference builds a new top layer):
    N(0, 0.01^2) weights drawn in order from one generator keyed by (seed, epoch), so every worker
    draws the same, and zero biases."""
    g = keyed_generator(seed, epoch)
    for head in heads:
        head.weight.copy_(torch.randn(head.weight.shape, generator=g).mul_(0.01).to(head.weight))
        head.bias.zero_()


def clustering_due(knob_name: str, k: int, n: int, labels: torch.Tensor | None, epoch: int, every: int) -> bool:
    """Whether ``on_epoch_start`` must cluster: no labels yet, labels of another training set, or
    the ``every``-epoch cadence; a ``k`` above the ``n`` training images is one clear error."""
    if k > n:
        raise ValueError(f"{knob_name} = {k} exceeds the {n} training images")
    return labels is None or labels.numel() != n or epoch % every == 0


@register("deepcluster", params=DeepClusterParams,
          description="k-means pseudo-labels of all images, re-clustered every few epochs, classified by a "
                      "re-initialised head",
          paper="Caron, Bojanowski, Joulin, Douze 2018, arXiv:1807.05520")
class DeepCluster(Method[DeepClusterParams]):
    def __init__(self, arch: dict, projector: list[int], params: DeepClusterParams) -> None:
        super().__init__(arch, projector, params)
        self.head = nn.Linear(projector[-1], params.n_clusters)
        self.loss = PseudoLabelLoss()
        self.seed = int(torch.randint(0, 2**31 - 1, (1,)))  # same on every worker: drawn after torch.manual_seed
        self.labels: torch.Tensor | None = None  # (N,) int64 pseudo-labels
        self.weights: torch.Tensor | None = None  # (N,) balancing weights
        self.n_nonempty = 0.0
        self.reset_head(0)

    def reset_head(self, epoch: int) -> None:
        reinit_heads([self.head], self.seed, epoch)

    @torch.no_grad()
    def cluster(self, data: EpochData) -> None:
        p = self.params
        with eval_mode(self):
            feats = all_features(self.embed, data)  # (N, P)
        x = preprocess_features(feats, p.pca_dim)
        _, labels = kmeans(x, p.n_clusters, p.kmeans_iters, keyed_generator(self.seed, data.epoch, 1))
        labels = data.comm.gather_nograd(labels)[: labels.numel()]  # rank 0's copy everywhere
        self.labels = labels.to(data.device)
        self.weights = balanced_weights(labels, p.n_clusters).to(data.device)
        self.n_nonempty = float(torch.unique(labels).numel())
        self.reset_head(data.epoch)

    def on_epoch_start(self, data: EpochData) -> None:
        p = self.params
        if clustering_due("methods.deepcluster.n_clusters", p.n_clusters, data.images.shape[0], self.labels,
                          data.epoch, p.recluster_every):
            self.cluster(data)
        assert self.labels is not None and self.weights is not None
        self.labels, self.weights = self.labels.to(data.device), self.weights.to(data.device)

    def forward(self, views: list[torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        idx = require_indices(ctx, "deepcluster")
        if self.labels is None or self.weights is None:
            raise RuntimeError("deepcluster: no pseudo-labels yet (on_epoch_start clusters the training set)")
        logits = self.head(F.relu(self.embed(views[0])))  # (B, k)
        weights = self.weights[idx] if self.params.balanced else None
        out = self.loss(logits, self.labels[idx], weights)
        out["clusters"] = logits.new_tensor(self.n_nonempty)  # non-empty clusters of the last k-means
        return out

    def get_extra_state(self) -> dict[str, Any]:
        if self.labels is None or self.weights is None:
            return {}
        return {"labels": self.labels.cpu(), "weights": self.weights.cpu()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.labels, self.weights = state.get("labels"), state.get("weights")
        if self.labels is not None:
            self.n_nonempty = float(torch.unique(self.labels).numel())
