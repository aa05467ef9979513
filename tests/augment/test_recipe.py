"""Per-sample parameter distributions against the recipe, determinism, and the composed view."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jem.augment import ViewParams, apply_view, augment_batch, sample_view_params, to_uint8_nhwc
from jem.config import ViewConfig

N = 20000
SIGMAS = 4.5


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rate_ok(flags: torch.Tensor, p: float) -> None:
    rate = flags.double().mean().item()
    assert abs(rate - p) <= SIGMAS * math.sqrt(p * (1 - p) / flags.numel()) + 1e-12, (rate, p)


def _uniform_ok(v: torch.Tensor, lo: float, hi: float) -> None:
    assert v.min().item() >= lo - 1e-6 and v.max().item() <= hi + 1e-6
    sd = (hi - lo) / math.sqrt(12)
    assert abs(v.double().mean().item() - (lo + hi) / 2) <= SIGMAS * sd / math.sqrt(v.numel()) + 1e-7


RECIPE = ViewConfig(crop_scale=[0.2, 1.0], flip_p=0.3, jitter_p=0.7, brightness=0.4, contrast=0.6,
                    saturation=0.2, hue=0.1, grayscale_p=0.2, blur_p=0.4, blur_sigma=[0.1, 2.0],
                    solarize_p=0.15)


def test_event_rates_match_probabilities() -> None:
    p = sample_view_params(N, RECIPE, 32, _gen())
    assert len(p) == N
    _rate_ok(p.flip, 0.3)
    _rate_ok(p.jitter, 0.7)
    _rate_ok(p.grayscale, 0.2)
    _rate_ok(p.blur, 0.4)
    _rate_ok(p.solarize, 0.15)
    always = sample_view_params(500, ViewConfig(flip_p=1.0, blur_p=0.0, solarize_p=0.0), 32, _gen())
    assert always.flip.all() and not always.blur.any() and not always.solarize.any()


def test_jitter_factors_and_order() -> None:
    p = sample_view_params(N, RECIPE, 32, _gen(1))
    _uniform_ok(p.factors[:, 0], 0.6, 1.4)
    _uniform_ok(p.factors[:, 1], 0.4, 1.6)
    _uniform_ok(p.factors[:, 2], 0.8, 1.2)
    _uniform_ok(p.factors[:, 3], -0.1, 0.1)
    _uniform_ok(p.sigma, 0.1, 2.0)
    assert torch.equal(p.order.sort(1).values, torch.arange(4).expand(N, 4))  # permutations
    for pos in range(4):
        for op in range(4):
            _rate_ok(p.order[:, pos] == op, 0.25)
    strong = sample_view_params(N, ViewConfig(brightness=1.0), 32, _gen(2))
    _uniform_ok(strong.factors[:, 0], 0.0, 2.0)  # max(0, 1 - b)


def _expected_area(scale: tuple, ratio: tuple, attempts: int = 10, grid: int = 2000) -> float:
    """E[area fraction] under torchvision's rule for a square image, by numerical integration."""
    s = scale[0] + (scale[1] - scale[0]) * (np.arange(grid) + 0.5) / grid
    lr = np.log(ratio[0]) + (np.log(ratio[1]) - np.log(ratio[0])) * (np.arange(grid) + 0.5) / grid
    fits = s[:, None] <= np.exp(-np.abs(lr))[None, :]  # w = sqrt(s r) <= 1 and h = sqrt(s / r) <= 1
    p_fit = fits.mean()
    mean_fit = (s[:, None] * fits).sum() / fits.sum()
    miss = (1 - p_fit) ** attempts  # then the whole image (ratio 1 is within bounds)
    return (1 - miss) * mean_fit + miss * 1.0


@pytest.mark.parametrize("scale", [(0.2, 1.0), (0.08, 0.5), (0.9, 1.0)])
def test_crop_area_and_ratio(scale: tuple) -> None:
    ratio = (0.75, 4 / 3)
    recipe = ViewConfig(crop_scale=list(scale), crop_ratio=list(ratio))
    box = sample_view_params(N, recipe, 64, _gen(3)).box.double()
    x0, y0, w, h = box.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all()
    assert (x0 + w <= 1 + 1e-6).all() and (y0 + h <= 1 + 1e-6).all()
    area = w * h
    fell_back = (area > scale[1] + 1e-5)
    assert torch.allclose(area[fell_back], torch.ones(1, dtype=torch.float64), atol=1e-5)
    assert (area[~fell_back] >= scale[0] - 1e-5).all()
    log_r = torch.log(w / h)
    assert (log_r >= math.log(ratio[0]) - 1e-5).all() and (log_r <= math.log(ratio[1]) + 1e-5).all()
    expect = _expected_area(scale, ratio)
    if scale[1] * ratio[1] <= 1:  # every attempt fits: plain U(scale)
        assert expect == pytest.approx(sum(scale) / 2, abs=1e-3)
        _uniform_ok(log_r, math.log(ratio[0]), math.log(ratio[1]))
    tol = SIGMAS * area.std().item() / math.sqrt(N) + 2e-4
    assert abs(area.mean().item() - expect) <= tol, (area.mean().item(), expect)


