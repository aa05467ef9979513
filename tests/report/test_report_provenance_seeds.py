"""The report's newer parts on synthetic inputs: negative gains highlighted, the zoomed accuracy
axis, semi-supervised baselines, the confusion matrix, provenance (commit, machine, stage times
recorded by real stage scripts) and means / error bars over seeds from run folders and from
`dvc exp show --json` output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from report_synthetic import make_run

from jem.report.build import build_report
from jem.report.plots import accuracy_range
from jem.report.provenance import stage_rows, stage_times

ROOT = Path(__file__).resolve().parents[2]


def test_negative_gain_is_highlighted_in_both_formats(tmp_path):
    run = {**make_run(tmp_path), "artefacts": None}
    run["ev"]["pixels"]["knn"]["top1"] = 0.976  # the digits default run: VICReg 0.958 vs raw pixels 0.976
    run["ev"]["knn"]["top1"] = 0.958
    out = tmp_path / "reports"
    md = build_report(out, **run).read_text()
    assert "| kNN top-1 (k=20) | 0.9580 | 0.6000 | 0.9760 | **-0.0180 ▼** |" in md
    assert ("> **Warning:** pretraining is below a baseline on kNN top-1 (k=20) (highlighted): on 8x8 digits raw "
            "pixels are a strong baseline and 3 epochs is a toy budget") in md
    html = (out / "report.html").read_text()
    assert '<td class="num bad">-0.0180</td>' in html and html.count('class="num bad"') == 1
    assert '<td class="num">+0.1100</td>' in html  # a positive gain (linear 0.93 vs 0.82) stays plain


def test_accuracy_axis_is_zoomed_to_the_data():
    lo, hi = accuracy_range([0.958, 0.976, 0.90])  # span 0.076, a quarter of it on each side
    assert lo == pytest.approx(0.90 - 0.019) and hi == pytest.approx(0.976 + 0.019)
    lo, hi = accuracy_range([0.958, 0.976])  # span below the 0.05 minimum: 0.05 wide, padded 0.0125
    assert (lo, hi) == pytest.approx((0.9455, 0.9885))
    lo, hi = accuracy_range([0.99, 1.0])  # never past 1: the window [0.9775, 1.0125] slides down
    assert hi == 1.0 and lo == pytest.approx(0.965)
    assert accuracy_range([0.5, 0.5]) == pytest.approx((0.4875, 0.5125))


def test_semi_supervised_rows_show_their_baseline_when_present(tmp_path):
    run = {**make_run(tmp_path), "artefacts": None}
    md = build_report(tmp_path / "a", **run).read_text()
    assert "| semi-sup. 1% top-1 | 0.5500 | — | — | — |" in md and "have no baseline" in md
    run["ev"]["random_init"]["semi_1pct"] = {"top1": 0.4}
    run["ev"]["random_init"]["semi_10pct"] = {"top1": 0.85}
    md = build_report(tmp_path / "b", **run).read_text()
    assert "| semi-sup. 1% top-1 | 0.5500 | 0.4000 | — | +0.1500 |" in md
    assert "| semi-sup. 10% top-1 | 0.8000 | 0.8500 | — | **-0.0500 ▼** |" in md
    assert "have no baseline" not in md


def test_confusion_matrix_figure(tmp_path):
    out = tmp_path / "reports"
    md = build_report(out, **make_run(tmp_path)).read_text()
    assert "![confusion matrix](confusion.png)" in md
    img = Image.open(out / "confusion.png")
    img.load()
    assert img.size[0] >= 1100  # full page width


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_provenance_block_commit_machine_versions_and_stage_times(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git("init", "-q", cwd=repo)
    (repo / "params.yaml").write_text("seed: 0\n")
    _git("add", "params.yaml", cwd=repo)
    _git("commit", "-qm", "the baseline", cwd=repo)
    sha = _git("rev-parse", "HEAD", cwd=repo)
    (repo / "params.yaml").write_text("seed: 1\n")  # what `dvc exp run -S seed=1` leaves
    times = tmp_path / "times"
    times.mkdir()
    for stage, start, end, wall in (("prepare", "2026-01-01T09:00:00Z", "2026-01-01T09:00:05Z", 5.0),
                                    ("validate", "2026-01-02T10:00:00Z", "2026-01-02T10:00:03Z", 3.0),
                                    ("pretrain", "2026-01-02T10:00:04Z", "2026-01-02T10:02:04Z", 120.0),
                                    ("evaluate", "2026-01-02T10:02:05Z", "2026-01-02T10:03:05Z", 60.5)):
        (times / f"{stage}.json").write_text(json.dumps({"stage": stage, "started": start, "finished": end,
                                                        "wall_s": wall}))
    run = {**make_run(tmp_path), "artefacts": None}
    md = build_report(tmp_path / "reports", **run, times_dir=times, root=repo).read_text()
    prov = md[md.index("## Provenance"):]
    assert f"| git commit | {sha[:10]} (the baseline) + uncommitted changes to params.yaml |" in prov
    assert "| machine |" in prov and "logical CPUs" in prov
    import torch

    assert f"torch {torch.__version__}" in prov and f"Python {sys.version.split()[0]}" in prov
    # pipeline order; prepare finished before this run's validate started: cached
    assert prov.index("| validate |") < prov.index("| prepare |") < prov.index("| pretrain |") < prov.index(
        "| evaluate |")
    assert "| prepare | 5.0 s | 2026-01-01T09:00:05Z | no (cached; last ran then) |" in prov
    assert "| pretrain | 2 min 00 s | 2026-01-02T10:02:04Z | yes |" in prov
    assert "Total pipeline time 3 min 09 s" in prov and "3 min 04 s of it ran in this run" in prov  # 188.5 / 183.5
    assert [r[0] for r in stage_rows(stage_times(times))[0]] == ["validate", "prepare", "pretrain", "evaluate"]


def test_a_stage_script_records_its_wall_time(tmp_path):
    (tmp_path / "stages").mkdir()
    script = tmp_path / "stages" / "sleepy.py"
    script.write_text("import time\nfrom jem.errors import run_main\nrun_main(lambda: time.sleep(0.3))\n")
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, check=True)
    rec = json.loads((tmp_path / ".jem" / "stage_times" / "sleepy.json").read_text())
    assert rec["stage"] == "sleepy" and 0.3 <= rec["wall_s"] < 5
    (tmp_path / "stages" / "bad.py").write_text("from jem.errors import run_main, DataError\n"
                                                "def f():\n    raise DataError('no')\nrun_main(f)\n")
    assert subprocess.run([sys.executable, "stages/bad.py"], cwd=tmp_path, capture_output=True).returncode == 2
    assert not (tmp_path / ".jem" / "stage_times" / "bad.json").exists()  # only successes are recorded


def _run_folder(path: Path, params: dict, knn: float, pixels_knn: float) -> None:
    (path / "metrics").mkdir(parents=True)
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    (path / "metrics" / "eval.json").write_text(json.dumps({"knn": {"top1": knn}, "linear": {"top1": 0.93},
                                                            "pixels": {"knn": {"top1": pixels_knn}}}))


def test_means_and_error_bars_over_seeds_from_run_folders(tmp_path):
    run = {**make_run(tmp_path), "artefacts": None}  # seed 3, kNN 0.91, raw pixels kNN 0.80
    other = dict(run["params"])
    _run_folder(tmp_path / "runs" / "s1", dict(other, seed=1), 0.90, 0.80)
    _run_folder(tmp_path / "runs" / "s2", dict(other, seed=2), 0.89, 0.83)
    _run_folder(tmp_path / "runs" / "byol", dict(other, seed=4, method="byol"), 0.10, 0.10)  # another experiment
    _run_folder(tmp_path / "runs" / "again", dict(other, seed=3), 0.10, 0.10)  # this run's seed: this run wins
    from jem.report.seeds import load_runs

    runs = load_runs([str(tmp_path / "runs" / "*")])
    out = tmp_path / "reports"
    md = build_report(out, **run, runs=runs).read_text()
    assert "## Across seeds (3 seeds: 1, 2, 3)" in md
    # kNN: 0.91, 0.90, 0.89 -> 0.9000 +- 0.0100; pixels 0.80, 0.80, 0.83 -> 0.8100 +- 0.0173
    assert "| kNN top-1 (k=20) | 0.9000 ± 0.0100 | 0.6000 ± 0.0000 | 0.8100 ± 0.0173 | +0.0900 | 3 |" in md
    assert "| linear top-1 | 0.9300 ± 0.0000 |" in md
    assert np.std([0.80, 0.80, 0.83], ddof=1) == pytest.approx(0.0173, abs=5e-5)
    assert "![accuracy over seeds](accuracy_seeds.png)" in md
    Image.open(out / "accuracy_seeds.png").load()
    single = build_report(tmp_path / "single", **run).read_text()  # no --runs: the single-run report
    assert "Across seeds" not in single


def test_seeds_from_dvc_exp_show_json(tmp_path):
    run = {**make_run(tmp_path), "artefacts": None}

    def rev(seed: int, knn: float) -> dict:
        return {"rev": f"{seed:040d}", "name": f"exp-{seed}",
                "data": {"params": {"params.yaml": {"data": dict(run["params"], seed=seed)}},
                         "metrics": {"metrics/eval.json": {"data": {"knn": {"top1": knn}}}}}}

    rows = [{"rev": "workspace", "data": {}},
            {"rev": "a" * 40, "data": {}, "experiments": [{"name": "exp-1", "revs": [rev(1, 0.93)]},
                                                         {"name": "exp-2", "revs": [rev(2, 0.92)]}]}]
    (tmp_path / "exps.json").write_text(json.dumps(rows))
    from jem.report.seeds import load_runs

    md = build_report(tmp_path / "reports", **run, runs=load_runs([str(tmp_path / "exps.json")])).read_text()
    assert "| kNN top-1 (k=20) | 0.9200 ± 0.0100 |" in md  # 0.91, 0.93, 0.92
    with pytest.raises(FileNotFoundError, match="matches no run folder"):
        load_runs([str(tmp_path / "nothing-*")])


def test_report_stage_rejects_runs_that_match_nothing(tmp_path):
    run = make_run(tmp_path)
    (tmp_path / "pre.json").write_text(json.dumps(run["pretrain"]))
    (tmp_path / "ev.json").write_text(json.dumps(run["ev"]))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(run["params"]))
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "report.py"), "--params", str(tmp_path / "params.yaml"),
                           "--pretrain", str(tmp_path / "pre.json"), "--eval", str(tmp_path / "ev.json"),
                           "--live", str(run["live_dir"]), "--artefacts", str(run["artefacts"]),
                           "--out", str(tmp_path / "reports"), "--runs", str(tmp_path / "none-*")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --runs") and len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "reports").exists()
