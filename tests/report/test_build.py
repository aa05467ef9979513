"""The report builder on synthetic inputs: every element is produced, in markdown and in the
self-contained HTML, and the CSVs behind the DVC plots are right."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from report_synthetic import CLASSES, make_run

from jem.config import defaults_dict
from jem.report.build import build_report, collapse_sections, metrics_table, params_diff

SECTIONS = ["Metrics", "Collapse diagnostics", "Params that differ from the defaults", "Training curves",
            "Embedding map (t-SNE)", "Nearest-neighbour retrieval", "Embedding correlation", "What the method saw",
            "Per-class accuracy", "Provenance"]
IMAGES = ["accuracy.png", "loss.png", "knn_monitor.png", "tsne.png", "retrieval.png", "correlation.png",
          "views.png", "per_class.png", "confusion.png"]


@pytest.mark.parametrize("rgb", [True, False])
def test_every_element_in_markdown_and_html(tmp_path, rgb):
    out = tmp_path / "reports"
    md_path = build_report(out, **make_run(tmp_path, rgb=rgb))
    md = md_path.read_text()
    for section in SECTIONS:
        assert f"## {section}\n" in md, section
    for name in IMAGES:
        assert f"]({name})" in md, name
        img = Image.open(out / name)
        assert img.format == "PNG" and img.size[0] > 200 and img.size[1] > 150, name
    assert "| kNN top-1 (k=20) | 0.9100 | 0.6000 | 0.8000 | +0.1100 |" in md
    assert "| `train.epochs` | 3 | 30 |" in md and "`methods.simclr.temperature`" in md
    assert "methods.vicreg" not in md  # only the selected method's knobs count
    assert "Warning" not in md

    html = (out / "report.html").read_text()
    assert "src=\"http" not in html and "<link" not in html and "<script" not in html  # self-contained
    srcs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(srcs) == len(IMAGES) == html.count("<img ")
    for data in srcs:
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        img.load()
        assert img.size[0] > 200
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in html


def test_plot_csvs(tmp_path):
    out = tmp_path / "reports"
    run = make_run(tmp_path)
    build_report(out, **run)
    per_class = pd.read_csv(out / "per_class_accuracy.csv")
    assert list(per_class.columns) == ["class", "n", "linear", "knn"]
    assert list(per_class["class"]) == CLASSES and per_class["n"].sum() == 120
    with np.load(run["artefacts"] / "predictions.npz") as p:
        y, lin = p["y_true"], p["linear_pred"]
    for c, row in per_class.iterrows():
        assert row["linear"] == pytest.approx((lin[y == c] == c).mean())
        assert row["knn"] == 1.0  # synthetic kNN predictions are perfect
    confusion = pd.read_csv(out / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == 120
    assert (confusion["actual"] == confusion["predicted"]).mean() == pytest.approx((lin == y).mean())
    tsne = pd.read_csv(out / "tsne.csv")
    assert list(tsne.columns) == ["x", "y", "class"] and len(tsne) == 120


def fast_run(tmp_path, **kw):
    """Synthetic inputs without the artefacts folder: only the metric sections are drawn."""
    return {**make_run(tmp_path, **kw), "artefacts": None}


def test_collapse_warning_in_both_formats(tmp_path):
    out = tmp_path / "reports"
    build_report(out, **fast_run(tmp_path, collapsed=True))
    md = (out / "report.md").read_text()
    assert "> **Warning:** the backbone and projector outputs look collapsed" in md
    assert '<p class="warn">' in (out / "report.html").read_text()
    assert "| collapsed | yes | yes |" in md


def test_old_flat_collapse_keys_and_missing_artefacts(tmp_path):
    run = make_run(tmp_path)
    run["ev"]["collapse"] = {"std": 0.05, "std_healthy": 0.09, "rankme": 30.0, "rankme_ratio": 0.3,
                             "uniformity": -1.0, "collapsed": 0.0}
    run["artefacts"] = tmp_path / "missing"
    out = tmp_path / "reports"
    md = build_report(out, **run).read_text()
    assert collapse_sections(run["ev"]["collapse"]) == {"backbone": run["ev"]["collapse"]}
    assert "| test embeddings | backbone |" in md and "| alignment (two views, lower = more invariant) | — |" in md
    assert "No evaluate artefacts" in md
    assert "tsne.png" not in md and (out / "report.html").is_file()


def test_rebuild_replaces_the_folder(tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    build_report(out, **fast_run(tmp_path))
    assert not (out / "stale.png").exists() and (out / "report.md").exists()


def test_params_diff_and_metrics_table():
    defaults = defaults_dict()
    params = {"method": "vicreg", "train": {"epochs": 7, "lr": defaults["train"]["lr"]},
              "methods": {"vicreg": {"inv_weight": 10.0}, "simclr": {"temperature": 0.9}}, "extra": 1}
    assert params_diff(params, defaults) == [("train.epochs", 7, defaults["train"]["epochs"]),
                                             ("methods.vicreg.inv_weight", 10.0, 25.0),
                                             ("extra", 1, "(not in the schema)")]
    header, rows = metrics_table({"knn": {"top1": 0.5}, "pixels": {"knn": {"top1": 0.7}}}, [5])
    assert header[:4] == ["metric", "pretrained", "random init", "raw pixels"]
    assert rows == [["kNN top-1 (k=5)", "0.5000", "—", "0.7000", "-0.2000"]]


def test_projector_only_dimensional_collapse_is_a_note_not_a_warning(tmp_path):
    run = fast_run(tmp_path)
    run["ev"]["collapse"]["projector"]["collapsed"] = 1.0
    md = build_report(tmp_path / "reports", **run).read_text()
    assert "Warning" not in md and "dimensional collapse" in md
