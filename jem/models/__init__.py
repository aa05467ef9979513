"""Backbones and heads. No infrastructure here: plain ``nn.Module`` builders."""

from jem.models.backbones import ARCH_KEYS, backbone_arch, build_backbone
from jem.models.heads import mlp

__all__ = ["ARCH_KEYS", "backbone_arch", "build_backbone", "mlp"]
