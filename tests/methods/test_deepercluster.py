"""DeeperCluster: the two-level k-means on a hand-built hierarchy, the loss on hand-computed logits,
the label re-indexing (rotation x super-cluster) through the method, and a few real steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from jem.config import parse_config
from jem.engine.loop import build_method
from jem.engine.optim import build_optimizer
from jem.losses.deepercluster import (
    flat_cluster_labels,
    hierarchical_cross_entropy,
    hierarchical_kmeans,
    super_class_labels,
)
from jem.methods.base import EpochData, StepContext


def _same(labels: torch.Tensor) -> torch.Tensor:
    return labels[:, None] == labels[None, :]  # (N, N) same-cluster matrix: a partition up to renaming


def test_hierarchical_kmeans_recovers_blobs_and_sub_blobs():
    """4 blobs 100 apart, each made of 2 sub-blobs 6 apart, 10 points of spread 0.1 in each."""
    g = torch.Generator().manual_seed(0)
    blob_centres = torch.tensor([[100.0, 100.0], [100.0, -100.0], [-100.0, 100.0], [-100.0, -100.0]])
    pts, blob, sub_blob = [], [], []
    for b, c in enumerate(blob_centres):
        for s, off in enumerate((torch.tensor([3.0, 0.0]), torch.tensor([-3.0, 0.0]))):
            pts.append(c + off + 0.1 * torch.randn(10, 2, generator=g))
            blob += [b] * 10
            sub_blob += [2 * b + s] * 10
    x = torch.cat(pts)
    sup, sub = hierarchical_kmeans(x, 4, 2, 20, torch.Generator().manual_seed(1))
    assert torch.equal(_same(sup), _same(torch.tensor(blob)))
    assert torch.equal(_same(flat_cluster_labels(sup, sub, 2)), _same(torch.tensor(sub_blob)))
    assert set(sub.tolist()) == {0, 1}  # sub-cluster indices are local to their super-cluster


def test_small_super_cluster_gives_each_point_its_own_sub_cluster():
    x = torch.tensor([[0.0], [0.1], [50.0], [50.1], [50.2], [50.3], [50.4]])
    sup, sub = hierarchical_kmeans(x, 2, 5, 10, torch.Generator().manual_seed(0))
    small = sup == sup[0]
    assert int(small.sum()) == 2 and sorted(sub[small].tolist()) == [0, 1]


def test_label_reindexing_by_hand():
    assert super_class_labels(torch.tensor([0, 1, 3, 2]), torch.tensor([2, 0, 1, 3]), 4).tolist() == [2, 4, 13, 11]
    assert flat_cluster_labels(torch.tensor([0, 1, 3]), torch.tensor([4, 0, 2]), 5).tolist() == [4, 5, 17]


def test_loss_on_hand_computed_logits():
    # image 0: super logits (0, 0), y = 0 -> ln 2; its own sub row (0, 0, 0), z = 1 -> ln 3
    # image 1: super logits (ln 3, 0), y = 0 -> -ln(3/4); own sub row (ln 2, 0, 0), z = 0 -> -ln(2/4)
    super_logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    sub_logits = torch.tensor([[[0.0, 0.0, 0.0], [100.0, -100.0, 5.0]],
                               [[math.log(2.0), 0.0, 0.0], [7.0, 7.0, -7.0]]], requires_grad=True)
    y, z = torch.tensor([0, 0]), torch.tensor([1, 0])
    l_sup, l_sub = hierarchical_cross_entropy(super_logits, sub_logits, y, z)
    assert l_sup.item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2, rel=1e-6)
    assert l_sub.item() == pytest.approx((math.log(3) + math.log(2)) / 2, rel=1e-6)
    w = torch.tensor([1.0, 3.0])
    l_sup, l_sub = hierarchical_cross_entropy(super_logits, sub_logits, y, z, w)
    assert l_sup.item() == pytest.approx((math.log(2) + 3 * math.log(4 / 3)) / 2, rel=1e-6)
    assert l_sub.item() == pytest.approx((math.log(3) + 3 * math.log(2)) / 2, rel=1e-6)
    l_sub.backward()
    assert sub_logits.grad is not None
    assert torch.all(sub_logits.grad[:, 1] == 0)  # the other super-class's sub-head gets no gradient
    # d/dlogit of w/B CE = w/B (softmax - onehot): image 0's row (1/3, 1/3, 1/3) - (0, 1, 0), times 1/2
    assert torch.allclose(sub_logits.grad[0, 0], torch.tensor([1 / 6, -1 / 3, 1 / 6]), atol=1e-6)


class _Capture(nn.Module):
    def forward(self, super_logits, sub_logits, y, z, weights=None):
        self.y, self.z = y, z
        return {"loss": super_logits.sum() * 0 + sub_logits.sum() * 0}


def test_method_targets_are_rotation_times_super_cluster():
    cfg = parse_config({"method": "deepercluster", "methods": {"deepercluster": {"super_clusters": 3,
                                                                                 "sub_clusters": 2}}})
    torch.manual_seed(0)
    m = build_method(cfg, in_channels=1, image_size=8)
    assert m.super_head.out_features == 12 and m.sub_head.out_features == 24
    m.super_labels, m.sub_labels = torch.tensor([0, 1, 2, 2, 1, 0]), torch.tensor([1, 0, 1, 0, 0, 1])
    m.weights = torch.ones(6)
    m.loss = _Capture()
    idx = torch.tensor([4, 2, 0])
    m([torch.randn(3, 1, 8, 8)], StepContext(0, 0, 1, 1, indices=idx))
    # rotate_batch groups by angle: rows 0-2 rotation 0, 3-5 rotation 1, ...; image supers (1, 2, 0)
    assert m.loss.y.tolist() == [r * 3 + s for r in range(4) for s in (1, 2, 0)]
    assert m.loss.z.tolist() == [0, 1, 1] * 4


def test_clustering_steps_and_checkpoint_state():
    cfg = parse_config({"method": "deepercluster"})
    torch.manual_seed(0)
    m = build_method(cfg, in_channels=1, image_size=8)
    opt = build_optimizer(m, cfg.train, 0.05)
    images = np.random.default_rng(0).integers(0, 256, (200, 8, 8, 1), dtype=np.uint8)
    m.on_epoch_start(EpochData(0, images, [0.5], [0.3], torch.device("cpu")))
    assert m.super_labels is not None and m.sub_labels is not None
    assert set(m.super_labels.tolist()) == {0, 1, 2, 3} and int(m.sub_labels.max()) < 25
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        idx = torch.randperm(200, generator=g)[:32]
        out = m([torch.randn(32, 1, 8, 8, generator=g)], StepContext(0, step, 3, 3, indices=idx))
        assert torch.isfinite(out["loss"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    state = m.state_dict()
    other = build_method(cfg, in_channels=1, image_size=8)
    other.load_state_dict(state)
    assert torch.equal(other.super_labels, m.super_labels) and torch.equal(other.sub_labels, m.sub_labels)


def test_without_rotation_the_super_class_is_the_super_cluster():
    cfg = parse_config({"method": "deepercluster", "methods": {"deepercluster": {"rotation": False,
                                                                                 "super_clusters": 3}}})
    m = build_method(cfg, in_channels=1, image_size=8)
    assert m.super_head.out_features == 3 and m.sub_head.out_features == 3 * 25
    m.super_labels, m.sub_labels, m.weights = torch.tensor([2, 0, 1]), torch.tensor([5, 7, 9]), torch.ones(3)
    m.loss = _Capture()
    m([torch.randn(2, 1, 8, 8)], StepContext(0, 0, 1, 1, indices=torch.tensor([2, 0])))
    assert m.loss.y.tolist() == [1, 2] and m.loss.z.tolist() == [9, 5]


def _dc_labels(rank, world):
    """Hierarchical pseudo-labels of 43 images (uneven shards) under this process group."""
    params = parse_config({"method": "deepercluster",
                           "methods": {"deepercluster": {"super_clusters": 3, "sub_clusters": 4}}}).method_params
    torch.manual_seed(0)
    from jem.methods import get_method_class

    arch = {"backbone": "small_cnn", "width": 4, "in_channels": 1, "image_size": 8}
    m = get_method_class("deepercluster")(arch, [16, 8], params)
    images = np.random.default_rng(0).integers(0, 256, (43, 8, 8, 1), dtype=np.uint8)
    m.on_epoch_start(EpochData(0, images, [0.5], [0.25], torch.device("cpu")))
    return m.super_labels, m.sub_labels


def test_pseudo_labels_identical_on_two_gloo_workers_and_equal_to_one_process():
    from dist_harness import run_workers

    ref_sup, ref_sub = _dc_labels(0, 1)
    assert len(torch.unique(ref_sup)) == 3 and len(torch.unique(ref_sub)) > 1
    for sup, sub in run_workers(_dc_labels, 2):
        assert torch.equal(sup, ref_sup) and torch.equal(sub, ref_sub)
