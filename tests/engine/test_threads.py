"""How many CPUs and threads a run uses by default (issue 19: the default used half the machine),
and how its OpenMP threads wait."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jem.config import parse_config
from jem.engine.session import resolve_cpus_per_worker


@pytest.mark.parametrize("num_cpus, workers, stream, expected", [
    (2, 1, False, 2.0),  # one worker gets the whole local instance
    (2, 2, False, 1.0),
    (3, 2, False, 1.0),  # whole CPUs only: 3 // 2
    (8, 3, False, 2.0),
    (2, 4, False, 1.0),  # at least 1 (the resource check then says the instance is too small)
    (4, 1, True, 3.0),  # a stream keeps one CPU for Ray Data's read and render tasks
])
def test_auto_cpus_split_a_local_instance_among_its_workers(num_cpus, workers, stream, expected, tmp_path):
    raw = {"train": {"workers": workers}, "ray": {"num_cpus": num_cpus}}
    if stream:
        raw["data"] = {"pretrain_root": str(tmp_path)}
    cfg = parse_config(raw)
    assert cfg.train.cpus_per_worker == 0  # the shipped default is auto
    assert resolve_cpus_per_worker(cfg).train.cpus_per_worker == expected


def test_an_explicit_value_stays_and_an_attached_cluster_gets_one(monkeypatch):
    cfg = parse_config({"train": {"cpus_per_worker": 0.5}, "ray": {"num_cpus": 8}})
    assert resolve_cpus_per_worker(cfg).train.cpus_per_worker == 0.5
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert resolve_cpus_per_worker(parse_config({"ray": {"num_cpus": 8}})).train.cpus_per_worker == 1.0


def _policy(env: dict[str, str]) -> str:
    code = "import jem, os; print(os.environ['OMP_WAIT_POLICY'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_jem_makes_openmp_threads_wait_passively_unless_the_user_chose():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy(env) == "PASSIVE"
    assert _policy(env | {"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_worker_and_stage_imports_do_not_load_torchvision():
    """Importing torchvision pulls in torch._dynamo and sympy: about 3-5 s per process on this machine
    (import of jem.engine.loop: 2.6-4.3 s without it, 8.2-9.0 s with it, machine shared). Every Ray
    worker and stage process paid it; only torchvision backbones need it, and import it themselves."""
    code = ("import sys, jem.engine.loop, jem.engine.run, jem.export, jem.models; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
