"""W-MSE (arXiv:2007.06346, eqs. 3-6): whitening gives identity covariance, identical positives give
zero loss, and a float64 loop reference (covariance, Cholesky, forward substitution, normalised
MSE over all pairs) matches the value and the gradient."""

import itertools

import pytest
import torch

from jem.losses.wmse import WMSELoss, norm_mse, sub_batches, whiten, wmse_loss


def _slow_whiten(z, eps):
    """Rows of z (M, D) whitened with W = L^{-1}, L L^T = cov + eps I, all by loops."""
    m, d = z.shape
    mean = [sum(z[b, j] for b in range(m)) / m for j in range(d)]
    zc = [[z[b, j] - mean[j] for j in range(d)] for b in range(m)]
    cov = [[sum(zc[b][i] * zc[b][j] for b in range(m)) / (m - 1) + (eps if i == j else 0.0)
            for j in range(d)] for i in range(d)]
    chol = [[None] * d for _ in range(d)]
    for i in range(d):  # Cholesky-Banachiewicz
        for j in range(i + 1):
            s = sum(chol[i][k] * chol[j][k] for k in range(j))
            chol[i][j] = torch.sqrt(cov[i][i] - s) if i == j else (cov[i][j] - s) / chol[j][j]
    out = []
    for b in range(m):  # forward substitution L y = zc_b
        y = []
        for i in range(d):
            y.append((zc[b][i] - sum(chol[i][k] * y[k] for k in range(i))) / chol[i][i])
        out.append(y)
    return out  # out[b][i]


def _slow_wmse(views, partitions, eps):
    n, d = views[0].shape
    pairs = list(itertools.combinations(range(len(views)), 2))
    total = views[0].new_zeros(())
    for parts in partitions:
        white = [[None] * n for _ in views]
        for idx in parts:
            rows = idx.tolist()
            for v, w in zip(views, white):
                for r, y in zip(rows, _slow_whiten(v[rows], eps)):
                    w[r] = y
        for a, b in pairs:
            for r in range(n):
                na = torch.sqrt(sum(t ** 2 for t in white[a][r]))
                nb = torch.sqrt(sum(t ** 2 for t in white[b][r]))
                cos = sum(x * y for x, y in zip(white[a][r], white[b][r])) / (na * nb)
                total = total + (2 - 2 * cos) / n
    return total / (len(partitions) * len(pairs))


def test_whitened_rows_have_identity_covariance():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(5, 5, generator=g)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        z = (torch.randn(40, 5, generator=g) @ mix + 3).to(dtype)  # correlated, shifted
        w = whiten(z, eps=0.0)
        assert w.dtype == dtype
        cov = torch.cov(w.double().T)  # unbiased, as in the whitening
        torch.testing.assert_close(cov, torch.eye(5, dtype=torch.float64), atol=tol, rtol=0)
        torch.testing.assert_close(w.double().mean(0), torch.zeros(5, dtype=torch.float64), atol=tol, rtol=0)
    # W = L^{-1} is lower triangular: the first coordinate is only centred and scaled
    z = torch.randn(30, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(whiten(z)[:, 0], (z[:, 0] - z[:, 0].mean()) / z[:, 0].std())


def test_identical_positives_give_zero_loss():
    z = torch.randn(32, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    parts = [sub_batches(32, 16, torch.Generator().manual_seed(0))]
    assert wmse_loss([z, z.clone(), z.clone()], parts).item() == pytest.approx(0.0, abs=1e-12)
    assert norm_mse(z, 5 * z).item() == pytest.approx(0.0, abs=1e-12)
    assert norm_mse(z, -z).item() == pytest.approx(4.0, abs=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_matches_slow_reference_value_and_gradient(eps):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(12, 3, generator=g, dtype=torch.float64)
    views = [(base + 0.5 * torch.randn(12, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
             for _ in range(3)]
    partitions = [sub_batches(12, 6, g) for _ in range(2)]  # w_iter = 2, two sub-batches of 6
    fast, slow = wmse_loss(views, partitions, eps), _slow_wmse(views, partitions, eps)
    assert fast.item() == pytest.approx(slow.item(), abs=1e-10)
    for a, b in zip(torch.autograd.grad(fast, views), torch.autograd.grad(slow, views)):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=0)


def test_sub_batches_partition_the_batch():
    for n, w in ((256, 128), (300, 128), (50, 128), (130, 64)):
        parts = sub_batches(n, w, torch.Generator().manual_seed(0))
        assert len(parts) == max(1, n // w)
        assert sorted(torch.cat(parts).tolist()) == list(range(n))
        assert min(len(p) for p in parts) >= min(n, w)


def test_module_is_deterministic_per_step_and_rejects_singular_sub_batches():
    g = torch.Generator().manual_seed(4)
    views = [torch.randn(24, 4, generator=g, dtype=torch.float64) for _ in range(2)]
    loss = WMSELoss(w_size=8, w_iter=1)
    torch.testing.assert_close(loss(views, step=5)["loss"], loss(views, step=5)["loss"])
    assert not torch.allclose(loss(views, step=5)["loss"], loss(views, step=6)["loss"])
    with pytest.raises(ValueError, match="emb_dim"):
        WMSELoss(w_size=4)(views, step=0)  # sub-batches of 4 rows for 4-d embeddings
