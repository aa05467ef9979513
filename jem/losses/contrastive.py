"""NT-Xent / InfoNCE: Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations" (SimCLR), arXiv:2002.05709, section 2.1, eq. (1) and Algorithm 1.

For a global batch of N images there are 2N embeddings; each is an anchor whose positive is the
other view of the same image and whose negatives are the other 2(N-1) embeddings. With cosine
similarity ``s`` and temperature ``tau``::

    l(i, j) = -log( exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau) ),   L = mean over all 2N anchors

Under data parallelism each worker scores only its *local* anchors against the keys gathered from
all workers (the paper's "global" negatives, section 2.2 / appendix); the worker's loss is the mean
over its local anchors, and DDP's gradient averaging makes the result exactly the single-process
loss and gradient on the concatenated batch (see ``jem.dist``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jem.dist import Gather, rank


def nt_xent(za: torch.Tensor, zb: torch.Tensor, za_all: torch.Tensor, zb_all: torch.Tensor,
            offset: int, temperature: float) -> torch.Tensor:
    """Mean NT-Xent of the local anchors.

    za, zb: (B, D) this worker's two views; za_all, zb_all: (N, D) all workers' views in rank
    order, this worker's rows starting at ``offset``. Inputs need not be normalised.
    """
    b, n = za.shape[0], za_all.shape[0]
    anchors = F.normalize(torch.cat([za, zb]), dim=1)  # (2B, D)
    keys = F.normalize(torch.cat([za_all, zb_all]), dim=1)  # (2N, D)
    logits = anchors @ keys.T / temperature  # (2B, 2N)
    local = torch.arange(b, device=za.device) + offset
    self_idx = torch.cat([local, local + n])  # where each anchor sits among the keys
    pos_idx = torch.cat([local + n, local])
    logits = logits.masked_fill(F.one_hot(self_idx, 2 * n).bool(), float("-inf"))
    return F.cross_entropy(logits, pos_idx)


class NTXentLoss(nn.Module):
    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, za: torch.Tensor, zb: torch.Tensor, gather: Gather = lambda t: t
                ) -> dict[str, torch.Tensor]:
        za_all, zb_all = gather(za), gather(zb)
        offset = rank() * za.shape[0] if za_all.shape[0] != za.shape[0] else 0
        return {"loss": nt_xent(za, zb, za_all, zb_all, offset, self.temperature)}
