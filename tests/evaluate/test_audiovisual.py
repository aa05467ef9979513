"""Audio-visual evaluation: recall@k on hand-made embeddings, the exported audio encoder round trip,
and evaluate_av on a prepared synthetic av-digits set whose recordings are one tone per digit."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from jem.config import defaults_dict, parse_config
from jem.errors import DataError
from jem.evaluate.audiovisual import evaluate_av, load_audio_nets, recall_at
from jem.io import flatten


def test_recall_at_k_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    items = torch.tensor([[1.0, 0.1], [0.1, 1.0], [-1.0, 0.0]])
    # query 0 (label 0): item 0 (label 1) first, item 1 (label 0) second -> a hit at 2 only;
    # query 1 (label 0): item 1 first -> a hit at 1; query 2 (label 2): items 0 and 1 first -> no hit
    got = recall_at(q, items, np.array([0, 0, 2]), np.array([1, 0, 2]), ks=(1, 2))
    assert got == {"r1": pytest.approx(1 / 3), "r2": pytest.approx(2 / 3)}


def _write_tones(root: Path) -> None:
    root.mkdir()
    rng = np.random.default_rng(0)
    for d in range(10):
        for s in ("ann", "bob"):
            for t in range(8):
                with wave.open(str(root / f"{d}_{s}_{t}.wav"), "wb") as w:
                    w.setnchannels(1)
                    w.setsampwidth(2)
                    w.setframerate(8000)
                    tone = np.sin(2 * np.pi * (250 + 300 * d) * np.arange(5000) / 8000)
                    w.writeframes((3000 * tone + 200 * rng.standard_normal(5000)).astype("<i2").tobytes())


def test_evaluate_av_on_a_prepared_set(tmp_path):
    from jem.augment.audio import build_audio_cache
    from jem.engine.checkpoint import save_encoder
    from jem.engine.loop import build_method
    from jem.export import load_encoder, load_projector
    from jem.prepare import prepare

    _write_tones(tmp_path / "rec")
    base = yaml.safe_load(yaml.safe_dump(defaults_dict()))
    cfg = parse_config(dict(base, method="avid", dataset="av-digits",
                            data=dict(base["data"], audio_root=str(tmp_path / "rec")),
                            model=dict(base["model"], width=4),
                            methods=dict(base["methods"], avid=dict(base["methods"]["avid"], audio_width=4, dim=16))))
    prepared, views, enc = tmp_path / "prepared", tmp_path / "views", tmp_path / "encoder"
    for p in (prepared, views, enc):
        p.mkdir()
    stats = prepare(cfg, prepared)
    build_audio_cache(np.load(prepared / "train_audio.npy"), 8000, cfg.augment.audio, 1, views, 0)
    torch.manual_seed(0)
    method = build_method(cfg, 1, 8).eval()
    save_encoder(enc, method, stats)
    audio, head = load_audio_nets(enc)
    x = torch.randn(3, 1, 40, 40)
    with torch.no_grad():
        assert torch.equal(head(audio(x)), method.audio_projector(method.audio(x)))
    ecfg = cfg.eval
    m = evaluate_av(prepared, views, enc, load_encoder(enc), load_projector(enc, cfg.method_params), ecfg, 0,
                    audio_cfg=cfg.augment.audio)
    _check_report_arrays(m.pop("_report"), prepared, tmp_path)
    flat = flatten(m)
    assert {"audio.knn.top1", "audio.linear.top1", "raw.audio.knn.top1", "random_init.audio.knn.top1",
            "random_init.xmodal.a2v.r1"} <= set(flat)
    for split in (m, m["random_init"]):
        assert set(split["xmodal"]) == {"a2v", "v2a"}
        for d in ("a2v", "v2a"):
            assert 0.0 <= split["xmodal"][d]["r1"] <= split["xmodal"][d]["r5"] <= 1.0
    # one tone per digit: the time-averaged log-mel separates the digits almost perfectly
    assert m["raw"]["audio"]["knn"]["top1"] > 0.9
    # a corrupted audio file is one error line
    (enc / "audio.safetensors").write_bytes((enc / "audio.safetensors").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(DataError, match="audio.safetensors does not match its SHA-256"):
        load_audio_nets(enc)
    assert json.loads((enc / "encoder.json").read_text())["audio"]["width"] == 4


def _check_report_arrays(rep: dict[str, np.ndarray], prepared: Path, tmp: Path) -> None:
    """The report's arrays: test rows, spectrograms of those rows, an augmented view unlike the clean
    one, labels of the retrieved rows; a few tens of KB on disk."""
    test_y, test_x = np.load(prepared / "test_y.npy"), np.load(prepared / "test_x.npy")
    audio = np.load(prepared / "test_audio.npy")
    idx = rep["spec_idx"]
    assert len(idx) == 4 and len(set(test_y[idx].tolist())) == 4  # distinct digits
    assert np.array_equal(rep["spec_y"], test_y[idx]) and np.array_equal(rep["spec_x"], test_x[idx])
    # clean spectrogram: 40 mel bins, 1 + samples // hop frames, standardised per recording
    assert rep["spec_clean"].shape == (4, 40, 1 + audio.shape[1] // 128) == rep["spec_view"].shape
    clean = rep["spec_clean"].astype(np.float64)
    assert np.allclose(clean.mean(axis=(1, 2)), 0.0, atol=1e-2) and np.allclose(clean.std(axis=(1, 2)), 1.0, atol=1e-2)
    assert np.abs(rep["spec_view"].astype(np.float64) - clean).mean() > 0.05
    for d in ("a2v", "v2a"):
        assert rep[f"{d}_neigh"].shape == (4, 5)
        assert np.array_equal(rep[f"{d}_neigh_y"], test_y[rep[f"{d}_neigh"]])
        assert np.array_equal(rep[f"{d}_query_y"], test_y[rep[f"{d}_query"]])
        assert np.all(np.diff(rep[f"{d}_sim"], axis=1) <= 1e-6)  # best first
    assert np.array_equal(rep["a2v_neigh_x"], test_x[rep["a2v_neigh"]])
    np.savez_compressed(tmp / "av.npz", **rep)
    assert (tmp / "av.npz").stat().st_size < 150_000
