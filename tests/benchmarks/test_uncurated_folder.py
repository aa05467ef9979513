"""The generated uncurated folder of benchmarks/uncurated.py: Fashion-MNIST training images only,
unlabelled, in mixed formats, sizes and modes, with noise and corrupt distractors the stream
lists (and later skips)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from benchmarks.uncurated import write_fashion_folder
from jem.data.stream import count_files, stream_files

FASHION = "/usr/share/datasets/fashion-mnist"


def test_folder_holds_training_images_and_distractors(tmp_path):
    from jem.data.idx import load_fashion_mnist

    try:
        ds = load_fashion_mnist(FASHION)
    except Exception:  # noqa: BLE001 - the Debian package is not installed here
        pytest.skip("Fashion-MNIST not installed")
    counts = write_fashion_folder(tmp_path / "raw", 40, seed=3)
    assert counts == {"fashion": 40, "noise": 1, "corrupt": 3}
    files = stream_files(str(tmp_path / "raw"))
    assert count_files(str(tmp_path / "raw")) == len(files) == 44
    train = {hashlib.sha256(x.tobytes()).hexdigest() for x in ds.train_x[:, :, :, 0]}
    test = {hashlib.sha256(x.tobytes()).hexdigest() for x in ds.test_x[:, :, :, 0]} - train
    modes, sizes, exact = set(), set(), 0
    for f in files:
        try:
            with Image.open(f) as img:
                modes.add(img.mode)
                sizes.add(img.size)
                a = np.asarray(img)
        except Exception:  # noqa: BLE001 - the corrupt distractors
            continue
        if img.size == (28, 28) and img.mode == "L":  # the lossless, unresized copies: exact training images
            digest = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
            assert digest in train and digest not in test
            exact += 1
    assert exact == 32  # 80% of 40
    assert {"L", "RGB", "P"} <= modes and {(28, 28), (56, 56), (36, 30)} <= sizes
    assert not any("class" in f or any(c in f for c in ds.classes) for f in files)  # no label in any path


def test_write_folder_cli_writes_once_and_refuses_a_non_empty_folder(tmp_path, capsys):
    from benchmarks.uncurated import main

    assert main(["--write-folder", str(tmp_path / "raw"), "--images", "10"]) == 0  # CI installs Fashion-MNIST
    assert count_files(str(tmp_path / "raw")) == 10 + 0 + 3  # 3% of 10 rounds to no noise image; 3 corrupt
    before = sorted(p.name for p in (tmp_path / "raw").rglob("*"))
    with pytest.raises(SystemExit, match="not empty"):
        main(["--write-folder", str(tmp_path / "raw"), "--images", "10"])
    assert sorted(p.name for p in (tmp_path / "raw").rglob("*")) == before  # nothing written or removed
