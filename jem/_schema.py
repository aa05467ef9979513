"""The one helper shared by every params dataclass: a field with validation rules attached."""

from __future__ import annotations

from dataclasses import field
from functools import partial
from typing import Any

OPTIMIZERS = ("sgd", "adamw", "lars")
# method params with these names replace train.<name> for that method (its paper's own recipe)
TRAIN_OVERRIDES = ("optimizer", "lr", "weight_decay")


def knob(default: Any, **rules: Any) -> Any:
    """A dataclass field with a default (lists are copied) and validation rules in its metadata.

    Rules understood by :mod:`jem.config`: ``choices``, ``lo``/``hi`` (inclusive), ``gt``
    (strict lower bound), ``pair`` (a ``[low, high]`` list), ``min_len`` and ``item_lo`` (lists of
    integers).
    """
    if isinstance(default, list):
        return field(default_factory=partial(list, default), metadata=rules)
    return field(default=default, metadata=rules)
