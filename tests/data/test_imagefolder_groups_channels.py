"""Image folders: data.channels, the group-aware split (through prepare, so validation too) and the
layout checks the validate stage runs before any compute. Real PNG files written with PIL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from jem.config import ConfigError, defaults_dict, parse_config
from jem.data import DataError, check_dataset, load_dataset
from jem.data.common import to_channels
from jem.prepare import prepare

ROOT = Path(__file__).resolve().parents[2]
REGEX = r"^[^/]+/([^_]+)_"  # <class>/<source>_<k>.png -> <source>


def _write_sources(root: Path, classes: int = 3, sources: int = 8, copies: int = 3) -> None:
    """``classes`` folders, each with ``sources`` sources rendered ``copies`` times (near-duplicates).
    Pixel [0, 0] of every file holds its source's global id, pixel [0, 1] its class: the test reads
    the group back from the pixels, independently of the file names the code parses."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for s in range(sources):
            base = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # 32 px: not resized
            for k in range(copies):
                img = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
                img[0, 0], img[0, 1] = c * sources + s, c
                Image.fromarray(img).save(folder / f"src{c}x{s}_{k}.png")


def _groups_of(x: np.ndarray) -> set[int]:
    return set(x[:, 0, 0, 0].tolist())


def _config(root: Path, **data) -> object:
    base = defaults_dict()
    return parse_config(dict(base, dataset="imagefolder", data=dict(base["data"], root=str(root), **data)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_group_straddles_train_validation_and_test(tmp_path, seed):
    _write_sources(tmp_path / "img")
    cfg = parse_config(dict(yaml.safe_load(yaml.safe_dump(defaults_dict())), seed=seed, dataset="imagefolder",
                            data=dict(defaults_dict()["data"], root=str(tmp_path / "img"), group_regex=REGEX,
                                      test_fraction=0.25, val_fraction=0.2)))
    out = tmp_path / "prepared"
    out.mkdir()
    stats = prepare(cfg, out)
    split = {n: np.load(out / f"{n}_x.npy") for n in ("train", "val", "test")}
    groups = {n: _groups_of(x) for n, x in split.items()}
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["val"]
    assert not groups["val"] & groups["test"]
    assert groups["train"] | groups["val"] | groups["test"] == set(range(24))  # nothing lost
    for n, x in split.items():  # each group's three copies stay together
        ids, counts = np.unique(x[:, 0, 0, 0], return_counts=True)
        assert set(counts.tolist()) == {3}, n
    # every class is tested, about a quarter of each class: 8 sources -> 2 test sources per class
    test_classes = np.bincount(split["test"][:, 0, 1, 0], minlength=3)
    assert test_classes.tolist() == [6, 6, 6]
    assert stats["n_groups"]["train"] == len(groups["train"]) and stats["n_groups"]["val"] == len(groups["val"])


def test_a_per_image_split_does_straddle_groups(tmp_path):
    """The same data without group_regex: near-duplicates land on both sides (why the option exists)."""
    _write_sources(tmp_path / "img")
    ds = load_dataset("imagefolder", str(tmp_path / "img"), test_fraction=0.25, seed=0)
    assert _groups_of(ds.train_x) & _groups_of(ds.test_x)


def test_a_group_shared_by_two_classes_stays_on_one_side(tmp_path):
    root = tmp_path / "img"
    _write_sources(root, classes=2, sources=6, copies=2)
    shared = 99
    for c in range(2):  # "font" shared by both classes: one group across class folders
        img = np.full((32, 32, 3), 7, np.uint8)
        img[0, 0], img[0, 1] = shared, c
        Image.fromarray(img).save(root / f"class{c}" / "common_0.png")
    for seed in range(6):
        ds = load_dataset("imagefolder", str(root), test_fraction=0.3, seed=seed, group_regex=REGEX)
        in_train, in_test = shared in _groups_of(ds.train_x), shared in _groups_of(ds.test_x)
        assert in_train != in_test


def test_channels_auto_keeps_greyscale_files_one_channel(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    for c in range(2):
        (tmp_path / f"c{c}").mkdir()
        for i in range(3):
            Image.fromarray(grey[c, i], mode="L").save(tmp_path / f"c{c}" / f"{i}.png")
    ds = load_dataset("imagefolder", str(tmp_path), test_fraction=0.34, seed=0)
    assert ds.train_x.shape[1:] == (32, 32, 1)
    every = np.concatenate([ds.train_x, ds.test_x])[..., 0]
    assert {a.tobytes() for a in every} == {a.tobytes() for a in grey.reshape(-1, 32, 32)}
    assert load_dataset("imagefolder", str(tmp_path), channels=3).train_x.shape[1:] == (32, 32, 3)
    # one colour file makes the folder colour
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "c0" / "colour.png")
    assert load_dataset("imagefolder", str(tmp_path)).train_x.shape[1:] == (32, 32, 3)


def test_channels_one_is_itu_601_luma(tmp_path):
    # (R, G, B) = (200, 100, 50): L = 200*0.299 + 100*0.587 + 50*0.114 = 124.2 -> 124 (PIL's "L")
    for c in range(2):
        (tmp_path / f"c{c}").mkdir()
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), (200, 100, 50), np.uint8)).save(tmp_path / f"c{c}" / f"{i}.png")
    ds = load_dataset("imagefolder", str(tmp_path), channels=1)
    assert ds.train_x.shape[1:] == (32, 32, 1) and np.all(ds.train_x == 124)
    assert np.all(to_channels(np.full((1, 2, 2, 3), (200, 100, 50), np.uint8), 1) == 124)
    digits = load_dataset("digits", channels=3)  # other sets convert too: grey replicated
    assert digits.train_x.shape[3] == 3 and np.array_equal(digits.train_x[..., 0], digits.train_x[..., 2])


