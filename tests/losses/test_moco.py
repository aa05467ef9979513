"""MoCo's InfoNCE with a queue (arXiv:1911.05722, eq. 1) and its FIFO queue: a hand-computed value,
a float64 loop reference (value and gradient), FIFO order with wrap-around, and the method's
momentum update and shuffled-BN keys."""

import math

import pytest
import torch
import torch.nn.functional as F

from jem.config import parse_config
from jem.dist import current_comm
from jem.losses.moco import MoCoQueueLoss, info_nce_queue
from jem.methods import get_method_class
from jem.methods.base import StepContext

ARCH = {"backbone": "small_cnn", "width": 4, "in_channels": 1, "image_size": 8}


def _slow_info_nce(q, k, queue, tau):
    """Eq. (1) with Python loops, one query at a time."""
    b, d = q.shape
    total = q.new_zeros(())
    for i in range(b):
        qn = q[i] / torch.sqrt(sum(q[i, t] ** 2 for t in range(d)))
        kn = k[i] / torch.sqrt(sum(k[i, t] ** 2 for t in range(d)))
        pos = sum(qn[t] * kn[t] for t in range(d)) / tau
        negs = [sum(qn[t] * queue[j, t] for t in range(d)) / tau for j in range(queue.shape[0])]
        total = total - pos + torch.log(torch.exp(pos) + sum(torch.exp(s) for s in negs))
    return total / b


def test_info_nce_hand_computed():
    # q = e1, k+ = 3 e1 (normalised to e1), queue = [e2, -e1], tau = 0.5:
    # logits 2 (positive), 0, -2 -> L = log(1 + e^-2 + e^-4)
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    k = torch.tensor([[3.0, 0.0]], dtype=torch.float64)
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    loss = info_nce_queue(q, k, queue, 0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2) + math.exp(-4)), abs=1e-12)


def test_info_nce_matches_slow_reference_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    queue = F.normalize(torch.randn(7, 4, generator=g, dtype=torch.float64), dim=1)
    fast, slow = info_nce_queue(q, k, queue, 0.2), _slow_info_nce(q, k, queue, 0.2)
    assert fast.item() == pytest.approx(slow.item(), abs=1e-10)
    for a, b in zip(torch.autograd.grad(fast, (q, k)), torch.autograd.grad(slow, (q, k))):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=0)


def test_queue_module_detaches_keys_and_checkpoints_state():
    loss_fn = MoCoQueueLoss(6, 4, 0.2).double()
    assert set(loss_fn.state_dict()) == {"queue", "ptr"}
    torch.testing.assert_close(loss_fn.queue.norm(dim=1), torch.ones(6, dtype=torch.float64))
    q = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss_fn(q, k).backward()
    assert q.grad is not None and k.grad is None  # keys come from the momentum encoder


def test_queue_is_fifo_with_wrap_around():
    size, d = 5, 3
    loss_fn = MoCoQueueLoss(size, d)
    pushed: list[torch.Tensor] = []
    g = torch.Generator().manual_seed(1)
    for m in (2, 2, 2, 3, 7, 1):  # wraps several times; one batch larger than the queue
        keys = F.normalize(torch.randn(m, d, generator=g), dim=1)
        loss_fn.enqueue(keys)
        pushed.extend(keys)
        assert int(loss_fn.ptr) == len(pushed) % size
        n_real = min(len(pushed), size)
        oldest_first = torch.roll(loss_fn.queue, -int(loss_fn.ptr), dims=0)  # oldest -> newest
        torch.testing.assert_close(oldest_first[size - n_real:], torch.stack(pushed[-n_real:]))


def _moco(**overrides):
    torch.manual_seed(0)
    params = parse_config({"method": "moco", "methods": {"moco": {"queue_size": 16, **overrides}}}).method_params
    return get_method_class("moco")(ARCH, [16, 8], params).double()


def test_momentum_update_and_enqueue_after_step():
    m = _moco(momentum=0.9, bn_splits=2)
    views = [torch.randn(8, 1, 8, 8, dtype=torch.float64) for _ in range(2)]
    key_before = [p.clone() for p in m.key_encoder.parameters()]
    assert all(not p.requires_grad for p in m.key_encoder.parameters())
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    ctx = StepContext(0, 0, 1, 1)
    out = m(views, ctx)
    _, k_all = m.keys(views[1], 0, ctx.comm)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    m.after_step(ctx)
    query = [*m.backbone.parameters(), *m.projector.parameters()]
    for kb, ka, qa in zip(key_before, m.key_encoder.parameters(), query):
        torch.testing.assert_close(ka, 0.9 * kb + 0.1 * qa)  # eq. (2), after the optimizer step
    assert int(m.loss.ptr) == 8
    torch.testing.assert_close(m.loss.queue[:8], k_all)  # this step's keys, in batch order


def test_shuffled_keys_are_the_plain_keys_when_bn_cannot_see_the_shuffle():
    x = torch.randn(12, 1, 8, 8, dtype=torch.float64)
    m = _moco(bn_splits=1)  # one BN group: statistics are permutation invariant
    k, k_all = m.keys(x, seed=3, comm=current_comm())
    torch.testing.assert_close(k, F.normalize(m.key_encoder(x), dim=1))
    torch.testing.assert_close(k_all, k)
    m = _moco(bn_splits=3).eval()  # running statistics: no batch dependence at all
    torch.testing.assert_close(m.keys(x, seed=3, comm=current_comm())[0], F.normalize(m.key_encoder(x), dim=1))
    m.train()  # 3 groups of shuffled images: keys differ from an unshuffled grouped pass
    grouped = torch.cat([m.key_encoder(c) for c in x.tensor_split(3)])
    assert not torch.allclose(m.keys(x, seed=3, comm=current_comm())[0], F.normalize(grouped, dim=1), atol=1e-3)


def test_symmetric_loss_enqueues_both_key_batches():
    m = _moco(symmetric=True, bn_splits=2)
    views = [torch.randn(4, 1, 8, 8, dtype=torch.float64) for _ in range(2)]
    out = m(views, StepContext(0, 0, 1, 1))
    assert torch.isfinite(out["loss"])
    m.after_step(StepContext(0, 0, 1, 1))
    assert int(m.loss.ptr) == 8


def test_bn_splits_larger_than_the_batch_is_a_clear_error():
    m = _moco(bn_splits=4)
    with pytest.raises(ValueError, match="bn_splits"):
        m([torch.randn(6, 1, 8, 8, dtype=torch.float64)] * 2, StepContext(0, 0, 1, 1))
