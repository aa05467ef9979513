"""AVID + CMA losses against slow float64 references written from the paper's formulas (explicit
sums over the bank), closed forms, and a real 2-process gloo run (banks, loss and gradients on
2 x B equal the single-process ones on 2B, with the CMA positive set active)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from dist_harness import run_workers

from jem import dist
from jem.losses.avid import (
    AVIDLoss,
    agreement_positives,
    bank_update,
    nce_term,
    negative_mask,
    positive_term,
    sample_negatives,
)

N, D, B, TAU = 12, 5, 4, 0.2


def _unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def _ref_agreement(bv: torch.Tensor, ba: torch.Tensor, k: int) -> list[list[int]]:
    out = []
    for i in range(len(bv)):
        score = {j: min(float(bv[i] @ bv[j]), float(ba[i] @ ba[j])) for j in range(len(bv)) if j != i}
        out.append(sorted(sorted(score, key=lambda j: -score[j])[:k]))
    return out


def _ref_softmax_term(f, bank, i, positives, tau):
    """mean over p of -log(e^{s_p} / (e^{s_p} + sum over j not i, not in P_i of e^{s_j})), term by term."""
    excluded = {i} | set(positives_of(i, positives))
    s = [float(f @ bank[j]) / tau for j in range(len(bank))]
    neg = sum(math.exp(s[j]) for j in range(len(bank)) if j not in excluded)
    pos = [i] if positives is None else positives_of(i, positives)
    return sum(-math.log(math.exp(s[p]) / (math.exp(s[p]) + neg)) for p in pos) / len(pos)


def positives_of(i, positives):
    return [] if positives is None else [int(j) for j in positives[i]]


def test_agreement_positives_match_brute_force_and_a_closed_form():
    bv, ba = _unit(30, 4, seed=1), _unit(30, 4, seed=2)
    assert agreement_positives(bv, ba, 5, chunk=7).tolist() == _ref_agreement(bv, ba, 5)
    # closed form: 0 and 1 agree in both modalities; 2 is 0's neighbour only visually, 3 only by sound
    e = torch.eye(4, dtype=torch.float64)
    bv = torch.stack([e[0], e[0], e[0], e[1], e[2], e[3]])
    ba = torch.stack([e[0], e[0], e[1], e[0], e[2], e[3]])
    assert agreement_positives(bv, ba, 1)[:2].tolist() == [[1], [0]]


def test_full_softmax_without_positive_set_is_the_cross_entropy_at_the_own_row():
    f, bank = _unit(B, D, seed=3), _unit(N, D, seed=4)
    idx = torch.tensor([0, 5, 7, 11])
    got = positive_term(f, bank, idx[:, None], negative_mask(idx, N), TAU)
    torch.testing.assert_close(got, F.cross_entropy(f @ bank.T / TAU, idx, reduction="none"))


def test_avid_cma_loss_and_gradient_match_the_slow_reference():
    fv0, fa0 = _unit(B, D, seed=5), _unit(B, D, seed=6)
    idx = torch.tensor([2, 9, 4, 0])
    mod = AVIDLoss(temperature=TAU, loss="softmax", within_weight=0.7)
    mod.bank_v, mod.bank_a = _unit(N, D, seed=7), _unit(N, D, seed=8)
    mod.find_positives(3)
    positives = mod.positives
    fv, fa = fv0.clone().requires_grad_(True), fa0.clone().requires_grad_(True)
    out = mod(fv, fa, idx)
    out["loss"].backward()
    fv_r, fa_r = fv0.clone().requires_grad_(True), fa0.clone().requires_grad_(True)
    bv, ba = mod.bank_v, mod.bank_a

    def ref(fv_, fa_):
        terms = {"x": 0.0, "w": 0.0}
        for b, i in enumerate(idx.tolist()):
            own = torch.tensor([[i]])  # the reference formula, written with torch ops for autograd
            for anchor, other, same in ((fv_[b], ba, bv), (fa_[b], bv, ba)):
                excluded = {i} | set(positives_of(i, positives))
                s = torch.stack([anchor @ other[j] for j in range(N)]) / TAU
                neg = torch.stack([s[j].exp() for j in range(N) if j not in excluded]).sum()
                terms["x"] = terms["x"] - torch.log(s[own[0, 0]].exp() / (s[own[0, 0]].exp() + neg))
                sw = torch.stack([anchor @ same[j] for j in range(N)]) / TAU
                negw = torch.stack([sw[j].exp() for j in range(N) if j not in excluded]).sum()
                pos = positives_of(i, positives)
                terms["w"] = terms["w"] + sum(-torch.log(sw[p].exp() / (sw[p].exp() + negw)) for p in pos) / len(pos)
        x, w = terms["x"] / (2 * B), terms["w"] / (2 * B)
        return (x + 0.7 * w) / 1.7, x, w

    loss_r, x_r, w_r = ref(fv_r, fa_r)
    loss_r.backward()
    torch.testing.assert_close(out["loss"], loss_r)
    torch.testing.assert_close(out["xmodal"], x_r.detach())
    torch.testing.assert_close(out["within"], w_r.detach())
    torch.testing.assert_close(fv.grad, fv_r.grad)
    torch.testing.assert_close(fa.grad, fa_r.grad)
    # the positive set changes the loss: without it, AVID's plain cross-modal term
    mod.positives = None
    plain = mod(fv0, fa0, idx)
    assert "within" not in plain and abs(float(plain["loss"]) - float(out["loss"].detach())) > 1e-3
    expect = sum(_ref_softmax_term(fv0[b], ba, i, None, TAU) + _ref_softmax_term(fa0[b], bv, i, None, TAU)
                 for b, i in enumerate(idx.tolist())) / (2 * B)
    assert math.isclose(float(plain["loss"]), expect, rel_tol=1e-12)


def test_nce_term_matches_the_paper_formula():
    f, bank = _unit(B, D, seed=9), _unit(N, D, seed=10)
    pos = torch.tensor([[1, 2], [0, 3], [5, 6], [7, 8]])
    neg = torch.tensor([[9, 10, 11], [4, 4, 9], [0, 1, 2], [3, 11, 10]])
    log_z = -0.3
    got = nce_term(f, bank, pos, neg, TAU, log_z)
    kz = 3 * math.exp(log_z)
    for b in range(B):
        h = [math.exp(float(f[b] @ bank[j]) / TAU) for j in range(N)]
        expect = (-sum(math.log(h[p] / (h[p] + kz)) for p in pos[b].tolist()) / 2
                  - sum(math.log(kz / (h[k] + kz)) for k in neg[b].tolist()))
        assert math.isclose(float(got[b]), expect, rel_tol=1e-12)


def test_negatives_avoid_self_and_the_positive_set():
    positives = agreement_positives(_unit(N, D, seed=11), _unit(N, D, seed=12), 4)
    idx = torch.tensor([0, 3, 3, 11])
    allowed = negative_mask(idx, N, positives)
    assert allowed.sum(1).tolist() == [N - 5] * 4
    neg = sample_negatives(allowed, 2000, torch.Generator().manual_seed(0))
    for b, i in enumerate(idx.tolist()):
        drawn = set(neg[b].tolist())
        assert drawn == set(range(N)) - {i} - set(positives[i].tolist())  # every allowed row, nothing else


def test_bank_update_closed_form():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    bank_update(bank, torch.tensor([1]), torch.tensor([[1.0, 0.0]], dtype=torch.float64), 0.5)
    torch.testing.assert_close(bank[1], torch.tensor([1.0, 1.0], dtype=torch.float64) / math.sqrt(2))
    torch.testing.assert_close(bank[0], torch.tensor([1.0, 0.0], dtype=torch.float64))


STEPS, NB, GB = 3, 16, 8  # steps, bank rows, global batch


def _run(rank: int, world: int, gather, mean_nograd, kind: str):
    """STEPS steps on this worker's slice of each global batch; CMA positives found after step 0."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS, GB, 6, generator=g, dtype=torch.float64)
    idx = torch.stack([torch.randperm(NB, generator=g)[:GB] for _ in range(STEPS)])
    wv0, wa0 = torch.randn(D, 6, generator=g, dtype=torch.float64), torch.randn(D, 6, generator=g, dtype=torch.float64)
    b = GB // world
    sl = slice(rank * b, (rank + 1) * b)
    mod = AVIDLoss(temperature=TAU, loss=kind, num_negatives=5, within_weight=1.0, num_negatives_within=3)
    mod.init_banks(NB, D, torch.Generator().manual_seed(7), torch.device("cpu"))
    mod.bank_v, mod.bank_a = mod.bank_v.double(), mod.bank_a.double()
    losses, grads = [], []
    for s in range(STEPS):
        if s == 1:
            mod.find_positives(3)
        wv, wa = wv0.clone().requires_grad_(True), wa0.clone().requires_grad_(True)
        fv, fa = F.normalize(x[s, sl] @ wv.T, dim=1), F.normalize(x[s, sl] @ wa.T, dim=1)
        gen = torch.Generator().manual_seed(100 * s + rank)
        out = mod(fv, fa, idx[s, sl], gen, mean_nograd)
        out["loss"].backward()
        grad, loss = torch.cat([wv.grad.flatten(), wa.grad.flatten()]), out["loss"].detach().clone()
        if world > 1:  # what DDP does with per-worker gradients and (for logging) losses
            torch.distributed.all_reduce(grad)
            torch.distributed.all_reduce(loss)
            grad, loss = grad / world, loss / world
        losses.append(loss)
        grads.append(grad)
        mod.update(fv.detach(), fa.detach(), idx[s, sl], gather)
    return mod.bank_v, mod.bank_a, mod.positives, torch.stack(losses), torch.stack(grads)


def _worker(rank, world):
    return _run(rank, world, dist.gather_nograd, dist.all_reduce_mean_nograd, "softmax"), \
        _run(rank, world, dist.gather_nograd, dist.all_reduce_mean_nograd, "nce")[:3]


def test_two_process_gloo_equals_one_process_on_the_whole_batch():
    ref = _run(0, 1, lambda t: t, lambda t: t, "softmax")
    results = run_workers(_worker, 2)
    for soft, nce in results:
        for got, want in zip(soft, ref):
            torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
        for got, want in zip(nce, results[0][1]):  # NCE draws per-rank negatives: banks still identical
            assert torch.equal(got, want)
    half = _run(0, 1, lambda t: t[: t.shape[0] // 2], lambda t: t, "softmax")
    assert not torch.equal(half[0], ref[0])  # the check can fail
