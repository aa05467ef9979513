"""Feature extraction: normalisation, layout, eval mode and no_grad."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from jem.evaluate.features import extract_features


def test_flatten_encoder_returns_normalised_pixels_in_nchw_order():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(37, 5, 4, 3), dtype=np.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    feats = extract_features(nn.Flatten(), images, mean, std, batch_size=8)  # 5 batches, last partial
    ref = (images / 255.0 - np.array(mean)) / np.array(std)  # (N, H, W, C)
    ref = ref.transpose(0, 3, 1, 2).reshape(37, -1)  # (N, C*H*W), channel-major like NCHW
    assert feats.dtype == np.float32 and feats.shape == (37, 60)
    np.testing.assert_allclose(feats, ref, rtol=1e-6, atol=1e-6)


class Probe(nn.Module):
    """Records the mode and grad state it runs under; BN shows whether running stats are used."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(1)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.training, torch.is_grad_enabled()))
        return self.bn(x).mean(dim=(2, 3))  # (B, 1)


def test_eval_mode_no_grad_and_mode_restored():
    probe = Probe().train()
    probe.bn.running_mean.fill_(0.5)
    images = np.full((6, 2, 2, 1), 255, dtype=np.uint8)
    feats = extract_features(probe, images, [0.0], [1.0], batch_size=4)
    assert probe.seen == [(False, False), (False, False)]
    assert probe.training  # restored
    # eval-mode BN: (1 - running_mean 0.5) / sqrt(running_var 1 + eps)
    np.testing.assert_allclose(feats, np.full((6, 1), 0.5 / np.sqrt(1 + 1e-5)), rtol=1e-6)
    assert probe.bn.running_mean.item() == 0.5  # running stats untouched


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="uint8"):
        extract_features(nn.Flatten(), np.zeros((2, 4, 4, 1), dtype=np.float32), [0.0], [1.0])
    with pytest.raises(ValueError, match="channels"):
        extract_features(nn.Flatten(), np.zeros((2, 4, 4, 3), dtype=np.uint8), [0.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        extract_features(nn.Flatten(), np.zeros((0, 4, 4, 1), dtype=np.uint8), [0.0], [1.0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    images = np.random.default_rng(1).integers(0, 256, size=(9, 4, 4, 2), dtype=np.uint8)
    cpu = extract_features(nn.Flatten(), images, (0.5, 0.5), (0.2, 0.3), batch_size=4)
    gpu = extract_features(nn.Flatten().cuda(), images, (0.5, 0.5), (0.2, 0.3), batch_size=4, device="cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-6, atol=1e-6)
