"""AVID and CMA: Morgado, Vasconcelos, Misra 2021, "Audio-Visual Instance Discrimination with
Cross-Modal Agreement", arXiv:2004.12943 (reference: facebookresearch/AVID-CMA, criterions/).

Two memory banks, one per modality: ``bank_v`` (N, D) of the visual encoder's L2-normalised
embeddings and ``bank_a`` (N, D) of the audio encoder's, random unit vectors at the start and
updated after every step by ``m <- normalise(momentum m + (1 - momentum) f)`` (momentum 0.5).

* **AVID** (section 3, cross-modal instance discrimination, eq. 2-3): the visual embedding
  ``v_i`` of sample ``i`` must pick out the audio bank entry of the same sample ``a'_i`` among the
  others (``v2a``), and the audio embedding ``a_i`` the visual entry ``v'_i`` (``a2v``); the loss
  is ``(L_v2a + L_a2v) / 2``. Within-modal terms (``v2v``, ``a2a``) are not used: the paper shows
  they hurt (Table 1).
* **CMA** (section 4): the positive set ``P_i`` is the ``pos_k`` samples ``j != i`` with the
  highest agreement ``min(v'_i . v'_j, a'_i . a'_j)``: neighbours in *both* modalities' banks
  (:func:`agreement_positives`; the reference's ``consensus`` sampling). ``P_i`` is removed from
  ``i``'s negatives in every term (so agreeing samples are no longer pushed apart), and a
  within-modal positive-set term pulls ``v_i`` towards ``v'_j`` and ``a_i`` towards ``a'_j`` for
  ``j`` in ``P_i``: ``L = (L_xmodal + within_weight L_within) / (1 + within_weight)`` (the
  reference's coefficient normalisation, ``xModalInstCoeff`` 1 and ``wModalPosCoeff`` lambda).

Each term, for an anchor ``f`` (B, D), a bank ``M`` and positives ``p`` (B, P) of bank rows, scores
``s_j = f . M_j / tau`` (tau = 0.07) and averages over the positives:

* ``softmax`` (the non-parametric softmax over the whole bank, exact; what NPID uses on small
  data): ``l_p = -log(e^{s_p} / (e^{s_p} + sum_{j in neg} e^{s_j}))`` where ``neg`` is every row but
  ``i`` and ``P_i`` (:func:`positive_term`). With no positive set and ``p = i`` this is the
  cross-entropy of the full softmax at ``i``.
* ``nce`` (the reference's NCECriterion, eq. 3): ``K`` negatives drawn uniformly from ``neg``;
  ``h(s) = e^s / (e^s + K Z)``, ``l = -mean_p log h(s_p) - sum_k log(1 - h(s_k))``, with ``Z`` the
  mean of ``e^{s_k}`` over the first batch's ``v2a`` negatives (averaged over workers), then fixed
  (:func:`nce_term`). The within-modal term uses the first ``num_negatives_within`` negatives.

Deviations from the reference: negatives never include the sample itself (the reference's CMA
sampler can draw it); the positive set of a sample excludes it by construction rather than by
dropping the top-1 neighbour; the positive set is recomputed on every worker from identical banks
instead of on rank 0 and broadcast; computed in the log domain.

Distributed: every term is a per-sample mean over this worker's batch (DDP's gradient averaging
gives the single-process value and gradient of the whole batch); banks are updated with the
features and indices gathered from all workers, so they stay identical on every worker.

Shapes: embeddings (B, D) L2-normalised; banks (N, D); indices (B,) int64; positives (N, P).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jem.dist import all_reduce_mean_nograd, gather_nograd

NoGrad = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def agreement_positives(bank_v: torch.Tensor, bank_a: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """(N, k) int64: for each row ``i`` the ``k`` rows ``j != i`` with the largest
    ``min(bank_v[i] . bank_v[j], bank_a[i] . bank_a[j])``, sorted by index."""
    n = bank_v.shape[0]
    if not 0 < k < n:
        raise ValueError(f"CMA positive set size {k} must be between 1 and N - 1 = {n - 1}")
    out = []
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(n, start + chunk), device=bank_v.device)
        agree = torch.minimum(bank_v[rows] @ bank_v.T, bank_a[rows] @ bank_a.T)  # (c, N)
        agree[torch.arange(len(rows)), rows] = -math.inf  # never its own positive
        out.append(agree.topk(k, dim=1).indices.sort(dim=1).values)
    return torch.cat(out)


def negative_mask(idx: torch.Tensor, n: int, positives: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N) bool: bank rows that are negatives of each sample of ``idx``: all but itself and,
    with a positive set (N, P), its positives."""
    allowed = torch.ones(len(idx), n, dtype=torch.bool, device=idx.device)
    allowed[torch.arange(len(idx), device=idx.device), idx] = False
    if positives is not None:
        allowed.scatter_(1, positives[idx].to(idx.device), False)
    return allowed


