"""The audio front end: log-mel spectrograms (``torch.stft`` and an HTK-scale mel filter bank of our
own; no torchaudio build matches the pinned torch), waveform augmentations, SpecAugment masks,
and the audio part of the view cache.

Front end (batched, any device): int16 samples -> float in [-1, 1) -> power spectrogram
``|STFT|^2`` (periodic Hann window of ``n_fft`` samples, hop ``hop``, centred frames with
reflection padding, as ``torch.stft(center=True)``) -> ``n_mels`` triangular filters equally
spaced on the HTK mel scale ``mel(f) = 2595 log10(1 + f / 700)`` between ``f_min`` and ``f_max``,
each scaled to unit area (Slaney's ``2 / (f_{m+1} - f_{m-1})``) -> ``log(mel + 1e-6)`` ->
per-utterance standardisation (zero mean, unit variance over the whole spectrogram: cepstral mean
and variance normalisation, so no data-set statistics are needed at evaluation).

Augmentations, per recording, before the front end (AVID trains on random audio clips with
volume jitter; Morgado et al. 2021, arXiv:2004.12943, section 4; FSDD clips are short, so a shift
stands in for the random clip): a time shift of up to ``shift_s`` seconds either way (zero fill),
a gain of ``U(-gain_db, gain_db)`` dB, and with probability ``noise_p`` white noise at an SNR of
``U(snr_db)`` dB relative to the recording's RMS. After the front end, SpecAugment (Park et al.
2019, arXiv:1904.08779): ``freq_masks`` bands of up to ``freq_width`` mel bins and ``time_masks``
spans of up to ``time_width`` frames set to 0 (the standardised mean).

Cache (``audio.npy`` beside the image views): float16 ``(N, K, 1, n_mels, frames)``, view ``k`` of
recording ``i`` drawn from a generator seeded by (seed, i // 256, k), so the file does not depend
on the chunk size.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jem.sections import AudioConfig

AUDIO_BLOCK = 256  # recordings per random-parameter block
LOG_EPS = 1e-6


def hz_to_mel(f: torch.Tensor | float) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float = 0.0
                   ) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) float32 triangular filters on the HTK mel scale, unit area
    (Slaney normalisation); ``f_max`` 0 means the Nyquist frequency."""
    f_max = f_max or sample_rate / 2.0
    freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2,
                                     dtype=torch.float64))  # (M + 2,)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1) each
    rising, falling = (freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)  # (M, F)
    tri = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return (tri * (2.0 / (hi - lo))).float()


