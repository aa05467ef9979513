"""NNCLR: Dwibedi, Aytar, Tompson, Sermanet, Zisserman 2021, "With a Little Help from My Friends:
Nearest-Neighbor Contrastive Learning of Visual Representations", arXiv:2104.14548, section 3.2
(the loss ``L^NNCLR``).

SimCLR's InfoNCE as the paper writes it in section 3.1, in which the anchor is replaced by its nearest neighbour in
a support set ``Q`` of past embeddings. For a global batch of ``n`` images with projections
``z_i`` (view a) and predictions ``p_i^+`` (view b; the paper passes the second view through a
prediction head, as BYOL), all L2-normalised::

    NN(z, Q) = argmax_{q in Q} cos(z, q)         (= argmin ||z - q||_2 for unit vectors)
    L_i      = -log( exp(NN(z_i, Q) . p_i^+ / tau) / sum_{k=1..n} exp(NN(z_i, Q) . p_k^+ / tau) )

The negatives are the other images' predictions of the other view (the ``n - 1`` other terms of
the denominator, as the paper writes it; SimCLR's NT-Xent also contrasts against the anchor's own
view, jem.losses.contrastive). ``L`` is
symmetric over the views: ``(mean_i L_i(a -> b) + mean_i L_i(b -> a)) / 2``, the second with the
roles of the views swapped. The neighbour is a stored vector, so no gradient reaches the anchor
side; the gradient flows through the predictions only (and through them into the projector).

Support set: a FIFO queue of ``K`` unit rows (paper ``K`` = 98304), random unit vectors at the
start, filled with the detached, normalised projections of view a of every global batch after each
step. It is a buffer (checkpointed with its write pointer).

Data parallelism: every worker looks up the neighbours of its own anchors in the same queue,
scores them against the predictions gathered from all workers (autograd-aware, in rank order; the
paper's negatives come from the whole global batch) and takes the mean over its local anchors;
DDP's gradient averaging then gives exactly the single-process loss and gradient of the
concatenated batch (see :mod:`jem.dist`). The queue receives the *gathered* projections, so it is
identical on every worker.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jem.dist import Gather


def nearest_neighbours(z: torch.Tensor, support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``NN(z, Q)``: for each row of ``z`` (B, D) (any norm) the row of ``support`` (K, D) (unit
    rows) with the largest cosine similarity. Returns its indices (B,) and the rows (B, D),
    detached."""
    sim = F.normalize(z.detach(), dim=1) @ support.detach().T  # (B, K)
    idx = sim.argmax(dim=1)
    return idx, support.detach()[idx]


def nnclr_term(nn_a: torch.Tensor, p_b_all: torch.Tensor, offset: int, temperature: float) -> torch.Tensor:
    """``L_i`` of section 3.2, mean over the local anchors.

    nn_a: (B, D) unit neighbours of this worker's view-a projections; p_b_all: (N, D) view-b
    predictions of all workers in rank order (need not be normalised), this worker's rows starting
    at ``offset``.
    """
    logits = nn_a @ F.normalize(p_b_all, dim=1).T / temperature  # (B, N)
    positives = torch.arange(nn_a.shape[0], device=nn_a.device) + offset
    return F.cross_entropy(logits, positives)


def nnclr_loss(z_a: torch.Tensor, z_b: torch.Tensor, p_a_all: torch.Tensor, p_b_all: torch.Tensor,
               support: torch.Tensor, offset: int, temperature: float) -> dict[str, torch.Tensor]:
    """Symmetric ``L^NNCLR``. z_a, z_b: (B, D) this worker's projections of the two views; p_a_all,
    p_b_all: (N, D) the predictions of all workers; support: (K, D) the queue."""
    _, nn_a = nearest_neighbours(z_a, support)
    _, nn_b = nearest_neighbours(z_b, support)
    loss = 0.5 * (nnclr_term(nn_a, p_b_all, offset, temperature) + nnclr_term(nn_b, p_a_all, offset, temperature))
    # how close the neighbours are (1 = the support set holds the anchor itself); for monitoring
    nn_sim = 0.5 * ((F.normalize(z_a.detach(), dim=1) * nn_a).sum(1).mean()
                    + (F.normalize(z_b.detach(), dim=1) * nn_b).sum(1).mean())
    return {"loss": loss, "nn_similarity": nn_sim}


class NNCLRLoss(nn.Module):
    """The support queue (``queue`` (K, D), unit rows; ``ptr`` the next slot to write) as buffers,
    plus the symmetric ``L^NNCLR`` against it."""

    queue: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, queue_size: int, dim: int, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor, p_a: torch.Tensor, p_b: torch.Tensor,
                gather: Gather = lambda t: t, rank: int = 0) -> dict[str, torch.Tensor]:
        """z_*: (B, D) projections, p_*: (B, D) predictions of this worker's two views."""
        p_a_all, p_b_all = gather(p_a), gather(p_b)
        return nnclr_loss(z_a, z_b, p_a_all, p_b_all, self.queue, rank * z_a.shape[0], self.temperature)

    @torch.no_grad()
    def enqueue(self, z: torch.Tensor) -> None:
        """FIFO: write the rows of ``z`` (M, D), normalised, after the newest entry, overwriting the
        oldest and wrapping around; with M > K only the newest K stay. Call it with the same
        (gathered) rows on every worker."""
        size, m = self.queue.shape[0], z.shape[0]
        slots = (self.ptr + torch.arange(m, device=z.device)) % size  # (M,)
        keep = slice(max(0, m - size), m)
        self.queue[slots[keep]] = F.normalize(z[keep].detach().to(self.queue.dtype), dim=1)
        self.ptr.copy_((self.ptr + m) % size)
