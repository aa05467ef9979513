"""Nothing waits forever (rule 7): workers that a local Ray instance can never fit fail fast with
what is missing, in ``validate`` (through DVC), in the pretrain stage before Ray starts, and inside
a running private instance (whose published ``$RAY_ADDRESS`` used to make the code believe it was
on a cluster, so Ray retried the worker group every 60 s forever)."""

from __future__ import annotations

import os
import shutil
import sys
import time

import pytest
import yaml
from conftest import ROOT, assert_one_error, run, stage
from shipped_params import shipped_params_text

from jem.engine.session import check_resources, cluster_address, local_cpus, ray_session
from jem.errors import RayUnavailable
from jem.sections import RayConfig

CPUS = int(local_cpus(RayConfig()))


def _fake_data(tmp_path):
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / "stats.json").write_text("{}")
    (tmp_path / "prepared" / "val_x.npy").write_bytes(b"")
    (tmp_path / "views").mkdir()
    (tmp_path / "views" / "meta.json").write_text("{}")


def test_pretrain_stage_fails_before_ray_starts(tmp_path):
    _fake_data(tmp_path)
    params = yaml.safe_load(shipped_params_text())
    params["train"]["workers"] = CPUS + 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "encoder.json").write_text("previous")  # a previous output: kept
    t0 = time.perf_counter()
    proc = stage("pretrain", "--params", "params.yaml", "--prepared", "prepared", "--views", "views", "--out", "enc",
                 "--metrics", "m.json", "--live", "live", cwd=tmp_path, timeout=300)
    assert_one_error(proc, f"= {CPUS + 1} CPUs but this machine has {CPUS}")
    assert time.perf_counter() - t0 < 120  # it used to never return
    assert (tmp_path / "enc" / "encoder.json").read_text() == "previous" and not (tmp_path / "m.json").exists()


def test_inside_a_private_local_instance_the_check_runs():
    """The root cause: inside :func:`ray_session`'s own local instance ``$RAY_ADDRESS`` is set, yet
    it is not a cluster, so the resource check applies (and says what is missing)."""
    with ray_session(RayConfig(num_cpus=1, log_to_driver=False)):
        assert os.environ.get("RAY_ADDRESS")
        assert cluster_address(RayConfig()) == ""
        with pytest.raises(RayUnavailable, match=r"train.workers=2 x train.cpus_per_worker=1 = 2 CPUs but the "
                                                 r"local Ray instance has 1"):
            check_resources(2, 1.0, 0.0, "pretrain")
    assert cluster_address(RayConfig(address="10.0.0.1:6379")) == "10.0.0.1:6379"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_dvc_exp_run_with_too_many_workers_fails_in_validate(tmp_path):
    """The reported hang: ``dvc exp run -S train.workers=8`` on a 2-CPU machine, in a real DVC repo."""
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from e2e_util import copy_repo, git_commit_all

    copy_repo(tmp_path)  # with .dvc/config: a DVC repo once committed
    git_commit_all(tmp_path)
    n = CPUS + 1
    t0 = time.perf_counter()
    proc = run(["dvc", "exp", "run", "-S", f"train.workers={n}"], tmp_path, timeout=600)
    assert proc.returncode != 0
    assert time.perf_counter() - t0 < 300
    out = proc.stdout + proc.stderr
    errors = [ln for ln in out.splitlines() if ln.startswith("error: ")]
    assert errors == [f"error: pretrain: train.workers={n} x train.cpus_per_worker=1 = {n} CPUs but this machine "
                      f"has {CPUS}; lower train.workers or train.cpus_per_worker, or attach to a cluster "
                      "(ray.address)"], out[-3000:]
    assert "Traceback" not in out
    assert not (tmp_path / "data" / "prepared").exists()  # failed in validate, before prepare

