"""The pretraining driver without a training run: run identity, storage resolution, data
sharding, the unreachable-cluster error, and the sweep's search-space parsing and best params."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from shipped_params import shipped_params_text

from jem.config import ConfigError, RayConfig, defaults_dict, parse_config
from jem.engine.leaderboard import best_params
from jem.engine.loop import epoch_shards
from jem.engine.run import RayUnavailable, ray_session, resolve_storage, run_name
from jem.engine.tune import count_trials, parse_sweep, set_args, set_dotted

ROOT = Path(__file__).resolve().parents[2]


def _cfg(**sets):
    return parse_config(set_dotted(defaults_dict(), sets))


# ------------------------------------------------------------------------------------ run identity
def test_run_name_same_params_same_name_and_different_params_different_name():
    assert run_name(_cfg(), "data") == run_name(_cfg(), "data")
    names = {run_name(_cfg(), "data"), run_name(_cfg(**{"train.lr": 0.5}), "data"),
             run_name(_cfg(method="simclr"), "data"), run_name(_cfg(seed=1), "data"),
             run_name(_cfg(**{"methods.vicreg.inv_weight": 10.0}), "data"),
             run_name(_cfg(**{"train.workers": 2}), "data"), run_name(_cfg(), "other data")}
    assert len(names) == 7


def test_run_name_ignores_knobs_that_do_not_change_the_weights():
    """A killed run re-run with more retries, other checkpoint spacing, other CPUs or another Ray
    setup still resumes its own checkpoints."""
    base = run_name(_cfg(), "data")
    for sets in ({"train.max_failures": 3}, {"train.checkpoint_every": 1}, {"train.cpus_per_worker": 0.5},
                 {"ray.placement_strategy": "SPREAD"}, {"ray.address": "auto"}, {"eval.monitor_every": 1}):
        assert run_name(_cfg(**sets), "data") == base, sets


def test_resolve_storage(tmp_path):
    assert resolve_storage("", tmp_path) == str((tmp_path / ".jem" / "ray_results").resolve())
    assert resolve_storage("scratch/ray", tmp_path) == str((tmp_path / "scratch" / "ray").resolve())
    assert resolve_storage("/abs/ray", tmp_path) == "/abs/ray"
    assert resolve_storage("s3://bucket/jem", tmp_path) == "s3://bucket/jem"


def test_storage_default_is_git_ignored():
    assert "/.jem/" in (ROOT / ".gitignore").read_text().split()


# ---------------------------------------------------------------------------------------- sharding
@pytest.mark.parametrize("world", [2, 3, 4])
def test_epoch_shards_are_disjoint_and_rebuild_the_single_worker_batches(world):
    n, batch_total = 1000, 240
    steps = n // batch_total
    one = epoch_shards(7, 3, n, steps, 1, batch_total)  # (steps, 1, 240)
    many = epoch_shards(7, 3, n, steps, world, batch_total // world)  # (steps, world, 240 / world)
    for i in range(steps):
        parts = [set(many[i, r].tolist()) for r in range(world)]
        assert sum(len(p) for p in parts) == len(set().union(*parts))  # disjoint shards
        assert set().union(*parts) == set(one[i, 0].tolist())  # same global batch as 1 x 240
    assert len(np.unique(many)) == many.size  # no image twice in an epoch
    assert not np.array_equal(epoch_shards(7, 4, n, steps, 1, batch_total), one)  # reshuffled each epoch


# ---------------------------------------------------------------------------- unreachable cluster
def test_unreachable_address_fails_fast_with_one_line():
    t0 = time.perf_counter()
    with pytest.raises(RayUnavailable) as err:
        with ray_session(RayConfig(address="127.0.0.1:1")):
            pass
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    assert "\n" not in msg and "127.0.0.1:1" in msg and "ray start --head" in msg


def test_malformed_address_is_a_clear_error():
    with pytest.raises(RayUnavailable, match="not host:port"):
        with ray_session(RayConfig(address="no-port-here")):
            pass


def _fake_data(tmp_path):
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / "stats.json").write_text("{}")
    (tmp_path / "prepared" / "val_x.npy").write_bytes(b"")
    (tmp_path / "views").mkdir()
    (tmp_path / "views" / "meta.json").write_text("{}")


@pytest.mark.parametrize("via", ["param", "env"])
def test_pretrain_stage_unreachable_cluster_exits_nonzero_with_one_line(tmp_path, via):
    _fake_data(tmp_path)
    params = yaml.safe_load(shipped_params_text())
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if via == "param":
        params["ray"]["address"] = "127.0.0.1:1"
    else:
        env["RAY_ADDRESS"] = "127.0.0.1:1"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "pretrain.py"), "--params", "params.yaml",
                           "--prepared", "prepared", "--views", "views", "--out", "enc", "--metrics", "m.json",
                           "--live", "live"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: cannot reach the Ray cluster at 127.0.0.1:1")
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "enc").exists() and not (tmp_path / "m.json").exists()


# ------------------------------------------------------------------------------------------ sweeps
SPACE = {"method": {"grid": ["vicreg", "simclr"]}, "train.lr": {"loguniform": [0.1, 1.0]},
         "methods.simclr.temperature": {"choice": [0.1, 0.5]}, "train.batch_size": {"randint": [64, 257]}}


def _sweep(**extra):
    return {"num_samples": 2, "overrides": {"train": {"epochs": 4}, "eval": {"monitor_every": 1}},
            "space": SPACE, **extra}


def test_parse_sweep_builds_trial_base_and_space():
    scfg, base, dims = parse_sweep(_sweep(trial={"workers": 2, "cpus_per_worker": 0.5, "gpus_per_worker": 0.25}),
                                   defaults_dict())
    assert base["train"]["epochs"] == 4 and base["eval"]["monitor_every"] == 1
    assert base["train"]["workers"] == 2 and base["train"]["cpus_per_worker"] == 0.5
    assert base["train"]["use_gpu"] is True
    assert [d.kind for d in dims] == ["grid", "loguniform", "choice", "randint"]
    assert count_trials(scfg, dims) == 4 and scfg.mode == "max"


@pytest.mark.parametrize("bad, message", [
    ({"space": {"train.epoch": {"grid": [1, 2]}}}, "sweep.space.train.epoch: train.epoch is not a key"),
    ({"space": {"method": {"grid": ["vicreg", "wsme"]}}}, "method 'wsme' is not registered"),
    ({"space": {"train.lr": {"loguniform": [0.0, 1.0]}}}, "needs low > 0"),
    ({"space": {"train.lr": {"uniform": [1.0, 0.1]}}}, "low < high"),
    ({"space": {"train.lr": {"normal": [0, 1]}}}, "must be one sampler"),
    ({"space": {"train.lr": {"choice": [0.1, -1.0]}}}, "train.lr = -1.0 is out of range"),
    ({"space": {}}, "sweep.space is empty"),
    ({"overrides": {"train": {"epoch": 3}}}, "sweep.overrides: unknown key train.epoch"),
    ({"trial": {"cpus_per_worker": 0}}, "sweep.trial.cpus_per_worker = 0"),
    ({"asha": {"grace_period": 9}}, "grace_period = 9 exceeds"),
    ({"metrik": "loss"}, "unknown key sweep.metrik; did you mean sweep.metric?"),
])
def test_parse_sweep_rejects_bad_input_with_one_line(bad, message):
    with pytest.raises(ConfigError) as err:
        parse_sweep(_sweep(**bad), defaults_dict())
    assert message in str(err.value) and "\n" not in str(err.value)


def test_shipped_sweep_params_are_valid():
    raw = yaml.safe_load((ROOT / "pipelines" / "sweep" / "params.yaml").read_text())
    scfg, base, dims = parse_sweep(raw["sweep"], yaml.safe_load(shipped_params_text()))
    assert count_trials(scfg, dims) >= 4


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
    proc = subprocess.run([sys.executable, "-m", "jem.engine.tune", "--set-args", str(tmp_path / "best.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "-S method=simclr -S methods.simclr.temperature=0.2"
    proc = subprocess.run([sys.executable, "-m", "jem.engine.tune", "--set-args", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1


def test_leaderboard_marks_early_stopped_trials_and_ranks_full_budget_first():
    from types import SimpleNamespace

    from jem.engine.leaderboard import leaderboard

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


def test_local_session_frees_placement_groups_of_dead_actors_and_restores_the_environment(monkeypatch):
    """What a sweep relies on: a Train controller killed with its Tune trial leaves its workers'
    placement group behind (Ray frees it only with the job); the janitor returns those CPUs."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    from jem.engine.run import remove_orphaned_placement_groups

    with ray_session(RayConfig(num_cpus=2, log_to_driver=False)):
        import ray
        from ray.util.placement_group import placement_group

        assert os.environ["RAY_ADDRESS"] == f"127.0.0.1:{os.environ['RAY_GCS_SERVER_PORT']}"
        # Train V2 controller polls reports every 0.1 s instead of 2 s (else every epoch lasts >= 2 s)
        assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.1"

        @ray.remote(num_cpus=0)
        class Creator:
            def make(self) -> None:
                pg = placement_group([{"CPU": 1}])
                ray.get(pg.ready())
                self.keep = placement_group([{"CPU": 1}])  # pending: nothing left to place it on

        keeper = placement_group([{"CPU": 1}])  # created by the driver: never touched
        ray.get(keeper.ready())
        creator = Creator.remote()
        ray.get(creator.make.remote())
        assert ray.available_resources().get("CPU", 0) == 0
        ray.kill(creator)
        deadline = time.monotonic() + 30
        removed = 0
        while removed < 2 and time.monotonic() < deadline:
            removed += remove_orphaned_placement_groups()
            time.sleep(0.2)
        assert removed == 2
        deadline = time.monotonic() + 10
        while ray.available_resources().get("CPU", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("CPU", 0) == 1  # the driver's group still holds the other
    assert "RAY_ADDRESS" not in os.environ and "RAY_GCS_SERVER_PORT" not in os.environ
