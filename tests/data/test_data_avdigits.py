"""Audio-visual sets: av-digits (FSDD recordings paired with scikit-learn digits) and paired folders.

Synthetic FSDD folders are written with the stdlib ``wave`` module; every recording's samples hold
its own id (digit, speaker, take), so the tests read back which file a row came from independently
of the file names the code parses. One test reads the shared FSDD copy when it is present.
"""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from requirements_util import fsdd_recordings, require_fsdd
from sklearn.datasets import load_digits

from jem.config import ConfigError, defaults_dict, parse_config
from jem.data import DataError, check_dataset, load_dataset
from jem.prepare import prepare

ROOT = Path(__file__).resolve().parents[2]
FSDD = fsdd_recordings()
SPEAKERS = ("ann", "bob")


def _write_wav(path: Path, samples: np.ndarray, rate: int = 8000, channels: int = 1, width: int = 2) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(samples).astype("<i2" if width == 2 else np.uint8).tobytes())


def _rec_id(digit: int, speaker: int, take: int) -> int:
    return 1 + digit * 1000 + speaker * 100 + take


def _fsdd(root: Path, takes: int = 8, length: int = 4000) -> Path:
    """10 digits x 2 speakers x ``takes`` takes; the samples of each file all equal its id."""
    root.mkdir(parents=True)
    for d in range(10):
        for s, name in enumerate(SPEAKERS):
            for t in range(takes):
                _write_wav(root / f"{d}_{name}_{t}.wav", np.full(length + 7 * t, _rec_id(d, s, t), np.int16))
    return root


def _ids(audio: np.ndarray) -> np.ndarray:
    """The id each row's recording carries (its non-zero value; the padding is zero)."""
    return np.asarray([int(row[row != 0][0]) for row in audio])


def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    b = load_digits()
    return np.rint(b.images * (255.0 / 16.0)).astype(np.uint8), b.target


def test_pairs_share_the_digit_and_the_fsdd_split_holds_out_takes_0_to_4(tmp_path):
    ds = load_dataset("av-digits", audio_root=str(_fsdd(tmp_path / "rec")), seed=3)
    assert ds.train_audio is not None and ds.test_audio is not None and ds.sample_rate == 8000
    assert ds.train_audio.shape == (10 * 2 * 3, 8000) and ds.test_audio.shape == (10 * 2 * 5, 8000)
    imgs, targets = _digit_images()
    lookup = {im.tobytes(): int(t) for im, t in zip(imgs, targets)}
    for x, y, audio, takes in ((ds.train_x, ds.train_y, ds.train_audio, range(5, 8)),
                               (ds.test_x, ds.test_y, ds.test_audio, range(5))):
        ids = _ids(audio)
        assert sorted((ids - 1) % 100) == sorted(list(takes) * 20)  # held-out takes, every speaker in both
        assert np.array_equal((ids - 1) // 1000, y)  # the label is the spoken digit
        assert [lookup[im[..., 0].tobytes()] for im in x] == y.tolist()  # the image shows the same digit
        assert len(np.unique(ids)) == len(ids)
    train_imgs = {im.tobytes() for im in ds.train_x}
    assert not train_imgs & {im.tobytes() for im in ds.test_x}  # no image on both sides
    # the audio is the file centred in one second: 4000 + 7 t samples of the id, zeros around
    row = ds.train_audio[0]
    n = 4000 + 7 * ((_ids(ds.train_audio[:1])[0] - 1) % 100)
    assert np.flatnonzero(row)[0] == (8000 - n) // 2 and np.count_nonzero(row) == n


def test_pairing_is_fixed_by_the_seed(tmp_path):
    root = str(_fsdd(tmp_path / "rec"))
    a, b, c = (load_dataset("av-digits", audio_root=root, seed=s) for s in (0, 0, 1))
    for f in ("train_x", "test_x", "train_audio", "test_audio", "train_groups"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.train_x, c.train_x)
    # 6 training recordings per digit, about 135 training images: no image is used twice
    assert len(np.unique(a.train_groups)) == len(a.train_y)


def test_prepare_keeps_validation_images_and_recordings_out_of_training(tmp_path):
    root = _fsdd(tmp_path / "rec", takes=30)  # 50 training recordings per digit: images are reused
    base = yaml.safe_load(yaml.safe_dump(defaults_dict()))
    cfg = parse_config(dict(base, dataset="av-digits", data=dict(base["data"], audio_root=str(root),
                                                                 val_fraction=0.2)))
    out = tmp_path / "prepared"
    out.mkdir()
    stats = prepare(cfg, out)
    assert stats["audio"] == {"sample_rate": 8000, "samples": 8000}
    arr = {n: np.load(out / f"{n}.npy") for n in ("train_x", "val_x", "test_x", "train_audio", "val_audio",
                                                  "test_audio", "train_y", "val_y", "test_y")}
    every = np.concatenate([_ids(arr[f"{s}_audio"]) for s in ("train", "val", "test")])
    assert len(every) == len(np.unique(every)) == 600  # every recording exactly once
    for split in ("train", "val", "test"):
        assert len(arr[f"{split}_x"]) == len(arr[f"{split}_audio"]) > 0
        assert np.array_equal((_ids(arr[f"{split}_audio"]) - 1) // 1000, arr[f"{split}_y"])
    images = {s: {im.tobytes() for im in arr[f"{s}_x"]} for s in ("train", "val", "test")}
    assert not images["train"] & images["val"] and not images["train"] & images["test"]
    assert not images["val"] & images["test"]


@pytest.mark.parametrize("problem, expected", [
    ("empty", "is empty (0 bytes)"),
    ("truncated", "is truncated: its header promises 4035 samples, it holds 1000"),
    ("rate", "is sampled at 16000 Hz; expected 8000 Hz"),
    ("stereo", "has 2 channels; expected mono"),
    ("8bit", "has 8-bit samples; expected 16-bit PCM"),
    ("header", "is not a readable PCM WAV file"),
])
def test_a_bad_recording_is_named_before_compute(tmp_path, problem, expected):
    root = _fsdd(tmp_path / "rec", takes=6)
    bad = root / "3_bob_5.wav"
    if problem == "empty":
        bad.write_bytes(b"")
    elif problem == "truncated":
        bad.write_bytes(bad.read_bytes()[:-2 * (4000 + 35 - 1000)])
    elif problem == "rate":
        _write_wav(bad, np.ones(4000, np.int16), rate=16000)
    elif problem == "stereo":
        _write_wav(bad, np.ones(8000, np.int16), channels=2)
    elif problem == "8bit":
        _write_wav(bad, np.ones(4000, np.uint8), width=1)
    else:
        bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")
    for call in (lambda: check_dataset("av-digits", audio_root=str(root)),
                 lambda: load_dataset("av-digits", audio_root=str(root))):
        with pytest.raises(DataError) as err:
            call()
        assert str(bad) in str(err.value) and expected in str(err.value) and "\n" not in str(err.value)


def test_the_prepare_stage_exits_with_one_line_and_writes_nothing(tmp_path):
    root = _fsdd(tmp_path / "rec", takes=6)
    (root / "7_ann_2.wav").write_bytes((root / "7_ann_2.wav").read_bytes()[:100])
    base = yaml.safe_load(yaml.safe_dump(defaults_dict()))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(dict(base, dataset="av-digits", data=dict(base["data"], audio_root=str(root)))))
    out = tmp_path / "prepared"
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "prepare.py"), "--params", str(params),
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2 and not out.exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "7_ann_2.wav is truncated" in lines[0], proc.stderr


