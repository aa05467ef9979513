"""Backbones by name from torchvision (jem.models.tv): classifier removed, input channels adapted,
CIFAR stem, auto stem, names checked; the original CIFAR-stem resnet18 is unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from jem.config import ConfigError, parse_config
from jem.models import backbone_arch, build_backbone
from jem.models.tv import resolve_stem, torchvision_names

# Penultimate widths from the papers / torchvision's model docs, not from this code:
# ResNet-18/34 end in 512 channels, ResNet-50 in 2048 (He et al. 2016, table 1); RegNetY-400MF's last
# stage is 440 wide (Radosavovic et al. 2020, appendix table: w4 = 440); ConvNeXt-T's last stage
# 768 (Liu et al. 2022); EfficientNet-B0's head conv 1280 (Tan & Le 2019, table 1).
KNOWN_WIDTHS = {"resnet18": 512, "resnet50": 2048, "regnet_y_400mf": 440, "convnext_tiny": 768,
                "efficientnet_b0": 1280}


def arch(name: str, stem: str, cin: int = 3, size: int = 32) -> dict:
    return {"backbone": name, "width": 32, "in_channels": cin, "image_size": size, "stem": stem}


@pytest.mark.parametrize("name", sorted(KNOWN_WIDTHS))
def test_feature_dim_is_the_known_penultimate_width_and_one_step_trains(name):
    torch.manual_seed(0)
    net, dim = build_backbone(arch(name, "imagenet", cin=1, size=32))
    assert dim == KNOWN_WIDTHS[name]
    x = torch.randn(4, 1, 32, 32)  # 1-channel input (digits, Fashion-MNIST)
    net.train()
    y = net(x)
    assert y.shape == (4, KNOWN_WIDTHS[name])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = [p.detach().clone() for p in net.parameters()]
    y.pow(2).mean().backward()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))  # one real step changed weights
    assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in net.modules())  # no classifier


def test_one_channel_input_conv_reads_one_channel():
    net, _ = build_backbone(arch("efficientnet_b0", "imagenet", cin=1))
    first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1 and first.kernel_size == (3, 3) and first.stride == (2, 2)


def _spatial_after(net: nn.Module, layer: str, size: int, cin: int = 1) -> tuple[int, int]:
    out: dict[str, tuple[int, int]] = {}

    def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        out["s"] = tuple(output.shape[2:])

    handle = net.get_submodule(layer).register_forward_hook(hook)
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, cin, size, size))
    handle.remove()
    return out["s"]


def test_cifar_stem_spatial_sizes_by_hand():
    # ResNet-50, CIFAR stem: 3x3 stride-1 conv keeps 32, no max-pool, layer2..4 halve: 32, 16, 8, 4
    net, _ = build_backbone(arch("resnet50", "cifar", cin=1, size=32))
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and isinstance(net.maxpool, nn.Identity)
    assert [_spatial_after(net, f"layer{i}", 32) for i in (1, 4)] == [(32, 32), (4, 4)]
    # ImageNet stem: 7x7 stride 2 (32 -> 16), max-pool (-> 8), layer4 -> 1
    net, _ = build_backbone(arch("resnet50", "imagenet", cin=1, size=32))
    assert [_spatial_after(net, f"layer{i}", 32) for i in (1, 4)] == [(8, 8), (1, 1)]
    # RegNet: stem conv stride 2 -> 1 (32 stays 32), then four stride-2 stages: 16, 8, 4, 2
    net, _ = build_backbone(arch("regnet_y_400mf", "cifar", cin=1, size=32))
    assert _spatial_after(net, "stem", 32) == (32, 32) and _spatial_after(net, "trunk_output", 32) == (2, 2)
    net, _ = build_backbone(arch("regnet_y_400mf", "imagenet", cin=1, size=32))
    assert _spatial_after(net, "stem", 32) == (16, 16) and _spatial_after(net, "trunk_output", 32) == (1, 1)


def test_original_cifar_resnet18_numerics_unchanged():
    """resnet18 with the cifar / auto stem is the pre-existing builder: same parameters, same output."""
    torch.manual_seed(3)
    net, dim = build_backbone({"backbone": "resnet18", "width": 32, "in_channels": 1, "image_size": 8})
    torch.manual_seed(3)  # the old code path, written out
    ref = resnet18(weights=None)
    ref.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    ref.maxpool, ref.fc = nn.Identity(), nn.Identity()
    assert dim == 512
    for (n, p), (m, q) in zip(net.state_dict().items(), ref.state_dict().items()):
        assert n == m and torch.equal(p, q)


def test_stem_auto_and_arch():
    class M:
        backbone, width, stem = "resnet50", 32, "auto"

    assert resolve_stem("resnet50", "auto", 32) == "cifar" and resolve_stem("resnet50", "auto", 64) == "cifar"
    assert resolve_stem("resnet50", "auto", 96) == "imagenet" and resolve_stem("regnet_y_400mf", "auto", 8) == "cifar"
    assert resolve_stem("convnext_tiny", "auto", 32) == "imagenet"
    assert resolve_stem("resnet18", "auto", 224) == "cifar"  # as it always was
    assert backbone_arch(M, 1, 8)["stem"] == "cifar"
    M.backbone = "resnet18"
    assert "stem" not in backbone_arch(M, 1, 8)  # encoder.json of the original resnet18 unchanged
    M.stem = "imagenet"
    assert backbone_arch(M, 1, 8)["stem"] == "imagenet"
    net, _ = build_backbone(backbone_arch(M, 1, 32))
    assert net.conv1.kernel_size == (7, 7) and isinstance(net.maxpool, nn.MaxPool2d)


def test_names_checked_with_close_matches():
    assert {"resnet50", "regnet_y_400mf", "convnext_tiny"} <= set(torchvision_names())
    assert "squeezenet1_0" not in torchvision_names()
    assert parse_config({"model": {"backbone": "regnet_y_400mf"}}).model.backbone == "regnet_y_400mf"
    with pytest.raises(ConfigError, match=r"did you mean resnet50\b"):
        parse_config({"model": {"backbone": "resnet05"}})
    with pytest.raises(ConfigError, match="squeezenet1_0' is not supported: its classifier is a convolution"):
        parse_config({"model": {"backbone": "squeezenet1_0"}})


@pytest.mark.parametrize("backbone,stem", [("resnet18", "cifar"), ("regnet_y_400mf", "auto")])
def test_short_real_pretrain_on_digits(tmp_path, backbone, stem):
    """VICReg on digits through the engine's library steps: the loss falls and the encoder's kNN is a
    real number from a trained network (budgets far too small to claim anything about accuracy)."""
    from library_run import pretrain_and_knn

    raw = {"method": "vicreg", "seed": 0, "model": {"backbone": backbone, "stem": stem},
           "data": {"max_train": 256}, "augment": {"views_per_image": 2},
           "train": {"epochs": 2, "batch_size": 64, "warmup_epochs": 0}, "eval": {"knn_k": [20], "monitor_every": 0}}
    out = pretrain_and_knn(raw, tmp_path)
    assert np.isfinite(out["final_loss"]) and out["final_loss"] < out["first_loss"]
    assert 0.1 < out["knn"] <= 1.0 and out["seconds"] < 60


# RegNetY-400MF has 1 + 3 + 6 + 6 residual blocks (Radosavovic et al. 2020, appendix: depths d1..d4);
# ResNet-18 has 2 + 2 + 2 + 2 BasicBlocks and ResNet-50 3 + 4 + 6 + 3 Bottlenecks (He et al. 2016, table 1)
BLOCKS = {"regnet_y_400mf": 16, "resnet18": 8, "resnet50": 16}


def block_calls(net: nn.Module) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(block, input, output, act(shortcut(input))) for every residual block of one training-mode forward,
    the last computed here from the block's parts."""
    from torchvision.models.regnet import ResBottleneckBlock
    from torchvision.models.resnet import BasicBlock, Bottleneck

    seen: list = []
    for m in net.modules():
        if isinstance(m, (ResBottleneckBlock, BasicBlock, Bottleneck)):
            m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0], out)))
    net.train()
    net(torch.randn(8, 1, 16, 16))
    calls = []
    for mod, x, out in seen:
        if isinstance(mod, ResBottleneckBlock):
            expected = mod.activation(mod.proj(x) if mod.proj is not None else x)
        else:
            expected = torch.relu(mod.downsample(x) if mod.downsample is not None else x)
        calls.append((mod, x, out, expected))
    return calls


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_zero_init_residual_makes_every_block_start_as_its_shortcut(name):
    """With model.zero_init_residual each residual block's output is act(shortcut(x)) at initialisation
    (the residual branch is 0 in training mode too), block by block."""
    torch.manual_seed(0)
    a = arch(name, "cifar", cin=1, size=16)
    net, _ = build_backbone({**a, "zero_init_residual": True})
    plain, _ = build_backbone(a)
    calls = block_calls(net)
    assert len(calls) == BLOCKS[name]
    for _, _, out, expected in calls:
        torch.testing.assert_close(out, expected)
    # without the option the branches are not zero: the same check fails on the plain model
    _, _, out, expected = block_calls(plain)[-1]
    assert not torch.allclose(out, expected)


def test_zero_init_residual_recorded_in_arch_and_refused_without_residual_blocks():
    cfg = parse_config({"model": {"backbone": "regnet_y_400mf", "zero_init_residual": True}})
    assert backbone_arch(cfg.model, 1, 28)["zero_init_residual"] is True
    assert "zero_init_residual" not in backbone_arch(parse_config({"model": {"backbone": "regnet_y_400mf"}}).model, 1, 28)
    for name in ("small_cnn", "vit_tiny", "convnext_tiny"):
        with pytest.raises(ConfigError, match="model.zero_init_residual applies to ResNet and RegNet"):
            parse_config({"model": {"backbone": name, "zero_init_residual": True}})
