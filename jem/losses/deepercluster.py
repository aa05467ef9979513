"""DeeperCluster's targets and loss (Caron, Bojanowski, Mairal, Joulin 2019, "Unsupervised
Pre-training of Image Features on Non-Curated Data", arXiv:1905.01278, section 3.4 and the
reference code ``src/clustering.py`` / ``src/trainer.py``).

DeeperCluster combines rotation prediction (RotNet, arXiv:1803.07728) with DeepCluster's k-means
pseudo-labels. Predicting the joint label "rotation x cluster" over 4k classes directly does not
scale, so the labels form a two-level hierarchy:

* **super-classes**: the features of all images are clustered into ``m`` super-clusters by k-means;
  a super-class is the pair (rotation r, super-cluster s), ``S = 4m`` of them, indexed
  ``y = r * m + s`` (:func:`super_class_labels`);
* **sub-classes**: within each super-cluster, a second k-means splits its images into ``K``
  sub-clusters (:func:`hierarchical_kmeans`); sub-cluster indices are local to their super-cluster.

Loss per (rotated) image, eq. of section 3.4::

    l(V f(x), y) + sum_s 1[y = s] l(W_s f(x), z)

``V``: one linear layer over the S super-classes; ``W_s``: one linear layer over the K sub-classes
for each super-class s (here one (S*K)-wide layer read as (S, K) and indexed at the image's own y;
:func:`hierarchical_cross_entropy`). ``l`` is the cross-entropy; per-image weights (uniform sampling
over the clusters, :func:`jem.losses.clustering.balanced_weights`) apply to both terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jem.losses.clustering import kmeans


def super_class_labels(rotation: torch.Tensor, super_cluster: torch.Tensor, n_super: int) -> torch.Tensor:
    """Joint (rotation, super-cluster) label ``r * m + s`` in [0, 4m). (B,), (B,) -> (B,) int64."""
    return rotation.long() * n_super + super_cluster.long()


def flat_cluster_labels(super_cluster: torch.Tensor, sub_cluster: torch.Tensor, n_sub: int) -> torch.Tensor:
    """The leaf cluster ``s * K + z`` in [0, m K): one index per (super-cluster, sub-cluster) pair."""
    return super_cluster.long() * n_sub + sub_cluster.long()


@torch.no_grad()
def hierarchical_kmeans(x: torch.Tensor, n_super: int, n_sub: int, iters: int, generator: torch.Generator
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-level k-means (reference ``get_cluster_assignments``): (N, D) -> (super-cluster (N,),
    sub-cluster within its super-cluster (N,)), both int64.

    Level 1: k-means of all points into ``n_super`` clusters. Level 2: for each super-cluster in
    index order, k-means of its points into ``min(n_sub, its size)`` clusters (a super-cluster with
    fewer points than ``n_sub`` gives each point its own sub-cluster; the reference samples
    centroids with replacement there). Every level uses the same ``generator`` in that order.
    """
    _, sup = kmeans(x, n_super, iters, generator)
    sub = torch.zeros_like(sup)
    for s in range(n_super):
        members = (sup == s).nonzero().squeeze(1)  # (n_s,)
        k = min(n_sub, members.numel())
        if k == 0:
            continue
        _, local = kmeans(x[members], k, iters, generator)
        sub[members] = local
    return sup, sub


def hierarchical_cross_entropy(super_logits: torch.Tensor, sub_logits: torch.Tensor, super_target: torch.Tensor,
                               sub_target: torch.Tensor, weights: torch.Tensor | None = None
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(super-class term, sub-class term), each ``(1/B) sum_i w_i CE(.)``.

    super_logits (B, S), sub_logits (B, S, K), super_target (B,) in [0, S), sub_target (B,) in
    [0, K). The sub-class term reads only the image's own super-class row ``sub_logits[i, y_i]``.
    """
    b = super_logits.shape[0]
    own = sub_logits[torch.arange(b, device=sub_logits.device), super_target]  # (B, K)
    ce_super = F.cross_entropy(super_logits, super_target, reduction="none")  # (B,)
    ce_sub = F.cross_entropy(own, sub_target, reduction="none")  # (B,)
    if weights is not None:
        ce_super, ce_sub = ce_super * weights, ce_sub * weights
    return ce_super.mean(), ce_sub.mean()


class DeeperClusterLoss(nn.Module):
    """Thin module: the sum of both terms, the terms, and the batch accuracies at each level."""

    def forward(self, super_logits: torch.Tensor, sub_logits: torch.Tensor, super_target: torch.Tensor,
                sub_target: torch.Tensor, weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        l_super, l_sub = hierarchical_cross_entropy(super_logits, sub_logits, super_target, sub_target, weights)
        with torch.no_grad():
            super_acc = (super_logits.argmax(dim=1) == super_target).float().mean()
            own = sub_logits[torch.arange(sub_logits.shape[0], device=sub_logits.device), super_target]
            sub_acc = (own.argmax(dim=1) == sub_target).float().mean()
        return {"loss": l_super + l_sub, "super_loss": l_super.detach(), "sub_loss": l_sub.detach(),
                "super_acc": super_acc, "sub_acc": sub_acc}
