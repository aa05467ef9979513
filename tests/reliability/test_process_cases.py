"""Rule 6 (no process outlives its stage) and the exit status of an interrupted stage
(docs/reliability.md). Real processes: a pretrain stage with its own local Ray instance, killed
with SIGKILL; marked dummy processes for the sweep at the next start; a stage script whose main
swallows the Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, env

from jem import reaper
from jem.config import defaults_dict, parse_config
from jem.sweep.space import set_dotted

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="the reaper reads /proc (Linux)")


def _marked_by(pid: int) -> list[int]:
    return sorted(p for p, token in reaper.marked_processes().items() if token.split(":")[0] == str(pid))


def _sleeper(token: str) -> subprocess.Popen:
    return subprocess.Popen(["sleep", "120"], env={**os.environ, reaper.MARKER: token}, start_new_session=True)


def test_owner_token_names_this_process_and_not_a_reused_pid():
    me = reaper.owner_token()
    assert me.startswith(f"{os.getpid()}:") and reaper.owner_alive(me)
    pid, ticks = me.split(":")
    assert not reaper.owner_alive(f"{pid}:{int(ticks) + 1}")  # same pid, another start time
    assert not reaper.owner_alive("999999999:0")


def test_sweep_at_next_start_kills_orphans_only():
    """Processes marked by an owner that is gone are killed; those of a live owner are left."""
    orphan, mine = _sleeper("999999999:0"), _sleeper(reaper.owner_token())
    try:
        deadline = time.monotonic() + 10
        while len({orphan.pid, mine.pid} & set(reaper.marked_processes())) < 2:  # exec'd with the marker
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert reaper.reap_orphans() >= 1
        assert orphan.wait(timeout=10) == -signal.SIGTERM
        assert mine.poll() is None
    finally:
        for p in (orphan, mine):
            p.kill()
            p.wait()


def test_watcher_kills_the_marked_processes_when_its_owner_dies():
    """The watcher acts when the pipe from its owner closes, the way it does when the stage dies."""
    token = "424242:1"  # the watcher only compares tokens
    victim = _sleeper(token)
    watcher = reaper.spawn_watcher(token)
    try:
        time.sleep(0.5)
        assert victim.poll() is None  # nothing happens while the owner holds the pipe
        reaper.release_watcher(watcher)
        assert victim.wait(timeout=10) == -signal.SIGTERM
        assert watcher.returncode == 0
    finally:
        victim.kill()
        victim.wait()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from jem.augment.cache import build_view_cache
    from jem.prepare import prepare

    root = tmp_path_factory.mktemp("process-data")
    cfg = parse_config(defaults_dict())
    (root / "prepared").mkdir()
    prepare(cfg, root / "prepared")
    build_view_cache(np.load(root / "prepared" / "train_x.npy", mmap_mode="r"), cfg.augment, root / "views", cfg.seed)
    return root


def test_sigkilled_stage_leaves_no_ray_process(data, tmp_path):
    """SIGKILL of a training pretrain stage (no handler runs): every process of its Ray instance is
    gone within 15 s (before the reaper, the agents and workers lived 30-70 s longer)."""
    params = set_dotted(defaults_dict(), {"train.epochs": 200, "train.batch_size": 64, "train.workers": 1,
                                          "train.checkpoint_every": 1, "eval.monitor_every": 0,
                                          "ray.log_to_driver": False})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "pretrain.py"), "--params", "params.yaml", "--prepared",
         str(data / "prepared"), "--views", str(data / "views"), "--out", "encoder", "--metrics", "m.json",
         "--full", "f.json", "--live", "live"], cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / ".jem" / "ray_results").glob("pretrain-*/checkpoint_*")):
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint within 5 minutes"
            time.sleep(0.2)
        before = _marked_by(proc.pid)
        assert len(before) >= 3, before  # GCS, raylet, a training worker at least: the check can fail
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 15
        while _marked_by(proc.pid):
            assert time.monotonic() < deadline, f"still running 15 s after SIGKILL: {_marked_by(proc.pid)}"
            time.sleep(0.2)
    finally:
        proc.kill()
        reaper.kill(_marked_by(proc.pid))


def test_interrupted_stage_never_reports_success(tmp_path):
    """A Ctrl-C that a library swallows (main returns normally) still ends the stage with 130."""
    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent("""
        import os, signal, sys
        from jem.engine.session import _signals_as_exit
        from jem.errors import run_main

        def main():
            with _signals_as_exit():
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                except KeyboardInterrupt:
                    pass  # what a library might do
            print("done")

        run_main(main)
    """))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.strip() == "done"  # main returned
    assert proc.returncode == 130 and proc.stderr.strip().splitlines()[-1] == "interrupted", proc.stderr


def test_failed_run_leaves_no_scratch_folder(data, tmp_path):
    """A run that fails in its training worker before its first checkpoint (here: a view cache cut
    short, with no sums recorded for the driver to check) leaves no folder in .jem/ray_results; there is nothing to
    resume (before: every failed run's folder stayed)."""
    import shutil

    views = tmp_path / "views"
    shutil.copytree(data / "views", views)
    with open(views / "global.npy", "r+b") as f:
        f.truncate((views / "global.npy").stat().st_size // 2)
    meta = json.loads((views / "meta.json").read_text())
    del meta["sha256"]  # a cache built before sums were recorded: the driver cannot see the damage, a worker can
    (views / "meta.json").write_text(json.dumps(meta))
    params = set_dotted(defaults_dict(), {"train.workers": 1, "train.max_failures": 0, "ray.log_to_driver": False})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "pretrain.py"), "--params", "params.yaml", "--prepared",
         str(data / "prepared"), "--views", str(views), "--out", "encoder", "--metrics", "m.json", "--full", "f.json",
         "--live", "live"], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "view cache" in proc.stderr.strip().splitlines()[-1], proc.stderr[-2000:]
    assert (tmp_path / ".jem" / "ray_results").is_dir()  # the run did start
    assert not list((tmp_path / ".jem" / "ray_results").glob("pretrain-*")), proc.stderr[-2000:]


def test_error_line_does_not_land_on_a_progress_bar(tmp_path):
    """On a terminal, an error after a half-drawn progress bar is a line of its own (before: the
    error text was appended to the bar's line)."""
    import pty

    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent("""
        import sys
        from jem.errors import run_main

        def main():
            sys.stderr.write("training:  40%|####      | 4/10 [00:02<00:03]")  # a bar, no newline yet
            sys.stderr.flush()
            raise FileNotFoundError("data/views/meta.json not found")

        run_main(main)
    """))
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin/stdout/stderr are the terminal
        os.execve(sys.executable, [sys.executable, str(script)], env())
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2
    lines = out.decode().replace("\r\n", "\n").split("\n")
    shown = [ln.rsplit("\r", 1)[-1].replace("\x1b[K", "") for ln in lines if ln.strip()]  # what the terminal shows
    assert shown[-1] == "error: data/views/meta.json not found", out
