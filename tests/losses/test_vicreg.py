"""VICReg (arXiv:2105.04906, eqs. 1-6 with the reference code's normalisation): closed forms for each
term and a float64 loop reference for the value and the gradient."""

import math

import pytest
import torch

from jem.losses.vicreg import VICRegLoss, covariance_term, invariance_term, variance_term, vicreg_loss

# N = 4 samples, D = 3 centred, mutually orthogonal columns (a Hadamard design): zero covariance
H = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]], dtype=torch.float64)


def _slow_vicreg(za, zb, lam, mu, nu, gamma, eps):
    """The reference code's loss with Python loops: invariance = mean over samples and dimensions,
    variance = mean of the two branches' hinge terms, covariance = sum of the two branches'
    1/D * sum_{i != j} C_ij^2; unbiased (N-1) estimators."""
    n, d = za.shape
    inv = sum((za[b, j] - zb[b, j]) ** 2 for b in range(n) for j in range(d)) / (n * d)

    def stats(z):
        mean = [sum(z[b, j] for b in range(n)) / n for j in range(d)]
        cov = [[sum((z[b, i] - mean[i]) * (z[b, j] - mean[j]) for b in range(n)) / (n - 1)
                for j in range(d)] for i in range(d)]
        var = sum(torch.clamp(gamma - torch.sqrt(cov[j][j] + eps), min=0.0) for j in range(d)) / d
        off = sum(cov[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d
        return var, off

    (va, ca), (vb, cb) = stats(za), stats(zb)
    return lam * inv + mu * (va + vb) / 2 + nu * (ca + cb)


def test_variance_term_of_constant_embeddings_is_gamma_minus_sqrt_eps():
    z = torch.full((8, 5), 3.0, dtype=torch.float64)
    gamma, eps = 1.0, 1e-4
    # std = sqrt(0 + eps): the hinge gives gamma - sqrt(eps) per dimension ("gamma" up to sqrt(eps))
    assert variance_term(z, gamma, eps).item() == pytest.approx(gamma - math.sqrt(eps), abs=1e-14)
    # the loss averages the two branches: the full variance term is that value once, not twice
    out = vicreg_loss(z, z.clone(), inv_weight=0.0, var_weight=1.0, cov_weight=0.0, gamma=gamma, eps=eps)
    assert out["var"].item() == pytest.approx(gamma - math.sqrt(eps), abs=1e-14)
    assert out["loss"].item() == pytest.approx(gamma - math.sqrt(eps), abs=1e-14)
    # a collapsed pair costs exactly var_weight * (gamma - sqrt(eps)) with the default weights
    assert vicreg_loss(z, z.clone())["loss"].item() == pytest.approx(25.0 * (1 - 0.01), abs=1e-12)


def test_variance_hinge_is_zero_above_gamma():
    assert variance_term(3.0 * H, gamma=1.0).item() == 0.0  # std = 3 * sqrt(4/3) > 1


def test_covariance_of_decorrelated_data_is_zero():
    assert covariance_term(H).item() == pytest.approx(0.0, abs=1e-15)
    assert covariance_term(H * torch.tensor([1.0, 5.0, 0.1], dtype=torch.float64) + 2).item() == pytest.approx(
        0.0, abs=1e-14)  # per-dimension scale and shift keep it decorrelated
    # two equal columns: C_01 = C_10 = var = 4/3, so 1/D * 2 * (4/3)^2
    z = H[:, [0, 0, 2]]
    assert covariance_term(z).item() == pytest.approx(2 * (4 / 3) ** 2 / 3, abs=1e-12)


def test_invariance_of_identical_views_is_zero():
    assert invariance_term(H, H.clone()).item() == 0.0
    assert invariance_term(H, H + 1).item() == pytest.approx(1.0, abs=1e-15)


def test_matches_slow_reference_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.3, 0.8, 2.0, 1.5], dtype=torch.float64)  # some dims below gamma, some above
    za = (torch.randn(9, 4, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
    zb = (torch.randn(9, 4, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
    args = (25.0, 25.0, 1.0, 1.0, 1e-4)
    fast, slow = vicreg_loss(za, zb, *args)["loss"], _slow_vicreg(za, zb, *args)
    assert fast.item() == pytest.approx(slow.item(), abs=1e-10)
    for a, b in zip(torch.autograd.grad(fast, (za, zb)), torch.autograd.grad(slow, (za, zb))):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=0)


def test_module_gathers_before_the_terms():
    g = torch.Generator().manual_seed(1)
    za, zb = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    other_a, other_b = za + 1, zb - 1  # "another worker's" rows

    def gather(t):
        return torch.cat([t, other_a if t is za else other_b])

    got = VICRegLoss()(za, zb, gather)["loss"]
    torch.testing.assert_close(got, vicreg_loss(torch.cat([za, other_a]), torch.cat([zb, other_b]))["loss"])
