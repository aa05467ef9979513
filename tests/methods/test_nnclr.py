"""NNCLR: the loss against a slow float64 reference written from the paper's formula (explicit loops
over anchors, nearest neighbour by cosine, InfoNCE by hand), the support queue's FIFO order and
nearest-neighbour lookup, a few training steps through the Method interface with its defaults, and
distributed exactness under a real 2-process gloo group: 2 workers x B give the losses, gradients
and queue of one process on 2B, with the identical queue on both ranks."""

import math

import pytest
import torch
from dist_harness import run_workers
from torch import nn

from jem import dist
from jem.config import parse_config
from jem.engine.optim import build_optimizer
from jem.losses.nnclr import NNCLRLoss, nearest_neighbours
from jem.methods import get_method_class
from jem.methods.base import StepContext

ARCH = {"backbone": "small_cnn", "width": 4, "in_channels": 1, "image_size": 8}


def _cos(u, v):
    return float(u @ v) / (math.sqrt(float(u @ u)) * math.sqrt(float(v @ v)))


def _slow_nn(z, support):
    """Index of the support row with the largest cosine similarity to ``z`` (first on ties)."""
    best, best_j = -math.inf, -1
    for j in range(support.shape[0]):
        c = _cos(z, support[j])
        if c > best:
            best, best_j = c, j
    return best_j


def _slow_loss(z_a, z_b, p_a, p_b, support, tau):
    """L^NNCLR written out: for every anchor i, q = NN(z_i, Q) (unit), positive p_i^+ of the other
    view, denominator over the other view's predictions of all n images; symmetric over the views."""

    def direction(zs, ps):
        n, total = zs.shape[0], 0.0
        unit_p = [ps[k] / ps[k].norm() for k in range(n)]
        for i in range(n):
            q = support[_slow_nn(zs[i], support)]
            q = q / q.norm()
            num = torch.exp(q @ unit_p[i] / tau)
            den = sum(torch.exp(q @ unit_p[k] / tau) for k in range(n))
            total = total - torch.log(num / den)
        return total / n

    return 0.5 * (direction(z_a, p_b) + direction(z_b, p_a))


def _inputs(n=6, d=5, k=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    z_a, z_b, p_a, p_b = (torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(4))
    support = torch.nn.functional.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=1)
    return z_a, z_b, p_a, p_b, support


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_loss_and_gradients_match_the_slow_reference(tau):
    z_a, z_b, p_a, p_b, support = _inputs()
    loss_fn = NNCLRLoss(support.shape[0], support.shape[1], tau).double()
    loss_fn.queue.copy_(support)
    pa1, pb1 = p_a.clone().requires_grad_(True), p_b.clone().requires_grad_(True)
    za1, zb1 = z_a.clone().requires_grad_(True), z_b.clone().requires_grad_(True)
    out = loss_fn(za1, zb1, pa1, pb1)
    out["loss"].backward()
    pa2, pb2 = p_a.clone().requires_grad_(True), p_b.clone().requires_grad_(True)
    ref = _slow_loss(z_a, z_b, pa2, pb2, support, tau)
    ref.backward()
    assert torch.allclose(out["loss"], ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(pa1.grad, pa2.grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(pb1.grad, pb2.grad, rtol=1e-10, atol=1e-12)
    assert za1.grad is None and zb1.grad is None  # the neighbour is a stored vector: no gradient to the anchor
    idx, rows = nearest_neighbours(z_a, support)
    assert idx.tolist() == [_slow_nn(z_a[i], support) for i in range(z_a.shape[0])]
    assert torch.equal(rows, support[idx])


def test_nearest_neighbour_is_by_cosine_and_picks_the_right_row():
    support = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                                                          [1.0, 1.0, 0.0]]), dim=1)
    z = torch.tensor([[0.1, 5.0, 0.0],  # row 1 (the length of z does not matter)
                      [3.0, 2.9, 0.0],  # row 3, the diagonal (cosine 0.9999 against 0.72 for row 0)
                      [0.0, 0.2, -7.0],  # row 1: cosine 0.029, above row 3's 0.020, row 0's 0 and row 2's -1
                      [-1.0, 0.0, 4.0]])  # row 2
    idx, rows = nearest_neighbours(z, support)
    assert idx.tolist() == [1, 3, 1, 2]
    assert torch.equal(rows, support[idx])


