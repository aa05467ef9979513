"""Each batched op of jem.augment.ops against a slow reference or a closed form."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jem.augment import ops


def _rand(b: int, c: int, h: int, w: int | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w or h, generator=g)


FULL = torch.tensor([[0.0, 0.0, 1.0, 1.0]])


# ---------------------------------------------------------------------------- crop / resize / flip
@pytest.mark.parametrize("c", [1, 3])
def test_identity_crop_returns_input(c: int) -> None:
    x = _rand(4, c, 10)
    out = ops.crop_resize_flip(x, FULL.repeat(4, 1), torch.zeros(4, dtype=torch.bool), 10)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_flip_equals_torch_flip() -> None:
    x = _rand(3, 3, 9)
    out = ops.crop_resize_flip(x, FULL.repeat(3, 1), torch.tensor([True, False, True]), 9)
    torch.testing.assert_close(out[0], torch.flip(x[0], dims=[-1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], x[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[2], torch.flip(x[2], dims=[-1]), atol=1e-5, rtol=0)


def test_top_left_quadrant_upsampled_matches_interpolate() -> None:
    x = _rand(2, 3, 16)
    box = torch.tensor([[0.0, 0.0, 0.5, 0.5]]).repeat(2, 1)
    out = ops.crop_resize_flip(x, box, torch.zeros(2, dtype=torch.bool), 16)
    ref = F.interpolate(x[:, :, :8, :8], size=(16, 16), mode="bilinear", align_corners=False)
    # The continuous crop reads the true neighbours past the box's inner edges, where crop-then-
    # resize replicates the edge: they agree everywhere but the last output row and column.
    torch.testing.assert_close(out[..., :-1, :-1], ref[..., :-1, :-1], atol=1e-5, rtol=0)
    assert not torch.allclose(out[..., -1, :], ref[..., -1, :])


def test_crop_grid_equals_affine_grid() -> None:
    g = torch.Generator().manual_seed(1)
    b, s = 50, 7
    wh = 0.2 + 0.8 * torch.rand(b, 2, generator=g)
    xy = torch.rand(b, 2, generator=g) * (1 - wh)
    box = torch.cat([xy, wh], 1)
    flip = torch.rand(b, generator=g) < 0.5
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = torch.where(flip, -wh[:, 0], wh[:, 0])
    theta[:, 0, 2] = 2 * xy[:, 0] + wh[:, 0] - 1
    theta[:, 1, 1] = wh[:, 1]
    theta[:, 1, 2] = 2 * xy[:, 1] + wh[:, 1] - 1
    ref = F.affine_grid(theta, [b, 1, s, s], align_corners=False)
    torch.testing.assert_close(ops.crop_grid(box, flip, s), ref, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------- colour
def _luma_np(x: np.ndarray) -> np.ndarray:  # (B, 3, H, W) -> (B, 1, H, W)
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]


def test_grayscale_itu_601() -> None:
    x = _rand(3, 3, 5)
    expect = _luma_np(x.numpy())
    np.testing.assert_allclose(ops.grayscale(x).numpy(), expect, atol=1e-6)
    out = ops.random_grayscale(x, torch.tensor([True, False, True]))
    assert out.shape == x.shape
    np.testing.assert_allclose(out[0].numpy(), np.repeat(expect[0], 3, 0), atol=1e-6)
    torch.testing.assert_close(out[1], x[1])
    gray_in = _rand(2, 1, 5)
    torch.testing.assert_close(ops.random_grayscale(gray_in, torch.tensor([True, True])), gray_in)


def test_brightness_and_contrast_formulas() -> None:
    x = _rand(3, 3, 6)
    f = torch.tensor([0.6, 1.0, 1.4])
    xn = x.numpy()
    fn = f.numpy()[:, None, None, None]
    np.testing.assert_allclose(ops.adjust_brightness(x, f).numpy(), np.clip(xn * fn, 0, 1), atol=1e-6)
    mean = _luma_np(xn).mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(ops.adjust_contrast(x, f).numpy(),
                               np.clip(fn * xn + (1 - fn) * mean, 0, 1), atol=1e-6)
    g = _rand(2, 1, 6)  # gray images: contrast blends with the plain mean
    f2 = torch.tensor([0.5, 1.5])
    gm = g.numpy().mean(axis=(1, 2, 3), keepdims=True)
    f2n = f2.numpy()[:, None, None, None]
    np.testing.assert_allclose(ops.adjust_contrast(g, f2).numpy(),
                               np.clip(f2n * g.numpy() + (1 - f2n) * gm, 0, 1), atol=1e-6)


def test_saturation_formula_and_gray_noop() -> None:
    x = _rand(2, 3, 5)
    f = torch.tensor([0.0, 1.3])
    fn = f.numpy()[:, None, None, None]
    expect = np.clip(fn * x.numpy() + (1 - fn) * _luma_np(x.numpy()), 0, 1)
    np.testing.assert_allclose(ops.adjust_saturation(x, f).numpy(), expect, atol=1e-6)
    g = _rand(2, 1, 5)
    torch.testing.assert_close(ops.adjust_saturation(g, f), g)
    torch.testing.assert_close(ops.adjust_hue(g, torch.tensor([0.3, -0.2])), g)


def test_hue_matches_colorsys() -> None:
    x = _rand(3, 3, 4, 5)
    x[0, :, 0, 0] = 0.5  # a gray pixel (no chroma)
    x[0, :, 0, 1] = 0.0  # black
    shift = torch.tensor([0.25, -0.4, 0.0])
    out = ops.adjust_hue(x, shift).numpy()
    xn = x.numpy()
    for b in range(3):
        for i in range(4):
            for j in range(5):
                h, s, v = colorsys.rgb_to_hsv(*xn[b, :, i, j])
                expect = colorsys.hsv_to_rgb((h + float(shift[b])) % 1.0, s, v)
                np.testing.assert_allclose(out[b, :, i, j], expect, atol=1e-5)


def test_color_jitter_respects_order_and_mask() -> None:
    x = _rand(3, 3, 6)
    factors = torch.tensor([[1.5, 0.3, 0.5, 0.2]]).repeat(3, 1)
    order = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [0, 1, 2, 3]])
    active = torch.tensor([True, True, False])
    out = ops.color_jitter(x, factors, order, active)
    steps = [ops.adjust_brightness, ops.adjust_contrast, ops.adjust_saturation, ops.adjust_hue]
    for b in range(2):
        ref = x[b:b + 1]
        for op_id in order[b].tolist():
            ref = steps[op_id](ref, factors[b:b + 1, op_id])
        torch.testing.assert_close(out[b:b + 1], ref, atol=1e-6, rtol=0)
    assert not torch.allclose(out[0], out[1])  # the order matters
    torch.testing.assert_close(out[2], x[2])  # inactive: untouched


# ------------------------------------------------------------------------------ blur / solarize
def _slow_blur(img: np.ndarray, sigma: float, k: int) -> np.ndarray:
    """One (C, H, W) image: numpy reflect padding and a hand-built 2-D Gaussian, looped."""
    t = np.arange(k) - k // 2
    g1 = np.exp(-(t**2) / (2 * sigma**2))
    kern = np.outer(g1, g1) / np.outer(g1, g1).sum()
    pad = k // 2
    out = np.zeros_like(img, dtype=np.float64)
    for ch in range(img.shape[0]):
        p = np.pad(img[ch].astype(np.float64), pad, mode="reflect")
        for di in range(k):
            for dj in range(k):
                out[ch] += kern[di, dj] * p[di:di + img.shape[1], dj:dj + img.shape[2]]
    return out


def test_blur_matches_slow_loop() -> None:
    x = _rand(3, 3, 12)
    sigma = torch.tensor([0.5, 1.2, 3.0])
    out = ops.gaussian_blur(x, sigma, kernel_size=7).numpy()
    for b in range(3):
        np.testing.assert_allclose(out[b], _slow_blur(x[b].numpy(), float(sigma[b]), 7), atol=1e-5)


def test_blur_kernel_size() -> None:
    assert ops.blur_kernel_size(224) == 23  # SimCLR: 10% of 224, odd
    assert ops.blur_kernel_size(28) == 3
    assert ops.blur_kernel_size(8) == 3
    assert all(ops.blur_kernel_size(s) % 2 == 1 for s in range(1, 300))
    x = _rand(1, 1, 4)  # a kernel wider than the image is capped to fit the reflect padding
    assert ops.gaussian_blur(x, torch.tensor([2.0]), 23).shape == x.shape


def test_solarize_formula() -> None:
    x = _rand(2, 3, 6)
    out = ops.solarize(x, torch.tensor([True, False]))
    xn = x[0].numpy()
    np.testing.assert_allclose(out[0].numpy(), np.where(xn >= 0.5, 1 - xn, xn), atol=0)
    torch.testing.assert_close(out[1], x[1])
