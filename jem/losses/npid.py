"""Instance discrimination with a memory bank (NPID / InstDisc): Wu, Xiong, Yu, Lin 2018,
"Unsupervised Feature Learning via Non-Parametric Instance Discrimination", arXiv:1805.01978.

Every training image ``i`` is its own class. Features ``f`` are L2-normalised (dim 128 in the
paper) and compared with a memory bank ``V`` (N, D) of L2-normalised features of all N images.

* Non-parametric softmax, eq. (2): ``P(i | f) = exp(v_i^T f / tau) / sum_j exp(v_j^T f / tau)``
  over the whole bank; loss ``-log P(i | f_i)`` where the positive ``v_i`` is the bank entry of the
  same image (:func:`softmax_loss`). ``temperature`` = tau (0.07 in the paper).
* NCE, section 3.2 eq. (3)-(6): with ``m`` noise indices drawn uniformly (``P_n = 1/N``),
  ``P(i | f) = exp(v_i^T f / tau) / Z``, ``h(i, f) = P(i | f) / (P(i | f) + m P_n)``, loss
  ``-log h(i, f_i) - sum_{j=1}^m log(1 - h(j, f_i))`` (:func:`nce_loss`). ``Z`` is estimated once,
  on the first batch, as ``N * mean exp(v^T f / tau)`` over its positive and noise entries, then
  kept fixed (as the paper and the reference ``NCEAverage``). Deviation: computed in the log
  domain without the reference's ``1e-7`` added to the denominators.
* Proximal regularisation, section 3.3 eq. (7)-(8): ``prox_weight * ||f_i - v_i||^2`` (lambda;
  the paper compares 0, 10, 30, 50; the reference code uses none, so the default is 0).
* Bank update (reference ``NCEAverage`` backward): ``v_i <- normalise(momentum v_i + (1 - momentum)
  f_i)`` with momentum 0.5 (:func:`bank_update`). The bank starts as random unit vectors (paper);
  the reference draws uniform entries of expected unit norm, which is the same up to normalisation.

Distributed: the loss is a per-sample mean over this worker's batch (DDP averaging gives the
single-process value and gradient on the whole batch); the bank update uses the features and
indices gathered from all workers (``gather_nograd``), so every worker's bank stays identical and
equal to the single-process bank; ``Z`` is the workers' mean estimate.

Shapes: features (B, D) L2-normalised; bank (N, D); indices (B,) int64; noise indices (B, m).
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


def init_bank(n: int, dim: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, D) random unit vectors."""
    return F.normalize(torch.randn(n, dim, generator=generator), dim=1).to(device)