def test_queue_is_fifo_and_wraps_around():
    q = NNCLRLoss(queue_size=5, dim=2)
    rows = torch.nn.functional.normalize(torch.randn(12, 2), dim=1)
    q.enqueue(rows[0:3])
    assert int(q.ptr) == 3 and torch.allclose(q.queue[0:3], rows[0:3], atol=1e-6)
    q.enqueue(rows[3:7])  # slots 3, 4, then 0, 1 (overwriting the two oldest)
    assert int(q.ptr) == 2
    assert torch.allclose(q.queue, torch.stack([rows[5], rows[6], rows[2], rows[3], rows[4]]), atol=1e-6)
    q.enqueue(2.0 * rows[7:])  # K rows: every slot once, from the pointer on; stored normalised
    assert int(q.ptr) == 2
    assert torch.allclose(q.queue, torch.stack([rows[10], rows[11], rows[7], rows[8], rows[9]]), atol=1e-6)
    q.enqueue(rows[:0])  # nothing
    assert int(q.ptr) == 2
    big = torch.nn.functional.normalize(torch.randn(8, 2), dim=1)
    q.enqueue(big)  # more than K rows: only the newest K stay, in FIFO slots
    assert int(q.ptr) == (2 + 8) % 5
    slots = [(2 + i) % 5 for i in range(8)]
    for i in range(3, 8):
        assert torch.allclose(q.queue[slots[i]], big[i], atol=1e-6)


def test_defaults_parse_and_a_few_steps_train_and_fill_the_queue():
    cfg = parse_config({"method": "nnclr"})
    p = cfg.method_params
    assert (p.temperature, p.queue_size, p.pred_hidden) == (0.1, 1024, 1024)
    # the shared LARS recipe except its own lr, which replaces train.lr (0.3) and nothing else
    assert cfg.train_overrides == {"lr": 1.0}
    assert (cfg.train.lr, cfg.train.optimizer, cfg.train.weight_decay) == (1.0, "lars", 1.0e-6)
    torch.manual_seed(0)
    method = get_method_class("nnclr")(ARCH, [32, 16], parse_config({"method": "nnclr", "methods": {
        "nnclr": {"queue_size": 40}}}).method_params)
    assert method.name == "nnclr" and method.n_global == 2 and method.n_local == 0
    opt = build_optimizer(method, cfg.train, 0.1)
    before = [q.detach().clone() for q in method.parameters()]
    g = torch.Generator().manual_seed(1)
    images = torch.randn(16, 1, 8, 8, generator=g)
    for step in range(3):
        ctx = StepContext(0, step, 3, 3)
        views = [images + 0.3 * torch.randn(images.shape, generator=g) for _ in range(2)]
        out = method(views, ctx)
        assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
        assert -1.0 <= float(out["nn_similarity"]) <= 1.0
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        method.before_optimizer_step(ctx)
        opt.step()
        method.after_step(ctx)
        assert int(method.loss.ptr) == (step + 1) * 16 % 40
    assert any(not torch.equal(b, q) for b, q in zip(before, method.parameters()))
    assert all(q.grad is not None for q in method.predictor.parameters())


def test_the_queue_holds_the_forward_projections_of_view_a():
    torch.manual_seed(0)
    method = get_method_class("nnclr")(ARCH, [32, 16], parse_config({"method": "nnclr"}).method_params)
    g = torch.Generator().manual_seed(2)
    views = [torch.randn(8, 1, 8, 8, generator=g) for _ in range(2)]
    ctx = StepContext(0, 0, 1, 1)
    z_a = method.embed(views[0]).detach()  # same batch statistics as inside forward (train mode)
    method(views, ctx)
    assert int(method.loss.ptr) == 0  # nothing enqueued before the optimizer step
    method.after_step(ctx)
    assert torch.allclose(method.loss.queue[:8], torch.nn.functional.normalize(z_a, dim=1), atol=1e-6)
    assert int(method.loss.ptr) == 8


