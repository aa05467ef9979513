"""The audio front end against a slow numpy reference written here from the formulas (HTK mel scale,
Slaney unit-area triangles, a periodic Hann STFT with centred reflection-padded frames), plus the
augmentations' measurable effects and the audio cache."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from jem.augment.audio import (
    _block_generator,
    audio_view,
    augment_waves,
    build_audio_cache,
    log_mel,
    mel_filterbank,
    n_frames,
    spec_augment,
)
from jem.sections import AudioConfig

SR = 8000


def _mel(f: float) -> float:
    return 2595.0 * math.log10(1.0 + f / 700.0)


def _hz(m: float) -> float:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def _ref_filterbank(n_fft: int, n_mels: int, sr: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangle m rises from edge m to edge m+1 and falls to edge m+2 (edges equally spaced in mel),
    scaled by 2 / (edge m+2 - edge m); evaluated at every FFT bin frequency k sr / n_fft."""
    lo, hi = _mel(f_min), _mel(f_max)
    edges = [_hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    fb = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        a, b, c = edges[m], edges[m + 1], edges[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if a < f <= b:
                fb[m, k] = (f - a) / (b - a)
            elif b < f < c:
                fb[m, k] = (c - f) / (c - b)
            fb[m, k] *= 2.0 / (c - a)
    return fb


def _ref_log_mel(x: np.ndarray, cfg: AudioConfig, sr: int) -> np.ndarray:
    n = cfg.n_fft
    padded = np.pad(x, n // 2, mode="reflect")
    window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * i / n) for i in range(n)])
    frames = [padded[s:s + n] * window for s in range(0, len(padded) - n + 1, cfg.hop)]
    power = np.abs(np.fft.rfft(np.array(frames), axis=1)) ** 2  # (frames, F)
    mel = np.log(_ref_filterbank(n, cfg.n_mels, sr, cfg.f_min, cfg.f_max or sr / 2) @ power.T + 1e-6)
    return (mel - mel.mean()) / mel.std(ddof=1)


@pytest.mark.parametrize("n_fft, n_mels, f_min, f_max", [(256, 40, 0.0, 4000.0), (512, 23, 100.0, 3500.0)])
def test_filterbank_matches_the_formula(n_fft, n_mels, f_min, f_max):
    got = mel_filterbank(n_fft, n_mels, SR, f_min, f_max).double().numpy()
    np.testing.assert_allclose(got, _ref_filterbank(n_fft, n_mels, SR, f_min, f_max), rtol=1e-5, atol=1e-9)


def test_log_mel_matches_the_numpy_reference():
    cfg = AudioConfig()
    t = np.arange(8000) / SR
    rng = np.random.default_rng(0)
    x = 0.3 * np.sin(2 * np.pi * (200 + 900 * t) * t) + 0.01 * rng.standard_normal(8000)  # a chirp + noise
    got = log_mel(torch.tensor(x[None], dtype=torch.float64), SR, cfg)[0, 0].numpy()
    assert got.shape == (40, n_frames(8000, cfg)) == (40, 63)
    np.testing.assert_allclose(got, _ref_log_mel(x, cfg, SR), atol=1e-6)


def test_a_tone_lands_in_the_band_centred_nearest_it():
    cfg = AudioConfig()
    edges = [_hz(_mel(4000.0) * i / 41) for i in range(42)]
    for f0 in (300.0, 1000.0, 2500.0):
        x = torch.sin(2 * math.pi * f0 * torch.arange(8000, dtype=torch.float64) / SR)[None]
        band = int(log_mel(x, SR, cfg)[0, 0, :, 5:-5].mean(1).argmax())
        assert band == int(np.argmin([abs(c - f0) for c in edges[1:-1]])), f0


