"""The ``jem`` command line: help, info, export (round trip gives identical embeddings), embed on a
tiny folder of PNG/JPEG files, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import jem
from jem.cli import main
from jem.engine.checkpoint import save_encoder
from jem.evaluate.features import extract_features
from jem.methods import get_method_class, params_class

ARCH = {"backbone": "small_cnn", "width": 8, "in_channels": 1, "image_size": 8}
MEAN, STD = [0.3], [0.37]


@pytest.fixture
def encoder(tmp_path):
    """An encoder folder as the pretrain stage writes it, plus the in-memory method and stats."""
    torch.manual_seed(0)
    method = get_method_class("vicreg")(ARCH, [32, 16], params_class("vicreg")())
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval-mode equality means something
        for m in method.backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    folder = tmp_path / "models" / "encoder"
    folder.mkdir(parents=True)
    save_encoder(folder, method)
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"mean": MEAN, "std": STD, "classes": ["a"], "num_classes": 1}))
    return method.eval(), folder, stats


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8)


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "jem.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("methods", "validate", "info", "compare", "export", "embed"):
        assert f"    {cmd}" in out, cmd


def test_import_jem_is_light():
    code = "import sys, jem; assert 'torch' not in sys.modules; print(callable(jem.load_encoder))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def test_user_errors_import_nothing_heavy():
    """Every stage maps user errors through jem.errors: knowing them must not import the engine."""
    code = ("import sys; from jem.errors import user_error_types; user_error_types(); "
            "print(sorted(m for m in ('numpy', 'torch', 'ray', 'PIL', 'jem.engine', 'jem.data') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_export_round_trip_gives_identical_embeddings(tmp_path, encoder, capsys):
    method, folder, stats = encoder
    out = tmp_path / "exported"
    main(["export", "--encoder", str(folder), "--out", str(out), "--stats", str(stats)])
    assert "exported small_cnn encoder" in capsys.readouterr().out
    meta = json.loads((out / "encoder.json").read_text())
    assert meta["mean"] == MEAN and meta["std"] == STD and meta["format"] == "jem-encoder/1"
    assert set(meta["sha256"]) == {"encoder.safetensors", "projector.safetensors"}

    loaded = jem.load_encoder(out)
    assert isinstance(loaded, torch.nn.Module) and not loaded.training
    x = images(40)
    ref = extract_features(method.backbone, x, MEAN, STD)
    assert np.array_equal(extract_features(loaded, x, MEAN, STD), ref)
    assert np.array_equal(extract_features(jem.load_encoder(out / "encoder.json"), x, MEAN, STD), ref)

    # a corrupted weight file no longer matches its recorded hash
    data = bytearray((out / "encoder.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (out / "encoder.safetensors").write_bytes(bytes(data))
    with pytest.raises(SystemExit) as exc:
        main(["export", "--encoder", str(out), "--out", str(tmp_path / "again")])
    assert exc.value.code == 2
    assert "does not match the SHA-256" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()


def test_embed_folder_matches_in_memory_encoder(tmp_path, encoder, capsys):
    method, folder, stats = encoder
    x = images(5, seed=1)
    src = tmp_path / "imgs"
    (src / "nested").mkdir(parents=True)
    names = ["a.png", "b.PNG", "c.png", "nested/d.png"]
    for img, name in zip(x, names):
        Image.fromarray(img[..., 0]).save(src / name)
    rgb = np.repeat(x[4], 3, axis=-1)  # RGB JPEG, 4x larger: converted to gray, resized to 8x8
    Image.fromarray(rgb).resize((32, 32), Image.NEAREST).save(src / "nested" / "e.jpg", quality=100)
    (src / "notes.txt").write_text("not an image")
    (src / ".hidden.png").write_bytes(b"")

    out = tmp_path / "emb" / "features.npy"
    main(["embed", "--images", str(src), "--out", str(out), "--encoder", str(folder), "--stats", str(stats)])
    assert "embedded 5 images" in capsys.readouterr().out
    feats = np.load(out)
    assert feats.shape == (5, 32) and feats.dtype == np.float32
    assert out.with_suffix(".txt").read_text().split() == ["a.png", "b.PNG", "c.png", "nested/d.png", "nested/e.jpg"]
    ref = extract_features(method.backbone, x[:4], MEAN, STD)
    assert np.array_equal(feats[:4], ref)  # lossless PNG: exactly the in-memory features
    jpeg = extract_features(method.backbone, x[4:], MEAN, STD)[0]
    cos = float(feats[4] @ jpeg / np.linalg.norm(feats[4]) / np.linalg.norm(jpeg))
    assert cos > 0.98  # JPEG + resize round trip: close, not identical


def test_embed_uses_stats_from_an_exported_encoder(tmp_path, encoder, monkeypatch):
    method, folder, stats = encoder
    exported = tmp_path / "exported"
    main(["export", "--encoder", str(folder), "--out", str(exported), "--stats", str(stats)])
    src = tmp_path / "imgs"
    src.mkdir()
    Image.fromarray(images(1)[0, ..., 0]).save(src / "x.png")
    monkeypatch.chdir(tmp_path)  # no data/prepared/stats.json here
    main(["embed", "--images", str(src), "--out", "f.npy", "--encoder", str(exported)])
    assert np.array_equal(np.load(tmp_path / "f.npy"), extract_features(method.backbone, images(1), MEAN, STD))


@pytest.mark.parametrize("argv, message", [
    (["embed", "--images", "nowhere", "--out", "x.npy"], "not found"),
    (["embed", "--images", ".", "--out", "x.csv"], "must end in .npy"),
    (["export", "--encoder", "nowhere", "--out", "x"], "nowhere/encoder.json not found"),
    (["info", "nowhere"], "no metrics under"),
])
def test_errors_are_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_embed_without_normalisation_stats_says_how(tmp_path, encoder, monkeypatch, capsys):
    _, folder, _ = encoder
    src = tmp_path / "imgs"
    src.mkdir()
    Image.fromarray(images(1)[0, ..., 0]).save(src / "x.png")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["embed", "--images", str(src), "--out", "f.npy", "--encoder", str(folder)])
    assert "pass --stats" in capsys.readouterr().err


def test_info_summarises_a_run(tmp_path, encoder, capsys):
    _, folder, _ = encoder
    (tmp_path / "metrics").mkdir()
    (tmp_path / "params.yaml").write_text("dataset: digits\nmethod: vicreg\nseed: 0\n")
    pre = {"epochs": 3, "final_loss": 1.5, "views_per_s": 100.0, "wall_s": 9.0}
    (tmp_path / "metrics" / "pretrain.json").write_text(json.dumps(pre))
    (tmp_path / "metrics" / "pretrain-full.json").write_text(json.dumps({**pre, "pid": 4321}))
    section = {"std": 0.05, "std_healthy": 0.18, "rankme": 20.0, "rankme_ratio": 0.6, "uniformity": -1.0,
               "alignment": 0.3, "collapsed": 0.0}
    ev = {"knn": {"top1": 0.9, "top5": 1.0}, "linear": {"top1": 0.92, "top5": 1.0},
          "pixels": {"knn": {"top1": 0.8}, "linear": {"top1": 0.85}},
          "collapse": {"backbone": section, "projector": section, "collapsed": 0}}
    # the DVC metrics file holds the compared subset; info reads the full record next to it
    (tmp_path / "metrics" / "eval.json").write_text(json.dumps({"knn": {"top1": 0.9}}))
    (tmp_path / "metrics" / "eval-full.json").write_text(json.dumps(ev))
    main(["info", str(tmp_path)])
    out = capsys.readouterr().out
    assert "run: vicreg on digits, seed 0" in out
    assert "kNN top-1 (k=20)" in out and "+0.1000" in out
    assert "collapse (backbone): std 0.0500" in out and "collapse (projector)" in out
    assert "encoder:" in out and "32-d features" in out
    main(["info", str(tmp_path), "--all"])
    out = capsys.readouterr().out
    assert "collapse.backbone.rankme" in out and "pid" in out and "eval-full.json" in out


def test_methods_and_validate(tmp_path, capsys):
    main(["methods"])
    assert "vicreg" in capsys.readouterr().out
    (tmp_path / "p.yaml").write_text("method: simclr\n")
    main(["validate", str(tmp_path / "p.yaml")])
    assert "method=simclr" in capsys.readouterr().out
