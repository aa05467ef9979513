"""AVID + CMA (Morgado, Vasconcelos, Misra 2021, arXiv:2004.12943, section 4): AVID
(:mod:`jem.methods.avid`, same encoders and heads) for the first ``warmup_epochs`` epochs (the
reference starts CMA from an AVID checkpoint), then the cross-modal agreement positive set is
computed from the two memory banks and recomputed every ``resample_every`` epochs (reference: 5):
positives stop being negatives and a within-modal positive-set term is added
(:mod:`jem.losses.avid`). The positive set is computed on every worker from identical banks, so
it is identical everywhere, and checkpointed with the banks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jem._schema import knob
from jem.losses.avid import AVIDLoss
from jem.methods import register
from jem.methods.avid import AVID, AVIDParams
from jem.methods.base import EpochData, Method


@dataclass(frozen=True)
class AVIDCMAParams(AVIDParams):
    pos_k: int = knob(32, lo=1)  # CMA positive set size; reference 32 (Kinetics, AudioSet)
    within_weight: float = knob(1.0, lo=0.0)  # lambda of the within-modal positive-set term; reference 1
    num_negatives_within: int = knob(64, lo=1)  # NCE negatives of the within-modal term; reference 64
    warmup_epochs: int = knob(5, lo=0)  # AVID-only epochs before the first positive set
    resample_every: int = knob(5, lo=1)  # recompute the positive set every this many epochs; reference 5


@register("avid_cma", params=AVIDCMAParams,
          description="AVID plus cross-modal agreement: samples close in both modalities' banks become positives "
                      "for within-modal discrimination and stop being negatives",
          paper="Morgado, Vasconcelos, Misra 2021, arXiv:2004.12943")
class AVIDCMA(AVID, Method[AVIDCMAParams]):  # AVID's encoders and hooks; Method[...] names its params type
    params: AVIDCMAParams  # type: ignore[assignment]

    @staticmethod
    def make_loss(p: Any) -> AVIDLoss:
        return AVIDLoss(p.temperature, p.momentum, p.loss, p.num_negatives, p.within_weight, p.num_negatives_within)

    def on_epoch_start(self, data: EpochData) -> None:
        super().on_epoch_start(data)
        p, n = self.params, data.images.shape[0]
        if p.pos_k >= n - 1:
            raise ValueError(f"methods.avid_cma.pos_k = {p.pos_k} must be below the {n} training samples minus one")
        since = data.epoch - p.warmup_epochs
        if since >= 0 and since % p.resample_every == 0:
            self.loss.find_positives(p.pos_k)
