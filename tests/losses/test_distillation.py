"""BYOL / SimSiam regression and DINO losses against closed forms and slow float64 loop references
written from the papers' equations (never from the code under test)."""

import math

import numpy as np
import pytest
import torch

from jem.losses.distillation import (
    DINOLoss,
    byol_loss,
    center_update,
    cosine_regression,
    dino_cross_entropy,
    simsiam_loss,
    teacher_probs,
    teacher_temp_at,
)
from jem.methods.ema import cosine_momentum, ema_update_


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ------------------------------------------------------------------------------ slow references
def _cos_loop(a, b):
    dot = sum(a[j] * b[j] for j in range(len(a)))
    na = math.sqrt(sum(float(a[j]) ** 2 for j in range(len(a))))
    nb = math.sqrt(sum(float(b[j]) ** 2 for j in range(len(b))))
    return float(dot) / (na * nb)


def _byol_ref(p1, p2, z1, z2):
    """BYOL eq. (2), symmetrised: mean_b ||p1/|p1| - z2/|z2|||^2 + ||p2/|p2| - z1/|z1|||^2."""
    n, d = p1.shape
    total = 0.0
    for i in range(n):
        for p, z in ((p1[i], z2[i]), (p2[i], z1[i])):
            npn = math.sqrt(sum(float(p[j]) ** 2 for j in range(d)))
            nzn = math.sqrt(sum(float(z[j]) ** 2 for j in range(d)))
            total += sum((float(p[j]) / npn - float(z[j]) / nzn) ** 2 for j in range(d))
    return total / n


def _byol_grad_ref(p, z):
    """d/dp of 2 - 2 cos(p, z) = -2 / |p| (z/|z| - cos(p, z) p/|p|), one row."""
    d = len(p)
    npn = math.sqrt(sum(float(p[j]) ** 2 for j in range(d)))
    nzn = math.sqrt(sum(float(z[j]) ** 2 for j in range(d)))
    c = _cos_loop(p, z)
    return [-2.0 / npn * (float(z[j]) / nzn - c * float(p[j]) / npn) for j in range(d)]


def _softmax_row(row, temp):
    m = max(float(v) for v in row)
    e = [math.exp((float(v) - m) / temp) for v in row]
    s = sum(e)
    return [x / s for x in e]


def _dino_ref(student, teacher, center, t_s, t_t):
    """DINO eq. (3): mean over (teacher view i, student view v != i) of mean_b H(P_t, P_s)."""
    total, terms = 0.0, 0
    n, k = teacher[0].shape
    for i, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == i:
                continue
            ce = 0.0
            for b in range(n):
                q = _softmax_row([float(t[b, j]) - float(center[0, j]) for j in range(k)], t_t)
                ls = _softmax_row([float(x) for x in s[b]], t_s)
                ce += -sum(q[j] * math.log(ls[j]) for j in range(k))
            total += ce / n
            terms += 1
    return total / terms


# ------------------------------------------------------------------------------- BYOL / SimSiam
def test_byol_closed_forms():
    x = _rand(5, 7)
    x[:, 0] = 0.0
    y = torch.zeros(5, 7, dtype=torch.float64)
    y[:, 0] = 3.0  # orthogonal to every row of x
    assert byol_loss(x, x, x, x)["loss"].item() == pytest.approx(0.0, abs=1e-12)  # identical: 0
    assert byol_loss(2 * x, x, x, 5 * x)["loss"].item() == pytest.approx(0.0, abs=1e-12)  # scale-free
    assert byol_loss(x, x, y, y)["loss"].item() == pytest.approx(4.0, abs=1e-12)  # orthogonal: 2 + 2
    assert byol_loss(x, x, -x, -x)["loss"].item() == pytest.approx(8.0, abs=1e-12)  # opposite: 4 + 4
    assert simsiam_loss(x, x, x, x)["loss"].item() == pytest.approx(-1.0, abs=1e-12)
    assert simsiam_loss(x, x, y, y)["loss"].item() == pytest.approx(0.0, abs=1e-12)


