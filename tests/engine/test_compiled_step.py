"""train.compile: the compiled step against the eager step (an independent path: aten kernels one op
at a time, against inductor's fused C++ kernels of the same graph), the fallbacks, and the knob's
validation.

The compile tests build real C++ with the system compiler (inductor's CPU backend): tens of seconds
each on a 2-core machine, which is why they are marked ``compile`` and kept to one tiny model. They
run in ``make test`` like every other test; without a C++ compiler they fail with one line saying
so (``make datasets`` installs g++ in CI), never skip.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from jem.config import ConfigError, parse_config
from jem.engine.optim import build_optimizer
from jem.engine.step import STEP_COMPILABLE, NonFiniteLoss, compile_method, resolve_compile, train_step
from jem.methods import get_method_class
from jem.methods.base import StepContext

ARCH = {"backbone": "small_cnn", "width": 4, "in_channels": 1, "image_size": 8}


def _require_cpp_compiler() -> None:
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as exc:  # inductor's InvalidCxxCompiler, or whatever it raises when none is found
        pytest.fail(f"no C++ compiler for torch.compile on CPU (inductor): {exc}; install g++ "
                    "(`make datasets` does, as root)", pytrace=False)


def _method(name: str = "vicreg"):
    cfg = parse_config({"method": name, "train": {"lr": 0.3}})
    torch.manual_seed(0)
    method = get_method_class(name)(ARCH, [16, 16], cfg.method_params)
    return method, build_optimizer(method, cfg.train, cfg.train.lr)


def _views(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(16, 1, 8, 8, generator=g) for _ in range(2)]


@pytest.mark.compile
def test_compiled_step_matches_eager_step_fp32():
    """Three steps of VICReg, compiled (``step``) and eager, from the same seed on the same batches.

    Tolerance: both run float32 (unit roundoff u = 6e-8); inductor reorders and fuses the
    reductions (batch-norm statistics over 16 x 8 x 8 = 1024 values, the loss's sums over the batch
    and the 16 x 16 covariance), and a sum of n float32 terms in another order differs by up to
    about log2(n) u ~ 6e-7 relative. A step chains a handful of them forward and backward, and three
    LARS steps (lr 0.3, trust ratio 1e-3) carry the difference into the weights, so the losses and
    weights agree to well inside 1e-5 relative; a wrong graph (a missing term, a stale buffer, an
    update applied twice) is off by orders of magnitude more."""
    _require_cpp_compiler()
    eager, eager_opt = _method()
    comp, comp_opt = _method()
    model, mode = compile_method(comp, "step")
    assert mode == "step" and model is not comp
    for step in range(3):
        ctx = StepContext(0, step, 100, 10, indices=torch.arange(16))
        le = train_step(eager, eager, eager_opt, _views(step), ctx)
        lc = train_step(model, comp, comp_opt, _views(step), ctx)
        torch.testing.assert_close(lc, le, rtol=1e-5, atol=0)
    for (name, pe), pc in zip(eager.named_parameters(), comp.parameters(), strict=True):
        scale = float(pe.detach().abs().max())
        torch.testing.assert_close(pc, pe, rtol=1e-5, atol=1e-5 * scale, msg=lambda m, n=name: f"{n}: {m}")
    # the weights moved: the comparison above is of trained weights, not of two untouched copies
    fresh, _ = _method()
    assert any(not torch.equal(p, q) for p, q in zip(fresh.parameters(), comp.parameters(), strict=True))
    # the finite-loss check still stops a bad step before the update, on the compiled path
    before = [p.detach().clone() for p in comp.parameters()]
    nan_views = [torch.full_like(v, float("nan")) for v in _views(3)]
    with pytest.raises(NonFiniteLoss, match="non-finite loss"):
        train_step(model, comp, comp_opt, nan_views, StepContext(0, 3, 100, 10, indices=torch.arange(16)))
    assert all(torch.equal(b, p) for b, p in zip(before, comp.parameters(), strict=True))


def test_unsupported_method_runs_eager_with_one_line():
    method, _ = _method("moco")
    assert "moco" not in STEP_COMPILABLE  # a queue written in forward
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, mode = compile_method(method, "step")
    assert model is method and mode == "none"
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "\n" not in text and "moco" in text and "eager" in text


def test_step_on_several_workers_compiles_the_backbone_only():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_compile("step", "vicreg", world=2) == "backbone"
    assert len(caught) == 1 and "backbone" in str(caught[0].message)


def test_none_and_backbone_modes_leave_the_step_module_alone():
    method, _ = _method()
    model, mode = compile_method(method, "none")
    assert model is method and mode == "none" and method.backbone._compiled_call_impl is None
    model, mode = compile_method(method, "backbone")  # lazy: nothing compiles until a forward
    assert model is method and mode == "backbone" and method.backbone._compiled_call_impl is not None
    assert set(method.state_dict()) == set(_method()[0].state_dict())  # checkpoint keys unchanged


@pytest.mark.parametrize("value, expected", [
    ("stpe", "train.compile = 'stpe' is not allowed; choose one of: none, backbone, step; did you mean step?"),
    (True, "train.compile = True has the wrong type; expected a string"),
])
def test_bad_compile_value_is_one_config_error(value, expected):
    with pytest.raises(ConfigError) as err:
        parse_config({"train": {"compile": value}})
    assert str(err.value) == expected


def test_default_is_eager():
    assert parse_config({}).train.compile == "none"


@pytest.mark.compile
def test_training_loop_with_compile_step_matches_eager(prepared, tmp_path):
    """The loop's wiring (``_build_model`` -> ``run_epoch`` -> ``train_step``): one epoch of 4 steps on
    the digits fixture with ``train.compile: step`` against ``none``, same seed, same views. The same
    float32 argument as above bounds the epoch's mean loss to 1e-5 relative (4 steps at the scaled lr
    0.3 x 16/256); the model and batch are the ones above, so inductor's cache serves the kernels."""
    import numpy as np

    from jem.augment.cache import build_view_cache
    from jem.engine.loop import run_epoch, setup

    _require_cpp_compiler()

    class Quiet:
        def step(self) -> None:
            pass

    losses = {}
    for mode in ("none", "step"):
        cfg = parse_config({"train": {"batch_size": 16, "epochs": 1, "compile": mode, "precision": "fp32",
                                      "memory_format": "contiguous", "cpus_per_worker": 1},
                            "data": {"max_train": 64}, "model": {"width": 4, "projector": [16, 16]},
                            "augment": {"views_per_image": 2}})
        views = tmp_path / f"views-{mode}"
        build_view_cache(np.load(prepared / "train_x.npy")[:64], cfg.augment, views, cfg.seed, progress=False)
        w = setup(cfg, 0, 1, prepared, views)
        assert (w.model is w.method) == (mode == "none")
        losses[mode] = run_epoch(w, 0, Quiet())["loss"]  # type: ignore[arg-type]
        assert w.steps_per_epoch == 4
    assert losses["step"] == pytest.approx(losses["none"], rel=1e-5)
