"""The Ray Tune sweep as its own DVC pipeline, in a copy of the repo: `dvc repro
pipelines/sweep/dvc.yaml` runs the main pipeline's prepare/augment first, then 4 trials (vicreg and
simclr, 2 samples each, 3 epochs) on a private 2-CPU Ray instance with ASHA; the leaderboard marks
the trials ASHA stopped and the best params turn into `dvc exp run -S` arguments. The shipped,
bigger search space is measured by hand (see docs/cluster.md)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from e2e_util import copy_repo, git_commit_all

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e
SMALL_SWEEP = {"sweep": {
    "num_samples": 2,
    "asha": {"grace_period": 1, "reduction_factor": 2},
    "overrides": {"train": {"epochs": 3, "checkpoint_every": 3, "warmup_epochs": 1}, "eval": {"monitor_every": 1}},
    "space": {"method": {"grid": ["vicreg", "simclr"]}, "train.lr": {"loguniform": [0.1, 1.0]},
              "methods.simclr.temperature": {"choice": [0.1, 0.5]}},
}}


def _env():
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(DVC_NO_ANALYTICS="true", DVC_PAGER="")
    env.pop("RAY_ADDRESS", None)
    return env


def _sh(args, cwd, check=True):
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, f"{args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    dst = tmp_path_factory.mktemp("jem-sweep")
    copy_repo(dst)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["ray"].update(num_cpus=2, log_to_driver=False)
    # ASHA compares trials on the validation kNN: digits' default 10% (135 images) gives coarse values
    # that tie often, and tied trials are never stopped; 30% (about 400 images) separates them
    params["data"]["val_fraction"] = 0.3
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dst / "pipelines" / "sweep" / "params.yaml").write_text(yaml.safe_dump(SMALL_SWEEP, sort_keys=False))
    git_commit_all(dst)
    return dst


@pytest.fixture(scope="module")
def swept(repo):
    return _sh(["dvc", "repro", "pipelines/sweep/dvc.yaml"], repo)


def test_sweep_pipeline_writes_a_leaderboard_with_early_stopped_trials(repo, swept):
    out = swept.stdout + swept.stderr
    assert "Running stage 'prepare'" in out and "Running stage 'augment'" in out  # main pipeline's cache
    assert "Running stage 'pipelines/sweep/dvc.yaml:sweep'" in out
    results = repo / "pipelines" / "sweep" / "results"
    with open(results / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    statuses = [r["status"] for r in rows]
    assert "completed" in statuses and "early-stopped" in statuses and "error" not in statuses
    assert statuses == sorted(statuses, key=["completed", "early-stopped"].index)  # completed ranked first
    for r in rows:
        budget, epochs = int(r["budget"]), int(r["epochs"])
        assert budget == 3 and (epochs == 3) == (r["status"] == "completed") and 1 <= epochs <= 3
        assert 0.0 < float(r["val_knn_top1"]) <= 1.0
        assert (r["methods.simclr.temperature"] == "") == (r["method"] == "vicreg")  # only where it applies
    assert sorted(r["method"] for r in rows) == ["simclr", "simclr", "vicreg", "vicreg"]
    with open(results / "curves.csv") as f:
        assert len(list(csv.DictReader(f))) == sum(int(r["epochs"]) for r in rows)  # one row per trial epoch
    board = (results / "leaderboard.md").read_text()
    assert "**early-stopped**" in board and "python -m jem.sweep --set-args" in board
    best = json.loads((results / "best.json").read_text())
    assert best["trials"] == 4 and best["errored"] == 0 and best["early_stopped"] >= 1
    assert best["best"]["trial"] == rows[0]["trial"] and best["best"]["method"] == rows[0]["method"]
    assert (results / "curves.png").stat().st_size > 1000
    assert not list((repo / ".jem" / "ray_results").glob("sweep-*"))  # Ray folders removed


def test_best_params_become_dvc_set_arguments(repo, swept):
    path = "pipelines/sweep/results/best_params.yaml"
    best = yaml.safe_load((repo / path).read_text())
    assert best["method"] in ("vicreg", "simclr") and 0.1 <= best["train"]["lr"] <= 1.0
    assert ("methods" in best) == (best["method"] == "simclr")
    words = _sh([sys.executable, "-m", "jem.sweep", "--set-args", path], repo).stdout.split()
    assert words[:2] == ["-S", f"method={best['method']}"] and f"train.lr={best['train']['lr']}" in words
    # every argument names a key of params.yaml, so `dvc exp run $(...)` accepts it
    from jem.config import parse_config
    from jem.sweep.space import set_dotted

    sets = dict(w.split("=", 1) for w in words[1::2])
    parse_config(set_dotted(yaml.safe_load((repo / "params.yaml").read_text()),
                            {k: yaml.safe_load(v) for k, v in sets.items()}))


def test_sweep_is_cached_and_metrics_are_visible_to_dvc(repo, swept):
    again = _sh(["dvc", "repro", "pipelines/sweep/dvc.yaml"], repo)
    assert "Stage 'pipelines/sweep/dvc.yaml:sweep' didn't change, skipping" in again.stdout
    shown = json.loads(_sh(["dvc", "metrics", "show", "--json"], repo).stdout)
    flat = json.dumps(shown)
    assert "pipelines/sweep/results/best.json" in flat and "early_stopped" in flat


def test_bad_sweep_params_fail_before_compute_with_one_line(repo, swept):
    params = repo / "pipelines" / "sweep" / "params.yaml"
    before = params.read_text()
    bad = yaml.safe_load(before)
    bad["sweep"]["space"]["train.epoch"] = {"grid": [1, 2]}
    params.write_text(yaml.safe_dump(bad))
    try:
        proc = _sh(["dvc", "repro", "pipelines/sweep/dvc.yaml"], repo, check=False)
    finally:
        params.write_text(before)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "error: sweep.space.train.epoch: train.epoch is not a key of params.yaml" in out
    assert "Traceback" not in out


def test_pretrain_and_sweep_never_open_the_test_split(repo, swept, tmp_path):
    """With the test arrays moved away after `prepare`, the pretrain stage and the sweep still run:
    the online monitor, ASHA, the leaderboard and best_params read the validation split only."""
    prepared = repo / "data" / "prepared"
    assert (prepared / "val_x.npy").exists() and (prepared / "val_y.npy").exists()
    hidden = {name: tmp_path / name for name in ("test_x.npy", "test_y.npy")}
    for name, dst in hidden.items():
        (prepared / name).rename(dst)
    tiny = {"sweep": {**SMALL_SWEEP["sweep"], "num_samples": 1,
                      "overrides": {"train": {"epochs": 1, "checkpoint_every": 1, "warmup_epochs": 0},
                                    "eval": {"monitor_every": 1}},
                      "space": {"method": {"grid": ["vicreg"]}}}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(tiny))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(epochs=1, warmup_epochs=0)
    params["eval"]["monitor_every"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        pre = _sh([sys.executable, str(repo / "stages" / "pretrain.py"), "--params", str(tmp_path / "params.yaml"),
                   "--prepared", str(prepared), "--views", str(repo / "data" / "views"), "--out",
                   str(tmp_path / "encoder"), "--metrics", str(tmp_path / "pretrain.json"),
                   "--full", str(tmp_path / "pretrain-full.json"), "--live",
                   str(tmp_path / "live")], repo)
        sweep = _sh([sys.executable, "sweep.py", "--params", str(tmp_path / "sweep.yaml"), "--base",
                     str(tmp_path / "params.yaml"), "--prepared", str(prepared), "--views",
                     str(repo / "data" / "views"), "--out", str(tmp_path / "results")], repo / "pipelines" / "sweep")
    finally:
        for name, src in hidden.items():
            src.rename(prepared / name)
    assert "Traceback" not in pre.stderr + sweep.stderr
    assert (tmp_path / "encoder" / "encoder.safetensors").exists()
    # the monitor ran (on validation images) and DVCLive logged it under its validation name
    assert (tmp_path / "live" / "plots" / "metrics" / "monitor" / "val_knn_top1.tsv").exists()
    best = json.loads((tmp_path / "results" / "best.json").read_text())
    assert best["metric"] == "val_knn_top1" and 0.0 < best["best"]["val_knn_top1"] <= 1.0
