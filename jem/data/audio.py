"""Reading PCM WAV files (stdlib :mod:`wave`) into fixed-length int16 arrays, with one-line errors.

Only what the audio-visual sets need: mono, 16-bit PCM, one sample rate per data set. A file that is
empty, truncated (its header promises more frames than it holds), stereo, not 16-bit or at another
sample rate raises :class:`~jem.errors.DataError` naming the file and the problem, so a bad
recording is found before compute instead of being trained on.
"""

from __future__ import annotations

import os
import wave

import numpy as np

from jem.errors import DataError


def wav_header(path: str) -> tuple[int, int, int, int, int]:
    """(channels, sample width in bytes, sample rate, frames, bytes of sample data present) from the
    header and the file size, without reading the samples; DataError if the header is unreadable."""
    size = os.path.getsize(path)
    if size == 0:
        raise DataError(f"audio file {path} is empty (0 bytes)")
    try:
        with open(path, "rb") as f, wave.open(f, "rb") as w:
            # wave stops at the start of the data chunk: what follows is the sample data
            present = size - f.tell()
            return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes(), present
    except (wave.Error, EOFError) as exc:
        raise DataError(f"audio file {path} is not a readable PCM WAV file ({exc or 'header cut short'})") from None


def check_wav(path: str, rate: int) -> int:
    """Check the header of ``path`` (mono, 16-bit, ``rate`` Hz, at least one frame, the data chunk as
    long as the header says); return its frame count. Reads the header only (plus the file size)."""
    channels, width, sr, frames, present = wav_header(path)
    if channels != 1:
        raise DataError(f"audio file {path} has {channels} channels; expected mono (1 channel)")
    if width != 2:
        raise DataError(f"audio file {path} has {8 * width}-bit samples; expected 16-bit PCM")
    if sr != rate:
        raise DataError(f"audio file {path} is sampled at {sr} Hz; expected {rate} Hz (resample it first)")
    if frames == 0:
        raise DataError(f"audio file {path} holds no samples")
    if present < 2 * frames:
        raise DataError(f"audio file {path} is truncated: its header promises {frames} samples, "
                        f"it holds {max(present, 0) // 2}")
    return frames


def read_wav(path: str, rate: int) -> np.ndarray:
    """The int16 samples ``(T,)`` of a mono 16-bit ``rate``-Hz WAV file; DataError if it is bad or truncated."""
    frames = check_wav(path, rate)
    with wave.open(path, "rb") as w:
        data = w.readframes(frames)
    if len(data) != 2 * frames:
        raise DataError(f"audio file {path} is truncated: its header promises {frames} samples, "
                        f"it holds {len(data) // 2}")
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """``x`` centred in ``length`` samples: zero-padded equally on both sides when shorter, the
    middle ``length`` samples when longer (the odd sample goes to the end in both cases)."""
    n = len(x)
    if n >= length:
        start = (n - length) // 2
        return x[start:start + length]
    out = np.zeros(length, dtype=x.dtype)
    start = (length - n) // 2
    out[start:start + n] = x
    return out
