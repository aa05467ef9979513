"""Hyperparameters of every registered method: ``methods.<name>.*`` in params.yaml.

This file is deliberately light (no torch) so that params validation and ``jem methods`` are
instant. Each method registers a frozen dataclass here with :func:`register_params`, plus a one-line
description and its paper; the implementation lives in ``jem/methods/<name>.py``.

Optional field ``views`` says how many global views per image the method consumes (default 2);
validation checks it against ``augment.views_per_image``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jem._schema import knob

# name -> (params dataclass, description, paper)
METHOD_PARAMS: dict[str, tuple[type, str, str]] = {}


def register_params(name: str, description: str, paper: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in METHOD_PARAMS:
            raise ValueError(f"method params {name!r} registered twice")
        METHOD_PARAMS[name] = (cls, description, paper)
        return cls

    return deco


@register_params("vicreg", "variance-invariance-covariance regularisation of two views",
                 "Bardes, Ponce, LeCun 2022, arXiv:2105.04906")
@dataclass(frozen=True)
class VICRegParams:
    inv_weight: float = knob(25.0, lo=0.0)  # lambda in the paper
    var_weight: float = knob(25.0, lo=0.0)  # mu
    cov_weight: float = knob(1.0, lo=0.0)  # nu
    gamma: float = knob(1.0, gt=0.0)  # target std
    eps: float = knob(1.0e-4, gt=0.0)


@register_params("simclr", "contrastive NT-Xent over two views, negatives from all workers",
                 "Chen, Kornblith, Norouzi, Hinton 2020, arXiv:2002.05709")
@dataclass(frozen=True)
class SimCLRParams:
    temperature: float = knob(0.2, gt=0.0, hi=10.0)


# --- contrastive / information-maximisation params (moco, barlow, wmse) go here ---


# --- distillation / clustering params (byol, simsiam, dino, swav) go here ---


def describe(name: str) -> dict[str, Any]:
    cls, description, paper = METHOD_PARAMS[name]
    return {"name": name, "description": description, "paper": paper}
