"""`jem compare` on a real git + DVC repo with a baseline and three experiments. The "pipeline" is
one trivial stage whose metrics are a known function of its params, so the test takes seconds and
every number in the table can be checked."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

TRAIN = '''
import json, os, yaml
p = yaml.safe_load(open("params.yaml"))
score = {"vicreg": 0.9, "simclr": 0.8, "barlow": 0.7}[p["method"]] - p["train"]["lr"] / 10
base = {"digits": 0.6, "fashion-mnist": 0.5}[p["dataset"]]  # baselines: one per data set, any method
os.makedirs("metrics", exist_ok=True)
json.dump({"knn": {"top1": score}, "linear": {"top1": score + 0.01}, "collapse": {"collapsed": 0},
           "random_init": {"knn": {"top1": base}, "linear": {"top1": base + 0.02}},
           "pixels": {"knn": {"top1": base + 0.1}, "linear": {"top1": base + 0.12}}},
          open("metrics/eval.json", "w"))
json.dump({"wall_s": 1.0}, open("metrics/pretrain.json", "w"))
'''
DVC_YAML = '''stages:
  train:
    cmd: python train.py
    deps: [train.py]
    params: [dataset, method, train.lr]
    metrics:
      - metrics/eval.json:
          cache: false
      - metrics/pretrain.json:
          cache: false
'''
EXPERIMENTS = [("simclr", 0.1, "digits"), ("barlow", 0.1, "fashion-mnist"), ("vicreg", 0.5, "digits")]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(DVC_NO_ANALYTICS="true", DVC_PAGER="", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t.invalid")
    return env


def _sh(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def exp_repo(tmp_path_factory):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path_factory.mktemp("compare-repo")
    (repo / "train.py").write_text(TRAIN)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text("dataset: digits\nmethod: vicreg\ntrain:\n  lr: 0.0\n  epochs: 3\n")
    dvc = [sys.executable, "-m", "dvc"]
    _sh(["git", "init", "-q"], repo)
    _sh(dvc + ["init", "-q"], repo)
    _sh(dvc + ["repro", "-q"], repo)
    _sh(["git", "add", "-A"], repo)
    _sh(["git", "commit", "-qm", "baseline"], repo)
    for i, (method, lr, dataset) in enumerate(EXPERIMENTS):
        _sh(dvc + ["exp", "run", "-q", "-n", f"exp{i}", "-S", f"method={method}", "-S", f"train.lr={lr}",
                   "-S", f"dataset={dataset}"], repo)
    return repo


def test_compare_table_and_chart_cover_every_experiment(exp_repo, tmp_path):
    out = tmp_path / "cmp"
    stdout = _sh([sys.executable, "-m", "jem.cli", "compare", "--repo", str(exp_repo), "--out", str(out)], exp_repo)
    assert "4 runs compared" in stdout
    with (out / "compare.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4  # the baseline commit + 3 experiments (the workspace equals one of them)
    by_name = {r["experiment"]: r for r in rows}
    assert {"exp0", "exp1", "exp2"} <= set(by_name)
    for i, (method, lr, dataset) in enumerate(EXPERIMENTS):
        row = by_name[f"exp{i}"]
        assert row["method"] == method and float(row["train.lr"]) == lr and row["dataset"] == dataset
        expected = {"vicreg": 0.9, "simclr": 0.8, "barlow": 0.7}[method] - lr / 10
        assert float(row["knn.top1"]) == pytest.approx(expected, abs=1e-4)
        assert float(row["linear.top1"]) == pytest.approx(expected + 0.01, abs=1e-4)
    assert "train.epochs" not in rows[0]  # unchanged params are not columns
    # grouped by data set: every digits run before the fashion-mnist one, one markdown table each
    assert [r["dataset"] for r in rows] == ["digits"] * 3 + ["fashion-mnist"]
    md = (out / "compare.md").read_text()
    assert md.index("## digits") < md.index("## fashion-mnist") < md.index("| exp1 |")
    assert md.count("\n| ") == 6 and "![comparison](compare.png)" in md  # 2 table headers + 4 rows
    img = Image.open(out / "compare.png")
    assert img.size[0] > 500 and len(set(img.convert("L").getdata())) > 20  # a drawn chart, not blank


def test_compare_draws_each_runs_baselines_and_counts_a_lone_baseline_run(exp_repo, tmp_path):
    from jem.report.compare import collect_runs, compare, compare_table, exp_show, plot_compare

    runs = collect_runs(exp_show(exp_repo))
    marks = plot_compare(runs, ("knn.top1", "linear.top1"), tmp_path / "c.png")
    # TRAIN's baselines: random init 0.6 / 0.62 and pixels 0.7 / 0.72 on digits, 0.5 / 0.52 and
    # 0.6 / 0.62 on fashion-mnist, drawn over every run's own bars
    expected = {"digits": {"random_init.knn.top1": 0.6, "random_init.linear.top1": 0.62,
                           "pixels.knn.top1": 0.7, "pixels.linear.top1": 0.72},
                "fashion-mnist": {"random_init.knn.top1": 0.5, "random_init.linear.top1": 0.52,
                                  "pixels.knn.top1": 0.6, "pixels.linear.top1": 0.62}}
    datasets = {r.name: r.params["dataset"] for r in runs}
    assert len(marks) == 4 * len(runs)
    for name, key, value in marks:
        assert value == pytest.approx(expected[datasets[name]][key]), (name, key)
    # the baseline commit alone (no experiment yet): counted, and the method is a column
    header, rows = compare_table(runs[:1])
    assert header[:3] == ["experiment", "method", "dataset"] and rows[0][1:3] == ["vicreg", "digits"]
    md, _ = compare(exp_repo, tmp_path / "o")
    assert md.startswith("# 4 runs in ")


def test_compare_outside_a_dvc_repo_fails_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "jem.cli", "compare", "--repo", str(tmp_path), "--out",
                           str(tmp_path / "o")], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