def test_byol_matches_loop_reference_value_and_grad():
    p1, p2, z1, z2 = (_rand(6, 5, seed=s).requires_grad_(True) for s in range(4))
    loss = byol_loss(p1, p2, z1, z2)["loss"]
    assert loss.item() == pytest.approx(_byol_ref(p1.detach(), p2.detach(), z1.detach(), z2.detach()), abs=1e-10)
    loss.backward()
    # d/dp1_i of (1/N) l(p1_i, z2_i)
    ref = torch.tensor([_byol_grad_ref(p1[i].detach(), z2[i].detach()) for i in range(6)], dtype=torch.float64) / 6
    torch.testing.assert_close(p1.grad, ref, atol=1e-10, rtol=1e-8)
    ref2 = torch.tensor([_byol_grad_ref(p2[i].detach(), z1[i].detach()) for i in range(6)], dtype=torch.float64) / 6
    torch.testing.assert_close(p2.grad, ref2, atol=1e-10, rtol=1e-8)
    assert z1.grad is None and z2.grad is None  # stop-gradient on the targets


def test_simsiam_matches_loop_reference_value_and_grad():
    p1, p2, z1, z2 = (_rand(6, 5, seed=10 + s).requires_grad_(True) for s in range(4))
    loss = simsiam_loss(p1, p2, z1, z2)["loss"]
    ref = -sum(0.5 * (_cos_loop(p1[i].detach(), z2[i].detach()) + _cos_loop(p2[i].detach(), z1[i].detach()))
               for i in range(6)) / 6
    assert loss.item() == pytest.approx(ref, abs=1e-12)
    loss.backward()
    # -cos/2 = (l - 2)/4 with l the BYOL term, so d(-cos/2)/dp = dl/dp / 4
    g = torch.tensor([_byol_grad_ref(p1[i].detach(), z2[i].detach()) for i in range(6)], dtype=torch.float64) / 4 / 6
    torch.testing.assert_close(p1.grad, g, atol=1e-10, rtol=1e-8)
    assert z1.grad is None and z2.grad is None


def test_cosine_regression_per_sample():
    p, z = _rand(4, 3), _rand(4, 3, seed=1)
    ref = [2 - 2 * _cos_loop(p[i], z[i]) for i in range(4)]
    torch.testing.assert_close(cosine_regression(p, z), torch.tensor(ref, dtype=torch.float64))


# -------------------------------------------------------------------------------- EMA schedule
def test_cosine_momentum_schedule_values():
    base, k_total = 0.99, 100
    assert cosine_momentum(base, 0, k_total) == pytest.approx(base)
    assert cosine_momentum(base, k_total, k_total) == pytest.approx(1.0)
    assert cosine_momentum(base, 50, k_total) == pytest.approx(1 - (1 - base) / 2)
    for k in (3, 37, 81):
        assert cosine_momentum(base, k, k_total) == pytest.approx(
            1 - (1 - base) * (math.cos(math.pi * k / k_total) + 1) / 2)


def test_ema_update_formula():
    torch.manual_seed(0)
    s, t = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in t.parameters()]
    ema_update_(t, s, 0.9)
    for b, p_t, p_s in zip(before, t.parameters(), s.parameters()):
        torch.testing.assert_close(p_t, 0.9 * b + 0.1 * p_s.detach())


# ---------------------------------------------------------------------------------------- DINO
def test_teacher_temperature_warmup_schedule():
    sched = np.concatenate([np.linspace(0.04, 0.07, 30), np.full(70, 0.07)])  # the reference's form
    for e in (0, 1, 15, 29, 30, 99):
        assert teacher_temp_at(e, 0.04, 0.07, 30) == pytest.approx(sched[e])
    assert teacher_temp_at(0, 0.04, 0.07, 30) == pytest.approx(0.04)
    assert teacher_temp_at(29, 0.04, 0.07, 30) == pytest.approx(0.07)
    assert teacher_temp_at(5, 0.04, 0.07, 0) == pytest.approx(0.07)  # no warm-up
    assert teacher_temp_at(0, 0.04, 0.07, 1) == pytest.approx(0.04)


