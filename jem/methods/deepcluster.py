"""DeepCluster (Caron et al. 2018, arXiv:1807.05520): alternate k-means on the features of all
training images and classification of the cluster indices (sections 3.2-3.3, Algorithm in fig. 1).

Per clustering (every ``recluster_every`` epochs, in ``on_epoch_start``):
1. features of *all* N training images (un-augmented, evaluation mode, as the reference's
   ``compute_features``): backbone -> projector (the reference clusters the output of its MLP
   classifier without the final ReLU). Each worker embeds its share and the shares are gathered
   (``gather_nograd``; :func:`embed_all`), so every worker clusters the same global matrix. On the
   ``data.pretrain_root`` stream the images are the folder's files, decoded whole (no random view)
   by a second Ray Data pass, indexed by their position in the manifest; files that do not decode
   are left out of the clustering and keep label -1 with weight 0 (they never reach a batch);
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
def embed_all(fn: Callable[[torch.Tensor], torch.Tensor], data: EpochData, batch: int = 512
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn`` of every un-augmented training image in evaluation inputs (normalised, whole image):
    ((N, D) float32 features ordered by image index, (N,) bool: which rows hold one) on
    ``data.device``, identical on all workers.

    Each worker embeds its share (:meth:`EpochData.image_batches`). View cache: equal contiguous
    shards, concatenated in rank order, every row embedded. Stream: each worker's (file index,
    feature) pairs are gathered (padded to the longest share) and scattered into file-index order;
    the rows of files that did not decode stay zero and False. Only the (N, D) features are held,
    never the images.
    """
    mean = torch.tensor(data.mean, device=data.device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=data.device).view(1, -1, 1, 1)
    rows, parts = [], []
    for idx, images in data.image_batches(batch):
        x = torch.from_numpy(images).to(data.device)
        x = (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std  # (b, C, H, W)
        parts.append(fn(x).float())
        rows.append(idx)
    n = data.num_images
    if data.stream_files is None:  # equal contiguous shards in rank order: the concatenation is index order
        feats = data.comm.gather_nograd(torch.cat(parts))[:n]
        return feats, torch.ones(n, dtype=torch.bool, device=feats.device)
    return _scatter_pairs(rows, parts, data)


def _scatter_pairs(rows: list[np.ndarray], parts: list[torch.Tensor], data: EpochData
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every worker's (index, feature) pairs, gathered and placed at their indices (stream path)."""
    n, dev = data.num_images, data.device
    mine = torch.from_numpy(np.concatenate(rows).astype(np.int64)) if rows else torch.zeros(0, dtype=torch.int64)
    sizes = data.comm.gather_nograd(torch.tensor([[mine.numel(), parts[0].shape[1] if parts else 0]], device=dev))
    longest, dim = int(sizes[:, 0].max()), int(sizes[:, 1].max())
    if longest == 0:
        raise ValueError(f"none of the {n} files of the data.pretrain_root stream decoded in the feature pass")
    idx = torch.full((longest,), -1, dtype=torch.int64, device=dev)
    idx[: mine.numel()] = mine.to(dev)
    feats = torch.zeros((longest, dim), device=dev)
    if parts:
        feats[: mine.numel()] = torch.cat(parts)
    idx, feats = data.comm.gather_nograd(idx), data.comm.gather_nograd(feats)
    keep = idx >= 0
    idx, feats = idx[keep], feats[keep]
    if int(idx.max()) >= n or torch.unique(idx).numel() != idx.numel():
        raise RuntimeError(f"the feature pass read file indices outside 0..{n - 1} or one file twice: the stream "
                           "does not match its manifest")
    out = torch.zeros((n, dim), device=dev)
    out[idx] = feats
    ok = torch.zeros(n, dtype=torch.bool, device=dev)
    ok[idx] = True
    return out, ok


@torch.no_grad()
def all_features(fn: Callable[[torch.Tensor], torch.Tensor], data: EpochData, batch: int = 512) -> torch.Tensor:
    """``fn`` of every training image, (N, D) float32 on ``data.device``, identical on all workers
    (:func:`embed_all`); ValueError when some file of a stream did not decode (a method that needs
    every image's row cannot skip one; :func:`embed_all` says which rows exist)."""
    feats, ok = embed_all(fn, data, batch)
    if not bool(ok.all()):
        raise ValueError(f"{int((~ok).sum())} of the {ok.numel()} files of the data.pretrain_root stream did not "
                         "decode, and this method needs a feature of every image")
    return feats


def decoded_rows(ok: torch.Tensor, k: int, knob_name: str) -> torch.Tensor | None:
    """The rows to cluster: None when every image has a feature (the view cache, or a stream whose
    files all decode), else the indices of those that have one; ValueError when fewer than ``k``."""
    if bool(ok.all()):
        return None
    rows = torch.nonzero(ok).squeeze(1)
    if k > rows.numel():
        raise ValueError(f"{knob_name} = {k} exceeds the {rows.numel()} files of the stream that decoded")
    return rows


def spread(values: torch.Tensor, rows: torch.Tensor | None, n: int, fill: float) -> torch.Tensor:
    """Per-row ``values`` of the ``rows`` placed in an (N, ...) tensor filled with ``fill`` (``values``
    itself when ``rows`` is None): the pseudo-label -1 and weight 0 of a file that did not decode,
    which never reaches a batch (:class:`jem.engine.sources.StreamViews` drops its rows)."""
    if rows is None:
        return values
    out = torch.full((n, *values.shape[1:]), fill, dtype=values.dtype, device=values.device)
    out[rows.to(values.device)] = values
    return out


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
    the ``every``-epoch cadence; a ``k`` above the ``n`` training images (stream files) is one clear error."""
    if k > n:
        raise ValueError(f"{knob_name} = {k} exceeds the {n} training images")
    return labels is None or labels.numel() != n or epoch % every == 0


@register("deepcluster", params=DeepClusterParams,
          description="k-means pseudo-labels of all images, re-clustered every few epochs, classified by a "
                      "re-initialised head",
          paper="Caron, Bojanowski, Joulin, Douze 2018, arXiv:1807.05520")
class DeepCluster(Method[DeepClusterParams]):
    feature_pass = True  # clusters embed_all's features: runs on the data.pretrain_root stream

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
            feats, ok = embed_all(self.embed, data)  # (N, P), (N,)
        rows = decoded_rows(ok, p.n_clusters, "methods.deepcluster.n_clusters")  # None: every image
        x = preprocess_features(feats if rows is None else feats[rows], p.pca_dim)
        _, labels = kmeans(x, p.n_clusters, p.kmeans_iters, keyed_generator(self.seed, data.epoch, 1))
        labels = data.comm.gather_nograd(labels)[: labels.numel()]  # rank 0's copy everywhere
        n = data.num_images
        self.labels = spread(labels, rows, n, -1).to(data.device)
        self.weights = spread(balanced_weights(labels, p.n_clusters), rows, n, 0.0).to(data.device)
        self.n_nonempty = float(torch.unique(labels).numel())
        self.reset_head(data.epoch)

    def on_epoch_start(self, data: EpochData) -> None:
        p = self.params
        if clustering_due("methods.deepcluster.n_clusters", p.n_clusters, data.num_images, self.labels,
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
