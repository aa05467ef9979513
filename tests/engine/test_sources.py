"""Batch sources: the on-device augmentation path (augment.views_per_image = 0) against the view
cache's recipe, its outputs, determinism, source selection, and training steps through the loop."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import jem.augment.cache as cache_mod
from jem.augment import ViewCache, build_view_cache, local_recipe, local_size
from jem.augment.recipe import ViewParams
from jem.config import AugmentConfig, MultiCropConfig, ViewConfig, parse_config
from jem.engine.sources import CachedViews, DeviceAugment, epoch_shards, make_source

SIGMAS = 4.5  # two-sided, about 7e-6 per comparison
N_PARAMS = 4096
# Two recipes that differ in every probability, so a swapped view would be caught.
AUG = AugmentConfig(
    views_per_image=0,
    view_a=ViewConfig(crop_scale=[0.3, 1.0], flip_p=0.3, jitter_p=0.8, grayscale_p=0.2, blur_p=1.0,
                      solarize_p=0.0),
    view_b=ViewConfig(crop_scale=[0.6, 1.0], crop_ratio=[0.5, 2.0], flip_p=0.7, jitter_p=0.4, brightness=0.2,
                      grayscale_p=0.5, blur_p=0.1, solarize_p=0.3),
    multicrop=MultiCropConfig(local_crops=2, local_scale=[0.05, 0.4]),
)
MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def _norm(c: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(MEAN[:c]).view(1, -1, 1, 1), torch.tensor(STD[:c]).view(1, -1, 1, 1)


def _device_source(images: np.ndarray, aug: AugmentConfig = AUG, channels_last: bool = False) -> DeviceAugment:
    mean, std = _norm(images.shape[-1])
    return DeviceAugment(images, aug, mean, std, torch.device("cpu"), channels_last)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (64, 12, 16, 3), dtype=np.uint8)  # H != W


# ------------------------------------------------------------------ parameters vs the cached recipe
def _same_rate(a: torch.Tensor, b: torch.Tensor) -> None:
    pa, pb = a.double().mean().item(), b.double().mean().item()
    p = (pa + pb) / 2
    tol = SIGMAS * math.sqrt(max(p * (1 - p), 1e-12) * (1 / a.numel() + 1 / b.numel())) + 1e-12
    assert abs(pa - pb) <= tol, (pa, pb)


def _same_dist(a: torch.Tensor, b: torch.Tensor) -> None:
    """Means within SIGMAS standard errors and a two-sample Kolmogorov-Smirnov statistic below its
    0.1% critical value."""
    a, b = a.double().flatten(), b.double().flatten()
    se = math.sqrt(a.var().item() / a.numel() + b.var().item() / b.numel())
    assert abs(a.mean().item() - b.mean().item()) <= SIGMAS * se + 1e-9
    grid = torch.cat([a, b]).sort().values
    cdf_a = torch.searchsorted(a.sort().values, grid, right=True).double() / a.numel()
    cdf_b = torch.searchsorted(b.sort().values, grid, right=True).double() / b.numel()
    assert (cdf_a - cdf_b).abs().max().item() <= 1.95 * math.sqrt(2 / a.numel())


def _compare(dev: ViewParams, ref: ViewParams) -> None:
    for flag in ("flip", "jitter", "grayscale", "blur", "solarize"):
        _same_rate(getattr(dev, flag), getattr(ref, flag))
    area = lambda p: p.box[:, 2] * p.box[:, 3]  # noqa: E731  crop area fraction
    _same_dist(area(dev), area(ref))
    _same_dist(torch.log(dev.box[:, 2] / dev.box[:, 3]), torch.log(ref.box[:, 2] / ref.box[:, 3]))
    _same_dist(dev.box[:, 0], ref.box[:, 0])
    for j in range(4):
        _same_dist(dev.factors[:, j], ref.factors[:, j])
    _same_dist(dev.sigma, ref.sigma)


def _cache_params(recipe: ViewConfig, kind: int, slot: int, in_size: tuple[int, int]) -> ViewParams:
    """What the view cache draws for ``N_PARAMS`` images of one view slot (two seeds' worth)."""
    half = N_PARAMS // 2
    return ViewParams.cat([cache_mod._chunk_params(0, half, recipe, in_size, seed, kind, slot) for seed in (1, 2)])


def test_device_parameters_follow_the_cached_distributions(images: np.ndarray) -> None:
    src = _device_source(images)
    in_size = (12, 16)
    glob, loc = src.sample_params(N_PARAMS, 4, 2, torch.Generator().manual_seed(5))
    assert len(glob) == 4 * N_PARAMS and loc is not None and len(loc) == 2 * N_PARAMS
    # the cache: even slots use view_a, odd slots view_b, local crops local_recipe
    ref_a = _cache_params(AUG.view_a, cache_mod._GLOBAL, 0, in_size)
    ref_b = _cache_params(AUG.view_b, cache_mod._GLOBAL, 1, in_size)
    ref_local = _cache_params(local_recipe(AUG), cache_mod._LOCAL, 0, in_size)
    for j in range(4):  # view_a, view_b, view_a, view_b
        _compare(glob.select(slice(j * N_PARAMS, (j + 1) * N_PARAMS)), ref_a if j % 2 == 0 else ref_b)
    for j in range(2):
        _compare(loc.select(slice(j * N_PARAMS, (j + 1) * N_PARAMS)), ref_local)
    # the comparison has the power to see a swap: view 0 is always blurred, view_b rarely
    view0 = glob.select(slice(0, N_PARAMS))
    assert view0.blur.all() and not view0.solarize.any() and ref_b.blur.double().mean() < 0.2


def test_device_views_are_normalised_images_of_the_right_shape(images: np.ndarray) -> None:
    src = _device_source(images)
    assert (src.num_images, src.channels, src.size, src.local_size) == (64, 3, 12, local_size(AUG, 12))
    idx = np.arange(0, 64, 2)
    views = src.views(idx, 2, 2, np.random.default_rng(0))
    assert len(views) == 4
    mean, std = _norm()
    for j, v in enumerate(views):
        side = 12 if j < 2 else local_size(AUG, 12)
        assert v.shape == (32, 3, side, side) and v.dtype == torch.float32 and v.device.type == "cpu"
        pixels = v * std + mean  # back to [0, 1]
        assert torch.isfinite(v).all() and pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
        assert pixels.std() > 0.05  # real images, not constants
    gray = _device_source(images[..., :1])
    v = gray.views(idx, 2, 0, np.random.default_rng(0))
    assert [t.shape for t in v] == [(32, 1, 12, 12)] * 2
    cl = _device_source(images, channels_last=True).views(idx, 2, 0, np.random.default_rng(0))
    assert all(t.is_contiguous(memory_format=torch.channels_last) for t in cl)
    with pytest.raises(ValueError, match="local crops"):
        src.views(idx, 2, 3, np.random.default_rng(0))


def test_view_a_first_view_b_second_as_rendered() -> None:
    """Constant images: view_a never solarises, view_b always does (and nothing else changes them)."""
    plain = dict(crop_scale=[0.5, 1.0], jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    aug = AugmentConfig(views_per_image=0, view_a=ViewConfig(**plain, solarize_p=0.0),
                        view_b=ViewConfig(**plain, solarize_p=1.0))
    images = np.full((8, 10, 10, 1), 200, np.uint8)
    src = DeviceAugment(images, aug, torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), torch.device("cpu"))
    a, b, a2 = src.views(np.arange(8), 3, 0, np.random.default_rng(0))
    for view, value in ((a, 200 / 255), (b, 1 - 200 / 255), (a2, 200 / 255)):  # a, b, then a again
        assert torch.allclose(view, torch.full_like(view, value), atol=1e-5)


def test_device_views_are_deterministic_under_the_step_rng(images: np.ndarray) -> None:
    src = _device_source(images)
    idx = np.array([3, 5, 8, 13, 21, 34])
    one = src.views(idx, 2, 1, np.random.default_rng([0, 1, 0, 1]))
    two = _device_source(images).views(idx, 2, 1, np.random.default_rng([0, 1, 0, 1]))
    other = src.views(idx, 2, 1, np.random.default_rng([0, 2, 0, 1]))  # next epoch
    assert all(torch.equal(x, y) for x, y in zip(one, two))
    assert not torch.equal(one[0], other[0])
    rng = np.random.default_rng(7)
    first, second = src.views(idx, 2, 0, rng), src.views(idx, 2, 0, rng)  # successive steps differ
    assert not torch.equal(first[0], second[0])


# ------------------------------------------------------------------------------ source selection
def _prepared(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    np.save(folder / "train_x.npy", images)
    np.save(folder / "train_y.npy", np.arange(len(images)) % 4)
    np.save(folder / "test_x.npy", images[:16])
    np.save(folder / "test_y.npy", np.arange(16) % 4)
    c = images.shape[-1]
    stats = {"mean": [0.5] * c, "std": [0.25] * c, "num_classes": 4, "channels": c, "image_size": images.shape[1]}
    (folder / "stats.json").write_text(json.dumps(stats))
    return folder


def test_make_source_follows_views_per_image(tmp_path: Path, images: np.ndarray) -> None:
    prepared = _prepared(tmp_path / "prepared", images)
    mean, std = _norm()
    for k, kind in ((0, DeviceAugment), (2, CachedViews)):
        cfg = parse_config({"augment": {"views_per_image": k}})
        build_view_cache(images, cfg.augment, tmp_path / f"views{k}", seed=0, progress=False)
        src = make_source(cfg, prepared, tmp_path / f"views{k}", mean, std, torch.device("cpu"))
        assert isinstance(src, kind) and (src.num_images, src.channels, src.size) == (64, 3, 12)
        assert [v.shape for v in src.views(np.arange(4), 2, 0, np.random.default_rng(0))] == [(4, 3, 12, 12)] * 2
    cfg = parse_config({"augment": {"views_per_image": 0}})
    build_view_cache(images[:10], cfg.augment, tmp_path / "stale", seed=0, progress=False)
    with pytest.raises(ValueError, match="re-run the augment stage"):
        make_source(cfg, prepared, tmp_path / "stale", mean, std, torch.device("cpu"))
    assert ViewCache(tmp_path / "views0").views_per_image == 0


# ------------------------------------------------------------------------------- through the loop
class _Ctx:
    def get_world_rank(self) -> int:
        return 0

    def get_world_size(self) -> int:
        return 1


def _run_worker(monkeypatch: pytest.MonkeyPatch, tmp: Path, params: dict[str, Any]) -> tuple[dict, list]:
    import ray.train

    from jem.engine.loop import train_worker

    reports: list[dict] = []

    def report(metrics: dict, checkpoint: Any = None) -> None:
        files = sorted(p.name for p in Path(checkpoint.path).iterdir()) if checkpoint is not None else []
        reports.append({"metrics": dict(metrics), "files": files})

    monkeypatch.setattr(ray.train, "get_context", lambda: _Ctx())
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: None)
    monkeypatch.setattr(ray.train, "report", report)
    summary = train_worker({"params": params, "prepared": str(tmp / "prepared"), "views": str(tmp / "views"),
                            "live": None, "progress": "off"})
    return summary, reports


def test_loop_trains_on_device_augmented_views(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    images = np.random.default_rng(1).integers(0, 256, (48, 8, 8, 1), dtype=np.uint8)
    _prepared(tmp_path / "prepared", images)
    params = {"method": "vicreg", "augment": {"views_per_image": 0},
              "model": {"width": 4, "projector": [16, 16]},
              "train": {"epochs": 2, "batch_size": 16, "warmup_epochs": 0, "checkpoint_every": 1},
              "eval": {"monitor_every": 0}}
    cfg = parse_config(params)
    build_view_cache(images, cfg.augment, tmp_path / "views", seed=0, progress=False)
    summary, reports = _run_worker(monkeypatch, tmp_path, params)
    assert summary is not None and summary["steps_per_epoch"] == 3 and summary["epochs"] == 2
    assert math.isfinite(summary["final_loss"]) and summary["views_per_s"] > 0
    assert [r["metrics"]["epoch"] for r in reports] == [0, 1]
    assert "encoder.safetensors" in reports[-1]["files"]
    again, _ = _run_worker(monkeypatch, tmp_path, params)  # same seed, same CPU: same result
    assert again["final_loss"] == summary["final_loss"]


def test_train_step_with_bf16_autocast_and_channels_last_on_cpu() -> None:
    """The GPU switches through the same step function, exercised on the CPU."""
    from jem.engine.loop import build_method
    from jem.engine.optim import build_optimizer
    from jem.engine.step import train_step
    from jem.methods.base import StepContext

    cfg = parse_config({"method": "simclr", "model": {"width": 4, "projector": [16, 8]}})
    images = np.random.default_rng(2).integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    src = _device_source(images, AugmentConfig(views_per_image=0), channels_last=True)
    torch.manual_seed(0)
    method = build_method(cfg, 3, 8).to(memory_format=torch.channels_last)
    opt = build_optimizer(method, cfg.train, 0.1)
    before = [p.detach().clone() for p in method.parameters()]
    for step in range(2):
        views = src.views(np.arange(32), 2, 0, np.random.default_rng(step))
        loss = train_step(method, method, opt, views, StepContext(0, step, 2, 2), amp=True)
        assert loss.dtype == torch.float32 and torch.isfinite(loss) and not loss.requires_grad
    assert all(p.dtype == torch.float32 for p in method.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, method.parameters()))


def test_speed_settings_auto_is_bf16_on_gpus_only_and_channels_last_everywhere() -> None:
    from jem.engine.device import speed_settings

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)  # a device object needs no GPU
    auto = parse_config({}).train
    assert speed_settings(auto, cpu) == (False, True) and speed_settings(auto, gpu) == (True, True)
    forced = parse_config({"train": {"precision": "bf16", "memory_format": "channels_last"}}).train
    assert speed_settings(forced, cpu) == (True, True)
    off = parse_config({"train": {"precision": "fp32", "memory_format": "contiguous"}}).train
    assert speed_settings(off, gpu) == (False, False)