def test_dino_centre_update_by_hand():
    k, n = 4, 3
    loss = DINOLoss(k, center_momentum=0.8).double()
    c0 = _rand(1, k, seed=3)
    loss.center.copy_(c0)
    t = [_rand(n, k, seed=4), _rand(n, k, seed=5)]
    s = [_rand(n, k, seed=6), _rand(n, k, seed=7)]
    loss(s, t, 0.05)
    mean = [sum(float(t[v][b, j]) for v in range(2) for b in range(n)) / (2 * n) for j in range(k)]
    expect = [0.8 * float(c0[0, j]) + 0.2 * mean[j] for j in range(k)]
    torch.testing.assert_close(loss.center[0], torch.tensor(expect, dtype=torch.float64))
    torch.testing.assert_close(center_update(c0, torch.ones(1, k, dtype=torch.float64), 0.5), 0.5 * c0 + 0.5)


def test_dino_equal_distributions_give_the_entropy():
    """Student distribution == centred teacher distribution for every view: H(P, P) = entropy."""
    k, n, t_s, t_t = 6, 4, 0.1, 0.04
    c = _rand(1, k, seed=8)
    t = _rand(n, k, seed=9)
    s = (t - c) * t_s / t_t  # softmax(s / t_s) == softmax((t - c) / t_t)
    loss = dino_cross_entropy([teacher_probs(t, c, t_t)] * 2, [s] * 3, t_s)
    ent = 0.0
    for b in range(n):
        q = _softmax_row([float(t[b, j] - c[0, j]) for j in range(k)], t_t)
        ent += -sum(x * math.log(x) for x in q)
    assert loss.item() == pytest.approx(ent / n, abs=1e-10)
    uniform = dino_cross_entropy([torch.full((n, k), 1.0 / k, dtype=torch.float64)] * 2,
                                 [torch.zeros(n, k, dtype=torch.float64)] * 2, t_s)
    assert uniform.item() == pytest.approx(math.log(k))


def test_dino_matches_loop_reference_value_and_grad():
    k, n, t_s, t_t = 5, 3, 0.1, 0.05
    student = [_rand(n, k, seed=20 + v).requires_grad_(True) for v in range(4)]  # 2 global + 2 local
    teacher = [_rand(n, k, seed=30 + v) for v in range(2)]
    mod = DINOLoss(k, student_temp=t_s).double()
    c0 = _rand(1, k, seed=40) * 0.1
    mod.center.copy_(c0)
    out = mod(student, teacher, t_t)
    assert out["loss"].item() == pytest.approx(_dino_ref([s.detach() for s in student], teacher, c0, t_s, t_t),
                                             abs=1e-10)
    out["loss"].backward()
    # gradient by hand: d/ds_v[b] of (1/T) sum_{i != v} (1/n) H(q_i[b], softmax(s_v[b]/t_s))
    #   = (1/T) sum_{i != v, i < 2} (softmax(s_v[b]/t_s) - q_i[b]) / (n t_s), T = 2 * 3 pairs
    n_pairs = 2 * (len(student) - 1)
    for v, s in enumerate(student):
        g = torch.zeros(n, k, dtype=torch.float64)
        for b in range(n):
            p = _softmax_row([float(x) for x in s[b].detach()], t_s)
            for i in range(2):
                if i == v:
                    continue
                q = _softmax_row([float(teacher[i][b, j] - c0[0, j]) for j in range(k)], t_t)
                for j in range(k):
                    g[b, j] += (p[j] - q[j]) / (n * t_s * n_pairs)
        torch.testing.assert_close(s.grad, g, atol=1e-10, rtol=1e-8)


def test_dino_loss_uses_old_centre_then_updates():
    k, n = 3, 2
    mod = DINOLoss(k, center_momentum=0.0).double()  # centre becomes the batch mean at once
    s = [_rand(n, k, seed=1), _rand(n, k, seed=2)]
    t = [_rand(n, k, seed=3) * 5, _rand(n, k, seed=4) * 5]
    first = mod(s, t, 0.04)["loss"].item()
    assert first == pytest.approx(_dino_ref(s, t, torch.zeros(1, k, dtype=torch.float64), 0.1, 0.04), abs=1e-10)
    c1 = torch.cat(t).mean(0, keepdim=True)
    torch.testing.assert_close(mod.center, c1)
    second = mod(s, t, 0.04)["loss"].item()
    assert second == pytest.approx(_dino_ref(s, t, c1, 0.1, 0.04), abs=1e-10)