# ------------------------------------------------------------------ 2-process exactness (gloo)
def _without_batchnorm(module: nn.Module) -> nn.Module:
    """BatchNorm statistics are per worker by design (train.sync_bn aside), so the exactness test
    takes them out; everything else (gather, rank offsets, the queue) is the method's own code."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _without_batchnorm(child)
    return module


def _nnclr_run(images, world, rank, local_enqueue=False, local_negatives=False):
    """Three NNCLR steps (float64, SGD). Global batch 8 = world x b; the queue of 12 wraps in step 2."""
    b = images.shape[2] // world
    sl = slice(rank * b, (rank + 1) * b)
    torch.manual_seed(0)
    params = parse_config({"method": "nnclr", "methods": {"nnclr": {"queue_size": 12, "temperature": 0.2,
                                                                    "pred_hidden": 8}}}).method_params
    m = _without_batchnorm(get_method_class("nnclr")(ARCH, [16, 8], params)).double()
    trainable = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.5)
    losses, grads, queues = [], [], []
    for step in range(images.shape[0]):
        ctx = StepContext(0, step, 3, 3)
        if local_negatives:  # wrong: each worker contrasts against its own predictions only
            ctx = StepContext(0, step, 3, 3, comm=dist.Comm(0, 1, lambda t: t, dist.gather_nograd,
                                                           dist.all_reduce_mean_nograd))
        loss = m([images[step, 0, sl], images[step, 1, sl]], ctx)["loss"]
        opt.zero_grad()
        loss.backward()
        dist.average_gradients(trainable)  # what DDP does
        losses.append(float(dist.all_reduce_mean_nograd(loss)))
        grads.append([p.grad.clone() for p in trainable])
        opt.step()
        if local_enqueue:  # wrong: each worker enqueues only its own projections
            m._new_support = m._new_support[sl]
        m.after_step(ctx)
        queues.append(m.loss.queue.clone())
    return {"loss": losses, "grad": grads, "queue": queues, "ptr": int(m.loss.ptr)}


def _images():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 2, 8, 1, 8, 8, generator=g, dtype=torch.float64)  # (steps, views, 2B, C, H, W)


def _worker(rank, world):
    images = _images()
    return {"exact": _nnclr_run(images, world, rank),
            "local_enqueue": _nnclr_run(images, world, rank, local_enqueue=True),
            "local_negatives": _nnclr_run(images, world, rank, local_negatives=True)}


def _same(a, b):
    assert a["ptr"] == b["ptr"]
    for x, y in zip(a["loss"], b["loss"]):
        assert math.isclose(x, y, rel_tol=1e-10, abs_tol=1e-12), (x, y)
    for ga, gb in zip(a["grad"], b["grad"]):
        for x, y in zip(ga, gb):
            assert torch.allclose(x, y, rtol=1e-8, atol=1e-12)
    for qa, qb in zip(a["queue"], b["queue"]):
        assert torch.allclose(qa, qb, rtol=1e-10, atol=1e-12)


@pytest.mark.dist
def test_two_workers_equal_one_process_on_the_concatenated_batch():
    single = _nnclr_run(_images(), 1, 0)
    workers = run_workers(_worker, 2)
    for r in workers:
        _same(r["exact"], single)  # losses, averaged gradients and queue after every step
    for qa, qb in zip(workers[0]["exact"]["queue"], workers[1]["exact"]["queue"]):
        assert torch.equal(qa, qb)  # one logical queue: identical on both ranks
    # controls: the wrong variants are detectably off
    assert not all(torch.allclose(qa, qb) for qa, qb in zip(workers[0]["local_enqueue"]["queue"],
                                                            workers[1]["local_enqueue"]["queue"]))
    with pytest.raises(AssertionError):
        _same(workers[0]["local_negatives"], single)
