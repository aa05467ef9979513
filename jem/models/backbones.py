"""Encoders ("backbones"): a small CNN for 8x8 to 32x32 inputs, a CIFAR-stem ResNet-18, a small-patch
ViT-Tiny (:mod:`jem.models.vit`) and any torchvision classification model by name, with random
weights and its classifier removed (:mod:`jem.models.tv`).

A backbone maps (B, C, H, W) float images to (B, D) features; ``D`` is returned next to the
module by :func:`build_backbone`. The architecture is fully described by a small JSON-able dict
(``arch``) so an exported encoder can be rebuilt without params.yaml.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from jem.models.tv import LEGACY_RESNET18, build_torchvision, resolve_stem, zero_init_residual_gammas

ARCH_KEYS = ("backbone", "width", "in_channels", "image_size")
BUILTIN = ("small_cnn", "resnet18", "vit_tiny")  # jem's own; resnet18 = the CIFAR-stem ResNet-18


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Three stages of two 3x3 conv-BN-ReLU layers (widths w, 2w, 4w; stride 2 between stages)
    and global average pooling -> 4w features. About 286k parameters at w = 32, C = 1.

    Sized for 8x8 (digits: 8 -> 4 -> 2) up to 32x32 (CIFAR: 32 -> 16 -> 8) inputs.
    """

    def __init__(self, in_channels: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv_bn(in_channels, w), *_conv_bn(w, w),
            *_conv_bn(w, 2 * w, 2), *_conv_bn(2 * w, 2 * w),
            *_conv_bn(2 * w, 4 * w, 2), *_conv_bn(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.out_dim = 4 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 4w)
        return self.features(x)


def cifar_resnet18(in_channels: int) -> nn.Module:
    """ResNet-18 with the CIFAR stem (He et al. 2016, arXiv:1512.03385; SimCLR appendix B.9):
    3x3 stride-1 first convolution and no max-pool, so 32x32 inputs keep 4x4 maps at the end.
    Output: 512-d pooled features (the classifier is removed)."""
    from torchvision.models import resnet18  # lazily: importing torchvision costs ~3 s per process

    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    net.out_dim = 512  # type: ignore[assignment]
    return net


def backbone_arch(model: Any, in_channels: int, image_size: int) -> dict[str, Any]:
    """The ``arch`` dict of the ``model`` params section (``backbone``, ``width``; ``vit_tiny`` also
    ``depth`` and ``patch_size``) for images of ``in_channels`` x ``image_size`` px: what
    :func:`build_backbone` takes and ``encoder.json`` records."""
    arch: dict[str, Any] = {"backbone": model.backbone, "width": model.width, "in_channels": in_channels,
                            "image_size": image_size}
    if model.backbone == "vit_tiny":
        arch.update(depth=model.depth, patch_size=model.patch_size)
    elif model.backbone not in ("small_cnn", "vit_tiny"):  # torchvision models, resnet18 included
        stem = resolve_stem(model.backbone, getattr(model, "stem", "auto"), image_size)
        if model.backbone != LEGACY_RESNET18 or stem != "cifar":
            arch["stem"] = stem
        if getattr(model, "zero_init_residual", False):  # recorded only when set: older encoder.json files stay valid
            arch["zero_init_residual"] = True
    return arch


def build_backbone(arch: dict[str, Any]) -> tuple[nn.Module, int]:
    """``arch`` = {"backbone", "width", "in_channels", "image_size"} (torchvision models: "stem"
    too; ``resnet18`` without it is the CIFAR-stem ResNet-18; ResNet / RegNet: "zero_init_residual"
    when set, :func:`jem.models.tv.zero_init_residual_gammas`) -> (module, feature dim)."""
    net, dim = _build_random(arch)
    if arch.get("zero_init_residual", False) and not zero_init_residual_gammas(net):
        raise ValueError(f"model.zero_init_residual: {arch['backbone']} has no ResNet or RegNet residual block")
    return net, dim


def _build_random(arch: dict[str, Any]) -> tuple[nn.Module, int]:
    """The backbone of ``arch`` with its builder's random initialisation."""
    name, cin = arch["backbone"], int(arch["in_channels"])
    if name == LEGACY_RESNET18 and arch.get("stem", "cifar") == "cifar":
        net: nn.Module = cifar_resnet18(cin)
    elif name == "small_cnn":
        net = SmallCNN(cin, int(arch.get("width", 32)))
    elif name == "vit_tiny":
        from jem.models.vit import DEPTH, ViT

        depth = int(arch.get("depth", 0)) or DEPTH
        net = ViT(cin, int(arch["image_size"]), int(arch.get("patch_size", 0)), depth=depth)
    else:  # a torchvision classification model (jem.models.tv)
        return build_torchvision(name, cin, str(arch.get("stem", "imagenet")))
    return net, int(net.out_dim)  # type: ignore[arg-type]
