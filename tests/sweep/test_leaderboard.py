"""Sweep results: the leaderboard ranking, the best params and their ``-S`` arguments."""

import subprocess
import sys
from types import SimpleNamespace

from jem.config import defaults_dict
from jem.sweep.leaderboard import best_params, leaderboard, set_args
from jem.sweep.space import parse_sweep

SPACE = {"method": {"grid": ["vicreg", "simclr"]}, "train.lr": {"loguniform": [0.1, 1.0]},
         "methods.simclr.temperature": {"choice": [0.1, 0.5]}, "train.batch_size": {"randint": [64, 257]}}


def _sweep(**extra):
    return {"num_samples": 2, "overrides": {"train": {"epochs": 4}, "eval": {"monitor_every": 1}},
            "space": SPACE, **extra}


def test_best_params_keep_only_keys_of_the_winning_method_and_become_set_args():
    _, _, dims = parse_sweep(_sweep(), defaults_dict())
    row = {"method": "vicreg", "train.lr": 0.25, "methods.simclr.temperature": None, "train.batch_size": 128}
    best = best_params(row, dims)
    assert best == {"method": "vicreg", "train": {"lr": 0.25, "batch_size": 128}}
    assert set_args(best) == ["-S", "method=vicreg", "-S", "train.lr=0.25", "-S", "train.batch_size=128"]
    row = {"method": "simclr", "train.lr": 0.5, "methods.simclr.temperature": 0.1, "train.batch_size": 64}
    assert best_params(row, dims)["methods"] == {"simclr": {"temperature": 0.1}}
    assert set_args({"model": {"projector": [512, 512]}, "train": {"sync_bn": True}}) == [
        "-S", "model.projector=[512,512]", "-S", "train.sync_bn=true"]


def test_set_args_cli_prints_the_dvc_arguments(tmp_path):
    (tmp_path / "best.yaml").write_text("# comment\nmethod: simclr\nmethods:\n  simclr:\n    temperature: 0.2\n")
    proc = subprocess.run([sys.executable, "-m", "jem.sweep", "--set-args", str(tmp_path / "best.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "-S method=simclr -S methods.simclr.temperature=0.2"
    proc = subprocess.run([sys.executable, "-m", "jem.sweep", "--set-args", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1


def test_leaderboard_marks_early_stopped_trials_and_ranks_full_budget_first():
    scfg, base, dims = parse_sweep(_sweep(), defaults_dict())  # budget: 4 epochs

    def hist(*knn):
        return [{"epoch": i, "loss": 1.0 - i / 10, "val_knn_top1": k, "epoch_s": 1.0} for i, k in enumerate(knn)]

    config = {"method": "simclr", "train.lr": 0.3, "methods.simclr.temperature": 0.1, "train.batch_size": 128}
    rec = SimpleNamespace(
        config={"a": {**config, "method": "vicreg"}, "b": config, "c": config, "d": config},
        rows={"a": hist(0.5, 0.6, 0.7, 0.8), "b": hist(0.9), "c": hist(0.4, 0.5, 0.6, 0.9), "d": []},
        status={"a": "done", "b": "done", "c": "done", "d": "error"}, error={"d": "ValueError: boom"},
        seconds={})
    rows = leaderboard(rec, base, dims, scfg)
    assert [(r["trial"], r["status"], r["rank"]) for r in rows] == [
        ("c", "completed", 1), ("a", "completed", 2), ("b", "early-stopped", 3), ("d", "error", 4)]
    assert rows[0]["val_knn_top1"] == 0.9 and rows[1]["best_val_knn_top1"] == 0.8 and rows[2]["epochs"] == 1
    assert rows[1]["methods.simclr.temperature"] is None  # a vicreg trial: not its key
    assert rows[3]["error"] == "ValueError: boom" and rows[3]["val_knn_top1"] is None
