"""The prepare stage's arrays (rules 2, 3 and 4): 16-bit image files are scaled to 8 bits and
named in ``stats.json`` (they were clipped to white without a word); every prepared array carries
a SHA-256 that its readers check, as training checkpoints (``state.pt``) do; the arrays get a
free-space check before they are written, and a disk that fills up anyway leaves no partial file."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, assert_one_error, run, stage
from PIL import Image
from test_disk_cases import tiny_disk  # noqa: F401  (the 1 MiB tmpfs fixture)

from jem.engine.checkpoint import load_state, save_state
from jem.errors import DataError


def _flip(path, offset=-7):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def _prepare(tmp_path, params_file, out="prepared", **overrides):
    params_file(**overrides)
    proc = stage("prepare", "--params", "params.yaml", "--out", str(out), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


# ---- rule 2: 16-bit images, and notes recorded in the run --------------------------------------


def test_16_bit_pngs_are_scaled_and_named(tmp_path, params_file):
    """3 classes x 4 images of 8x8 px, 16-bit PNG (PIL mode I;16). The left half holds 257 k + 100,
    the right half 257 k + 200, one pixel 65535: by hand, round(v / 257) gives k, k + 1 and 255.
    PIL's own conversion made every one of these pixels 255."""
    ks = {}
    for c in range(3):
        (tmp_path / "imgs" / f"c{c}").mkdir(parents=True)
        for i in range(4):
            k = 20 * c + 5 * i + 3
            a = np.full((8, 8), 257 * k + 100, np.uint16)
            a[:, 4:] = 257 * k + 200
            a[0, 0] = 65535
            Image.fromarray(a).save(tmp_path / "imgs" / f"c{c}" / f"{i}.png")
            ks[k] = c
    assert Image.open(tmp_path / "imgs" / "c0" / "0.png").mode == "I;16"
    proc = _prepare(tmp_path, params_file, dataset="imagefolder", data__root=str(tmp_path / "imgs"),
                    data__image_size=8)
    assert "note: 12 of 12 images are 16-bit (PIL mode I;16); scaled to 8 bits as round(value / 257)" in proc.stdout
    prepared = tmp_path / "prepared"
    stats = json.loads((prepared / "stats.json").read_text())
    assert stats["notes"] == ["12 of 12 images are 16-bit (PIL mode I;16); scaled to 8 bits as round(value / 257)"]
    seen = {}
    for split in ("train", "val", "test"):
        x, y = np.load(prepared / f"{split}_x.npy"), np.load(prepared / f"{split}_y.npy")
        assert x.shape[1:] == (8, 8, 1)
        for img, label in zip(x[..., 0], y, strict=True):
            k = int(img[1, 0])
            assert (img[:, :4] == k).sum() == 31 and (img[:, 4:] == k + 1).all() and img[0, 0] == 255
            seen[k] = int(label)
    assert seen == ks  # every image once, with its class


