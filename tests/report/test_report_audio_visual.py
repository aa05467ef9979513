"""The report's audio-visual section: present with the numbers of eval-full.json when the run has
cross-modal metrics, absent otherwise."""

from report_synthetic import make_run

from jem.report.build import build_report

AV = {"audio": {"knn": {"top1": 0.7733}, "linear": {"top1": 0.84}},
      "xmodal": {"a2v": {"r1": 0.5, "r5": 0.7667}, "v2a": {"r1": 0.49, "r5": 0.8267}},
      "raw": {"audio": {"knn": {"top1": 0.9333}}}}
def fast_run(tmp_path):
    """Synthetic inputs without the artefacts folder: only the metric sections are drawn."""
    return {**make_run(tmp_path), "artefacts": None}


RANDOM = {"audio": {"knn": {"top1": 0.7033}, "linear": {"top1": 0.7633}},
          "xmodal": {"a2v": {"r1": 0.1, "r5": 0.2367}, "v2a": {"r1": 0.1, "r5": 0.21}}}


def test_audio_visual_numbers_in_the_report(tmp_path):
    run = fast_run(tmp_path)
    run["ev"].update(AV)
    run["ev"]["random_init"] = {**run["ev"].get("random_init", {}), **RANDOM}
    md = build_report(tmp_path / "reports", **run).read_text()
    assert "## Audio and cross-modal retrieval" in md
    assert "| audio kNN top-1 | 0.7733 | 0.7033 | 0.9333 |" in md
    assert "| audio linear top-1 | 0.8400 | 0.7633 | — |" in md
    assert "| audio -> image recall@1 | 0.5000 | 0.1000 | — |" in md
    assert "| image -> audio recall@5 | 0.8267 | 0.2100 | — |" in md
    assert "Audio and cross-modal retrieval" in (tmp_path / "reports" / "report.html").read_text()


def test_no_audio_visual_section_for_an_image_method(tmp_path):
    md = build_report(tmp_path / "reports", **fast_run(tmp_path)).read_text()
    assert "cross-modal" not in md


# --- the figures: arrays of jem.evaluate.audiovisual.report_arrays on synthetic embeddings ---

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from jem.evaluate.audiovisual import report_arrays  # noqa: E402
from jem.report.plots import DPI, PAGE_W  # noqa: E402

N, M, T = 60, 40, 63


def _embeddings(seed: int = 0):
    """Test pairs of 10 digits: images, spectrograms, and joint embeddings that cluster by digit."""
    rng = np.random.default_rng(seed)
    y = np.arange(N) % 10
    centres = rng.normal(size=(10, 16))
    za = torch.tensor(centres[y] + 0.9 * rng.normal(size=(N, 16)), dtype=torch.float32)
    zv = torch.tensor(centres[y] + 0.9 * rng.normal(size=(N, 16)), dtype=torch.float32)
    spec = torch.tensor(rng.normal(size=(N, 1, M, T)), dtype=torch.float32)
    images = rng.integers(0, 256, size=(N, 8, 8, 1), dtype=np.uint8)
    return spec, images, y, za, zv


def _brute_top5(q: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Slow reference: cosine similarity of every pair by loops, top 5 by a full sort."""
    rows = []
    for a in q:
        sims = [float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))) for b in items]
        rows.append(sorted(range(len(items)), key=lambda j: -sims[j])[:5])
    return np.asarray(rows)


def test_retrieved_neighbours_match_a_brute_force_cosine_top5():
    spec, images, y, za, zv = _embeddings()
    rep = report_arrays(spec, images, y, za, zv, None, seed=3)
    for d, q, items in (("a2v", za, zv), ("v2a", zv, za)):
        qi = rep[f"{d}_query"]
        assert np.array_equal(rep[f"{d}_neigh"], _brute_top5(q.numpy()[qi].astype(np.float64),
                                                             items.numpy().astype(np.float64)))
        ref = [[np.dot(q.numpy()[i], items.numpy()[j]) / np.linalg.norm(q.numpy()[i]) / np.linalg.norm(items.numpy()[j])
                for j in row] for i, row in zip(qi, rep[f"{d}_neigh"])]
        assert np.allclose(rep[f"{d}_sim"], ref, atol=1e-5)
        assert np.array_equal(rep[f"{d}_neigh_y"], y[rep[f"{d}_neigh"]])
    assert np.array_equal(rep["v2a_neigh_spec"], spec[:, 0].numpy()[rep["v2a_neigh"]].astype(np.float16))
    assert np.array_equal(rep["a2v_query_spec"], spec[:, 0].numpy()[rep["a2v_query"]].astype(np.float16))
    assert "spec_view" not in rep  # no recipe: no augmented view


def _av_run(tmp_path, with_view: bool = True):
    run = make_run(tmp_path)
    run["ev"].update(AV)
    run["ev"]["random_init"] = {**run["ev"].get("random_init", {}), **RANDOM}
    spec, images, y, za, zv = _embeddings()
    view = (lambda idx: -spec[idx]) if with_view else None
    np.savez_compressed(run["artefacts"] / "audiovisual.npz", **report_arrays(spec, images, y, za, zv, view, seed=1))
    (run["artefacts"] / "meta.json").write_text(json.dumps({"classes": [str(d) for d in range(10)]}))
    return run


def _decoded(path):
    with Image.open(path) as im:
        im.load()
        return im.size, np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("with_view", [True, False])
def test_audio_visual_figures_exist_and_decode(tmp_path, with_view):
    out = tmp_path / "reports"
    md = build_report(out, **_av_run(tmp_path, with_view)).read_text()
    section = md.split("## Audio and cross-modal retrieval")[1].split("\n## ")[0]
    assert "![spectrograms](spectrograms.png)" in section
    assert "![cross-modal retrieval](xmodal_retrieval.png)" in section
    assert ("augmented view" in section) == with_view
    for name in ("spectrograms.png", "xmodal_retrieval.png"):
        (w, h), px = _decoded(out / name)
        assert w == round(PAGE_W * DPI) and h > 300  # page width, like the other figures
        assert px.std() > 10  # not blank
    # green and red frames in the retrieval figure (synthetic embeddings give hits and misses)
    _, px = _decoded(out / "xmodal_retrieval.png")
    colours = {tuple(int(c) for c in v) for v in px.reshape(-1, 3)[::3]}
    assert (0x2a, 0x9d, 0x3f) in colours and (0xd6, 0x28, 0x28) in colours
    html = (out / "report.html").read_text()
    assert 'data-name="spectrograms"' in html or "spectrograms" in html
    assert html.count("data:image/png;base64") >= 2


def test_no_audio_visual_figures_for_an_image_method(tmp_path):
    out = tmp_path / "reports"
    md = build_report(out, **make_run(tmp_path)).read_text()
    assert "Audio and cross-modal" not in md and "spectrogram" not in md
    assert not (out / "spectrograms.png").exists() and not (out / "xmodal_retrieval.png").exists()


def test_audio_visual_run_without_the_arrays_says_so(tmp_path):
    run = _av_run(tmp_path)
    (run["artefacts"] / "audiovisual.npz").unlink()
    md = build_report(tmp_path / "reports", **run).read_text()
    assert "audiovisual.npz" in md and "| audio kNN top-1 | 0.7733 |" in md
    assert not (tmp_path / "reports" / "spectrograms.png").exists()