def softmax_loss(f: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. (2): mean over the batch of ``-log softmax_j(v_j^T f_b / tau)[idx_b]``."""
    logits = f @ bank.T / temperature  # (B, N)
    return F.cross_entropy(logits, idx)


def nce_log_terms(f: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor, noise_idx: torch.Tensor,
                  temperature: float, log_z: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``log h`` of the positives (B,) and ``log(1 - h)`` of the noise samples (B, m)."""
    n, m = bank.shape[0], noise_idx.shape[1]
    log_mpn = math.log(m / n)  # log(m * P_n)
    pos = (bank[idx] * f).sum(dim=1) / temperature - log_z  # (B,) log P(i | f)
    neg = torch.einsum("bmd,bd->bm", bank[noise_idx], f) / temperature - log_z  # (B, m)
    log_h_pos = pos - torch.logaddexp(pos, torch.full_like(pos, log_mpn))
    log_1mh_neg = log_mpn - torch.logaddexp(neg, torch.full_like(neg, log_mpn))
    return log_h_pos, log_1mh_neg


def nce_loss(f: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor, noise_idx: torch.Tensor,
             temperature: float, log_z: float) -> torch.Tensor:
    """Eq. (6): mean over the batch of ``-log h(i, f_i) - sum_j log(1 - h(j, f_i))``."""
    log_h_pos, log_1mh_neg = nce_log_terms(f, bank, idx, noise_idx, temperature, log_z)
    return -(log_h_pos + log_1mh_neg.sum(dim=1)).mean()


@torch.no_grad()
def estimate_log_z(f: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor, noise_idx: torch.Tensor,
                   temperature: float) -> torch.Tensor:
    """``log Z`` with ``Z = N * mean exp(v^T f / tau)`` over the positive and noise entries (B, m+1)."""
    cols = torch.cat([idx[:, None], noise_idx], dim=1)  # (B, m+1)
    sims = torch.einsum("bmd,bd->bm", bank[cols], f.detach()) / temperature
    return torch.log(sims.exp().mean() * bank.shape[0])


def proximal_term(f: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Eq. (8): mean over the batch of ``||f_i - v_i||^2`` (v_i: the bank entry before this step)."""
    return (f - bank[idx]).pow(2).sum(dim=1).mean()


@torch.no_grad()
def bank_update(bank: torch.Tensor, idx: torch.Tensor, f: torch.Tensor, momentum: float) -> None:
    """In place: ``bank[idx] <- normalise(momentum * bank[idx] + (1 - momentum) * f)``."""
    bank[idx] = F.normalize(momentum * bank[idx] + (1.0 - momentum) * f.detach().to(bank.dtype), dim=1)


class NPIDLoss(nn.Module):
    """Keeps the memory bank (checkpointed through ``get_extra_state``, so DDP never broadcasts it),
    the fixed NCE normaliser and the hyperparameters."""

    def __init__(self, temperature: float = 0.07, momentum: float = 0.5, loss: str = "softmax", nce_k: int = 4096,
                 prox_weight: float = 0.0) -> None:
        super().__init__()
        if loss not in ("softmax", "nce"):
            raise ValueError(f"NPID loss must be 'softmax' or 'nce'; got {loss!r}")
        self.temperature, self.momentum, self.kind, self.nce_k, self.prox_weight = (
            temperature, momentum, loss, nce_k, prox_weight)
        self.bank: torch.Tensor | None = None
        self.log_z: float | None = None

    def init_bank(self, n: int, dim: int, generator: torch.Generator, device: torch.device) -> None:
        if self.bank is None or self.bank.shape != (n, dim):
            self.bank = init_bank(n, dim, generator, device)
            self.log_z = None
        self.bank = self.bank.to(device)

    def forward(self, f: torch.Tensor, idx: torch.Tensor, generator: torch.Generator | None = None,
                mean_nograd: NoGrad = all_reduce_mean_nograd) -> dict[str, torch.Tensor]:
        """``f`` (B, D) L2-normalised features of the images ``idx`` (B,) -> loss and diagnostics."""
        bank = self.bank
        if bank is None:
            raise RuntimeError("NPID memory bank is not initialised (on_epoch_start sets it up)")
        out: dict[str, torch.Tensor] = {}
        if self.kind == "softmax":
            loss = softmax_loss(f, bank, idx, self.temperature)
        else:
            noise = torch.randint(bank.shape[0], (f.shape[0], self.nce_k), generator=generator).to(f.device)
            if self.log_z is None:  # once, on the first batch: the workers' mean estimate
                z = estimate_log_z(f, bank, idx, noise, self.temperature).exp()
                self.log_z = float(torch.log(mean_nograd(z)))
            loss = nce_loss(f, bank, idx, noise, self.temperature, self.log_z)
            out["log_z"] = loss.new_tensor(self.log_z)
        if self.prox_weight > 0:
            prox = proximal_term(f, bank, idx)
            loss = loss + self.prox_weight * prox
            out["prox"] = prox.detach()
        out["loss"] = loss
        return out

    @torch.no_grad()
    def update(self, f: torch.Tensor, idx: torch.Tensor, gather: NoGrad = gather_nograd) -> None:
        """Momentum update of the bank rows of every worker's batch (identical on all workers)."""
        if self.bank is not None:
            bank_update(self.bank, gather(idx), gather(f), self.momentum)

    def get_extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.bank is not None:
            state["bank"] = self.bank.detach().cpu()
        if self.log_z is not None:
            state["log_z"] = torch.tensor(self.log_z, dtype=torch.float64)
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.bank = state["bank"].clone() if "bank" in state else None
        self.log_z = float(state["log_z"]) if "log_z" in state else None