def _two_classes(root: Path, sizes: tuple[int, int] = (4, 4)) -> None:
    for c, n in enumerate(sizes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), i * 10, np.uint8)).save(root / f"c{c}" / f"s{i % 2}_{i}.png")


def test_layout_errors_before_any_decoding(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(loose / "a.png")
    with pytest.raises(DataError, match=r"has no class sub-folders \(its images lie directly in it"):
        check_dataset("imagefolder", str(loose))
    single = tmp_path / "single"
    _two_classes(single)
    for f in (single / "c1").iterdir():
        f.unlink()
    (single / "c1").rmdir()
    with pytest.raises(DataError, match="has a single class folder .'c0'.; classification needs at least two"):
        check_dataset("imagefolder", str(single))
    few = tmp_path / "few"
    _two_classes(few, (4, 2))
    with pytest.raises(DataError, match=r"fewer than 3 images .*: c1 \(2\)"):
        check_dataset("imagefolder", str(few))
    ok = tmp_path / "ok"
    _two_classes(ok)
    check_dataset("imagefolder", str(ok), group_regex=REGEX)  # two groups (s0, s1) per class
    with pytest.raises(DataError, match="does not match 'c0/s0_0.png'"):
        check_dataset("imagefolder", str(ok), group_regex=r"^([0-9]+)")
    with pytest.raises(DataError, match=r"leaves no test image for class c0 \(1 group\), c1 \(1 group\)"):
        check_dataset("imagefolder", str(ok), group_regex=r"^[^/]+/(s)")


def test_group_regex_params_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="has no capture group"):
        _config(tmp_path, group_regex="^[^/]+/")
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        _config(tmp_path, group_regex="(")
    base = defaults_dict()
    with pytest.raises(ConfigError, match="only used with dataset imagefolder, not digits"):
        parse_config(dict(base, data=dict(base["data"], group_regex=REGEX)))
    with pytest.raises(ConfigError, match="data.channels = 2 is not allowed"):
        _config(tmp_path, channels=2)


def test_validate_stage_rejects_a_folder_without_classes(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "flat" / "a.png")
    base = defaults_dict()
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(dict(base, dataset="imagefolder",
                                          data=dict(base["data"], root=str(tmp_path / "flat")))))
    proc = subprocess.run([sys.executable, "stages/validate.py", "--params", str(params)], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no class sub-folders" in lines[0], proc.stderr
