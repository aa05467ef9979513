"""SwAV: Sinkhorn-Knopp marginals and the swapped-prediction loss against slow float64 loop
references written from the paper (arXiv:2006.09882, eq. (1)-(5) and Algorithm 1)."""

import math

import pytest
import torch

from jem.losses.swav import SwAVLoss, sinkhorn_knopp, swapped_prediction


def _rand(*shape, seed=0, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _sinkhorn_ref(scores, eps, iters):
    """The paper's Algorithm: Q = exp(C^T Z / eps) (K x N), Q /= sum(Q), then ``iters`` times:
    rows (prototypes) to 1/K, columns (samples) to 1/N; finally N * Q^T. Plain Python loops."""
    n, k = scores.shape
    q = [[math.exp(float(scores[i, j]) / eps) for i in range(n)] for j in range(k)]  # K x N
    tot = sum(sum(r) for r in q)
    q = [[x / tot for x in r] for r in q]
    for _ in range(iters):
        for j in range(k):
            rs = sum(q[j])
            q[j] = [x / rs / k for x in q[j]]
        for i in range(n):
            cs = sum(q[j][i] for j in range(k))
            for j in range(k):
                q[j][i] = q[j][i] / cs / n
    return torch.tensor([[n * q[j][i] for j in range(k)] for i in range(n)], dtype=torch.float64)


def _swav_ref(codes, scores, temp):
    """Eq. (1)-(2) + multi-crop: mean_i [ mean_{v != i} mean_b -sum_k q_i log softmax(s_v / tau) ]."""
    total = 0.0
    for i, q in enumerate(codes):
        sub = 0.0
        for v, s in enumerate(scores):
            if v == i:
                continue
            n, k = s.shape
            ce = 0.0
            for b in range(n):
                row = [float(x) / temp for x in s[b]]
                m = max(row)
                lse = m + math.log(sum(math.exp(x - m) for x in row))
                ce += -sum(float(q[b, j]) * (row[j] - lse) for j in range(k))
            sub += ce / n
        total += sub / (len(scores) - 1)
    return total / len(codes)


def test_sinkhorn_matches_loop_reference_for_each_iteration_count():
    s = _rand(12, 5, seed=1, scale=0.5)
    for iters in (1, 2, 3):
        torch.testing.assert_close(sinkhorn_knopp(s, 0.05, iters), _sinkhorn_ref(s, 0.05, iters),
                                   atol=1e-12, rtol=1e-9)


def test_sinkhorn_converges_to_the_prescribed_marginals():
    n, k = 40, 6
    s = _rand(n, k, seed=2, scale=0.3)
    q = sinkhorn_knopp(s, 0.05, 500) / n  # the transport plan Q^T before the * N scaling, (N, K)
    torch.testing.assert_close(q.sum(1), torch.full((n,), 1.0 / n, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(q.sum(0), torch.full((k,), 1.0 / k, dtype=torch.float64), atol=1e-6, rtol=0)


def test_sinkhorn_three_iterations_alternate_as_the_algorithm_says():
    """The last projection is onto the sample constraint, so after any number of iterations every
    code sums to exactly 1, while the prototype masses are only approximately N / K and improve with
    more iterations (each projection reduces the KL to the polytope)."""
    n, k = 30, 5
    s = _rand(n, k, seed=3, scale=0.5)
    s[:, 0] += 0.2  # an unbalanced start: prototype 0 wins most samples
    errs = []
    for iters in (1, 3, 30):
        q = sinkhorn_knopp(s, 0.05, iters)
        torch.testing.assert_close(q.sum(1), torch.ones(n, dtype=torch.float64), atol=1e-12, rtol=0)
        errs.append((q.sum(0) - n / k).abs().max().item())
    assert errs[0] > errs[1] > errs[2]
    assert errs[1] > 1e-6  # three iterations do not balance the prototypes exactly
    # before any iteration the prototype marginal is far off: the alternation is what balances it
    raw = torch.softmax(s / 0.05, dim=1).sum(0)
    assert (raw - n / k).abs().max().item() > errs[0]


def test_sinkhorn_is_shift_invariant_and_stable_in_float32():
    s = _rand(16, 4, seed=4).float()
    a, b = sinkhorn_knopp(s, 0.05, 3), sinkhorn_knopp(s + 10.0, 0.05, 3)  # exp(220) overflows float32
    assert torch.isfinite(b).all()
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_swapped_prediction_matches_loop_reference_value_and_grad():
    n, k, temp, eps = 6, 4, 0.1, 0.05
    scores = [_rand(n, k, seed=10 + v, scale=0.5).requires_grad_(True) for v in range(4)]  # 2 global + 2 local
    loss_mod = SwAVLoss(temp, eps, 3)
    out = loss_mod(scores, n_global=2)
    codes = [_sinkhorn_ref(scores[i].detach(), eps, 3) for i in range(2)]
    assert out["loss"].item() == pytest.approx(_swav_ref(codes, [s.detach() for s in scores], temp), abs=1e-10)
    out["loss"].backward()
    # by hand: d/ds_v[b] = (1/2) sum_{i != v, i < 2} (softmax(s_v[b]/tau) - q_i[b]) / (n tau (V - 1))
    n_views = len(scores)
    for v, s in enumerate(scores):
        g = torch.zeros(n, k, dtype=torch.float64)
        p = torch.softmax(s.detach() / temp, dim=1)
        for i in range(2):
            if i == v:
                continue
            for b in range(n):
                for j in range(k):
                    g[b, j] += (float(p[b, j]) - float(codes[i][b, j])) / (n * temp * (n_views - 1) * 2)
        torch.testing.assert_close(s.grad, g, atol=1e-10, rtol=1e-8)


def test_swav_codes_use_the_queue_rows_first():
    n, q_len, k = 5, 7, 3
    s = [_rand(n, k, seed=20), _rand(n, k, seed=21)]
    queue = [_rand(q_len, k, seed=22), _rand(q_len, k, seed=23)]
    mod = SwAVLoss(0.1, 0.05, 3)
    out = mod(s, 2, queue_scores=queue)
    codes = [_sinkhorn_ref(torch.cat([queue[i], s[i]]), 0.05, 3)[q_len:] for i in range(2)]
    assert out["loss"].item() == pytest.approx(_swav_ref(codes, s, 0.1), abs=1e-10)
    assert swapped_prediction(codes, s, 0.1).item() == pytest.approx(out["loss"].item(), abs=1e-12)