def log_mel(wave: torch.Tensor, sample_rate: int, cfg: AudioConfig, fbank: torch.Tensor | None = None
            ) -> torch.Tensor:
    """Float waveforms (B, T) in [-1, 1] -> standardised log-mel spectrograms (B, 1, n_mels, frames)."""
    if fbank is None:
        fbank = mel_filterbank(cfg.n_fft, cfg.n_mels, sample_rate, cfg.f_min, cfg.f_max)
    window = torch.hann_window(cfg.n_fft, periodic=True, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(wave, cfg.n_fft, cfg.hop, window=window, center=True, pad_mode="reflect",
                      return_complex=True)  # (B, F, frames)
    power = spec.real.square() + spec.imag.square()
    mel = torch.log(fbank.to(wave.device, wave.dtype) @ power + LOG_EPS)  # (B, M, frames)
    mean = mel.mean(dim=(1, 2), keepdim=True)
    std = mel.std(dim=(1, 2), keepdim=True).clamp_min(1e-5)
    return ((mel - mean) / std).unsqueeze(1)


def to_float(samples: torch.Tensor | np.ndarray) -> torch.Tensor:
    """int16 samples -> float32 in [-1, 1)."""
    return torch.as_tensor(np.asarray(samples) if isinstance(samples, np.ndarray) else samples).float() / 32768.0


def augment_waves(wave: torch.Tensor, sample_rate: int, cfg: AudioConfig, g: torch.Generator) -> torch.Tensor:
    """Time shift, gain and noise (module docstring) of float waveforms (B, T); a new tensor."""
    b, t = wave.shape
    max_shift = int(round(cfg.shift_s * sample_rate))
    shifts = torch.randint(-max_shift, max_shift + 1, (b,), generator=g)
    gain_db = (torch.rand(b, generator=g) * 2.0 - 1.0) * cfg.gain_db
    noisy = torch.rand(b, generator=g) < cfg.noise_p
    snr_db = cfg.snr_db[0] + torch.rand(b, generator=g) * (cfg.snr_db[1] - cfg.snr_db[0])
    noise = torch.randn(b, t, generator=g)
    pos = torch.arange(t)[None, :] - shifts[:, None]  # (B, T) source index of each output sample
    valid = (pos >= 0) & (pos < t)
    out = torch.where(valid, wave.cpu().gather(1, pos.clamp(0, t - 1)), torch.zeros(()))
    out = out * (10.0 ** (gain_db / 20.0))[:, None]
    rms = out.square().mean(dim=1).sqrt()  # (B,)
    scale = torch.where(noisy, rms * 10.0 ** (-snr_db / 20.0), torch.zeros(()))
    return (out + noise * scale[:, None]).to(wave.device)


def spec_augment(spec: torch.Tensor, cfg: AudioConfig, g: torch.Generator) -> torch.Tensor:
    """SpecAugment masks on standardised spectrograms (B, 1, M, frames), set to 0; a new tensor."""
    b, _, m, f = spec.shape
    keep = torch.ones(b, m, f, dtype=torch.bool)
    for size, count, width, axis in ((m, cfg.freq_masks, cfg.freq_width, 1), (f, cfg.time_masks, cfg.time_width, 2)):
        for _ in range(count):
            w = torch.randint(0, min(width, size) + 1, (b,), generator=g)
            start = (torch.rand(b, generator=g) * (size - w + 1).float()).long()
            pos = torch.arange(size)[None, :]
            band = (pos >= start[:, None]) & (pos < (start + w)[:, None])  # (B, size)
            keep &= ~(band[:, :, None] if axis == 1 else band[:, None, :])
    return spec * keep[:, None].to(spec.device, spec.dtype)


def audio_view(samples: torch.Tensor | np.ndarray, sample_rate: int, cfg: AudioConfig, g: torch.Generator,
               fbank: torch.Tensor | None = None) -> torch.Tensor:
    """One augmented view of int16 recordings (B, T): (B, 1, n_mels, frames) float32."""
    wave = augment_waves(to_float(samples), sample_rate, cfg, g)
    return spec_augment(log_mel(wave, sample_rate, cfg, fbank), cfg, g)


def clean_view(samples: torch.Tensor | np.ndarray, sample_rate: int, cfg: AudioConfig) -> torch.Tensor:
    """The un-augmented spectrograms of int16 recordings (B, T) (what evaluation encodes)."""
    return log_mel(to_float(samples), sample_rate, cfg)


def n_frames(samples: int, cfg: AudioConfig) -> int:
    return 1 + samples // cfg.hop  # centred frames


def _block_generator(seed: int, block: int, slot: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, block, 0xA0D, slot]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


def build_audio_cache(audio: np.ndarray, sample_rate: int, cfg: AudioConfig, k_views: int, out_dir: str | Path,
                      seed: int) -> dict[str, Any]:
    """Write ``audio.npy`` (float16 (N, K, 1, M, frames)) and then ``audio_meta.json`` into
    ``out_dir``; return the meta. Views of recordings [256 b, 256 (b + 1)) and slot k come from
    one generator keyed by (seed, b, k)."""
    out_dir = Path(out_dir)
    n, t = audio.shape
    frames = n_frames(t, cfg)
    fbank = mel_filterbank(cfg.n_fft, cfg.n_mels, sample_rate, cfg.f_min, cfg.f_max)
    tmp = out_dir / ".tmp-audio.npy"
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, k_views, 1, cfg.n_mels, frames))
    for block in range(math.ceil(n / AUDIO_BLOCK)):
        rows = slice(block * AUDIO_BLOCK, min(n, (block + 1) * AUDIO_BLOCK))
        for k in range(k_views):
            view = audio_view(audio[rows], sample_rate, cfg, _block_generator(seed, block, k), fbank)
            arr[rows, k] = view.numpy().astype(np.float16)
    arr.flush()
    del arr
    meta = {"num_recordings": int(n), "views_per_recording": k_views, "sample_rate": int(sample_rate),
            "n_mels": cfg.n_mels, "frames": frames, "seed": seed,
            "frontend": {"n_fft": cfg.n_fft, "hop": cfg.hop, "n_mels": cfg.n_mels, "f_min": cfg.f_min,
                         "f_max": cfg.f_max}}  # what evaluation computes its clean spectrograms with
    (out_dir / "audio_meta.json").unlink(missing_ok=True)
    os.replace(tmp, out_dir / "audio.npy")
    (out_dir / "audio_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
