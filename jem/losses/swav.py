"""SwAV: Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", arXiv:2006.09882.

* Codes, section 3.1 and eq. (3)-(5): ``Q* = Diag(u) exp(C^T Z / epsilon) Diag(v)`` restricted to
  the transportation polytope of (K, N) matrices with row (prototype) sums ``1/K`` and column
  (sample) sums ``1/N``, found with the Sinkhorn-Knopp algorithm (``sinkhorn_iters`` alternations,
  prototype rows first, sample columns last, as in the paper's Algorithm 1 / reference
  ``distributed_sinkhorn``). The result is scaled by ``N`` so every sample's code sums to 1.
* Swapped prediction, eq. (1)-(2) and multi-crop (section 3.2): for every global view ``i`` with
  codes ``q_i``, ``mean over views v != i`` of ``-mean_b sum_k q_i log softmax(z_v^T c / tau)``,
  then the mean over the global views (codes come from the global views only, predictions from
  all views). ``temperature`` = tau, ``epsilon`` = epsilon.

Shapes: scores are (B, K) dot products between L2-normalised embeddings and L2-normalised
prototypes; lists hold ``n_global`` global views first, then local crops.

Distributed (the reference all-reduces the row/total sums inside Sinkhorn): here the detached
scores of each global view are gathered from all workers (``gather_nograd``), Sinkhorn runs on the
global (N, K) matrix (optionally preceded by the queue's scores), and each worker takes back its own
rows ``rank * B : (rank + 1) * B``. The swapped-prediction loss is then a per-sample mean, so the
per-worker mean plus DDP's gradient averaging equals the single-process loss on the whole batch.

Deviation: ``exp`` is taken of ``(scores - max) / epsilon`` (the global max, subtracted before the
first normalisation), which leaves ``Q`` unchanged and avoids overflow for small epsilon.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

GatherNoGrad = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float = 0.05, iters: int = 3) -> torch.Tensor:
    """(N, K) scores -> (N, K) soft codes. Before the final ``* N`` scaling the matrix has sample
    (row) sums exactly ``1/N`` and prototype (column) sums ``1/K`` up to Sinkhorn convergence."""
    n, k = scores.shape
    q = torch.exp((scores - scores.max()) / epsilon).T  # (K, N), the paper's orientation
    q = q / q.sum()
    for _ in range(iters):
        q = q / q.sum(dim=1, keepdim=True) / k  # every prototype gets total mass 1/K
        q = q / q.sum(dim=0, keepdim=True) / n  # every sample gets total mass 1/N
    return (q * n).T  # (N, K), rows sum to 1


def swapped_prediction(codes: list[torch.Tensor], scores: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """Eq. (1)-(2) with multi-crop: codes for the first ``len(codes)`` views, predictions from all."""
    log_p = [F.log_softmax(s / temperature, dim=-1) for s in scores]
    total = scores[0].new_zeros(())
    for i, q in enumerate(codes):
        sub = scores[0].new_zeros(())
        for v, lp in enumerate(log_p):
            if v == i:
                continue
            sub = sub - (q * lp).sum(dim=-1).mean()
        total = total + sub / (len(scores) - 1)
    return total / len(codes)


class SwAVLoss(nn.Module):
    """Keeps the hyperparameters; computes global Sinkhorn codes, then the swapped prediction."""

    def __init__(self, temperature: float = 0.1, epsilon: float = 0.05, sinkhorn_iters: int = 3) -> None:
        super().__init__()
        self.temperature, self.epsilon, self.sinkhorn_iters = temperature, epsilon, sinkhorn_iters

    @torch.no_grad()
    def codes(self, scores: torch.Tensor, queue_scores: torch.Tensor | None = None,
              gather_nograd: GatherNoGrad = lambda t: t.detach(), rank: int = 0) -> torch.Tensor:
        """This worker's (B, K) codes from Sinkhorn on [queue scores; scores of all workers]."""
        b = scores.shape[0]
        full = gather_nograd(scores.detach())  # (W * B, K)
        start = rank * b
        if queue_scores is not None:
            full = torch.cat([queue_scores.detach(), full])  # queue rows first, as the reference
            start += queue_scores.shape[0]
        return sinkhorn_knopp(full, self.epsilon, self.sinkhorn_iters)[start:start + b]

    def forward(self, scores: list[torch.Tensor], n_global: int = 2,
                queue_scores: list[torch.Tensor] | None = None,
                gather_nograd: GatherNoGrad = lambda t: t.detach(), rank: int = 0) -> dict[str, torch.Tensor]:
        codes = [self.codes(scores[i], None if queue_scores is None else queue_scores[i], gather_nograd, rank)
                 for i in range(n_global)]
        loss = swapped_prediction(codes, scores, self.temperature)
        with torch.no_grad():
            q = torch.cat(codes)
            code_entropy = -(q * torch.log(q.clamp_min(1e-12))).sum(-1).mean()
        return {"loss": loss, "code_entropy": code_entropy}
