"""Projector / expander / predictor heads."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(in_dim: int, dims: Sequence[int], last_bn: bool = False, last_bias: bool = True) -> nn.Sequential:
    """Linear-BN-ReLU for every hidden width, then a final Linear to ``dims[-1]``.

    This is the SimCLR projector / VICReg expander / BYOL predictor shape; ``last_bn`` adds a
    non-affine BatchNorm on the output (SimSiam's and Barlow Twins' projector ends in BN).
    """
    layers: list[nn.Module] = []
    d = in_dim
    for h in dims[:-1]:
        layers += [nn.Linear(d, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
        d = h
    layers.append(nn.Linear(d, dims[-1], bias=last_bias))
    if last_bn:
        layers.append(nn.BatchNorm1d(dims[-1], affine=False))
    return nn.Sequential(*layers)
