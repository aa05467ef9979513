"""Rule 5: a failed or interrupted stage never destroys the previous good outputs, and `jem info`
says when what it shows is stale (docs/reliability.md). Real `dvc repro` in a temporary git repo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import ROOT, env, run

from jem import reaper

KEPT = ("metrics/pretrain.json", "metrics/pretrain-full.json", "dvclive/pretrain", "models/encoder")


def _snapshot(repo: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for rel in KEPT:
        p = repo / rel
        for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())):
            files[str(f.relative_to(repo))] = f.read_bytes()
    return files


def _set(repo: Path, **values: object) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for dotted, value in values.items():
        *parents, leaf = dotted.split("__")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _jem(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "jem.cli", *args], repo)


def test_failed_and_killed_pretrain_keep_the_last_good_metrics_and_curves(tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from e2e_util import copy_repo, git_commit_all

    repo = tmp_path / "repo"
    repo.mkdir()
    copy_repo(repo)
    _set(repo, train__epochs=2, train__batch_size=64, train__warmup_epochs=1, eval__monitor_every=1,
         eval__semi_epochs=1, ray__log_to_driver=False)
    git_commit_all(repo)
    proc = run(["dvc", "repro"], repo, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    good = _snapshot(repo)
    assert "metrics/pretrain.json" in good and any(k.startswith("dvclive/pretrain/plots/") for k in good)
    assert "models/encoder/encoder.safetensors" in good
    assert "note:" not in _jem(repo, "info").stdout  # a clean run: nothing stale

    # 1. a pretrain that fails at once (the reported case: an unreachable $RAY_ADDRESS, 1.5 s)
    _set(repo, train__epochs=3)
    proc = subprocess.run(["dvc", "repro"], cwd=repo, env={**env(), "RAY_ADDRESS": "127.0.0.1:9"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "error: cannot reach the Ray cluster at 127.0.0.1:9" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert _snapshot(repo) == good  # before: metrics/pretrain.json and the curves were deleted
    info = _jem(repo, "info")
    assert info.returncode == 0, info.stderr
    assert "note: the last pretrain run failed" in info.stdout and "cannot reach the Ray cluster" in info.stdout
    assert "last good run" in info.stdout

    # 2. a pretrain killed outright (SIGKILL to dvc and the stage: no handler runs)
    p = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    running = repo / ".jem" / "last-good" / "pretrain" / "running.json"
    try:
        deadline = time.monotonic() + 300
        while not running.is_file():
            assert p.poll() is None and time.monotonic() < deadline, "the pretrain stage never started"
            time.sleep(0.1)
        time.sleep(1.0)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert not (repo / "metrics" / "pretrain.json").exists()  # DVC deleted it; nothing could put it back
    info = _jem(repo, "info")
    assert "was killed before it finished" in info.stdout and "jem restore" in info.stdout, info.stdout
    restore = _jem(repo, "restore", "pretrain")
    assert restore.returncode == 0 and "put back" in restore.stdout, restore.stderr
    assert _snapshot(repo) == good
    assert "note: the last pretrain run failed (" in _jem(repo, "info").stdout  # recorded as failed, not silent
    deadline = time.monotonic() + 15  # and the killed stage's Ray processes (if it got that far) are gone
    while any(not reaper.owner_alive(t) for t in reaper.marked_processes().values()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