def test_non_square_fallback_is_central_clamped_crop() -> None:
    # 10 x 40 image, area >= 0.9: no box with ratio in [3/4, 4/3] fits, so torchvision's fallback:
    # full height, width = 10 * 4/3 px, centred.
    recipe = ViewConfig(crop_scale=[0.9, 1.0])
    box = sample_view_params(100, recipe, (10, 40), _gen()).box
    expect = torch.tensor([(1 - 1 / 3) / 2, 0.0, 1 / 3, 1.0]).expand(100, 4)
    torch.testing.assert_close(box, expect, atol=1e-6, rtol=0)


def test_determinism_under_seed() -> None:
    a = sample_view_params(64, RECIPE, 16, _gen(7))
    b = sample_view_params(64, RECIPE, 16, _gen(7))
    c = sample_view_params(64, RECIPE, 16, _gen(8))
    assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in a.__dataclass_fields__)
    assert not torch.equal(a.box, c.box)
    imgs = torch.randint(0, 256, (64, 16, 16, 3), dtype=torch.uint8, generator=_gen(0))
    v1 = augment_batch(imgs, RECIPE, 16, _gen(7))
    v2 = augment_batch(imgs, RECIPE, 16, _gen(7))
    v3 = augment_batch(imgs, RECIPE, 16, _gen(8))
    assert torch.equal(v1, v2) and not torch.equal(v1, v3)


@pytest.mark.parametrize("c,out", [(1, 16), (3, 16), (3, 7)])
def test_views_are_valid_images(c: int, out: int) -> None:
    imgs = torch.randint(0, 256, (40, 16, 16, c), dtype=torch.uint8, generator=_gen(0))
    v = augment_batch(imgs, RECIPE, out, _gen(1))
    assert v.shape == (40, c, out, out) and v.dtype == torch.float32
    assert v.min() >= 0 and v.max() <= 1
    u8 = to_uint8_nhwc(v)
    assert u8.shape == (40, out, out, c) and u8.dtype == torch.uint8


def test_apply_view_is_independent_of_batch_split() -> None:
    x = torch.rand(50, 3, 20, 20, generator=_gen(0))
    p = sample_view_params(50, RECIPE, 20, _gen(1))
    whole = apply_view(x, p, 20)
    parts = torch.cat([apply_view(x[:13], p.select(slice(0, 13)), 20),
                       apply_view(x[13:], p.select(slice(13, 50)), 20)])
    assert torch.equal(whole, parts)
    assert torch.equal(ViewParams.cat([p.select(slice(0, 13)), p.select(slice(13, 50))]).box, p.box)
    with pytest.raises(ValueError, match="parameter rows"):
        apply_view(x[:3], p, 20)


def test_blur_sigma_scales_with_reference_size() -> None:
    # Sigma is given at 224 px: at a 224-px reference a sigma of 2 px blurs far more than when the
    # same view is declared at 22 px (sigma 0.2 px, nearly the identity).
    x = torch.rand(1, 1, 22, 22, generator=_gen(0))
    recipe = ViewConfig(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], flip_p=0.0, jitter_p=0.0,
                        grayscale_p=0.0, blur_p=1.0, blur_sigma=[2.0, 2.0])
    p = sample_view_params(1, recipe, 22, _gen())
    small = apply_view(x, p, 22)
    big = apply_view(x, p, 22, blur_ref_size=224)
    assert (small - x).abs().max() < 0.01
    assert (big - x).abs().mean() > 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_device_matches_cpu() -> None:
    imgs = torch.randint(0, 256, (64, 24, 24, 3), dtype=torch.uint8, generator=_gen(0))
    cpu = augment_batch(imgs, RECIPE, 24, _gen(5))
    gpu = augment_batch(imgs.cuda(), RECIPE, 24, _gen(5))
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-4, rtol=0)