def test_gain_alone_leaves_the_standardised_spectrogram_unchanged():
    cfg = replace(AudioConfig(), shift_s=0.0, noise_p=0.0, gain_db=12.0)
    # broadband, so every band is far above the log floor (1e-6) where gain is an additive constant
    x = 0.1 * torch.randn(1, 8000, generator=torch.Generator().manual_seed(9)).repeat(4, 1)
    g = torch.Generator().manual_seed(0)
    y = augment_waves(x, SR, cfg, g)
    ratio = y[:, 100] / x[:, 100]
    assert torch.all((ratio > 10 ** (-12 / 20) - 1e-6) & (ratio < 10 ** (12 / 20) + 1e-6))
    assert torch.allclose(y, x * ratio[:, None], atol=1e-6) and ratio.std() > 0
    diff = (log_mel(y, SR, cfg) - log_mel(x, SR, cfg)).abs()
    assert diff.max() < 2e-2 and diff.mean() < 1e-3


def test_time_shift_moves_the_signal_with_zero_fill():
    cfg = replace(AudioConfig(), shift_s=0.05, noise_p=0.0, gain_db=0.0)
    x = torch.arange(1, 1001, dtype=torch.float32)[None].repeat(8, 1)
    y = augment_waves(x, SR, cfg, torch.Generator().manual_seed(1))
    shifts = []
    for row in y:
        nz = torch.nonzero(row).flatten()
        s = int(row[nz[0]] - 1) * -1 + int(nz[0])  # output index of input sample 0 (may be off the edge)
        shifts.append(s)
        expect = torch.zeros(1000)
        for i in range(1000):
            if 0 <= i - s < 1000:
                expect[i] = i - s + 1
        assert torch.equal(row, expect)
    assert max(abs(s) for s in shifts) <= 400 and len(set(shifts)) > 1


def test_noise_is_added_at_the_drawn_snr():
    cfg = replace(AudioConfig(), shift_s=0.0, gain_db=0.0, noise_p=1.0, snr_db=[20.0, 20.0])
    x = torch.sin(torch.arange(8000) * 0.1)[None].repeat(3, 1)
    y = augment_waves(x, SR, cfg, torch.Generator().manual_seed(2))
    snr = 10 * torch.log10(x.square().mean(1) / (y - x).square().mean(1))
    assert torch.allclose(snr, torch.full((3,), 20.0), atol=0.2)


def test_spec_augment_masks_whole_bands_and_spans():
    cfg = replace(AudioConfig(), freq_masks=2, freq_width=5, time_masks=1, time_width=7)
    out = spec_augment(torch.ones(64, 1, 40, 63), cfg, torch.Generator().manual_seed(3))[:, 0]
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    some = 0
    for s in out:
        rows = (s == 0).all(1)  # masked mel bands
        cols = (s == 0).all(0)  # masked frames
        zero = s == 0
        assert torch.equal(zero, rows[:, None] | cols[None, :])  # nothing but whole bands and spans
        assert rows.sum() <= 10 and cols.sum() <= 7
        some += int(rows.any()) + int(cols.any())
    assert some > 64  # masks are not all empty


def test_audio_cache_is_deterministic_and_views_differ(tmp_path):
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal((300, 4000)) * 3000).astype(np.int16)
    cfg = AudioConfig()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = build_audio_cache(audio, SR, cfg, 2, tmp_path / "a", 5)
    build_audio_cache(audio, SR, cfg, 2, tmp_path / "b", 5)
    va, vb = np.load(tmp_path / "a" / "audio.npy"), np.load(tmp_path / "b" / "audio.npy")
    assert va.dtype == np.float16 and va.shape == (300, 2, 1, 40, n_frames(4000, cfg))
    assert np.array_equal(va, vb) and not np.array_equal(va[:, 0], va[:, 1])
    assert a == json.loads((tmp_path / "a" / "audio_meta.json").read_text())
    # recording 260 (second block) is view 1 of its block's generator, whatever else is in the file
    again = audio_view(audio[256:300], SR, cfg, _block_generator(5, 1, 1)).numpy().astype(np.float16)
    assert np.array_equal(again[4], va[260, 1])
