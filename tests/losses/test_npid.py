"""NPID memory-bank losses (jem.losses.npid) against slow float64 loops of the paper's equations."""

import math

import torch
import torch.nn.functional as F

from jem.losses.npid import (
    NPIDLoss,
    bank_update,
    estimate_log_z,
    init_bank,
    nce_loss,
    proximal_term,
    softmax_loss,
)

TAU = 0.1


def _setup(b=5, n=12, d=4, m=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1).requires_grad_(True)
    bank = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    idx = torch.randperm(n, generator=g)[:b]
    noise = torch.randint(n, (b, m), generator=g)
    return f, bank, idx, noise


def test_non_parametric_softmax_against_a_loop():
    f, bank, idx, _ = _setup()
    loss = softmax_loss(f, bank, idx, TAU)
    ref = 0.0
    for b in range(f.shape[0]):  # eq. (2): P(i|f) = exp(v_i.f/tau) / sum_j exp(v_j.f/tau)
        num = torch.exp(bank[idx[b]] @ f[b] / TAU)
        den = sum(torch.exp(bank[j] @ f[b] / TAU) for j in range(bank.shape[0]))
        ref = ref - torch.log(num / den)
    ref = ref / f.shape[0]
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(torch.autograd.grad(loss, f)[0], torch.autograd.grad(ref, f)[0])


def test_nce_against_the_formula():
    f, bank, idx, noise = _setup()
    n, m = bank.shape[0], noise.shape[1]
    z = 3.7
    loss = nce_loss(f, bank, idx, noise, TAU, math.log(z))
    ref = 0.0
    for b in range(f.shape[0]):  # eq. (3)-(6), P_n = 1/n
        p_pos = torch.exp(bank[idx[b]] @ f[b] / TAU) / z
        ref = ref - torch.log(p_pos / (p_pos + m / n))
        for j in noise[b]:
            p = torch.exp(bank[j] @ f[b] / TAU) / z
            ref = ref - torch.log(1 - p / (p + m / n))
    ref = ref / f.shape[0]
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(torch.autograd.grad(loss, f)[0], torch.autograd.grad(ref, f)[0])


def test_normaliser_estimate_and_proximal_term():
    f, bank, idx, noise = _setup()
    cols = torch.cat([idx[:, None], noise], 1)
    sims = [torch.exp(bank[c] @ f[b].detach() / TAU) for b in range(5) for c in cols[b]]
    expected = bank.shape[0] * sum(sims) / len(sims)  # Z = n * mean exp(v.f/tau) over (B, m+1)
    torch.testing.assert_close(estimate_log_z(f, bank, idx, noise, TAU).exp(), expected)
    prox = proximal_term(f, bank, idx)
    torch.testing.assert_close(prox, sum(((f[b] - bank[idx[b]]) ** 2).sum() for b in range(5)) / 5)


def test_bank_update_is_the_momentum_formula_and_rows_stay_unit():
    f, bank, idx, _ = _setup()
    old = bank.clone()
    bank_update(bank, idx, f, 0.5)
    for b, i in enumerate(idx.tolist()):
        v = 0.5 * old[i] + 0.5 * f[b].detach()
        torch.testing.assert_close(bank[i], v / v.norm())
    untouched = torch.ones(bank.shape[0], dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(bank[untouched], old[untouched])
    torch.testing.assert_close(init_bank(50, 8, torch.Generator().manual_seed(0)).norm(dim=1), torch.ones(50))


def test_module_fixes_z_on_the_first_batch_and_adds_the_proximal_term():
    f, bank, idx, _ = _setup()
    mod = NPIDLoss(temperature=TAU, loss="nce", nce_k=7, prox_weight=2.0)
    mod.bank = bank.clone()
    g = torch.Generator().manual_seed(5)
    out = mod(f, idx, g, mean_nograd=lambda t: t)
    noise = torch.randint(bank.shape[0], (5, 7), generator=torch.Generator().manual_seed(5))
    log_z = estimate_log_z(f, bank, idx, noise, TAU)
    torch.testing.assert_close(torch.tensor(mod.log_z, dtype=torch.float64), log_z)
    expected = nce_loss(f, bank, idx, noise, TAU, float(log_z)) + 2.0 * proximal_term(f, bank, idx)
    torch.testing.assert_close(out["loss"], expected)
    first = mod.log_z
    mod(f, idx, torch.Generator().manual_seed(6), mean_nograd=lambda t: t)
    assert mod.log_z == first  # estimated once, then fixed