def _png_rgb16(path: Path, a: np.ndarray) -> None:
    """A 16-bit RGB PNG written by hand (PIL cannot write one): signature, IHDR (bit depth 16,
    colour type 2), one zlib IDAT of filter-0 rows of big-endian samples, IEND."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = a.shape
    rows = b"".join(b"\0" + a[r].astype(">u2").tobytes() for r in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_colour_pngs_are_named(tmp_path, params_file):
    """16-bit RGB PNGs: PIL opens them as 8-bit RGB with each sample's high byte. Sample values
    256 k + 255 (R), 256 k (G), 65535 (B) give k, k and 255 by hand; the count is a note."""
    ks = {}
    for c in range(2):
        (tmp_path / "imgs" / f"c{c}").mkdir(parents=True)
        for i in range(5):
            k = 30 * c + 4 * i + 7
            a = np.zeros((8, 8, 3), np.uint16)
            a[..., 0], a[..., 1], a[..., 2] = 256 * k + 255, 256 * k, 65535
            _png_rgb16(tmp_path / "imgs" / f"c{c}" / f"{i}.png", a)
            ks[k] = c
    assert Image.open(tmp_path / "imgs" / "c0" / "0.png").mode == "RGB"  # no sign of 16 bits from PIL
    proc = _prepare(tmp_path, params_file, dataset="imagefolder", data__root=str(tmp_path / "imgs"),
                    data__image_size=8)
    note = ("10 of 10 images are 16-bit colour PNGs (PIL mode RGB); PIL reduces them to 8 bits by keeping each "
            "sample's high byte (value // 256)")
    assert f"note: {note}" in proc.stdout
    prepared = tmp_path / "prepared"
    assert json.loads((prepared / "stats.json").read_text())["notes"] == [note]
    seen = {}
    for split in ("train", "val", "test"):
        x, y = np.load(prepared / f"{split}_x.npy"), np.load(prepared / f"{split}_y.npy")
        for img, label in zip(x, y, strict=True):
            k = int(img[0, 0, 0])
            assert (img[..., 0] == k).all() and (img[..., 1] == k).all() and (img[..., 2] == 255).all()
            seen[k] = int(label)
    assert seen == ks


def test_a_rounded_subsample_is_recorded_in_stats(tmp_path, params_file):
    """``data.max_train = 157`` on digits gives 159 training images (the validate note, checked
    against real prepare runs in tests/test_preflight.py): the prepare stage records it."""
    _prepare(tmp_path, params_file, data__max_train=157)
    stats = json.loads((tmp_path / "prepared" / "stats.json").read_text())
    assert stats["n_train"] == 159
    assert stats["notes"] == ["data.max_train = 157 gives 159 images (rounded per class)"]


# ---- rule 3: checksums of the prepared arrays and of training checkpoints ------------------------


@pytest.fixture
def digits_prepared(tmp_path, params_file):
    _prepare(tmp_path, params_file, data__max_train=300, data__max_test=100)
    return tmp_path / "prepared"


def test_recorded_sums_are_the_arrays_sha256(digits_prepared):
    sums = json.loads((digits_prepared / "stats.json").read_text())["sha256"]
    assert sorted(sums) == sorted(p.name for p in digits_prepared.glob("*.npy"))
    for name, digest in sums.items():
        assert digest == hashlib.sha256((digits_prepared / name).read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", ["bit flip", "truncated"])
def test_augment_refuses_a_damaged_array(tmp_path, digits_prepared, damage):
    target = digits_prepared / "train_x.npy"
    if damage == "bit flip":
        _flip(target)
    else:
        target.write_bytes(target.read_bytes()[:-64])
    (tmp_path / "views").mkdir()
    (tmp_path / "views" / "meta.json").write_text('{"previous": true}\n')
    proc = stage("augment", "--params", "params.yaml", "--prepared", "prepared", "--out", "views", cwd=tmp_path)
    assert_one_error(proc, "prepared/train_x.npy does not match the SHA-256 recorded in prepared/stats.json",
                     "re-run the prepare stage")
    assert sorted(p.name for p in (tmp_path / "views").iterdir()) == ["meta.json"]
    assert json.loads((tmp_path / "views" / "meta.json").read_text()) == {"previous": True}


def test_baselines_refuse_a_bit_flipped_label_file(tmp_path, digits_prepared):
    _flip(digits_prepared / "test_y.npy")
    (tmp_path / "baselines.json").write_text('{"previous": true}\n')
    proc = stage("baselines", "--params", "params.yaml", "--prepared", "prepared", "--out", "baselines.json",
                 cwd=tmp_path)
    assert_one_error(proc, "prepared/test_y.npy does not match the SHA-256")
    assert json.loads((tmp_path / "baselines.json").read_text()) == {"previous": True}


def test_evaluate_refuses_a_missing_array_before_anything_else(tmp_path, digits_prepared):
    from jem.config import EvalConfig
    from jem.evaluate_run import evaluate

    (digits_prepared / "subset_10pct.npy").unlink()
    with pytest.raises(DataError, match=r"subset_10pct\.npy is missing \(listed in .*stats\.json\)"):
        evaluate(digits_prepared, tmp_path / "no-encoder", EvalConfig(), 0)


def test_a_folder_without_recorded_sums_is_read_as_before(prepared):
    """Prepared folders written before the sums (and hand-made fixtures) are not checked."""
    from jem.io import verify_prepared

    verify_prepared(prepared)


def _tiny_state(tmp_path):
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    save_state(tmp_path, net, opt, 3, [{"loss": 1.5}])
    return net, opt


def test_a_checkpoint_records_its_sha256_and_loads(tmp_path):
    net, opt = _tiny_state(tmp_path)
    assert (tmp_path / "state.pt.sha256").read_text().strip() == hashlib.sha256(
        (tmp_path / "state.pt").read_bytes()).hexdigest()
    fresh = torch.nn.Linear(4, 3)
    assert load_state(tmp_path, fresh, torch.optim.SGD(fresh.parameters(), lr=0.1)) == (3, [{"loss": 1.5}])
    assert torch.equal(fresh.weight, net.weight)


@pytest.mark.parametrize("damage", ["bit flip", "truncated"])
def test_a_damaged_checkpoint_is_one_line(tmp_path, damage):
    _tiny_state(tmp_path)
    state = tmp_path / "state.pt"
    if damage == "bit flip":
        _flip(state, offset=len(state.read_bytes()) // 2)
    else:
        state.write_bytes(state.read_bytes()[:100])
    code = ("from pathlib import Path\nimport torch\nfrom jem.errors import run_main\n"
            "from jem.engine.checkpoint import load_state\nnet = torch.nn.Linear(4, 3)\n"
            f"run_main(lambda: load_state(Path({str(tmp_path)!r}), net, torch.optim.SGD(net.parameters(), lr=0.1)))\n")
    proc = run([sys.executable, "-c", code], tmp_path)
    assert_one_error(proc, f"training checkpoint {state} does not match its recorded SHA-256")


def test_an_unreadable_checkpoint_without_a_sum_is_one_line(tmp_path):
    _tiny_state(tmp_path)
    (tmp_path / "state.pt.sha256").unlink()  # written before sums were recorded
    (tmp_path / "state.pt").write_bytes((tmp_path / "state.pt").read_bytes()[:100])
    net = torch.nn.Linear(4, 3)
    with pytest.raises(DataError, match=r"training checkpoint .*state\.pt cannot be read"):
        load_state(tmp_path, net, torch.optim.SGD(net.parameters(), lr=0.1))


# ---- rule 4: out of disk ------------------------------------------------------------------------


def test_prepare_on_a_full_disk_is_one_line_and_keeps_the_old_folder(tmp_path, tiny_disk, params_file):  # noqa: F811
    """Digits at 32 px: 1797 x 32 x 32 bytes of images (1.8 MiB) cannot fit a 1 MiB disk."""
    out = tiny_disk / "prepared"
    out.mkdir()
    (out / "stats.json").write_text('{"previous": true}\n')
    params_file(data__image_size=32)
    proc = stage("prepare", "--params", "params.yaml", "--out", str(out), cwd=tmp_path)
    line = assert_one_error(proc, "not enough disk space for the prepared arrays", str(tiny_disk))
    assert "free on" in line
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["prepared"]  # no .prepared.tmp
    assert sorted(p.name for p in out.iterdir()) == ["stats.json"]
    assert json.loads((out / "stats.json").read_text()) == {"previous": True}


def test_a_disk_that_fills_while_prepare_writes_leaves_no_partial_file(tmp_path, tiny_disk, params_file):  # noqa: F811
    """The pre-flight check switched off: the arrays hit ENOSPC; one line, nothing partial left."""
    params_file(data__image_size=32)
    code = ("import runpy, sys\nimport jem.prepare\njem.prepare.check_free_space = lambda *a: None\n"
            f"sys.argv = ['prepare.py', '--params', 'params.yaml', '--out', {str(tiny_disk / 'prepared')!r}]\n"
            f"runpy.run_path({str(ROOT / 'stages' / 'prepare.py')!r}, run_name='__main__')\n")
    proc = run([sys.executable, "-c", code], tmp_path)
    assert_one_error(proc, "out of disk space")
    assert list(tiny_disk.iterdir()) == []


def test_view_cache_bit_flip_is_one_line_before_ray_starts(tmp_path, params_file):
    """A flipped byte inside the view cache (same size: the shape check cannot see it) stops the
    pretrain stage with one line naming the file, before Ray starts; the sums in meta.json are
    hashlib's SHA-256 of the arrays (before: the flipped view was trained on)."""
    from jem.augment.cache import build_view_cache
    from jem.config import defaults_dict, parse_config
    from jem.prepare import prepare

    cfg = parse_config(defaults_dict())
    (tmp_path / "prepared").mkdir()
    prepare(cfg, tmp_path / "prepared")
    build_view_cache(np.load(tmp_path / "prepared" / "train_x.npy"), cfg.augment, tmp_path / "views", cfg.seed,
                     progress=False)
    meta = json.loads((tmp_path / "views" / "meta.json").read_text())
    f = tmp_path / "views" / "global.npy"
    assert meta["sha256"] == {"global.npy": hashlib.sha256(f.read_bytes()).hexdigest()}
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    f.write_bytes(bytes(raw))
    (tmp_path / "encoder").mkdir()
    (tmp_path / "encoder" / "old.txt").write_text("previous encoder")
    params_file()
    proc = stage("pretrain", "--params", "params.yaml", "--prepared", "prepared", "--views", "views", "--out",
                 "encoder", "--metrics", "m.json", "--full", "f.json", "--live", "live", cwd=tmp_path, timeout=300)
    assert_one_error(proc, "global.npy", "does not match the SHA-256", "dvc repro -f augment")
    assert (tmp_path / "encoder" / "old.txt").read_text() == "previous encoder"
    assert not (tmp_path / ".jem" / "ray_results").exists()  # Ray never started
