"""Self-distillation losses: BYOL and SimSiam regression, DINO cross-entropy with centring.

BYOL: Grill et al. 2020, "Bootstrap Your Own Latent", arXiv:2006.07733, section 3.1, eq. (2):
``L(v, v') = || p/||p|| - z'/||z'|| ||^2 = 2 - 2 cos(p, z')`` with ``p = q_theta(z_theta(v))`` the
online prediction and ``z' = z_xi(v')`` the target projection (no gradient). The loss is
symmetrised by swapping the views, ``L_total = L(v, v') + L(v', v)`` (summed, as in the paper),
and averaged over the batch.

SimSiam: Chen & He 2021, "Exploring Simple Siamese Representation Learning", arXiv:2011.10566,
eqs. (1)-(4) and Algorithm 1: ``D(p, z) = -cos(p, stopgrad(z))``,
``L = D(p1, z2) / 2 + D(p2, z1) / 2`` averaged over the batch (minimum -1).

DINO: Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers",
arXiv:2104.14294, section 3.1, eqs. (1)-(4), Algorithm 1 and the reference ``DINOLoss``:
``P_t = softmax((g_t(x) - c) / tau_t)``, ``log P_s = log_softmax(g_s(x') / tau_s)``, and
``L = mean over pairs (x global, x' any view, x' != x) of mean_b sum_k -P_t log P_s``;
then the centre follows ``c <- m c + (1 - m) mean_b g_t(x_b)`` (eq. 4) over the teacher outputs of
both global views and the *global* batch (all workers). ``center_momentum`` = m,
``student_temp`` = tau_s, ``teacher_temp`` = tau_t.

Shapes: ``p``, ``z``: (B, D). DINO: lists of (B, K) logits, teacher first ``n_global`` views only,
student ``n_global + n_local`` views in the same order (global views first).

Distributed: BYOL/SimSiam/DINO losses are means of per-sample terms (DINO's only batch statistic,
the centre, is all-reduced and enters without gradient), so the per-worker mean plus DDP's
gradient averaging equals the single-process loss on the concatenated batch for equal shards. The
centre update *is* global: it receives a ``reduce_mean`` collective (``all_reduce_mean_nograd``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

ReduceMean = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------- BYOL / SimSiam
def cosine_regression(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL eq. (2) per sample: ``2 - 2 cos(p, z)``; (B, D) x2 -> (B,). No stop-gradient here."""
    return 2.0 - 2.0 * F.cosine_similarity(p, z, dim=-1)


def byol_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> dict[str, torch.Tensor]:
    """Symmetrised BYOL loss: ``mean_b [l(p1, sg z2) + l(p2, sg z1)]`` (range [0, 8])."""
    per_sample = cosine_regression(p1, z2.detach()) + cosine_regression(p2, z1.detach())  # (B,)
    loss = per_sample.mean()
    return {"loss": loss, "cos": (1.0 - loss.detach() / 4.0)}


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> dict[str, torch.Tensor]:
    """SimSiam eq. (3)-(4): ``-(cos(p1, sg z2) + cos(p2, sg z1)) / 2`` averaged (range [-1, 1])."""
    per_sample = -0.5 * (F.cosine_similarity(p1, z2.detach(), dim=-1) + F.cosine_similarity(p2, z1.detach(), dim=-1))
    loss = per_sample.mean()
    # std of the L2-normalised output: ~1/sqrt(D) when healthy, 0 when collapsed (SimSiam fig. 2)
    z_std = F.normalize(z1.detach(), dim=-1).std(dim=0).mean()
    return {"loss": loss, "z_std": z_std}


class BYOLLoss(nn.Module):
    """Thin module over :func:`byol_loss` (no hyperparameters)."""

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        return byol_loss(p1, p2, z1, z2)


class SimSiamLoss(nn.Module):
    """Thin module over :func:`simsiam_loss` (no hyperparameters)."""

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        return simsiam_loss(p1, p2, z1, z2)


# ------------------------------------------------------------------------------------- DINO
def teacher_temp_at(epoch: int, warmup_temp: float, temp: float, warmup_epochs: int) -> float:
    """DINO's teacher temperature: ``linspace(warmup_temp, temp, warmup_epochs)[epoch]`` during the
    warm-up (so the last warm-up epoch already reaches ``temp``), then ``temp``."""
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return temp
    if warmup_epochs == 1:
        return warmup_temp
    return warmup_temp + (temp - warmup_temp) * epoch / (warmup_epochs - 1)


def teacher_probs(t: torch.Tensor, center: torch.Tensor, temp: float) -> torch.Tensor:
    """Centred, sharpened teacher distribution ``softmax((t - c) / temp)``; (B, K) -> (B, K), no grad."""
    return F.softmax((t.detach() - center) / temp, dim=-1)


def dino_cross_entropy(probs_t: list[torch.Tensor], logits_s: list[torch.Tensor], student_temp: float
                       ) -> torch.Tensor:
    """Eq. (3): mean over pairs (i teacher view, v student view, v != i) of
    ``mean_b sum_k -P_t[i] log softmax(s[v] / tau_s)``. Teacher view ``i`` is student view ``i``."""
    log_s = [F.log_softmax(s / student_temp, dim=-1) for s in logits_s]
    total, n_terms = logits_s[0].new_zeros(()), 0
    for i, q in enumerate(probs_t):
        for v, ls in enumerate(log_s):
            if v == i:
                continue
            total = total + (-q * ls).sum(dim=-1).mean()
            n_terms += 1
    return total / n_terms


def center_update(center: torch.Tensor, batch_mean: torch.Tensor, momentum: float) -> torch.Tensor:
    """Eq. (4): ``m c + (1 - m) mean_b g_t(x_b)``."""
    return center * momentum + batch_mean * (1.0 - momentum)


class DINOLoss(nn.Module):
    """Keeps the centre (a checkpointed buffer, (1, K)) and the fixed temperatures; the teacher
    temperature arrives per call (it follows a schedule, see :func:`teacher_temp_at`)."""

    center: torch.Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out: list[torch.Tensor], teacher_out: list[torch.Tensor], teacher_temp: float,
                reduce_mean: ReduceMean = lambda t: t.detach()) -> dict[str, torch.Tensor]:
        probs = [teacher_probs(t, self.center, teacher_temp) for t in teacher_out]
        loss = dino_cross_entropy(probs, student_out, self.student_temp)
        with torch.no_grad():
            t_all = torch.cat(teacher_out).detach()  # (n_global * B, K)
            batch_mean = reduce_mean(t_all.mean(dim=0, keepdim=True))  # equal shards: global mean
            self.center.copy_(center_update(self.center, batch_mean, self.center_momentum))
            p = torch.cat(probs)
            entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean()
        return {"loss": loss, "teacher_entropy": entropy, "teacher_temp": loss.new_tensor(teacher_temp)}
