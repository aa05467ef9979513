"""Scale-out on one machine with real Ray Train runs on digits:

* a 2-node Ray cluster (``ray.cluster_utils.Cluster``, 1 CPU per node) pretrains with one worker
  per node (``ray.placement_strategy: SPREAD``) through ``jem.engine.run.pretrain``;
* a training worker is SIGKILLed from outside during epoch 2 (the test finds the Ray Train worker
  process among its own descendants once Ray's controller has registered the epoch-2 checkpoint):
  Ray Train restarts the worker group from that checkpoint and the run ends exactly where the
  uninterrupted 2-node run ended;
* the ``dvc repro`` of the pretrain stage is SIGKILLed (whole process group, Ray included) after
  checkpoints were written: ``dvc repro`` again resumes (``start_epoch > 0``) and writes the
  final metrics once.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from e2e_util import copy_repo, git_commit_all

from jem.config import defaults_dict, parse_config
from jem.engine.run import pretrain
from jem.sweep.space import set_dotted

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e
EPOCHS = 4
FAST = {"train.epochs": EPOCHS, "train.batch_size": 64, "train.workers": 2, "train.checkpoint_every": 1,
        "train.warmup_epochs": 1, "eval.monitor_every": 0, "ray.log_to_driver": False}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from jem.augment.cache import build_view_cache
    from jem.prepare import prepare

    root = tmp_path_factory.mktemp("scaleout-data")
    cfg = parse_config(defaults_dict())
    (root / "prepared").mkdir()
    prepare(cfg, root / "prepared")
    build_view_cache(np.load(root / "prepared" / "train_x.npy", mmap_mode="r"), cfg.augment, root / "views", cfg.seed)
    return root


def _run(data, out, **sets):
    raw = set_dotted(defaults_dict(), {**FAST, **sets})
    return pretrain(parse_config(raw), raw, data / "prepared", data / "views", out / "encoder", out / "live",
                    str(out / "ray_results"), progress=False)


def _logged_epochs(live: Path) -> list[int]:
    with open(live / "plots" / "metrics" / "train" / "loss.tsv") as f:
        return [int(row["step"]) for row in csv.DictReader(f, delimiter="\t")]


@pytest.fixture(scope="module")
def two_nodes(data, tmp_path_factory):
    """One worker on each node of a 2-node cluster (1 CPU each)."""
    from ray._common.utils import get_ray_address_file
    from ray.cluster_utils import Cluster

    address_file = Path(get_ray_address_file(None))
    before = address_file.read_text() if address_file.exists() else None
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    # Cluster() advertises itself machine-wide as "the current cluster"; undo that at once
    if before is None:
        address_file.unlink(missing_ok=True)
    else:
        address_file.write_text(before)
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        out = tmp_path_factory.mktemp("two-nodes")
        t0 = time.perf_counter()
        summary = _run(data, out, **{"ray.address": cluster.address, "ray.placement_strategy": "SPREAD"})
        summary["test_s"] = time.perf_counter() - t0
    finally:
        cluster.shutdown()
    return summary, out


def test_two_node_cluster_runs_one_worker_per_node(two_nodes, data):
    summary, out = two_nodes
    n_train = len(np.load(data / "prepared" / "train_y.npy"))  # 1347 digits minus the validation split
    assert summary["workers"] == 2 and summary["nodes"] == 2
    assert summary["replica_param_spread"] == 0.0  # DDP kept both replicas identical
    assert summary["effective_batch"] == 128 and summary["steps_per_epoch"] == n_train // 128
    assert summary["effective_lr"] == pytest.approx(0.3 * 128 / 256) and summary["lr_scaling"] == "linear"
    assert summary["start_epoch"] == 0 and np.isfinite(summary["final_loss"])
    assert (out / "encoder" / "encoder.safetensors").exists()
    assert _logged_epochs(out / "live") == list(range(EPOCHS))
    assert not (out / "ray_results" / summary["run_name"]).exists()  # removed after success


def _train_workers_of_this_process() -> list:
    """The Ray Train worker processes of the Ray instance this test process started (its
    descendants): never those of another Ray instance on the machine."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "ray::RayTrainWorker" in " ".join(proc.cmdline()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _registered_epochs(storage: Path) -> int | None:
    """Epochs done of the newest checkpoint Ray's controller has registered (its checkpoint-manager
    snapshot, written when it collects a checkpoint), None before the first."""
    for snapshot in storage.glob("pretrain-*/checkpoint_manager_snapshot.json"):
        try:
            latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
        except (OSError, ValueError):  # being written
            continue
        if latest:
            return int(latest["metrics"]["epoch"]) + 1
    return None


