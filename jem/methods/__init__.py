"""Method registry. A method is one module, ``jem/methods/<name>.py``, holding everything that is
the method's own: its params dataclass (``methods.<name>.*`` in params.yaml, paper defaults, each
field documented with the paper's symbol), its :class:`~jem.methods.base.Method` subclass (heads,
loss, after-step updates), its cross-field checks (``validate``) and its registration::

    @dataclass(frozen=True)
    class VICRegParams:
        inv_weight: float = knob(25.0, lo=0.0)  # lambda in the paper
        ...

    @register("vicreg", params=VICRegParams, description="...", paper="Bardes et al. 2022, arXiv:2105.04906")
    class VICReg(Method[VICRegParams]):
        ...

Methods are discovered: the first lookup imports every public module of this package once, and
the modules that call :func:`register` are the methods (the others, ``base`` and ``ema``, are
shared helpers). Adding a method therefore touches no list anywhere. The lookup imports torch.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from jem.methods.base import Method

C = TypeVar("C", bound=type)


@dataclass(frozen=True)
class MethodSpec:
    """One registered method."""

    name: str
    cls: type[Method]
    params: type  # frozen dataclass of methods.<name>.* (its defaults are the shipped params.yaml block)
    description: str  # one line, for `jem methods`
    paper: str  # authors, year, arXiv id


_REGISTRY: dict[str, MethodSpec] = {}
_discovered = False


def register(name: str, *, params: type, description: str, paper: str) -> Callable[[C], C]:
    """Class decorator: register a :class:`~jem.methods.base.Method` subclass as ``name`` with its
    params dataclass, a one-line description and its paper."""

    def deco(cls: C) -> C:
        old = _REGISTRY.get(name)
        if old is not None and old.cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"method {name!r} registered twice ({old.cls.__module__}, {cls.__module__})")
        cls.name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = MethodSpec(name, cls, params, description, paper)  # type: ignore[arg-type]
        return cls

    return deco


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True  # set first: a method module may use the registry while it is imported
    try:
        for mod in pkgutil.iter_modules(__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{__name__}.{mod.name}")
    except BaseException:
        _discovered = False
        raise


def registry() -> dict[str, MethodSpec]:
    """Every registered method, by name (sorted)."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def method_names() -> list[str]:
    return list(registry())


def image_methods() -> list[str]:
    """The registered methods that train on images alone (the audio-visual ones, ``n_audio`` > 0,
    need an audio-visual data set): what the image benchmarks mean by "all"."""
    return [name for name, spec in registry().items() if not spec.cls.n_audio]


def get_spec(name: str) -> MethodSpec:
    specs = registry()
    if name not in specs:
        raise KeyError(f"method {name!r} is not registered; choose one of: {', '.join(specs)}")
    return specs[name]


def get_method_class(name: str) -> type[Method]:
    return get_spec(name).cls


def params_class(name: str) -> type:
    """The params dataclass of method ``name``; ``params_class(name)()`` is its defaults."""
    return get_spec(name).params


def describe(name: str) -> dict[str, Any]:
    spec = get_spec(name)
    return {"name": name, "description": spec.description, "paper": spec.paper}


__all__ = ["MethodSpec", "register", "registry", "method_names", "get_spec", "get_method_class", "params_class",
           "describe"]
