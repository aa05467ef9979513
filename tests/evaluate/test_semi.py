"""Semi-supervised fine-tuning on scikit-learn digits, augmentation against a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from jem.evaluate import semi
from jem.evaluate.features import extract_features
from jem.evaluate.linear import linear_probe
from jem.evaluate.semi import MIN_STEPS, finetune, flip_and_shift

MEAN, STD = (0.3,), (0.35,)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    images = np.clip(x * 16, 0, 255).astype(np.uint8).reshape(-1, 8, 8, 1)  # 0..16 -> 0..255
    x_tr, x_te, y_tr, y_te = train_test_split(images, y, test_size=0.25, random_state=0, stratify=y)
    x_lab, _, y_lab, _ = train_test_split(x_tr, y_tr, train_size=0.1, random_state=0, stratify=y_tr)
    return x_lab, y_lab, x_te, y_te  # about 135 labelled images, 450 test images


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # (B, 1, 8, 8) -> (B, 32)


def test_finetune_from_scratch_learns_and_is_deterministic(digits):
    x_lab, y_lab, x_te, y_te = digits
    encoder = tiny_cnn()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    rng_before = torch.get_rng_state()
    kwargs = dict(num_classes=10, epochs=30, lr=0.05, batch_size=32, seed=3)
    first = finetune(encoder, 32, x_lab, y_lab, x_te, y_te, MEAN, STD, **kwargs)
    second = finetune(encoder, 32, x_lab, y_lab, x_te, y_te, MEAN, STD, **kwargs)
    assert first == second
    assert first["top1"] > 0.5, first  # chance is 0.1
    assert first["top5"] >= first["top1"]
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in before.items())  # caller's copy untouched
    assert torch.equal(torch.get_rng_state(), rng_before)  # global RNG untouched


def test_epochs_zero_is_linear_probe_on_frozen_features(digits):
    x_lab, y_lab, x_te, y_te = digits
    encoder = tiny_cnn()
    got = finetune(encoder, 32, x_lab, y_lab, x_te, y_te, MEAN, STD, num_classes=10, epochs=0, lr=0.1)
    train_f = extract_features(encoder, x_lab, MEAN, STD)
    test_f = extract_features(encoder, x_te, MEAN, STD)
    assert got == linear_probe(train_f, y_lab, test_f, y_te, num_classes=10)
    assert 0.0 <= got["top1"] <= got["top5"] <= 1.0


def test_tiny_subset_still_takes_min_steps(digits, monkeypatch):
    x_lab, y_lab, x_te, y_te = digits
    calls = []
    original = torch.optim.SGD.step
    monkeypatch.setattr(torch.optim.SGD, "step", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    finetune(tiny_cnn(), 32, x_lab[:4], y_lab[:4], x_te[:20], y_te[:20], MEAN, STD,
             num_classes=10, epochs=1, lr=0.01, batch_size=256)
    assert len(calls) == MIN_STEPS == semi.MIN_STEPS


def reference_candidates(image: np.ndarray, pad: int) -> list[np.ndarray]:
    """Every flip x shift outcome for one (C, H, W) image, built with numpy's reflect padding."""
    out = []
    c, h, w = image.shape
    for img in (image, image[:, :, ::-1]):
        padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                out.append(padded[:, dy : dy + h, dx : dx + w])
    return out


def test_flip_and_shift_outputs_are_valid_crops_and_cover_all_offsets():
    x = torch.randn(400, 2, 16, 12)  # pad = 12 // 8 = 1
    gen = torch.Generator().manual_seed(0)
    out = flip_and_shift(x, gen)
    assert out.shape == x.shape
    seen = set()
    for i in range(x.shape[0]):
        cands = reference_candidates(x[i].numpy(), pad=1)
        matches = [j for j, cand in enumerate(cands) if np.array_equal(out[i].numpy(), cand)]
        assert matches, f"sample {i} is not a flipped/shifted crop of its input"
        seen.add(matches[0])
    assert len(seen) == 2 * 9  # both flips and all 3 x 3 offsets occur
    again = flip_and_shift(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_finetune_on_cuda_learns_and_keeps_rng_state(digits):
    x_lab, y_lab, x_te, y_te = digits
    encoder = tiny_cnn().cuda()
    cuda_rng = torch.cuda.get_rng_state()
    kwargs = dict(num_classes=10, epochs=30, lr=0.05, batch_size=32, seed=3)
    gpu = finetune(encoder, 32, x_lab, y_lab, x_te, y_te, MEAN, STD, device="cuda", **kwargs)
    assert gpu["top1"] > 0.5, gpu
    assert torch.equal(torch.cuda.get_rng_state(), cuda_rng)