def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Emulated bf16 autocast is ~10x slower than fp32 (measured on an AVX2-only EPYC: 14 s vs 1.2 s
    per VICReg step at 28 px), so forcing it there is worth one clear line."""
    from jem.engine import device

    forced = parse_config({"train": {"precision": "bf16"}}).train
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="without native bf16"):
        assert device.speed_settings(forced, torch.device("cpu")) == (True, True)
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert device.speed_settings(forced, torch.device("cpu")) == (True, True)
        assert device.speed_settings(forced, torch.device("cuda", 0)) == (True, True)  # GPUs never warn


# ---------------------------------------------------------------------------------------- sharding
@pytest.mark.parametrize("world", [2, 3, 4])
def test_epoch_shards_are_disjoint_and_rebuild_the_single_worker_batches(world):
    n, batch_total = 1000, 240
    steps = n // batch_total
    one = epoch_shards(7, 3, n, steps, 1, batch_total)  # (steps, 1, 240)
    many = epoch_shards(7, 3, n, steps, world, batch_total // world)  # (steps, world, 240 / world)
    for i in range(steps):
        parts = [set(many[i, r].tolist()) for r in range(world)]
        assert sum(len(p) for p in parts) == len(set().union(*parts))  # disjoint shards
        assert set().union(*parts) == set(one[i, 0].tolist())  # same global batch as 1 x 240
    assert len(np.unique(many)) == many.size  # no image twice in an epoch
    assert not np.array_equal(epoch_shards(7, 4, n, steps, 1, batch_total), one)  # reshuffled each epoch


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_input_views_have_exactly_the_strides_of_the_memory_format(channels: int, channels_last: bool) -> None:
    """A permuted (B, H, W, 1) batch has channels-last strides that also pass as contiguous, so
    ``.contiguous()`` kept them and convolutions silently ran channels_last (issue 19). The input
    must carry the canonical strides of the requested format, written out by hand here."""
    from jem.engine.sources import to_input

    b, h, w = 4, 6, 5
    batch = np.random.default_rng(0).integers(0, 256, (b, h, w, channels), dtype=np.uint8)
    mean, std = torch.full((channels, 1, 1), 0.5), torch.full((channels, 1, 1), 0.25)
    x = to_input(batch, mean, std, torch.device("cpu"), channels_last)
    expected = (h * w * channels, 1, w * channels, channels) if channels_last else (channels * h * w, h * w, w, 1)
    assert x.stride() == expected
    ref = (torch.from_numpy(batch).permute(0, 3, 1, 2).double() / 255.0 - 0.5) / 0.25
    assert torch.allclose(x.double(), ref, atol=1e-6)
