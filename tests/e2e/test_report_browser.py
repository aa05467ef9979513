"""Look at the report as a person would: render report.html in headless Chromium (Debian's
``chromium`` package: ``apt-get install -y chromium``), check that every image decoded and that the
screenshot is not blank. Then, on the real pipeline run of ``test_pipeline.py``: every report
element exists, ``dvc plots show`` renders, and the encoder loads and embeds after ``dvc repro``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from requirements_util import require_or_skip

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from report_synthetic import make_run  # noqa: E402

pytestmark = pytest.mark.e2e

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]
# Appended to a copy of the page: after load, list every <img> with its decoded size.
PROBE = ('<script>window.addEventListener("load",function(){var im=[].slice.call(document.images);'
         'var p=document.createElement("pre");p.id="jem-img-probe";p.textContent=im.map(function(i){'
         'return (i.getAttribute("data-name")||"?")+"="+(i.complete?i.naturalWidth:0)+"x"+i.naturalHeight;})'
         '.join(" ");document.body.appendChild(p);});</script>')
SECTIONS = ["Metrics", "Collapse diagnostics", "Params that differ from the defaults", "Training curves",
            "Embedding map (t-SNE)", "Nearest-neighbour retrieval", "Embedding correlation", "What the method saw",
            "Per-class accuracy", "Provenance"]


def _sh(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(DVC_NO_ANALYTICS="true", DVC_PAGER="")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


def chromium() -> str:
    """Path of the browser; without one the test skips, or fails under CI=true."""
    found = [path for path in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if path]
    require_or_skip(bool(found), "headless Chromium", "Debian: `apt-get install -y chromium`, or `make datasets` as root")
    return found[0]


def render(html: Path, work: Path, height: int = 3000) -> tuple[dict[str, tuple[int, int]], Path]:
    """(decoded size of every <img> by its data-name, screenshot PNG) of ``html`` in Chromium."""
    exe = chromium()
    probe = work / "probe.html"
    probe.write_text(html.read_text().replace("</body>", PROBE + "</body>"))
    flags = CHROMIUM_FLAGS + [f"--user-data-dir={work / 'profile'}"]
    dom = subprocess.run([exe, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=180)
    match = re.search(r'<pre id="jem-img-probe">([^<]*)</pre>', dom.stdout)
    assert match, f"no probe output from Chromium (rc {dom.returncode}): {dom.stderr[-1500:]}"
    sizes = {}
    for item in match.group(1).split():
        name, size = item.rsplit("=", 1)
        w, h = size.split("x")
        sizes[name] = (int(w), int(h))
    shot = work / "screenshot.png"
    subprocess.run([exe, *flags, f"--screenshot={shot}", f"--window-size=1200,{height}", html.as_uri()],
                   capture_output=True, timeout=180)
    assert shot.is_file(), "Chromium wrote no screenshot"
    return sizes, shot


def check_page(html: Path, work: Path) -> Path:
    """Every inlined image decodes in Python and in the browser at its true size; the screenshot
    shows content (text, tables, figures), not a blank or error page. Returns the screenshot."""
    text = html.read_text()
    inline = {name: Image.open(io.BytesIO(base64.b64decode(data))).size
              for data, name in re.findall(r'src="data:image/png;base64,([^"]+)"[^>]*data-name="([^"]+)"', text)}
    assert len(inline) == text.count("<img ") >= 8
    sizes, shot = render(html, work)
    assert sizes == inline, (sizes, inline)
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 3000)
    grey = np.asarray(img.convert("L"))
    assert (grey < 200).mean() > 0.03, "screenshot is (nearly) blank"
    colours = np.unique(np.asarray(img).reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 200, "screenshot has too few colours to hold the figures"
    return shot


def test_synthetic_report_renders_in_chromium(tmp_path):
    from jem.report.build import build_report

    md = build_report(tmp_path / "reports", **make_run(tmp_path))
    check_page(md.with_suffix(".html"), tmp_path)


def test_report_with_seeds_provenance_and_confusion_renders_in_chromium(tmp_path):
    """The newer figures (per-protocol zoomed accuracy panels, error bars over seeds, confusion
    matrix) decode in the browser at their true size, and fill the page width."""
    import yaml

    from jem.report.build import build_report
    from jem.report.seeds import load_runs

    run = make_run(tmp_path)
    run["ev"]["pixels"]["knn"]["top1"] = 0.976  # a negative gain, highlighted
    for seed in (1, 2):
        folder = tmp_path / "runs" / f"s{seed}"
        (folder / "metrics").mkdir(parents=True)
        (folder / "params.yaml").write_text(yaml.safe_dump(dict(run["params"], seed=seed)))
        ev = json.loads(json.dumps(run["ev"]))
        ev["knn"]["top1"] += 0.01 * seed
        (folder / "metrics" / "eval.json").write_text(json.dumps(ev))
    md = build_report(tmp_path / "reports", **run, runs=load_runs([str(tmp_path / "runs" / "*")]))
    html = md.with_suffix(".html")
    assert 'class="num bad"' in html.read_text()
    shot = check_page(html, tmp_path)
    (tmp_path / "again").mkdir()
    sizes, _ = render(html, tmp_path / "again")
    for name in ("accuracy.png", "accuracy_seeds.png", "confusion.png"):
        assert sizes[name][0] >= 1100, (name, sizes[name])  # drawn at page width, not half of it
    assert shot.stat().st_size > 50_000


# ---------------------------------------------------------------- on the real `dvc repro` run


def test_repro_report_has_every_element(repo, baseline, tmp_path):
    md = (repo / "reports" / "report.md").read_text()
    for section in SECTIONS:
        assert f"## {section}\n" in md, section
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (repo / "reports" / name).stat().st_size > 5000, name
    for csv in ("per_class_accuracy.csv", "confusion.csv", "tsne.csv"):
        assert (repo / "reports" / csv).stat().st_size > 100, csv
    ev = json.loads((repo / "metrics" / "eval-full.json").read_text())  # the diagnostics' details
    col = ev["collapse"]
    assert col["collapsed"] == 0 and col["backbone"]["collapsed"] == 0
    for part in ("backbone", "projector"):
        assert {"std", "std_healthy", "rankme", "rankme_ratio", "alignment", "uniformity"} <= set(col[part])
        assert 0 < col[part]["alignment"] < 4 and col[part]["std"] > 0.2 * col[part]["std_healthy"]
    prov = md[md.index("## Provenance"):]  # stage times recorded by the real stages under DVC
    for stage in ("validate", "prepare", "augment", "pretrain", "evaluate"):
        assert re.search(rf"\| {stage} \| [0-9.]+ (s|min)", prov), stage
    assert "Total pipeline time" in prov and "| git commit |" in prov
    assert "![confusion matrix](confusion.png)" in md
    check_page(repo / "reports" / "report.html", tmp_path)  # screenshot kept in tmp_path for a human look


def test_dvc_plots_show_renders(repo, baseline, tmp_path):
    out = tmp_path / "plots"
    _sh([sys.executable, "-m", "dvc", "plots", "show", "-o", str(out)], repo)
    page = (out / "index.html").read_text()
    for axis in ('"title": "linear"', '"title": "predicted"', '"title": "x"', '"title": "val_knn_top1"',
                 '"title": "loss"'):
        assert axis in page, axis  # per-class bars, confusion, t-SNE scatter, kNN monitor, loss
    images = re.findall(r'<img src="(static/[^"]+\.png)"', page)
    assert len(images) >= 6
    for rel in images:
        Image.open(out / rel).load()


def test_load_encoder_embed_export_after_repro(repo, baseline, tmp_path):
    import jem
    from jem.evaluate.features import extract_features
    from jem.evaluate.knn import knn_eval

    prepared = repo / "data" / "prepared"
    stats = json.loads((prepared / "stats.json").read_text())
    tx, ty = np.load(prepared / "train_x.npy"), np.load(prepared / "train_y.npy")
    vx, vy = np.load(prepared / "test_x.npy"), np.load(prepared / "test_y.npy")
    encoder = jem.load_encoder(repo / "models" / "encoder")
    f_train = extract_features(encoder, tx, stats["mean"], stats["std"])
    f_test = extract_features(encoder, vx, stats["mean"], stats["std"])
    ev = json.loads((repo / "metrics" / "eval.json").read_text())
    knn = knn_eval(f_train, ty, f_test, vy, 20, 0.07, int(stats["num_classes"]))
    assert knn["top1"] == pytest.approx(ev["knn"]["top1"], abs=1e-9)  # the very encoder that was evaluated

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(vx[i][..., 0] if vx.shape[-1] == 1 else vx[i]).save(folder / f"{i:02d}.png")
    jem_cli = [sys.executable, "-m", "jem.cli"]
    _sh(jem_cli + ["embed", "--images", str(folder), "--out", str(tmp_path / "emb.npy")], repo)
    assert np.array_equal(np.load(tmp_path / "emb.npy"), f_test[:12])

    _sh(jem_cli + ["export", "--out", str(tmp_path / "exported")], repo)
    _sh(jem_cli + ["embed", "--images", str(folder), "--out", str(tmp_path / "emb2.npy"), "--encoder",
                   str(tmp_path / "exported")], tmp_path)  # outside the repo: stats from encoder.json
    assert np.array_equal(np.load(tmp_path / "emb2.npy"), f_test[:12])
    info = _sh(jem_cli + ["info"], repo).stdout
    assert "kNN top-1 (k=20)" in info and "collapse (backbone)" in info