def test_layout_errors(tmp_path):
    root = _fsdd(tmp_path / "rec", takes=6)
    (root / "notes.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"notes.wav is not named \{digit\}_\{speaker\}_\{take\}.wav"):
        check_dataset("av-digits", audio_root=str(root))
    (root / "notes.wav").unlink()
    for s in SPEAKERS:
        for t in range(5):
            (root / f"4_{s}_{t}.wav").unlink()
    with pytest.raises(DataError, match=r"has no test \(takes 0-4\) recording of digit\(s\) 4"):
        check_dataset("av-digits", audio_root=str(root))
    with pytest.raises(DataError, match="is not a folder"):
        check_dataset("av-digits", audio_root=str(tmp_path / "nowhere"))


def test_config_requires_audio_root_only_for_av_digits():
    base = defaults_dict()
    with pytest.raises(ConfigError, match="dataset av-digits needs it"):
        parse_config(dict(base, dataset="av-digits"))
    with pytest.raises(ConfigError, match="is only used with dataset av-digits, not digits"):
        parse_config(dict(base, data=dict(base["data"], audio_root="/x")))


def _paired_folder(root: Path) -> None:
    """2 classes x 4 pairs; pixel [0, 0] and every audio sample hold the pair's id."""
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for k in range(4):
            pid = 10 * c + k + 1
            img = np.full((32, 32), 7, np.uint8)
            img[0, 0] = pid
            Image.fromarray(img).save(root / f"c{c}" / f"s{k}.png")
            _write_wav(root / f"c{c}" / f"s{k}.wav", np.full(100 + k, pid, np.int16), rate=16000)


def test_paired_folder_keeps_each_image_with_its_own_recording(tmp_path):
    _paired_folder(tmp_path / "av")
    check_dataset("avfolder", str(tmp_path / "av"))
    ds = load_dataset("avfolder", str(tmp_path / "av"), test_fraction=0.25, seed=0)
    assert ds.sample_rate == 16000 and ds.train_x.shape[3] == 1
    assert ds.train_audio is not None and ds.test_audio is not None
    assert ds.train_audio.shape == (6, 103) and ds.test_audio.shape == (2, 103)  # the longest recording
    for x, audio, y in ((ds.train_x, ds.train_audio, ds.train_y), (ds.test_x, ds.test_audio, ds.test_y)):
        assert np.array_equal(x[:, 0, 0, 0], _ids(audio)) and np.array_equal(_ids(audio) // 10, y)


def test_paired_folder_errors(tmp_path):
    _paired_folder(tmp_path / "av")
    _write_wav(tmp_path / "av" / "c1" / "s2.wav", np.ones(50, np.int16), rate=8000)
    with pytest.raises(DataError, match=r"c1/s2.wav is sampled at 8000 Hz; expected 16000 Hz"):
        check_dataset("avfolder", str(tmp_path / "av"))
    (tmp_path / "av" / "c1" / "s2.wav").unlink()
    with pytest.raises(DataError, match=r"c1/s2.png has no recording beside it \(expected s2.wav\)"):
        load_dataset("avfolder", str(tmp_path / "av"))


def test_the_shared_fsdd_copy():
    require_fsdd()
    check_dataset("av-digits", audio_root=str(FSDD))
    ds = load_dataset("av-digits", audio_root=str(FSDD))
    assert len(ds.train_y) == 2700 and len(ds.test_y) == 300
    assert np.array_equal(np.bincount(ds.test_y), np.full(10, 30))
