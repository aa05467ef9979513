"""The method registry: every method is one module (``jem/methods/<name>.py``) holding its params
dataclass, its Method subclass (generic over those params) and its registration; discovery finds
them all; unknown names fail with one line."""

import dataclasses
import typing

import pytest

from jem.config import ConfigError, parse_config
from jem.methods import describe, get_method_class, method_names, registry
from jem.methods.base import Method


def test_every_method_is_one_module_with_its_params_and_paper():
    specs = registry()
    assert len(specs) >= 17 and list(specs) == sorted(specs) == method_names()
    for name, spec in specs.items():
        module = f"jem.methods.{name}"
        assert spec.cls.__module__ == module and spec.params.__module__ == module, name
        assert issubclass(spec.cls, Method) and spec.cls.name == name
        generic = [b for b in getattr(spec.cls, "__orig_bases__", ()) if typing.get_origin(b) is Method]
        assert [typing.get_args(b) for b in generic] == [(spec.params,)], f"{name}: not Method[{spec.params.__name__}]"
        assert dataclasses.is_dataclass(spec.params) and spec.params.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert spec.description and "\n" not in spec.description
        assert "arXiv:" in spec.paper, name
        assert describe(name) == {"name": name, "description": spec.description, "paper": spec.paper}


def test_unknown_method_names_fail_with_one_line():
    with pytest.raises(KeyError, match="method 'wsme' is not registered; choose one of: autoencoder"):
        get_method_class("wsme")
    with pytest.raises(ConfigError, match="method 'wsme' is not registered; choose one of: .*did you mean wmse"):
        parse_config({"method": "wsme"})


def test_validate_hooks_see_the_whole_config():
    """The method-specific checks live on the method classes and run only for the selected method."""
    assert parse_config({"method": "vicreg", "train": {"batch_size": 4}}).train.batch_size == 4
    with pytest.raises(ConfigError, match="train.batch_size = 4 is too small for methods.moco.bn_splits = 4"):
        parse_config({"method": "moco", "train": {"batch_size": 4}})
    with pytest.raises(ConfigError, match=r"train.batch_size = 16 x 2 worker\(s\) must exceed methods.wmse.emb_dim = 32"):
        parse_config({"method": "wmse", "train": {"batch_size": 16, "workers": 2}})
    assert get_method_class("data2vec").backbones == ("vit_tiny",) and get_method_class("vicreg").backbones == ()
