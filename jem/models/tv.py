"""Backbones by name from torchvision's classification models (``model.backbone: resnet50``,
``regnet_y_400mf``, ``convnext_tiny``, ...), always built with random weights.

:func:`build_torchvision` calls ``torchvision.models.get_model(name, weights=None)`` (jem never
downloads or loads pretrained weights) and then:

* removes the classifier: the *last* ``nn.Linear`` of the model (ResNet/RegNet ``fc``, EfficientNet
  / ConvNeXt / MobileNet ``classifier[-1]``, ViT ``heads.head``, Swin ``head``) becomes
  ``nn.Identity``, and its ``in_features`` is the feature dimension (what the penultimate layer
  gives; e.g. 512 for resnet18, 2048 for resnet50, 440 for regnet_y_400mf). Layers before it
  (ConvNeXt's final LayerNorm, MobileNet-v3's 1280-wide hidden layer) stay;
* adapts the input channels: the first ``Conv2d`` that reads 3 channels is replaced by one reading
  the data's channels (1 for digits and Fashion-MNIST), same kernel, stride, padding and groups;
* applies the ``stem`` (``model.stem``): ``imagenet`` keeps torchvision's stem; ``cifar`` is the
  small-image stem of SimCLR's CIFAR experiments (Chen et al. 2020, arXiv:2002.05709, appendix B.9),
  defined for the ResNet family (ResNet, ResNeXt, Wide ResNet: a 3x3 stride-1 first convolution, no
  max-pool) and for RegNet (Radosavovic et al. 2020, arXiv:2003.13678: its 3x3 stride-2 stem
  convolution becomes stride 1; RegNet has no max-pool). With the CIFAR stem a ResNet's total
  stride drops from 32 to 8 (32 px -> 4x4 final maps) and a RegNet's from 32 to 16 (32 px -> 2x2).

A replaced convolution of a ResNet or RegNet is initialised as torchvision initialises those
families (Kaiming normal, fan-out, ReLU gain); in other families it is drawn N(0, s^2) with ``s``
the standard deviation of the random weights it replaces. ``resnet18`` with the CIFAR stem is
*not* built here: it is jem's original CIFAR-stem ResNet-18 (:func:`jem.models.backbones.cifar_resnet18`),
numerics unchanged.

``stem: auto`` resolves (:func:`resolve_stem`) to ``cifar`` for ResNet and RegNet models on images
of at most 64 px (:data:`CIFAR_STEM_MAX`; CIFAR's 32 px, Tiny-ImageNet's 64 px) and to ``imagenet``
above (STL-10's 96 px, 224 px crops) and for every other family; ``resnet18`` resolves to
``cifar`` at every size, as it always has been.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from typing import Any

import torch
from torch import nn

STEMS = ("auto", "imagenet", "cifar")
CIFAR_STEM_MAX = 64  # stem auto: the CIFAR stem up to this image side (px) for ResNet / RegNet
LEGACY_RESNET18 = "resnet18"  # jem's CIFAR-stem ResNet-18 (kept bit-identical)
# torchvision classification models this builder refuses, and why (one line each)
UNSUPPORTED = {
    "squeezenet1_0": "its classifier is a convolution, not a linear layer",
    "squeezenet1_1": "its classifier is a convolution, not a linear layer",
}
# keyword arguments some builders need so that forward returns one tensor in training mode
_BUILD_KWARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


@lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """The classification models of ``torchvision.models`` this builder accepts (sorted)."""
    import torchvision.models as tvm

    return tuple(n for n in tvm.list_models(module=tvm) if n not in UNSUPPORTED)


def check_name(name: str, builtins: tuple[str, ...]) -> None:
    """ValueError (one line, with close matches) unless ``name`` is a built-in backbone or a
    torchvision classification model."""
    if name in builtins or name in torchvision_names():
        return
    if name in UNSUPPORTED:
        raise ValueError(f"model.backbone = {name!r} is not supported: {UNSUPPORTED[name]}")
    close = difflib.get_close_matches(name, [*builtins, *torchvision_names()], n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise ValueError(f"model.backbone = {name!r} is not allowed; choose {', '.join(builtins)} or a torchvision "
                     f"classification model (torchvision.models.list_models(), e.g. resnet50, regnet_y_400mf)"
                     + hint)


def family(name: str) -> str:
    """``resnet`` (ResNet, ResNeXt, Wide ResNet), ``regnet`` or ``other``: what the CIFAR stem is defined for."""
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        return "resnet"
    if name.startswith("regnet"):
        return "regnet"
    return "other"


def resolve_stem(name: str, stem: str, image_size: int) -> str:
    """``model.stem`` with ``auto`` resolved for ``name`` on ``image_size`` px images (module docstring)."""
    if stem not in STEMS:
        raise ValueError(f"model.stem = {stem!r}; choose one of: {', '.join(STEMS)}")
    if stem != "auto":
        return stem
    if name == LEGACY_RESNET18:
        return "cifar"
    return "cifar" if family(name) != "other" and image_size <= CIFAR_STEM_MAX else "imagenet"


def _conv_like(old: nn.Conv2d, in_channels: int, kernel: int | None = None, stride: int | None = None,
               padding: int | None = None) -> nn.Conv2d:
    k = (kernel, kernel) if kernel is not None else old.kernel_size
    s = (stride, stride) if stride is not None else old.stride
    p = (padding, padding) if padding is not None else old.padding
    return nn.Conv2d(in_channels, old.out_channels, k, s, p, dilation=old.dilation,  # type: ignore[arg-type]
                     bias=old.bias is not None, padding_mode=old.padding_mode)


@torch.no_grad()
def _init_like(new: nn.Conv2d, old: nn.Conv2d, kaiming: bool) -> None:
    if kaiming:  # torchvision's ResNet / RegNet init
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    else:
        new.weight.normal_(0.0, float(old.weight.std()) if old.weight.numel() > 1 else 0.02)
    if new.bias is not None:
        new.bias.zero_()


def _set_child(root: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _first_rgb_conv(net: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3:
            return name, m
    raise ValueError("found no convolution reading 3 input channels to adapt")


def _remove_classifier(net: nn.Module) -> int:
    """Replace the last ``nn.Linear`` by ``nn.Identity``; returns its ``in_features``."""
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("found no linear classifier to remove")
    name, last = linears[-1]
    _set_child(net, name, nn.Identity())
    return int(last.in_features)


def zero_init_residual_gammas(net: nn.Module) -> int:
    """Set the scale (gamma) of the last BatchNorm of every residual block of a torchvision ResNet
    (BasicBlock ``bn2``, Bottleneck ``bn3``: what torchvision's ``zero_init_residual=True`` does) or
    RegNet (ResBottleneckBlock ``f.c``'s BatchNorm) to 0; returns how many it set."""
    from torchvision.models.regnet import ResBottleneckBlock
    from torchvision.models.resnet import BasicBlock, Bottleneck

    done = 0
    for m in net.modules():
        bn = (m.bn2 if isinstance(m, BasicBlock) else m.bn3 if isinstance(m, Bottleneck)
              else m.f.c[1] if isinstance(m, ResBottleneckBlock) else None)
        if isinstance(bn, nn.BatchNorm2d):
            nn.init.zeros_(bn.weight)
            done += 1
    return done


def build_torchvision(name: str, in_channels: int, stem: str) -> tuple[nn.Module, int]:
    """torchvision classification model ``name`` with random weights, its classifier removed, its
    input adapted to ``in_channels`` and the resolved ``stem`` (``imagenet`` | ``cifar``) applied.
    Returns (module mapping (B, C, H, W) -> (B, D), D)."""
    import torchvision.models as tvm

    if name in UNSUPPORTED:
        raise ValueError(f"model.backbone = {name!r} is not supported: {UNSUPPORTED[name]}")
    if stem not in ("imagenet", "cifar"):
        raise ValueError(f"stem {stem!r} must be resolved to imagenet or cifar first (resolve_stem)")
    fam = family(name)
    if stem == "cifar" and fam == "other":
        raise ValueError(f"model.stem = cifar is defined for ResNet and RegNet models, not {name}; use "
                         "model.stem = imagenet or auto")
    net = tvm.get_model(name, weights=None, **_BUILD_KWARGS.get(name, {}))
    feat_dim = _remove_classifier(net)
    kaiming = fam != "other"
    if stem == "cifar" and fam == "resnet":
        old = net.conv1
        net.conv1 = _conv_like(old, in_channels, kernel=3, stride=1, padding=1)
        _init_like(net.conv1, old, kaiming)
        net.maxpool = nn.Identity()
    elif stem == "cifar":  # regnet: stem = Conv2dNormActivation(3, w, 3, stride 2)
        old = net.stem[0]
        new = _conv_like(old, in_channels, stride=1)
        _init_like(new, old, kaiming)
        net.stem[0] = new
    elif in_channels != 3:
        where, old = _first_rgb_conv(net)
        new = _conv_like(old, in_channels)
        _init_like(new, old, kaiming)
        _set_child(net, where, new)
    net.out_dim = feat_dim  # type: ignore[assignment]
    return net, feat_dim
