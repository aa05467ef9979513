"""A view recipe (:class:`~jem.sections.ViewConfig`) as per-sample random parameters, and their use.

The pipeline is the SimCLR/BYOL one (Chen et al. 2020, arXiv 2002.05709, appendix A; Grill et al.
2020, arXiv 2006.07733, table 6): random resized crop -> horizontal flip -> colour jitter (with
probability ``jitter_p``, the four ops in a random order per sample) -> grayscale -> Gaussian blur
-> solarisation. :func:`sample_view_params` draws every random number on the CPU from an explicit
``torch.Generator`` (deterministic under a seed, whatever device the images live on), and
:func:`apply_view` runs the whole batch at once with the ops of :mod:`jem.augment.ops`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from jem.augment import ops
from jem.sections import ViewConfig

CROP_ATTEMPTS = 10  # torchvision RandomResizedCrop's number of tries before its fallback
BLUR_REF_PX = 224  # recipe sigmas are given for a 224-px image (SimCLR/BYOL)


@dataclass(frozen=True)
class ViewParams:
    """Random parameters of n views, one row per view (all tensors on the same device).

    Attributes:
        box: (n, 4) float crop boxes ``(x0, y0, w, h)`` as fractions of the input width/height.
        flip: (n,) bool, mirror left-right.
        jitter: (n,) bool, colour jitter applied.
        factors: (n, 4) float brightness, contrast, saturation factors and hue shift (turns).
        order: (n, 4) int64, a permutation of the four jitter ops per view.
        grayscale: (n,) bool.
        blur: (n,) bool.
        sigma: (n,) float blur sigma in pixels *of a 224-px image* (scaled at apply time).
        solarize: (n,) bool.
    """

    box: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    grayscale: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor

    def __len__(self) -> int:
        return int(self.flip.shape[0])

    def to(self, device: torch.device | str) -> ViewParams:
        """The same parameters on ``device``."""
        return ViewParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def select(self, rows: slice | torch.Tensor) -> ViewParams:
        """A subset of the views (a slice or an index tensor)."""
        return ViewParams(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    @staticmethod
    def cat(parts: list[ViewParams]) -> ViewParams:
        """Concatenate parameter sets along the view axis."""
        return ViewParams(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                             for f in fields(ViewParams)})


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, *shape, generator=g, dtype=torch.float64)


def sample_crop_boxes(n: int, scale: list, ratio: list, in_size: int | tuple[int, int],
                      generator: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop boxes, (n, 4) float64 ``(x0, y0, w, h)`` as fractions of the image sides.

    The rule is torchvision's, vectorised: up to 10 attempts, each drawing an area fraction
    s ~ U(scale) and a log aspect ratio (width / height) ~ U(log ratio); the first attempt whose box
    fits in the image wins, and if none fits the fallback is the central crop with the aspect ratio
    clamped into ``ratio`` (the whole image when it is already within). All ten attempts are drawn
    for every view (a fixed amount of randomness per view). Unlike torchvision the box is not
    rounded to whole pixels and its position is uniform over the continuous range, which matters
    little once the crop is resampled.
    """
    h_px, w_px = (in_size, in_size) if isinstance(in_size, int) else in_size
    area = _uniform(n, scale[0], scale[1], generator, CROP_ATTEMPTS)  # (n, T)
    log_r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator, CROP_ATTEMPTS)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r * h_px / w_px)  # fraction of the width, (n, T)
    h = torch.sqrt(area / r * w_px / h_px)  # fraction of the height
    fits = (w <= 1) & (h <= 1)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # index of the first fitting attempt
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)  # (n,)
    in_ratio = w_px / h_px
    if in_ratio < ratio[0]:
        fb_w, fb_h = 1.0, (w_px / ratio[0]) / h_px
    elif in_ratio > ratio[1]:
        fb_w, fb_h = (h_px * ratio[1]) / w_px, 1.0
    else:
        fb_w, fb_h = 1.0, 1.0
    ok = fits.any(1)
    w = torch.where(ok, w, torch.full_like(w, fb_w))
    h = torch.where(ok, h, torch.full_like(h, fb_h))
    pos = torch.rand(n, 2, generator=generator, dtype=torch.float64)  # (n, 2)
    x0 = torch.where(ok, pos[:, 0] * (1 - w), (1 - w) / 2)
    y0 = torch.where(ok, pos[:, 1] * (1 - h), (1 - h) / 2)
    return torch.stack([x0, y0, w, h], 1)


