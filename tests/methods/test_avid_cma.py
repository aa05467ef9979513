"""avid and avid_cma through the Method interface (two encoders, banks, CMA schedule) and through the
engine's own setup and epoch loop on a prepared audio-visual folder with its view and audio caches."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from jem.config import ConfigError, defaults_dict, parse_config
from jem.engine.optim import build_optimizer
from jem.methods import get_method_class
from jem.methods.base import EpochData, StepContext

CNN = {"backbone": "small_cnn", "width": 4, "in_channels": 1, "image_size": 8}
N, BATCH = 60, 16


def _cfg(name: str, **method):
    base = yaml.safe_load(yaml.safe_dump(defaults_dict()))
    return parse_config(dict(base, method=name, dataset="av-digits",
                             data=dict(base["data"], audio_root="/nowhere"),
                             methods=dict(base["methods"], **{name: dict(base["methods"][name], **method)})))


def test_needs_an_audio_visual_data_set_and_cached_views():
    base = defaults_dict()
    with pytest.raises(ConfigError, match="method avid needs an audio-visual data set"):
        parse_config(dict(base, method="avid"))
    with pytest.raises(ConfigError, match="set augment.views_per_image > 0"):
        base = yaml.safe_load(yaml.safe_dump(defaults_dict()))
        parse_config(dict(base, method="avid_cma", dataset="av-digits", data=dict(base["data"], audio_root="/x"),
                          augment=dict(base["augment"], views_per_image=0)))


@pytest.mark.parametrize("name, overrides", [("avid", {}), ("avid", {"loss": "nce", "num_negatives": 8}),
                                             ("avid_cma", {"warmup_epochs": 1, "resample_every": 1, "pos_k": 4}),
                                             ("avid_cma", {"warmup_epochs": 1, "pos_k": 4, "loss": "nce",
                                                           "num_negatives": 8, "num_negatives_within": 4})])
def test_trains_both_encoders_and_updates_both_banks(name, overrides):
    cfg = _cfg(name, audio_width=4, dim=8, **overrides)
    torch.manual_seed(0)
    method = get_method_class(name)(CNN, [16, 8], cfg.method_params)
    assert method.n_global == 1 and method.n_audio == 1
    opt = build_optimizer(method, cfg.train, 0.05)
    audio0 = [p.detach().clone() for p in method.audio.parameters()]
    image0 = [p.detach().clone() for p in method.backbone.parameters()]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 8, 8, 1), dtype=np.uint8)
    step = 0
    for epoch in range(2):
        method.train()
        method.on_epoch_start(EpochData(epoch, images, [0.5], [0.25], torch.device("cpu")))
        has_positives = method.loss.positives is not None
        assert has_positives == (name == "avid_cma" and epoch >= 1)
        if has_positives:
            assert method.loss.positives.shape == (N, 4)
        for _ in range(2):
            idx = torch.from_numpy(np.sort(rng.permutation(N)[:BATCH]))
            ctx = StepContext(epoch, step, 4, 2, indices=idx)
            views = [torch.randn(BATCH, 1, 8, 8), torch.randn(BATCH, 1, 40, 63)]
            out = method(views, ctx)
            assert torch.isfinite(out["loss"]) and (("within" in out) == has_positives)
            fv, fa, _ = method._last
            old_v, old_a = method.loss.bank_v[idx].clone(), method.loss.bank_a[idx].clone()
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            method.after_step(ctx)
            torch.testing.assert_close(method.loss.bank_v[idx], F.normalize(0.5 * old_v + 0.5 * fv, dim=1))
            torch.testing.assert_close(method.loss.bank_a[idx], F.normalize(0.5 * old_a + 0.5 * fa, dim=1))
            step += 1
    assert any(not torch.equal(a, b) for a, b in zip(audio0, method.audio.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(image0, method.backbone.parameters()))
    state = method.loss.get_extra_state()  # banks and positive set survive a checkpoint
    fresh = get_method_class(name)(CNN, [16, 8], cfg.method_params)
    fresh.loss.set_extra_state(state)
    assert torch.equal(fresh.loss.bank_a, method.loss.bank_a)
    if name == "avid_cma":
        assert torch.equal(fresh.loss.positives, method.loss.positives)


def _write_fsdd(root: Path) -> None:
    root.mkdir()
    rng = np.random.default_rng(0)
    for d in range(10):
        for t in range(9):
            with wave.open(str(root / f"{d}_ann_{t}.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(8000)
                tone = np.sin(2 * np.pi * (300 + 150 * d) * np.arange(6000) / 8000)
                w.writeframes((3000 * tone + 300 * rng.standard_normal(6000)).astype("<i2").tobytes())


def test_the_engine_feeds_audio_views_after_the_image_views(tmp_path):
    from jem.augment.audio import build_audio_cache
    from jem.augment.cache import build_view_cache
    from jem.engine.loop import run_epoch, setup
    from jem.prepare import prepare

    _write_fsdd(tmp_path / "rec")
    base = yaml.safe_load(yaml.safe_dump(defaults_dict()))
    raw = dict(base, method="avid_cma", dataset="av-digits", data=dict(base["data"], audio_root=str(tmp_path / "rec")),
               model=dict(base["model"], width=4), train=dict(base["train"], batch_size=8, epochs=2),
               methods=dict(base["methods"], avid_cma=dict(base["methods"]["avid_cma"], warmup_epochs=1, pos_k=3,
                                                           audio_width=4)))
    cfg = parse_config(raw)
    prepared, views = tmp_path / "prepared", tmp_path / "views"
    prepared.mkdir()
    views.mkdir()
    stats = prepare(cfg, prepared)
    build_view_cache(np.load(prepared / "train_x.npy"), cfg.augment, views, cfg.seed)
    build_audio_cache(np.load(prepared / "train_audio.npy"), 8000, cfg.augment.audio, cfg.augment.views_per_image,
                      views, cfg.seed)
    w = setup(cfg, 0, 1, prepared, views)
    assert w.audio is not None and w.audio.num_recordings == stats["n_train"] == w.source.num_images

    class Quiet:
        def step(self) -> None:
            pass

    rows = [run_epoch(w, e, Quiet()) for e in range(2)]  # type: ignore[arg-type]
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert w.method.loss.positives is not None and w.method.loss.positives.shape == (stats["n_train"], 3)
