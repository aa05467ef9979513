"""Barlow Twins loss (arXiv:2103.03230, eqs. 1-2): closed forms, and a float64 loop reference for the
value and the gradient."""

import math

import pytest
import torch

from jem.losses.barlow import BarlowTwinsLoss, barlow_twins_loss, cross_correlation

# two orthogonal, already standardised columns over N = 4 samples (mean 0, biased variance 1)
A = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)


def _slow_barlow(za, zb, lam, eps):
    """Eqs. (1)-(2) with Python loops: per-dimension batch standardisation (biased variance, like
    BatchNorm1d), C_ij = sum_b za_bi zb_bj / N, then the two sums."""
    n, d = za.shape

    def standardise(z):
        cols = []
        for j in range(d):
            mean = sum(z[b, j] for b in range(n)) / n
            var = sum((z[b, j] - mean) ** 2 for b in range(n)) / n
            cols.append([(z[b, j] - mean) / torch.sqrt(var + eps) for b in range(n)])
        return cols  # cols[j][b]

    sa, sb = standardise(za), standardise(zb)
    loss = za.new_zeros(())
    for i in range(d):
        for j in range(d):
            c = sum(sa[i][b] * sb[j][b] for b in range(n)) / n
            loss = loss + ((1 - c) ** 2 if i == j else lam * c ** 2)
    return loss


def test_zero_when_cross_correlation_is_identity():
    assert barlow_twins_loss(A, A.clone(), eps=0.0)["loss"].item() == pytest.approx(0.0, abs=1e-14)
    torch.testing.assert_close(cross_correlation(A, A, eps=0.0), torch.eye(2, dtype=torch.float64))
    # any shift and positive scale per dimension is removed by the standardisation
    shifted = A * torch.tensor([3.0, 0.5], dtype=torch.float64) + torch.tensor([7.0, -2.0], dtype=torch.float64)
    assert barlow_twins_loss(shifted, A, eps=0.0)["loss"].item() == pytest.approx(0.0, abs=1e-14)


def test_hand_computed_2x2_cases():
    lam = 0.3
    # zb = za R(theta): C = R, so L = 2 (1 - cos)^2 + lam * 2 sin^2
    th = math.pi / 3
    rot = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=torch.float64)
    out = barlow_twins_loss(A, A @ rot, offdiag_weight=lam, eps=0.0)
    assert out["loss"].item() == pytest.approx(2 * 0.5 ** 2 + lam * 2 * 0.75, abs=1e-12)
    assert out["on_diag"].item() == pytest.approx(0.5, abs=1e-12)
    assert out["off_diag"].item() == pytest.approx(1.5, abs=1e-12)
    # zb = [a1, a1]: C = [[1, 1], [0, 0]] -> L = (1-1)^2 + (1-0)^2 + lam (1^2 + 0^2) = 1 + lam
    zb = A[:, [0, 0]]
    torch.testing.assert_close(cross_correlation(A, zb, eps=0.0),
                               torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64))
    assert barlow_twins_loss(A, zb, offdiag_weight=lam, eps=0.0)["loss"].item() == pytest.approx(1 + lam, abs=1e-12)
    # scale_loss multiplies the whole loss
    scaled = barlow_twins_loss(A, zb, offdiag_weight=lam, scale_loss=0.024, eps=0.0)["loss"].item()
    assert scaled == pytest.approx(0.024 * (1 + lam), abs=1e-12)


@pytest.mark.parametrize("eps", [0.0, 1e-5])
def test_matches_slow_reference_value_and_gradient(eps):
    g = torch.Generator().manual_seed(0)
    za = (torch.randn(7, 3, generator=g, dtype=torch.float64) * 2 + 1).requires_grad_(True)
    zb = (torch.randn(7, 3, generator=g, dtype=torch.float64) + za.detach()).requires_grad_(True)
    fast = barlow_twins_loss(za, zb, offdiag_weight=0.2, eps=eps)["loss"]
    slow = _slow_barlow(za, zb, 0.2, eps)
    assert fast.item() == pytest.approx(slow.item(), abs=1e-10)
    for a, b in zip(torch.autograd.grad(fast, (za, zb)), torch.autograd.grad(slow, (za, zb))):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=0)


def test_module_uses_the_gather_and_is_symmetric_in_the_views():
    g = torch.Generator().manual_seed(2)
    za, zb = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    loss = BarlowTwinsLoss(0.01)
    twice = loss(za, zb, lambda t: torch.cat([t, t]))["loss"]  # duplicating the batch changes nothing
    torch.testing.assert_close(twice, loss(za, zb)["loss"])
    torch.testing.assert_close(loss(zb, za)["loss"], loss(za, zb)["loss"])  # C -> C^T