def sample_view_params(n: int, recipe: ViewConfig, in_size: int | tuple[int, int],
                       generator: torch.Generator) -> ViewParams:
    """Draw the random parameters of ``n`` views of ``recipe`` for images of side ``in_size``.

    Jitter factors follow torchvision's ColorJitter: brightness/contrast/saturation factors
    ~ U(max(0, 1 - a), 1 + a) and hue shift ~ U(-hue, hue); the op order is a uniformly random
    permutation per view. Blur sigma ~ U(blur_sigma) at 224 px. Events happen with their recipe
    probabilities (``u < p`` with u ~ U[0, 1), so p = 1 is always and p = 0 never). The draws are
    made in a fixed order from ``generator`` (a CPU generator), so a seed fixes the result.
    """
    g = generator
    box = sample_crop_boxes(n, recipe.crop_scale, recipe.crop_ratio, in_size, g).float()

    def coin(p: float) -> torch.Tensor:
        return torch.rand(n, generator=g) < p

    flip = coin(recipe.flip_p)
    jitter = coin(recipe.jitter_p)
    factors = torch.stack([
        _uniform(n, max(0.0, 1 - recipe.brightness), 1 + recipe.brightness, g),
        _uniform(n, max(0.0, 1 - recipe.contrast), 1 + recipe.contrast, g),
        _uniform(n, max(0.0, 1 - recipe.saturation), 1 + recipe.saturation, g),
        _uniform(n, -recipe.hue, recipe.hue, g),
    ], 1).float()  # (n, 4)
    order = torch.rand(n, 4, generator=g).argsort(1)  # (n, 4) random permutations
    gray = coin(recipe.grayscale_p)
    blur = coin(recipe.blur_p)
    sigma = _uniform(n, recipe.blur_sigma[0], recipe.blur_sigma[1], g).float()
    sol = coin(recipe.solarize_p)
    return ViewParams(box=box, flip=flip, jitter=jitter, factors=factors, order=order,
                      grayscale=gray, blur=blur, sigma=sigma, solarize=sol)


def apply_view(x: torch.Tensor, params: ViewParams, out_size: int,
               blur_ref_size: int | None = None) -> torch.Tensor:
    """Render views: (B, C, H, W) float in [0, 1] -> (B, C, S, S) float in [0, 1], S = ``out_size``.

    Runs on ``x``'s device (``params`` are moved there). The blur is defined relative to an image
    of side ``blur_ref_size`` (default ``out_size``): sigma in pixels = recipe sigma x ref / 224 and
    the kernel spans about 10% of ref (odd, >= 3), as SimCLR's 23-tap kernel at 224 px. The view
    cache passes the *global* size for local crops, so they are blurred in the same pixel units as
    the global views (DINO blurs its 96-px crops with the unscaled 224-px sigma).
    """
    if len(params) != x.shape[0]:
        raise ValueError(f"apply_view: {len(params)} parameter rows for a batch of {x.shape[0]} images")
    p = params.to(x.device)
    out = ops.crop_resize_flip(x, p.box, p.flip, out_size)  # (B, C, S, S)
    out = ops.color_jitter(out, p.factors, p.order, p.jitter)
    out = ops.random_grayscale(out, p.grayscale)
    sel = torch.nonzero(p.blur).squeeze(1)
    if sel.numel():
        ref = blur_ref_size or out_size
        sigma_px = p.sigma[sel] * (ref / BLUR_REF_PX)
        out[sel] = ops.gaussian_blur(out[sel], sigma_px, ops.blur_kernel_size(ref))
    out = ops.solarize(out, p.solarize)
    return out.clamp(0, 1)


def to_float_nchw(images_uint8_nhwc: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float32 (B, C, H, W) in [0, 1], on the same device."""
    return images_uint8_nhwc.permute(0, 3, 1, 2).float().div_(255)


def to_uint8_nhwc(x: torch.Tensor) -> torch.Tensor:
    """float (B, C, H, W) in [0, 1] -> uint8 (B, H, W, C), rounded to the nearest level."""
    return (x.clamp(0, 1) * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def augment_batch(images_uint8_nhwc: torch.Tensor, recipe: ViewConfig, out_size: int,
                  generator: torch.Generator) -> torch.Tensor:
    """One view of ``recipe`` per image: uint8 (B, H, W, C) -> float (B, C, S, S) in [0, 1].

    The on-device path: the images stay on their device, parameters are drawn from ``generator``
    on the CPU and moved over.
    """
    b, h, w, _ = images_uint8_nhwc.shape
    params = sample_view_params(b, recipe, (h, w), generator)
    return apply_view(to_float_nchw(images_uint8_nhwc), params, out_size)


__all__ = ["ViewParams", "sample_crop_boxes", "sample_view_params", "apply_view", "augment_batch",
           "to_float_nchw", "to_uint8_nhwc", "CROP_ATTEMPTS", "BLUR_REF_PX"]
