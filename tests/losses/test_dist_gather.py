"""jem.dist.gather under a real 2-process gloo group: loss and gradients on 2 x B equal the
single-process result on 2B (the exactness contract every batch-statistic loss relies on)."""

import torch
from dist_harness import run_workers

from jem import dist
from jem.losses.contrastive import NTXentLoss
from jem.losses.vicreg import VICRegLoss


def _data(seed: int = 0, n: int = 16, d_in: int = 6, d: int = 5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g), torch.randn(n, d_in, generator=g), torch.randn(d, d_in, generator=g)


def _loss_and_grad(loss_fn, xa, xb, w, gather):
    w = w.clone().requires_grad_(True)
    out = loss_fn(xa @ w.T, xb @ w.T, gather)
    out["loss"].backward()
    return out["loss"].detach(), w.grad


def _worker(rank, world, name):
    xa, xb, w = _data()
    b = xa.shape[0] // world
    sl = slice(rank * b, (rank + 1) * b)
    loss_fn = {"vicreg": VICRegLoss(), "simclr": NTXentLoss(0.3)}[name]
    loss, grad = _loss_and_grad(loss_fn, xa[sl], xb[sl], w, dist.gather)
    # what DDP does: average the parameter gradients and (for logging) the per-worker losses
    torch.distributed.all_reduce(grad)
    grad /= world
    torch.distributed.all_reduce(loss)
    return (loss / world).item(), grad


def _single(name):
    xa, xb, w = _data()
    loss_fn = {"vicreg": VICRegLoss(), "simclr": NTXentLoss(0.3)}[name]
    return _loss_and_grad(loss_fn, xa, xb, w, lambda t: t)


def test_gather_is_exact_for_vicreg_and_ntxent():
    for name in ("vicreg", "simclr"):
        ref_loss, ref_grad = _single(name)
        results = run_workers(_worker, 2, name)
        for loss, grad in results:
            assert abs(loss - ref_loss.item()) < 1e-5, name
            torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-5)


def _worker_nosum(rank, world):
    """Control: a gather whose backward does NOT sum over workers gives gradients off by 1/W,
    which the exactness check above would catch (guards against a test that cannot fail)."""
    xa, xb, w = _data()
    b = xa.shape[0] // world
    sl = slice(rank * b, (rank + 1) * b)

    def naive_gather(t):
        parts = [torch.empty_like(t) for _ in range(world)]
        torch.distributed.all_gather(parts, t.detach())
        parts[rank] = t
        return torch.cat(parts)

    _, grad = _loss_and_grad(VICRegLoss(), xa[sl], xb[sl], w, naive_gather)
    torch.distributed.all_reduce(grad)
    return grad / world


def test_naive_gather_is_detectably_wrong():
    _, ref_grad = _single("vicreg")
    grads = run_workers(_worker_nosum, 2)
    torch.testing.assert_close(grads[0] * 2, ref_grad, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(grads[0], ref_grad, atol=1e-4)
