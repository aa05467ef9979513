"""Audio-visual sets: ``av-digits`` (spoken digits paired with handwritten ones) and paired folders.

``av-digits`` is built the way AV-MNIST is: every recording of the Free Spoken Digit Dataset (FSDD,
``{digit}_{speaker}_{take}.wav``, mono 8 kHz 16-bit, CC BY-SA 4.0; a user clones
github.com/Jakobovski/free-spoken-digit-dataset and points ``data.audio_root`` at its
``recordings`` folder) is paired with one of scikit-learn's 8x8 digits images of the same digit,
so the only content the two halves share is the digit.

Split, so that evaluation never sees a training recording or image:

* recordings: FSDD's own split, takes 0-4 of every speaker and digit are test, takes 5 and up
  train. Speakers are **not** held out: all speakers appear in both splits (different takes).
* images: the digits images are split first, stratified by ``test_fraction`` under ``seed``; test
  recordings are paired only with test images and training recordings only with training images.
* pairing: per digit and split, recordings in file-name order take the images of a seeded
  permutation in turn (wrapping round when there are more recordings than images, so an image is
  reused by at most ``ceil(recordings / images)`` recordings). The same seed gives the same pairs.
  ``Dataset.train_groups`` carries each training pair's image id, so the validation split keeps
  an image's pairs together too.

Audio is stored as int16 samples, centred in a fixed one second (zero-padded, or the middle second
of the 20 of 3,000 FSDD recordings that are longer).

Paired folders (``dataset: avfolder``): ``root/<class>/**/<id>.png|.jpg|.jpeg`` each beside an
``<id>.wav`` (mono 16-bit PCM, one sample rate for the whole folder); the layout rules, channels and
``test_fraction`` split of :mod:`jem.data.imagefolder` apply; every recording is centred in the
length of the longest one.
"""

from __future__ import annotations

import os
import re

import numpy as np

from jem.data.audio import check_wav, fit_length, read_wav, wav_header
from jem.data.common import Dataset, stratified_split
from jem.errors import DataError

FSDD_RATE = 8000
FSDD_SECONDS = 1.0
TEST_TAKES = 5  # FSDD's official split: takes 0-4 are test
_NAME = re.compile(r"^([0-9])_([A-Za-z0-9-]+)_([0-9]+)\.wav$")
_HOW = ("set data.audio_root to the 'recordings' folder of a clone of "
        "github.com/Jakobovski/free-spoken-digit-dataset")


