"""Distributed exactness of the BYOL, SimSiam, DINO and SwAV losses under a real 2-process gloo
group: per-worker losses on 2 x B, with DDP's gradient averaging, equal the single-process result
on the concatenated 2B batch. One spawned run checks every loss (spawns are the expensive part).

* SwAV: Sinkhorn codes are computed on the gathered global score matrix (plus a shared queue) and
  each worker takes its own rows back, so codes, loss and gradients match the 2B run.
* DINO: the centre update all-reduces the teacher means, so the centre after two steps equals the
  single-process centre, and loss/gradients match.
* BYOL / SimSiam: means of per-sample terms, so per-worker mean + averaging is the global mean.
"""

import pytest
import torch
from dist_harness import run_workers

from jem import dist
from jem.losses.distillation import DINOLoss, byol_loss, simsiam_loss
from jem.losses.swav import SwAVLoss

pytestmark = pytest.mark.dist

N, D_IN, K = 12, 6, 5  # global batch (even: two shards of 6), input width, output width


def _data():
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(N, D_IN, generator=g) for _ in range(4)]  # 2 global + 2 local views
    w = torch.randn(K, D_IN, generator=g) * 0.5
    w_t = torch.randn(K, D_IN, generator=g) * 0.5  # a fixed "teacher"
    queue = torch.randn(7, D_IN, generator=g)  # already gathered, the same on every worker
    return x, w, w_t, queue


def _losses(x, w, w_t, queue, gather_nograd, rank, reduce_mean):
    """Every loss on this worker's rows; returns {name: (loss, grad of w)} plus codes and centre."""
    out = {}
    for name in ("byol", "simsiam", "dino", "swav", "swav_queue"):
        wg = w.clone().requires_grad_(True)
        z = [xi @ wg.T for xi in x]  # (B, K) per view
        extra = {}
        if name in ("byol", "simsiam"):
            t = [xi @ w_t.T for xi in x[:2]]  # targets (no gradient)
            fn = byol_loss if name == "byol" else simsiam_loss
            loss = fn(z[0], z[1], t[0], t[1])["loss"]
        elif name == "dino":
            mod = DINOLoss(K, student_temp=0.1, center_momentum=0.7)
            t = [xi @ w_t.T for xi in x[:2]]
            first = mod(z, t, 0.05, reduce_mean)["loss"]  # updates the centre
            loss = first + mod(z, t, 0.06, reduce_mean)["loss"]  # second step uses the new centre
            extra["center"] = mod.center.clone()
        else:
            mod = SwAVLoss(0.1, 0.05, 3)
            zn = [torch.nn.functional.normalize(v, dim=1) for v in z]
            q_scores = None
            if name == "swav_queue":
                q_scores = [queue @ w.T, queue @ w_t.T]
            res = mod(zn, 2, q_scores, gather_nograd, rank)
            loss = res["loss"]
            extra["codes"] = torch.cat([mod.codes(zn[i], None if q_scores is None else q_scores[i], gather_nograd,
                                                  rank) for i in range(2)])
        loss.backward()
        out[name] = (loss.detach(), wg.grad, extra)
    return out


def _worker(rank, world):
    x, w, w_t, queue = _data()
    b = N // world
    xs = [xi[rank * b:(rank + 1) * b] for xi in x]
    out = _losses(xs, w, w_t, queue, dist.gather_nograd, dist.rank(), dist.all_reduce_mean_nograd)
    res = {}
    for name, (loss, grad, extra) in out.items():
        torch.distributed.all_reduce(grad)  # what DDP does: average the parameter gradients
        torch.distributed.all_reduce(loss)
        res[name] = ((loss / world).item(), grad / world, extra)
    return res


def test_losses_on_two_workers_equal_the_single_process_result():
    x, w, w_t, queue = _data()
    single = _losses(x, w, w_t, queue, lambda t: t.detach(), 0, lambda t: t.detach())
    results = run_workers(_worker, 2)
    for name, (ref_loss, ref_grad, ref_extra) in single.items():
        for res in results:
            loss, grad, extra = res[name]
            assert abs(loss - ref_loss.item()) < 1e-5, (name, loss, ref_loss.item())
            torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-5, msg=name)
            if "center" in ref_extra:  # the same global centre on every worker
                torch.testing.assert_close(extra["center"], ref_extra["center"], atol=1e-6, rtol=1e-6)
        if "codes" in ref_extra:  # each worker's codes are its rows of the global codes
            b = N // 2
            for i in range(2):
                got = torch.cat([results[r][name][2]["codes"][i * b:(i + 1) * b] for r in range(2)])
                torch.testing.assert_close(got, ref_extra["codes"][i * N:(i + 1) * N], atol=1e-6, rtol=1e-5)


def test_local_sinkhorn_would_differ():
    """Control: Sinkhorn on one worker's half alone gives other codes than on the global batch, so
    the exactness test above could fail."""
    x, w, _, _ = _data()
    scores = torch.nn.functional.normalize(x[0] @ w.T, dim=1)
    mod = SwAVLoss(0.1, 0.05, 3)
    assert not torch.allclose(mod.codes(scores[: N // 2]), mod.codes(scores)[: N // 2], atol=1e-4)