def positive_term(f: torch.Tensor, bank: torch.Tensor, pos: torch.Tensor, allowed: torch.Tensor,
                  temperature: float) -> torch.Tensor:
    """Per-sample softmax term (B,): mean over positives ``pos`` (B, P) of
    ``-log(e^{s_p} / (e^{s_p} + sum_{allowed j} e^{s_j}))``, ``s = f bank^T / tau``."""
    s = f @ bank.T / temperature  # (B, N)
    lse_neg = torch.logsumexp(s.masked_fill(~allowed, -math.inf), dim=1, keepdim=True)  # (B, 1)
    s_pos = s.gather(1, pos)  # (B, P)
    return -(s_pos - torch.logaddexp(s_pos, lse_neg)).mean(dim=1)


def nce_term(f: torch.Tensor, bank: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, temperature: float,
             log_z: float) -> torch.Tensor:
    """Per-sample NCE term (B,): ``-mean_p log h(s_p) - sum_k log(1 - h(s_k))``, ``h(s) = e^s / (e^s + K Z)``
    with ``K`` = ``neg.shape[1]`` sampled negatives (B, K)."""
    log_kz = math.log(neg.shape[1]) + log_z
    s_pos = torch.einsum("bpd,bd->bp", bank[pos], f) / temperature  # (B, P)
    s_neg = torch.einsum("bkd,bd->bk", bank[neg], f) / temperature  # (B, K)
    log_h_pos = s_pos - torch.logaddexp(s_pos, torch.full_like(s_pos, log_kz))
    log_1mh_neg = log_kz - torch.logaddexp(s_neg, torch.full_like(s_neg, log_kz))
    return -(log_h_pos.mean(dim=1) + log_1mh_neg.sum(dim=1))


def sample_negatives(allowed: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, k) int64 rows drawn uniformly, with replacement, among each sample's allowed rows."""
    return torch.multinomial(allowed.cpu().double(), k, replacement=True, generator=generator).to(allowed.device)


@torch.no_grad()
def bank_update(bank: torch.Tensor, idx: torch.Tensor, f: torch.Tensor, momentum: float) -> None:
    """In place: ``bank[idx] <- normalise(momentum bank[idx] + (1 - momentum) f)``."""
    bank[idx] = F.normalize(momentum * bank[idx] + (1.0 - momentum) * f.detach().to(bank.dtype), dim=1)


