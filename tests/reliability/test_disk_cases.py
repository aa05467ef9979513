"""Out of disk (rule 4): a pre-flight free-space check before the view cache (a memory-mapped
sparse file: a full disk killed the stage with SIGBUS and left ``.tmp-*`` files) and before the
encoder folders are written; one line naming the path and the space needed; nothing partial left.

The cases mount a 1 MiB tmpfs (root only; skipped with the reason otherwise)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_one_error, jem_cli, run, stage

from jem.errors import NoSpace


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs mounted under tmp_path."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_augment_on_a_full_disk_is_one_line_and_keeps_the_old_cache(tmp_path, tiny_disk, params_file):
    params_file()
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    # 1000 images of 32x32x1 x 4 views = 4 MB of views: more than the 1 MiB disk
    np.save(prepared / "train_x.npy", np.random.default_rng(0).integers(0, 256, (1000, 32, 32, 1), np.uint8))
    views = tiny_disk / "views"
    views.mkdir()
    (views / "meta.json").write_text('{"previous": true}\n')
    proc = stage("augment", "--params", "params.yaml", "--prepared", str(prepared), "--out", str(views),
                 cwd=tmp_path)
    line = assert_one_error(proc, "not enough disk space for the view cache", str(views), "needs 4.9 MiB")
    assert "free on" in line
    assert sorted(p.name for p in views.iterdir()) == ["meta.json"]  # no .tmp-*, old cache intact
    assert json.loads((views / "meta.json").read_text()) == {"previous": True}


class _Checkpoint:
    def __init__(self, folder):
        self.folder = folder

    @contextlib.contextmanager
    def as_directory(self):
        yield str(self.folder)


def test_encoder_copy_on_a_full_disk_leaves_no_partial_folder(tmp_path, tiny_disk):
    from jem.engine.run import _copy_encoder

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "encoder.safetensors").write_bytes(b"\0" * (2 << 20))
    (ckpt / "encoder.json").write_text("{}")
    target = tiny_disk / "models" / "encoder.tmp"
    with pytest.raises(NoSpace, match=r"not enough disk space for the trained encoder .* needs 3\.0 MiB"):
        _copy_encoder(_Checkpoint(ckpt), target)
    assert not target.exists()


def test_export_to_a_full_disk_is_one_line(tmp_path, tiny_disk):
    import torch

    from jem.engine.checkpoint import save_encoder
    from jem.methods import get_method_class, params_class

    method = get_method_class("vicreg")({"backbone": "small_cnn", "width": 8, "in_channels": 1, "image_size": 8},
                                        [16, 8], params_class("vicreg")())
    enc = tmp_path / "enc"
    enc.mkdir()
    torch.manual_seed(0)
    save_encoder(enc, method, {"mean": [0.3], "std": [0.3]})
    proc = jem_cli("export", "--encoder", str(enc), "--out", str(tiny_disk / "exported"), cwd=tmp_path)
    assert_one_error(proc, "not enough disk space for the exported encoder", str(tiny_disk))
    assert list(tiny_disk.iterdir()) == []


def test_a_disk_that_fills_during_a_write_is_one_line(tmp_path, tiny_disk):
    """The last resort behind the pre-flight checks: ENOSPC from any write in a stage or the CLI."""
    target = tiny_disk / "big.bin"
    code = ("from jem.errors import run_main\n"
            f"run_main(lambda: open({str(target)!r}, 'wb').write(b'x' * (4 << 20)))\n")
    proc = run([sys.executable, "-c", code], tmp_path)
    assert_one_error(proc, "out of disk space", "No space left on device")
