"""DeepCluster k-means / SeLa Sinkhorn (jem.losses.clustering) against closed forms and slow
float64 references."""

import torch
import torch.nn.functional as F

from jem.losses.clustering import (
    PseudoLabelLoss,
    _sq_dists,
    balanced_weights,
    kmeans,
    pca_whiten,
    preprocess_features,
    pseudo_label_cross_entropy,
    reseed_empty_clusters,
    sela_labels,
    sinkhorn_equipartition,
)


def _blobs(k=5, per=40, d=8, spread=10.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * spread
    x = (centres[:, None] + torch.randn(k, per, d, generator=g)).reshape(-1, d)
    return x, torch.arange(k).repeat_interleave(per)


def test_kmeans_recovers_well_separated_blobs():
    x, truth = _blobs()
    centroids, labels = kmeans(x, 5, 20, torch.Generator().manual_seed(1))
    # a bijection between true blobs and clusters
    pairs = {(int(t), int(lab)) for t, lab in zip(truth, labels)}
    assert len(pairs) == 5 and len({lab for _, lab in pairs}) == 5
    for t, lab in pairs:
        torch.testing.assert_close(centroids[lab], x[truth == t].mean(0))


def test_reseeding_splits_a_donor_and_leaves_no_empty_cluster():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(30, 4, generator=g), torch.randn(30, 4, generator=g) + 20])
    means = torch.stack([x[:30].mean(0), x[30:].mean(0)])
    centroids = torch.cat([means, torch.full((1, 4), 1e3)])  # cluster 2 is far away: empty
    counts = torch.bincount(_sq_dists(x, centroids).argmin(1), minlength=3)
    assert counts.tolist() == [30, 30, 0]
    new = reseed_empty_clusters(centroids, counts, torch.Generator().manual_seed(3))
    donor = int(torch.argmin(torch.stack([(new[2] - m).norm() for m in means])))
    # c_empty = c_donor + eps d, c_donor <- c_donor - eps d (symmetric split around the donor's mean)
    torch.testing.assert_close((new[2] + new[donor]) / 2, means[donor])
    assert 0 < float((new[2] - means[donor]).norm()) <= means[donor].norm() / 1024 + 1e-6
    after = torch.bincount(_sq_dists(x, new).argmin(1), minlength=3)
    assert after.min() > 0 and after[1 - donor] == 30


def test_kmeans_with_many_clusters_has_no_empty_cluster():
    x, _ = _blobs(k=3, per=30, spread=50.0)  # 90 points in 3 tight blobs, 40 clusters
    _, labels = kmeans(x, 40, 10, torch.Generator().manual_seed(0))
    assert torch.bincount(labels, minlength=40).min() > 0


def test_pca_whitening_gives_unit_covariance_and_features_are_unit_norm():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    y = pca_whiten(x, 4, eps=0.0)
    assert y.shape == (500, 4)
    torch.testing.assert_close(y.T @ y / 499, torch.eye(4, dtype=torch.float64), atol=1e-8, rtol=0)
    variances = torch.linalg.eigvalsh(torch.cov(x.T)).flip(0)[:4]  # top axes kept, in order
    proj = (x - x.mean(0)) @ torch.linalg.eigh(torch.cov(x.T))[1].flip(1)[:, :4]
    torch.testing.assert_close(proj.var(0), variances)
    torch.testing.assert_close(preprocess_features(x, 4).norm(dim=1), torch.ones(500, dtype=torch.float64))


def test_balanced_weights_equal_uniform_sampling_over_clusters():
    labels = torch.tensor([0, 0, 0, 1, 3, 3])  # cluster 2 empty -> K' = 3
    w = balanced_weights(labels, 4)
    torch.testing.assert_close(w, torch.tensor([6 / 9, 6 / 9, 6 / 9, 2.0, 1.0, 1.0]))
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 7.0])
    per_cluster = (losses[:3].mean() + losses[3] + losses[4:].mean()) / 3
    torch.testing.assert_close((w * losses).mean(), per_cluster)


def _sinkhorn_reference(p, lamb, iters=5000):
    """Exp-domain float64 Sinkhorn-Knopp of the SeLa reference (rows: labels), many iterations."""
    n, k = p.shape
    pl = (p.double() ** lamb).T  # (K, N)
    c = torch.ones(n, 1, dtype=torch.float64) / n
    for _ in range(iters):
        r = (1.0 / k) / (pl @ c)
        c = (1.0 / n) / (r.T @ pl).T
    return (pl * r * c.T).T  # (N, K)


def test_sinkhorn_marginals_and_slow_reference():
    g = torch.Generator().manual_seed(0)
    log_p = F.log_softmax(torch.randn(60, 5, generator=g, dtype=torch.float64), dim=1)
    q = sinkhorn_equipartition(log_p, lamb=3.0, tol=1e-10, max_iters=5000).exp()
    torch.testing.assert_close(q.sum(1), torch.full((60,), 1 / 60, dtype=torch.float64))  # images: 1/N
    torch.testing.assert_close(q.sum(0), torch.full((5,), 1 / 5, dtype=torch.float64))  # labels: 1/K
    torch.testing.assert_close(q, _sinkhorn_reference(log_p.exp(), 3.0), atol=1e-10, rtol=1e-7)


def test_sela_labels_are_balanced_where_argmax_is_not():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(400, 8, generator=g)
    logits[:, 0] += 2.0  # the network prefers label 0: argmax is degenerate
    log_p = F.log_softmax(logits, dim=1)
    naive = torch.bincount(log_p.argmax(1), minlength=8)
    sela = torch.bincount(sela_labels(log_p, lamb=25.0, tol=1e-4), minlength=8)
    assert naive[0] > 200
    assert int(sela.max() - sela.min()) <= 4 and int(sela.sum()) == 400
    # with a lambda large enough and already-balanced predictions, the labels are the argmax
    clean = F.log_softmax(10 * F.one_hot(torch.arange(400) % 8, 8).float(), dim=1)
    assert torch.equal(sela_labels(clean, 25.0), torch.arange(400) % 8)


def test_weighted_cross_entropy_value_and_gradient_against_a_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels, w = torch.tensor([0, 3, 1, 1, 2, 0]), torch.rand(6, generator=g, dtype=torch.float64)
    loss = pseudo_label_cross_entropy(logits, labels, w)
    ref = sum(-w[i] * torch.log(torch.exp(logits[i, labels[i]]) / torch.exp(logits[i]).sum()) for i in range(6)) / 6
    torch.testing.assert_close(loss, ref)
    (g1,) = torch.autograd.grad(loss, logits)
    (g2,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g1, g2)
    out = PseudoLabelLoss()(logits.detach(), logits.detach().argmax(1))
    assert float(out["label_acc"]) == 1.0
