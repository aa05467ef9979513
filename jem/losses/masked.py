"""data2vec for images: Baevski, Hsu, Xu, Babu, Gu, Auli 2022, "data2vec: A General Framework for
Self-supervised Learning in Speech, Vision and Language", arXiv:2202.03555, section 3.

Targets, section 3.3: with ``a^l_t`` the output of teacher block ``l`` at token ``t`` and L blocks,
``y_t = (1/K) sum_{l=L-K+1}^{L} LN(a^l_t)`` where ``LN`` is a parameter-less layer normalisation
over the channel dimension ("each layer-normalised"; ``top_k`` = K, 6 for ViT-B in the paper's
vision setup). ``norm_average`` additionally layer-normalises the average (the reference vision
configuration ``layer_norm_targets``; off by default, as the paper's text).

Objective, section 3.3 eq. (1): Smooth L1 between the student's regression ``f_t(x)`` and ``y_t``
at masked tokens only, ``0.5 (y - f)^2 / beta`` if ``|y - f| <= beta`` else ``|y - f| - 0.5 beta``,
summed over channels and scaled by ``1/sqrt(D)`` (reference ``loss_scale``), averaged over the
masked tokens; ``beta`` = 2 in the reference vision configuration; ``beta = 0`` gives the squared
error.

Shapes: layers: list of L tensors (B, T, D); predictions and targets (M, D) for the M masked tokens
of the batch. The loss is a mean over masked tokens; with the same masking ratio every image has
the same number of masked tokens, so per-worker means averaged by DDP equal the single-process loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def instance_norm_tokens(t: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each channel normalised over the T tokens of its image (data2vec's speech / data2vec 2.0
    target normalisation): (B, T, D) -> (B, T, D), zero mean and unit (biased) variance over T."""
    mean = t.mean(dim=1, keepdim=True)
    var = t.var(dim=1, unbiased=False, keepdim=True)
    return (t - mean) / torch.sqrt(var + eps)


def data2vec_targets(layers: list[torch.Tensor], top_k: int, norm_each: bool | str = True,
                     norm_average: bool = False) -> torch.Tensor:
    """Average of the top ``top_k`` block outputs, each normalised: L x (B, T, D) -> (B, T, D).

    ``norm_each``: ``True`` / ``"layer"`` = parameter-less layer norm over channels (the paper's
    vision and NLP choice), ``"instance"`` = instance norm over tokens (its speech choice, and
    data2vec 2.0's), ``False`` = none."""
    if not 1 <= top_k <= len(layers):
        raise ValueError(f"data2vec: top_k = {top_k} but the teacher has {len(layers)} blocks")
    top = list(layers[-top_k:])
    if norm_each == "instance":
        top = [instance_norm_tokens(t) for t in top]
    elif norm_each:
        top = [F.layer_norm(t, t.shape[-1:]) for t in top]
    y = torch.stack(top).mean(dim=0)
    return F.layer_norm(y, y.shape[-1:]) if norm_average else y


def regression_loss(pred: torch.Tensor, target: torch.Tensor, beta: float = 2.0, scale: float | None = None
                    ) -> torch.Tensor:
    """Eq. (1) per token summed over channels, times ``scale`` (default 1/sqrt(D)), mean over tokens."""
    if beta == 0:
        per = F.mse_loss(pred, target, reduction="none").sum(dim=-1)
    else:
        per = F.smooth_l1_loss(pred, target, reduction="none", beta=beta).sum(dim=-1)
    s = scale if scale is not None else 1.0 / math.sqrt(pred.shape[-1])
    return per.mean() * s


class Data2VecLoss(nn.Module):
    """Thin module: targets from the teacher's block outputs, regression at the masked tokens."""

    def __init__(self, top_k: int = 6, beta: float = 2.0, norm_average: bool = False, target_norm: str = "layer"
                 ) -> None:
        super().__init__()
        self.top_k, self.beta, self.norm_average, self.target_norm = top_k, beta, norm_average, target_norm

    def forward(self, pred: torch.Tensor, teacher_layers: list[torch.Tensor], mask: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        """pred (M, D) student regressions at the masked tokens; mask (B, T) bool with M True."""
        with torch.no_grad():
            y = data2vec_targets(teacher_layers, self.top_k, self.target_norm, self.norm_average)[mask]  # (M, D)
        loss = regression_loss(pred, y, self.beta)
        with torch.no_grad():  # the reference's collapse diagnostics: per-channel std over tokens
            target_std = y.std(dim=0).mean()
            pred_std = pred.detach().std(dim=0).mean()
        return {"loss": loss, "target_std": target_std, "pred_std": pred_std}
