"""Verified artefacts (rule 3): an encoder folder's weights are checked against the SHA-256 sums
its encoder.json records, by every loader: ``jem embed``, ``jem export``, ``jem.load_encoder`` and
the evaluate stage. A bit flip, a truncation or a corrupt header is one line naming the file."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import assert_one_error, jem_cli, run
from PIL import Image

from jem.engine.checkpoint import save_encoder
from jem.errors import DataError
from jem.methods import get_method_class, params_class

ARCH = {"backbone": "small_cnn", "width": 8, "in_channels": 1, "image_size": 8}


@pytest.fixture
def encoder(tmp_path):
    torch.manual_seed(0)
    method = get_method_class("vicreg")(ARCH, [16, 8], params_class("vicreg")())
    folder = tmp_path / "enc"
    folder.mkdir()
    save_encoder(folder, method, {"mean": [0.3], "std": [0.3]})
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(imgs / f"{i}.png")
    return folder


def _flip_bit(path, offset=-5):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _bad_header(path):
    data = bytearray(path.read_bytes())
    data[8:16] = b"{garbage"
    path.write_bytes(bytes(data))


def _no_checksum(path):
    meta_path = path.parent / "encoder.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("sha256")
    meta_path.write_text(json.dumps(meta))


DAMAGE = {
    "bit-flip": (_flip_bit, "encoder.safetensors does not match the SHA-256"),
    "truncated": (_truncate, "encoder.safetensors does not match the SHA-256"),
    "corrupt-header": (_bad_header, "encoder.safetensors does not match the SHA-256"),
    "no-checksum": (_no_checksum, "records no SHA-256"),
}


def test_the_sums_are_the_files_sha256(encoder):
    meta = json.loads((encoder / "encoder.json").read_text())
    for name in ("encoder.safetensors", "projector.safetensors"):
        assert meta["sha256"][name] == hashlib.sha256((encoder / name).read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", DAMAGE)
def test_jem_embed_refuses_a_damaged_encoder(tmp_path, encoder, damage):
    hurt, needle = DAMAGE[damage]
    out = tmp_path / "feats.npy"
    np.save(out, np.arange(3.0))  # a previous result: must survive the failed run
    before = out.read_bytes()
    hurt(encoder / "encoder.safetensors")
    proc = jem_cli("embed", "--encoder", str(encoder), "--images", str(tmp_path / "imgs"), "--out", str(out),
                   cwd=tmp_path)
    assert_one_error(proc, needle)
    assert out.read_bytes() == before and not list(tmp_path.glob(".feats*"))


@pytest.mark.parametrize("damage", ["bit-flip", "truncated"])
def test_jem_export_refuses_a_damaged_encoder(tmp_path, encoder, damage):
    hurt, needle = DAMAGE[damage]
    hurt(encoder / "encoder.safetensors")
    proc = jem_cli("export", "--encoder", str(encoder), "--out", str(tmp_path / "exported"), cwd=tmp_path)
    assert_one_error(proc, str(encoder / "encoder.safetensors"), needle)
    assert not (tmp_path / "exported").exists() and not (tmp_path / ".exported.tmp").exists()


def test_damaged_projector_is_named(tmp_path, encoder):
    _flip_bit(encoder / "projector.safetensors")
    proc = run(["python", "-c", "import sys; from jem.errors import run_main; from jem.export import load_projector; "
                f"run_main(lambda: load_projector({str(encoder)!r}))"], tmp_path)
    assert_one_error(proc, "projector.safetensors does not match the SHA-256")


@pytest.mark.parametrize("damage", DAMAGE)
def test_load_encoder_raises_one_line_naming_the_file(encoder, damage):
    import jem

    hurt, needle = DAMAGE[damage]
    hurt(encoder / "encoder.safetensors")
    with pytest.raises(DataError) as err:
        jem.load_encoder(encoder)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_load_encoder_names_a_corrupt_file_even_when_its_sum_matches(encoder):
    """A file that was corrupt when it was written (its recorded sum matches): the safetensors
    error is one DataError line, not a raw SafetensorError traceback."""
    import jem

    weights = encoder / "encoder.safetensors"
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    meta = json.loads((encoder / "encoder.json").read_text())
    meta["sha256"]["encoder.safetensors"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (encoder / "encoder.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="is not a readable safetensors file"):
        jem.load_encoder(encoder)


def test_a_clean_copy_still_loads_and_matches(tmp_path, encoder):
    import jem

    copy = tmp_path / "copy"
    shutil.copytree(encoder, copy)
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(jem.load_encoder(copy)(x), jem.load_encoder(encoder)(x))


@pytest.mark.parametrize("damage", ["bit-flip", "truncated"])
def test_evaluate_stage_refuses_a_damaged_encoder(tmp_path, encoder, params_file, damage):
    """The pipeline's own loader: the evaluate stage on digits with a damaged models/encoder."""
    from conftest import stage

    params_file()
    proc = stage("prepare", "--params", "params.yaml", "--out", "prepared", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "eval.json").write_text('{"previous": 1}\n')
    (tmp_path / "baselines.json").write_text("{}")  # not this encoder's: evaluate would compute its own
    hurt, needle = DAMAGE[damage]
    hurt(encoder / "encoder.safetensors")
    proc = stage("evaluate", "--params", "params.yaml", "--prepared", "prepared", "--views", "views",
                 "--encoder", str(encoder), "--baselines", "baselines.json", "--out", "metrics/eval.json",
                 "--full", "metrics/eval-full.json", "--artefacts", "eval", cwd=tmp_path)
    assert_one_error(proc, str(encoder / "encoder.safetensors"), needle)
    assert (tmp_path / "metrics" / "eval.json").read_text() == '{"previous": 1}\n'
    assert not (tmp_path / "metrics" / "eval-full.json").exists() and not (tmp_path / "eval").exists()
