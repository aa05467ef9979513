"""Method registry. A method lives in ``jem/methods/<name>.py`` and registers its class with
:func:`register`; its hyperparameters live in :mod:`jem.method_params` (light, for validation).
Modules are imported lazily, so listing methods does not import torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jem.method_params import METHOD_PARAMS, describe

if TYPE_CHECKING:
    from jem.methods.base import Method

_CLASSES: dict[str, type] = {}


def register(name: str) -> Any:
    def deco(cls: type) -> type:
        if name not in METHOD_PARAMS:
            raise ValueError(f"method {name!r} has no hyperparameters in jem/method_params.py")
        cls.name = name  # type: ignore[attr-defined]
        _CLASSES[name] = cls
        return cls

    return deco


def method_names() -> list[str]:
    return sorted(METHOD_PARAMS)


def get_method_class(name: str) -> type[Method]:
    if name not in METHOD_PARAMS:
        raise KeyError(f"method {name!r} is not registered; choose one of: {', '.join(method_names())}")
    if name not in _CLASSES:
        importlib.import_module(f"jem.methods.{name}")
    return _CLASSES[name]


__all__ = ["register", "method_names", "get_method_class", "describe"]
