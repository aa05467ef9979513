"""MoCo's InfoNCE against a queue of past keys: He, Fan, Wu, Xie, Girshick 2020, "Momentum Contrast
for Unsupervised Visual Representation Learning", arXiv:1911.05722, section 3.1, eq. (1) and
Algorithm 1; MoCo v2 (Chen, Fan, Girshick, He 2020, arXiv:2003.04297) keeps the loss and changes
the head, augmentation and temperature.

For a query ``q`` with positive key ``k+`` (the momentum encoder's embedding of the other view of
the same image) and the ``K`` queued keys ``k_1..k_K`` (negatives), all L2-normalised::

    L_q = -log( exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_j exp(q.k_j / tau)) )      (eq. 1)

averaged over the queries. Keys carry no gradient (they come from the momentum encoder).

The queue is one logical FIFO shared by all workers: the caller enqueues the keys of the *global*
batch (gathered in rank order), so every rank holds the identical queue. It is a buffer, so it is
checkpointed with the state dict, together with its write pointer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def info_nce_queue(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. (1), mean over queries.

    q: (B, D) queries, k: (B, D) their positive keys (need not be normalised; both are
    L2-normalised here); queue: (K, D) negatives, rows assumed unit-norm (they are stored keys).
    """
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    l_pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
    l_neg = q @ queue.T  # (B, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # (B, 1 + K): the positive is class 0
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


class MoCoQueueLoss(nn.Module):
    """The queue (``queue`` (K, D), unit rows, random at start as in the reference code) and its
    write pointer ``ptr`` as buffers, plus eq. (1) against it."""

    queue: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, queue_size: int, dim: int, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return info_nce_queue(q, k.detach(), self.queue.detach(), self.temperature)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """FIFO: write ``keys`` (M, D) after the newest entry, overwriting the oldest, wrapping
        around the end. With M > K only the newest K keys stay. Must be called with the same
        (gathered) keys on every rank."""
        size, m = self.queue.shape[0], keys.shape[0]
        slots = (self.ptr + torch.arange(m, device=keys.device)) % size  # (M,)
        keep = slice(max(0, m - size), m)  # distinct slots, newest keys
        self.queue[slots[keep]] = F.normalize(keys[keep].to(self.queue.dtype), dim=1)
        self.ptr.copy_((self.ptr + m) % size)
