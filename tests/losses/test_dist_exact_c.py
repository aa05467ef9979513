"""Real 2-process gloo runs for the bank/pseudo-label methods: the NPID memory bank is identical on
both workers and equal to the single-process bank after the same updates (and the softmax loss
and gradient on 2 x B equal the single-process ones on 2B); DeepCluster's and SeLa's pseudo-labels
are identical on both workers and equal to the single-process labels."""

import numpy as np
import torch
import torch.nn.functional as F
from dist_harness import run_workers

from jem import dist
from jem.config import parse_config
from jem.losses.npid import NPIDLoss
from jem.methods import get_method_class
from jem.methods.base import EpochData

N, D, B, STEPS = 40, 6, 8, 3  # bank rows, feature dim, global batch, steps
ARCH = {"backbone": "small_cnn", "width": 4, "in_channels": 1, "image_size": 8}


def _npid_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS, B, 5, generator=g, dtype=torch.float64)
    idx = torch.stack([torch.randperm(N, generator=g)[:B] for _ in range(STEPS)])
    w = torch.randn(D, 5, generator=g, dtype=torch.float64)
    return x, idx, w


def _npid_run(rank, world, gather_nograd):
    """STEPS steps of loss + gradient + bank update on this worker's slice of each global batch."""
    x, idx, w0 = _npid_data()
    b = B // world
    sl = slice(rank * b, (rank + 1) * b)
    mod = NPIDLoss(temperature=0.2, momentum=0.5, loss="softmax", prox_weight=0.5)
    mod.init_bank(N, D, torch.Generator().manual_seed(7), torch.device("cpu"))
    mod.bank = mod.bank.double()
    losses, grads = [], []
    for s in range(STEPS):
        w = w0.clone().requires_grad_(True)
        f = F.normalize(x[s, sl] @ w.T, dim=1)
        out = mod(f, idx[s, sl])
        out["loss"].backward()
        grad, loss = w.grad.clone(), out["loss"].detach().clone()
        if world > 1:  # what DDP does with per-worker gradients and (for logging) losses
            torch.distributed.all_reduce(grad)
            torch.distributed.all_reduce(loss)
            grad, loss = grad / world, loss / world
        losses.append(loss)
        grads.append(grad)
        mod.update(f.detach(), idx[s, sl], gather_nograd)
    return mod.bank, torch.stack(losses), torch.stack(grads)


def _labels(name, rank, world):
    params = parse_config({"method": name, "methods": {name: {"n_clusters": 6}}}).method_params
    torch.manual_seed(0)
    method = get_method_class(name)(ARCH, [16, 8], params)
    images = np.random.default_rng(0).integers(0, 256, (N + 3, 8, 8, 1), dtype=np.uint8)  # N+3: uneven shards
    method.on_epoch_start(EpochData(0, images, [0.5], [0.25], torch.device("cpu")))  # comm: this process group's
    return method.labels


def _worker(rank, world):
    bank, losses, grads = _npid_run(rank, world, dist.gather_nograd)
    return bank, losses, grads, _labels("deepcluster", rank, world), _labels("sela", rank, world)


def test_banks_and_pseudo_labels_are_identical_across_workers_and_exact():
    ref_bank, ref_losses, ref_grads = _npid_run(0, 1, lambda t: t)
    ref_dc, ref_sela = _labels("deepcluster", 0, 1), _labels("sela", 0, 1)
    assert len(torch.unique(ref_dc)) > 1 and len(torch.unique(ref_sela)) > 1
    results = run_workers(_worker, 2)
    for bank, losses, grads, dc, sela in results:
        assert torch.equal(bank, results[0][0])  # bit-identical banks on both workers
        torch.testing.assert_close(bank, ref_bank, atol=1e-12, rtol=0)
        torch.testing.assert_close(losses, ref_losses, atol=1e-12, rtol=0)
        torch.testing.assert_close(grads, ref_grads, atol=1e-12, rtol=0)
        assert torch.equal(dc, results[0][3]) and torch.equal(sela, results[0][4])
        assert torch.equal(dc, ref_dc) and torch.equal(sela, ref_sela)
    assert not torch.equal(ref_bank, _npid_run(0, 1, lambda t: t[: t.shape[0] // 2])[0])  # the check can fail