def _kill_a_worker_after(storage: Path, epochs_done: int, killed: dict, stop: threading.Event) -> None:
    """Once the checkpoint of ``epochs_done`` epochs is registered (the workers are then in the next
    epoch), SIGKILL one Ray Train worker process of this test's Ray instance."""
    while not stop.is_set():
        registered = _registered_epochs(storage)
        if registered is not None and registered >= epochs_done:
            workers = _train_workers_of_this_process()
            if registered == epochs_done and workers:
                victim = workers[-1]
                killed.update(pid=victim.pid, cmdline=" ".join(" ".join(victim.cmdline()).split()), after_epochs=registered)
                victim.kill()
            else:
                killed.update(missed=f"checkpoint of {registered} epoch(s), {len(workers)} worker process(es)")
            return
        time.sleep(0.01)


def test_killed_worker_is_restarted_from_the_last_checkpoint(data, two_nodes, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a private local instance: its workers are our descendants
    killed: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_a_worker_after, args=(tmp_path / "ray_results", 2, killed, stop),
                               daemon=True)
    watcher.start()
    try:
        summary = _run(data, tmp_path, **{"train.max_failures": 1})
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert "pid" in killed, killed  # a worker process really died in epoch 2
    assert "ray::RayTrainWorker" in killed["cmdline"] and killed["after_epochs"] == 2
    assert summary["start_epoch"] == 2 and summary["epochs"] == EPOCHS
    assert summary["workers"] == 2 and summary["replica_param_spread"] == 0.0
    # resumed from the epoch-2 checkpoint it replays the same data: same end as the uninterrupted run
    assert summary["final_loss"] == pytest.approx(two_nodes[0]["final_loss"], rel=1e-6)
    assert _logged_epochs(tmp_path / "live") == list(range(EPOCHS))  # one row per epoch, none twice


# ------------------------------------------------------------------------------------ stage kill
def _env():
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(DVC_NO_ANALYTICS="true", DVC_PAGER="")
    env.pop("RAY_ADDRESS", None)
    return env


def _sh(args, cwd):
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc




def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_killed_pretrain_stage_resumes_on_the_next_repro(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_repo(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    epochs = 40  # long enough (about 1 s per epoch here) that the kill lands well before the end
    params["train"].update(epochs=epochs, checkpoint_every=1, warmup_epochs=1)
    params["eval"]["monitor_every"] = 0
    params["ray"]["log_to_driver"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git_commit_all(repo)
    _sh(["dvc", "repro", "augment"], repo)

    storage = repo / ".jem" / "ray_results"
    first = subprocess.Popen(["dvc", "repro", "pretrain"], cwd=repo, env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(list(storage.glob("pretrain-*/checkpoint_*"))) < 2:
            assert first.poll() is None, "the stage ended before it was killed"
            assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
            time.sleep(0.2)
        time.sleep(0.5)  # jem has Ray's controller collect reports every 0.1 s
        _kill_group(first.pid)  # dvc, the stage, and the Ray instance it started
        first.wait(timeout=30)
    finally:
        _kill_group(first.pid)
    assert not (repo / "metrics" / "pretrain.json").exists()
    assert list(storage.glob("pretrain-*/checkpoint_*"))

    proc = _sh(["dvc", "repro", "pretrain"], repo)
    summary = json.loads((repo / "metrics" / "pretrain-full.json").read_text())  # start_epoch: bookkeeping
    assert 0 < summary["start_epoch"] < epochs and summary["epochs"] == epochs
    assert f"resumed at epoch {summary['start_epoch']}" in proc.stdout
    assert _logged_epochs(repo / "dvclive" / "pretrain") == list(range(epochs))  # final metrics written once
    assert not list(storage.glob("pretrain-*"))  # the finished run's Ray folder is gone
    _sh(["dvc", "status", "pretrain"], repo)


# ------------------------------------------------------------------------------- Ctrl-C / SIGTERM
@pytest.mark.parametrize("sig, status, last_line", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "")])
def test_interrupted_stage_shuts_its_ray_instance_down(data, tmp_path, sig, status, last_line):
    """Ctrl-C (SIGINT to the whole foreground group, as a terminal sends it) or SIGTERM while
    training: the stage exits with 130 / 143, writes no outputs and leaves no process behind."""
    params = set_dotted(defaults_dict(), {**FAST, "train.epochs": 200, "train.workers": 1})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "pretrain.py"), "--params", "params.yaml", "--prepared",
         str(data / "prepared"), "--views", str(data / "views"), "--out", "encoder", "--metrics", "m.json",
         "--live", "live"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not list((tmp_path / ".jem" / "ray_results").glob("pretrain-*/checkpoint_*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        deadline = time.monotonic() + 30
        while _group_alive(proc.pid):  # gcs_server, raylet, workers started by the stage
            assert time.monotonic() < deadline, "processes of the stopped stage are still running"
            time.sleep(0.5)
    finally:
        _kill_group(proc.pid)
    assert proc.returncode == status, err
    assert (err.strip().splitlines() or [""])[-1] == last_line
    assert "Traceback" not in err
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "encoder").exists()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
