"""Distributed exactness under a real 2-process gloo group (one spawn for everything): for VICReg,
NT-Xent, Barlow Twins and W-MSE the loss and the parameter gradients (averaged over workers, as DDP
does) on 2 x B equal the single-process result on 2B; MoCo, at the method level over three steps,
gives the same losses, gradients, key encoder and queue as one process on the concatenated batch,
with the identical queue on both ranks. Controls show that the wrong variants (a raw all_reduce of
Barlow's C, a gather whose backward does not sum, per-worker enqueueing) are detectably off."""

import warnings

import pytest
import torch
from dist_harness import run_workers

from jem import dist
from jem.config import parse_config
from jem.losses.barlow import BarlowTwinsLoss, standardize
from jem.losses.contrastive import NTXentLoss
from jem.losses.vicreg import VICRegLoss
from jem.losses.wmse import WMSELoss
from jem.methods import get_method_class
from jem.methods.base import StepContext

N, D_IN, D, N_VIEWS, WORLD = 16, 6, 5, 4, 2
ARCH = {"backbone": "small_cnn", "width": 4, "in_channels": 1, "image_size": 8}
LOSSES = {
    "vicreg": lambda zs, gather: VICRegLoss()(zs[0], zs[1], gather)["loss"],
    "simclr": lambda zs, gather: NTXentLoss(0.3)(zs[0], zs[1], gather)["loss"],
    "barlow": lambda zs, gather: BarlowTwinsLoss(0.05)(zs[0], zs[1], gather)["loss"],
    # 4 views; the global batch of 16 is whitened in two sub-batches of 8 rows (> D = 5)
    "wmse": lambda zs, gather: WMSELoss(w_size=8)(zs, 7, gather)["loss"],
}