class AVIDLoss(nn.Module):
    """Keeps the two banks, the CMA positive set and the fixed NCE normaliser (all checkpointed
    through ``get_extra_state``, so DDP never broadcasts them) and the hyperparameters."""

    def __init__(self, temperature: float = 0.07, momentum: float = 0.5, loss: str = "softmax",
                 num_negatives: int = 1024, within_weight: float = 1.0, num_negatives_within: int = 64) -> None:
        super().__init__()
        if loss not in ("softmax", "nce"):
            raise ValueError(f"AVID loss must be 'softmax' or 'nce'; got {loss!r}")
        self.temperature, self.momentum, self.kind = temperature, momentum, loss
        self.num_negatives, self.within_weight, self.num_negatives_within = (
            num_negatives, within_weight, num_negatives_within)
        self.bank_v: torch.Tensor | None = None
        self.bank_a: torch.Tensor | None = None
        self.positives: torch.Tensor | None = None  # (N, P) once CMA has started
        self.log_z: float | None = None

    def init_banks(self, n: int, dim: int, generator: torch.Generator, device: torch.device) -> None:
        """Random unit vectors (N, D) for both banks (kept when a resumed run already has them)."""
        if self.bank_v is None or self.bank_v.shape != (n, dim):
            self.bank_v = F.normalize(torch.randn(n, dim, generator=generator), dim=1)
            self.bank_a = F.normalize(torch.randn(n, dim, generator=generator), dim=1)
            self.positives, self.log_z = None, None
        assert self.bank_a is not None
        self.bank_v, self.bank_a = self.bank_v.to(device), self.bank_a.to(device)
        if self.positives is not None:
            self.positives = self.positives.to(device)

    def find_positives(self, k: int) -> None:
        """The CMA positive sets of every sample from the current banks."""
        if self.bank_v is None or self.bank_a is None:
            raise RuntimeError("AVID memory banks are not initialised")
        self.positives = agreement_positives(self.bank_v, self.bank_a, k)

    def forward(self, fv: torch.Tensor, fa: torch.Tensor, idx: torch.Tensor, generator: torch.Generator | None = None,
                mean_nograd: NoGrad = all_reduce_mean_nograd) -> dict[str, torch.Tensor]:
        """``fv``, ``fa`` (B, D) L2-normalised visual and audio embeddings of samples ``idx`` (B,)."""
        bv, ba = self.bank_v, self.bank_a
        if bv is None or ba is None:
            raise RuntimeError("AVID memory banks are not initialised (on_epoch_start sets them up)")
        allowed = negative_mask(idx, bv.shape[0], self.positives)  # (B, N)
        own = idx[:, None]  # (B, 1)
        cma = self.positives is not None and self.within_weight > 0
        pos = self.positives[idx] if (cma and self.positives is not None) else own
        tau = self.temperature
        if self.kind == "softmax":
            xmodal = (positive_term(fv, ba, own, allowed, tau).mean() + positive_term(fa, bv, own, allowed, tau).mean())
            within = ((positive_term(fv, bv, pos, allowed, tau).mean() + positive_term(fa, ba, pos, allowed, tau).mean())
                      if cma else None)
        else:
            neg = sample_negatives(allowed, self.num_negatives, generator)
            if self.log_z is None:  # once, on the first batch (v2a negatives): the workers' mean
                with torch.no_grad():
                    z = torch.einsum("bkd,bd->bk", ba[neg], fv.detach()).div(tau).exp().mean()
                self.log_z = float(torch.log(mean_nograd(z)))
            lz = self.log_z
            xmodal = nce_term(fv, ba, own, neg, tau, lz).mean() + nce_term(fa, bv, own, neg, tau, lz).mean()
            nw = neg[:, : self.num_negatives_within]
            within = (nce_term(fv, bv, pos, nw, tau, lz).mean() + nce_term(fa, ba, pos, nw, tau, lz).mean()
                      if cma else None)
        xmodal = xmodal / 2
        out = {"xmodal": xmodal.detach()}
        if within is None:
            out["loss"] = xmodal
        else:
            within = within / 2
            out["within"] = within.detach()
            out["loss"] = (xmodal + self.within_weight * within) / (1.0 + self.within_weight)
        if self.log_z is not None:
            out["log_z"] = xmodal.new_tensor(self.log_z)
        return out

    @torch.no_grad()
    def update(self, fv: torch.Tensor, fa: torch.Tensor, idx: torch.Tensor, gather: NoGrad = gather_nograd) -> None:
        """Momentum update of both banks' rows of every worker's batch (identical on all workers)."""
        if self.bank_v is not None and self.bank_a is not None:
            all_idx = gather(idx)
            bank_update(self.bank_v, all_idx, gather(fv), self.momentum)
            bank_update(self.bank_a, all_idx, gather(fa), self.momentum)

    def get_extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for name in ("bank_v", "bank_a", "positives"):
            t = getattr(self, name)
            if t is not None:
                state[name] = t.detach().cpu()
        if self.log_z is not None:
            state["log_z"] = torch.tensor(self.log_z, dtype=torch.float64)
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for name in ("bank_v", "bank_a", "positives"):
            setattr(self, name, state[name].clone() if name in state else None)
        self.log_z = float(state["log_z"]) if "log_z" in state else None
