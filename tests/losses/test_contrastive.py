"""NT-Xent (SimCLR, arXiv:2002.05709, eq. 1): a closed form on perfectly aligned embeddings and a
float64 loop reference for the value and the gradient, also for one worker's local anchors."""

import math

import pytest
import torch

from jem.losses.contrastive import NTXentLoss, nt_xent


def _slow_nt_xent(za, zb, tau, anchors=None):
    """Eq. (1) with loops over the 2N embeddings (za rows, then zb rows); mean over ``anchors``
    (default: all 2N)."""
    n, d = za.shape
    e = [za[i] for i in range(n)] + [zb[i] for i in range(n)]
    norm = [torch.sqrt(sum(v[t] ** 2 for t in range(d))) for v in e]

    def sim(i, j):
        return sum(e[i][t] * e[j][t] for t in range(d)) / (norm[i] * norm[j])

    anchors = list(range(2 * n)) if anchors is None else anchors
    total = za.new_zeros(())
    for i in anchors:
        pos = (i + n) % (2 * n)
        denom = sum(torch.exp(sim(i, k) / tau) for k in range(2 * n) if k != i)
        total = total - sim(i, pos) / tau + torch.log(denom)
    return total / len(anchors)


@pytest.mark.parametrize("n,tau", [(3, 0.5), (5, 0.1), (2, 1.0)])
def test_closed_form_on_aligned_orthogonal_embeddings(n, tau):
    # both views of image i are 2 * e_i: every positive has similarity 1, all 2(N-1) negatives 0,
    # so each anchor's loss is -log(e^(1/tau) / (e^(1/tau) + 2(N-1))) = log(1 + 2(N-1) e^(-1/tau))
    za = 2 * torch.eye(n, 6, dtype=torch.float64)
    loss = NTXentLoss(tau)(za, za.clone())["loss"]
    assert loss.item() == pytest.approx(math.log(1 + 2 * (n - 1) * math.exp(-1 / tau)), abs=1e-12)


def test_closed_form_with_antipodal_negatives():
    # two images on a line: view embeddings e1, e1 (image 0) and -e1, -e1 (image 1). For each anchor
    # the positive has s = 1 and the negatives s = -1, -1: L = log(1 + 2 e^(-2/tau))
    e = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    tau = 0.5
    assert NTXentLoss(tau)(e, e.clone())["loss"].item() == pytest.approx(math.log(1 + 2 * math.exp(-4)), abs=1e-12)


def test_matches_slow_reference_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    za = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    zb = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    fast = NTXentLoss(0.3)(za, zb)["loss"]
    slow = _slow_nt_xent(za, zb, 0.3)
    assert fast.item() == pytest.approx(slow.item(), abs=1e-10)
    for a, b in zip(torch.autograd.grad(fast, (za, zb)), torch.autograd.grad(slow, (za, zb))):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=0)


def test_local_anchors_against_global_keys():
    """What one worker computes: its B anchors (rows offset..offset+B of each view) against all 2N
    keys. The mean over a worker's anchors equals the slow loss restricted to those anchors."""
    g = torch.Generator().manual_seed(1)
    za_all = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    zb_all = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b, offset, n = 2, 4, 6
    fast = nt_xent(za_all[offset:offset + b], zb_all[offset:offset + b], za_all, zb_all, offset, 0.2)
    anchors = [*range(offset, offset + b), *range(n + offset, n + offset + b)]
    slow = _slow_nt_xent(za_all, zb_all, 0.2, anchors)
    assert fast.item() == pytest.approx(slow.item(), abs=1e-10)
    for a, c in zip(torch.autograd.grad(fast, (za_all, zb_all)), torch.autograd.grad(slow, (za_all, zb_all))):
        torch.testing.assert_close(a, c, atol=1e-8, rtol=0)