def _data():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(N, D_IN, generator=g, dtype=torch.float64) for _ in range(N_VIEWS)]
    w = torch.randn(D, D_IN, generator=g, dtype=torch.float64)
    images = torch.randn(3, 2, N // 2, 1, 8, 8, generator=g, dtype=torch.float64)  # (steps, views, 2B, ...)
    return xs, w, images


def _loss_and_grad(fn, xs, w, gather):
    w = w.clone().requires_grad_(True)
    loss = fn([x @ w.T for x in xs], gather)  # a linear "encoder" w: (D, D_IN)
    loss.backward()
    return loss.detach(), w.grad


def _moco_run(images, world, rank, local_enqueue=False):
    """Three MoCo steps. Global batch 8 = world x b; ``bn_splits = 2 / world`` keeps BN groups of 4
    images either way; queue of 12 keys wraps around in the second step."""
    b = images.shape[2] // world
    sl = slice(rank * b, (rank + 1) * b)
    torch.manual_seed(0)
    raw = {"method": "moco", "methods": {"moco": {"queue_size": 12, "bn_splits": 2 // world, "momentum": 0.9}}}
    m = get_method_class("moco")(ARCH, [16, 8], parse_config(raw).method_params).double()
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    losses, grads = [], []
    for step in range(images.shape[0]):
        ctx = StepContext(0, step, 3, 3)
        loss = m([images[step, 0, sl], images[step, 1, sl]], ctx)["loss"]
        opt.zero_grad()
        loss.backward()
        dist.average_gradients(params)  # what DDP does
        losses.append(float(dist.all_reduce_mean_nograd(loss)))
        grads.append([p.grad.clone() for p in params])
        opt.step()
        if local_enqueue:  # wrong: each worker enqueues only its own keys
            m._new_keys = m._new_keys[sl]
        m.after_step(ctx)
    return {"loss": losses, "grad": grads, "queue": m.loss.queue.clone(), "ptr": int(m.loss.ptr),
            "key": [p.clone() for p in m.key_encoder.parameters()]}


def _worker(rank, world):
    xs, w, images = _data()
    b = N // world
    sl = slice(rank * b, (rank + 1) * b)
    local = [x[sl] for x in xs]
    out = {}
    for name, fn in LOSSES.items():
        loss, grad = _loss_and_grad(fn, local, w, dist.gather)
        out[name] = (dist.all_reduce_mean_nograd(loss), dist.all_reduce_mean_nograd(grad))

    def barlow_raw_all_reduce(zs, gather):
        """The reference code's pattern: each worker's part of C summed with an in-place raw
        all_reduce (global standardisation here, so only the all_reduce is wrong)."""
        sa, sb = standardize(gather(zs[0])), standardize(gather(zs[1]))
        c = sa[sl].T @ sb[sl] / N
        torch.distributed.all_reduce(c)  # invisible to autograd
        return (1 - torch.diagonal(c)).pow(2).sum() + 0.05 * (c - torch.diag(torch.diagonal(c))).pow(2).sum()

    def gather_without_backward_sum(t):
        parts = [torch.empty_like(t) for _ in range(world)]
        torch.distributed.all_gather(parts, t.detach())
        parts[rank] = t
        return torch.cat(parts)

    with warnings.catch_warnings():  # torch itself warns that it cannot differentiate the raw all_reduce
        warnings.simplefilter("ignore", UserWarning)
        loss, grad = _loss_and_grad(barlow_raw_all_reduce, local, w, dist.gather)
    out["control_barlow"] = (dist.all_reduce_mean_nograd(loss), dist.all_reduce_mean_nograd(grad))
    loss, grad = _loss_and_grad(LOSSES["wmse"], local, w, gather_without_backward_sum)
    out["control_wmse"] = (dist.all_reduce_mean_nograd(loss), dist.all_reduce_mean_nograd(grad))
    out["moco"] = _moco_run(images, world, rank)
    out["control_moco"] = _moco_run(images, world, rank, local_enqueue=True)
    return out


@pytest.fixture(scope="module")
def results():
    xs, w, images = _data()
    single = {name: _loss_and_grad(fn, xs, w, lambda t: t) for name, fn in LOSSES.items()}
    single["moco"] = _moco_run(images, 1, 0)
    return single, run_workers(_worker, WORLD)


@pytest.mark.dist
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_and_gradients_on_2xB_equal_single_process_on_2B(results, name):
    single, workers = results
    ref_loss, ref_grad = single[name]
    assert ref_grad.abs().max() > 1e-3  # a real gradient, not a vacuous match
    for out in workers:
        loss, grad = out[name]
        torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=0)
        torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.dist
def test_moco_is_exact_and_keeps_one_queue(results):
    single, workers = results
    ref = single["moco"]
    for out in (w["moco"] for w in workers):
        assert out["loss"] == pytest.approx(ref["loss"], abs=1e-8)
        for step_grads, ref_grads in zip(out["grad"], ref["grad"]):
            for g, r in zip(step_grads, ref_grads):
                torch.testing.assert_close(g, r, atol=1e-8, rtol=1e-6)
        for k, r in zip(out["key"], ref["key"]):
            torch.testing.assert_close(k, r, atol=1e-8, rtol=1e-6)
        assert out["ptr"] == ref["ptr"] == (3 * 8) % 12
        torch.testing.assert_close(out["queue"], ref["queue"], atol=1e-8, rtol=0)
    assert torch.equal(workers[0]["moco"]["queue"], workers[1]["moco"]["queue"])  # bit-identical on every rank


@pytest.mark.dist
def test_wrong_variants_are_detectably_off(results):
    single, workers = results
    out = workers[0]
    # raw all_reduce of C: the value is the global loss, but gradients are 1/W of the exact ones
    ref_loss, ref_grad = single["barlow"]
    loss, grad = out["control_barlow"]
    torch.testing.assert_close(loss, ref_loss, atol=1e-10, rtol=0)
    torch.testing.assert_close(grad * WORLD, ref_grad, atol=1e-8, rtol=1e-8)
    assert not torch.allclose(grad, ref_grad, atol=1e-3)
    # a gather whose backward does not sum over workers: same loss, gradients off by 1/W
    ref_loss, ref_grad = single["wmse"]
    loss, grad = out["control_wmse"]
    torch.testing.assert_close(loss, ref_loss, atol=1e-10, rtol=0)
    torch.testing.assert_close(grad * WORLD, ref_grad, atol=1e-8, rtol=1e-8)
    assert not torch.allclose(grad, ref_grad, atol=1e-3)
    # per-worker enqueueing: the ranks' queues drift apart and later losses differ
    q0, q1 = workers[0]["control_moco"]["queue"], workers[1]["control_moco"]["queue"]
    assert not torch.allclose(q0, q1, atol=1e-3)
    assert not torch.allclose(q0, single["moco"]["queue"], atol=1e-3)