def _fsdd_index(audio_root: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(sorted file paths, int64 digit labels, int64 take numbers) of the FSDD recordings."""
    if not audio_root:
        raise DataError(f"av-digits needs data.audio_root; {_HOW}")
    if not os.path.isdir(audio_root):
        raise DataError(f"data.audio_root {audio_root!r} is not a folder; {_HOW}")
    paths, digits, takes = [], [], []
    for name in sorted(os.listdir(audio_root)):
        if not name.lower().endswith(".wav") or name.startswith("."):
            continue
        m = _NAME.match(name)
        if m is None:
            raise DataError(f"{os.path.join(audio_root, name)} is not named {{digit}}_{{speaker}}_{{take}}.wav "
                            "as FSDD recordings are")
        paths.append(os.path.join(audio_root, name))
        digits.append(int(m.group(1)))
        takes.append(int(m.group(3)))
    y, t = np.asarray(digits, dtype=np.int64), np.asarray(takes, dtype=np.int64)
    for split, mask in (("test (takes 0-4)", t < TEST_TAKES), ("training (takes 5 and up)", t >= TEST_TAKES)):
        missing = sorted(set(range(10)) - set(y[mask].tolist()))
        if missing:
            raise DataError(f"data.audio_root {audio_root!r} has no {split} recording of digit(s) "
                            f"{', '.join(map(str, missing))}; {_HOW}")
    return paths, y, t


def check_av_digits(audio_root: str) -> None:
    """Cheap check (headers and sizes only): every FSDD file is named as FSDD names them, each digit
    has training and test takes, and every file is mono 16-bit 8 kHz and not truncated."""
    paths, _, _ = _fsdd_index(audio_root)
    for path in paths:
        check_wav(path, FSDD_RATE)


def pair_indices(audio_y: np.ndarray, image_y: np.ndarray, seed: int | list[int]) -> np.ndarray:
    """For each recording (label ``audio_y[i]``) the index of its image in ``image_y``: per label,
    recordings in their given order take the images of a seeded permutation in turn (wrapping)."""
    rng = np.random.default_rng(seed)
    out = np.full(len(audio_y), -1, dtype=np.int64)
    for label in np.unique(audio_y):
        recs, imgs = np.flatnonzero(audio_y == label), np.flatnonzero(image_y == label)
        if len(imgs) == 0:
            raise DataError(f"no image of class {int(label)} to pair with its recordings")
        order = rng.permutation(imgs)
        out[recs] = order[np.arange(len(recs)) % len(imgs)]
    return out


def load_av_digits(audio_root: str, test_fraction: float, seed: int) -> Dataset:
    """FSDD recordings paired with digits images (see the module docstring): uint8 ``(N, 8, 8, 1)``
    images, int16 ``(N, 8000)`` audio at 8 kHz, int64 digit labels; ``train_groups`` = image ids."""
    from jem.data.digits import load_digits_dataset

    paths, y, takes = _fsdd_index(audio_root)
    images = load_digits_dataset(test_fraction, seed)
    length = int(FSDD_RATE * FSDD_SECONDS)
    audio = np.stack([fit_length(read_wav(p, FSDD_RATE), length) for p in paths])  # (N, T) int16
    tr, te = np.flatnonzero(takes >= TEST_TAKES), np.flatnonzero(takes < TEST_TAKES)
    img_tr = pair_indices(y[tr], images.train_y, [seed, 0xA7D, 0])
    img_te = pair_indices(y[te], images.test_y, [seed, 0xA7D, 1])
    return Dataset(
        train_x=images.train_x[img_tr], train_y=y[tr], test_x=images.test_x[img_te], test_y=y[te],
        classes=images.classes, train_groups=img_tr, train_audio=audio[tr], test_audio=audio[te],
        sample_rate=FSDD_RATE,
    )


def _paired_index(root: str) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """(classes, image paths, wav paths, labels) of a paired folder; DataError for an image without
    its recording."""
    from jem.data.imagefolder import _check_layout, _index

    classes, images, y = _index(root)
    _check_layout(classes, y, root)
    wavs = [os.path.splitext(p)[0] + ".wav" for p in images]
    lonely = [p for p, w in zip(images, wavs) if not os.path.isfile(w)]
    if lonely:
        more = f" (and {len(lonely) - 1} more)" if len(lonely) > 1 else ""
        raise DataError(f"image {lonely[0]} has no recording beside it (expected "
                        f"{os.path.basename(os.path.splitext(lonely[0])[0])}.wav){more}")
    return classes, images, wavs, y


def check_avfolder(root: str) -> int:
    """Cheap check of a paired folder (layout, one .wav beside each image, headers); returns the
    sample rate (that of the first recording, which every other must share)."""
    _, _, wavs, _ = _paired_index(root)
    rate = wav_header(wavs[0])[2]
    for path in wavs:
        check_wav(path, rate)
    return rate


def load_avfolder(root: str, image_size: int, test_fraction: float, seed: int, channels: int = 0) -> Dataset:
    """Every (image, recording) pair of a paired folder, split stratified by ``test_fraction``."""
    from jem.data.imagefolder import DEFAULT_SIZE, _decode, high_depth_notes

    classes, images, wavs, y = _paired_index(root)
    rate = wav_header(wavs[0])[2]
    audio = [read_wav(p, rate) for p in wavs]
    length = max(len(a) for a in audio)
    size = image_size or DEFAULT_SIZE
    high: dict[str, int] = {}
    decoded = [_decode(p, size, {1: "L", 3: "RGB"}.get(channels), high) for p in images]
    x = np.stack([np.broadcast_to(img, (size, size, channels or 3)) for img, _ in decoded])
    if channels == 0 and all(grey for _, grey in decoded):
        x = np.ascontiguousarray(x[..., :1])
    a = np.stack([fit_length(s, length) for s in audio])
    tr, te = stratified_split(y, test_fraction, seed)
    return Dataset(train_x=x[tr], train_y=y[tr], test_x=x[te], test_y=y[te], classes=classes,
                   train_audio=a[tr], test_audio=a[te], sample_rate=rate, notes=high_depth_notes(high, len(images)))
