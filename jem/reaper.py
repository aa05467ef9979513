"""No Ray process outlives the stage that started it, even when the stage dies by SIGKILL.

A private local Ray instance (:func:`jem.engine.session.ray_session`) is started with
``JEM_RAY_OWNER=<pid>:<start time>`` of the stage in its environment, which every process of the
instance inherits (GCS, raylet, their agents, the workers). Ray's own kernel fate-sharing ends
only the direct children of the stage when it dies; the agents and workers notice a dead raylet
by polling and lived 30-70 s after a SIGKILL (measured). Two things end them:

- a **watcher** (``python jem/reaper.py --watch TOKEN``), started beside the instance in
  its own session, blocks on a pipe from the stage; when the stage ends in any way (the pipe
  closes), it kills every process marked with the stage's token: SIGTERM, then SIGKILL after
  :data:`GRACE_S`;
- a **sweep at the next start**: :func:`reap_orphans` kills processes whose marked owner is no
  longer alive (a watcher that was itself killed).

Only processes carrying the marker are ever touched. Linux only (it reads ``/proc``); elsewhere
both are no-ops.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MARKER = "JEM_RAY_OWNER"
GRACE_S = 2.0
PROC = Path("/proc")


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after "(comm)": state is field 3 -> index 0


def owner_token(pid: int | None = None) -> str:
    """``<pid>:<start ticks>``: names one process, also after its pid is reused."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_ticks(pid)}"


def owner_alive(token: str) -> bool:
    """The process named by ``token`` runs (a zombie, killed but not yet reaped, does not)."""
    pid, _, ticks = token.partition(":")
    return pid.isdigit() and _start_ticks(int(pid)) == ticks and _state(int(pid)) != "Z"


def marked_processes() -> dict[int, str]:
    """pid -> owner token of every process (readable by this user) carrying :data:`MARKER`."""
    found: dict[int, str] = {}
    if not PROC.is_dir():
        return found
    key = f"{MARKER}=".encode()
    me = os.getpid()
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        for item in env.split(b"\0"):
            if item.startswith(key):
                found[int(entry.name)] = item[len(key):].decode(errors="replace")
                break
    return found


def kill(pids: list[int], grace_s: float = GRACE_S) -> None:
    """SIGTERM ``pids``, then SIGKILL whatever is still there after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                live.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 0.0)
        while live and time.monotonic() < deadline:
            time.sleep(0.05)
            live = [p for p in live if _start_ticks(p) is not None and _state(p) != "Z"]
        pids = live
        if not pids:
            return


def _state(pid: int) -> str:
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def reap(token: str) -> int:
    """Kill every process marked with ``token``; returns how many there were."""
    pids = [pid for pid, t in marked_processes().items() if t == token]
    kill(pids)
    return len(pids)


def reap_orphans() -> int:
    """Kill marked processes whose owner is gone (the sweep at the next start); returns how many."""
    orphans = [pid for pid, t in marked_processes().items() if not owner_alive(t)]
    kill(orphans)
    return len(orphans)


def spawn_watcher(token: str) -> subprocess.Popen[bytes] | None:
    """Start the watcher for ``token`` in its own session (a Ctrl-C or a kill of the stage's process
    group does not reach it); it acts when the returned process's stdin closes. None off Linux."""
    if not PROC.is_dir():
        return None
    env = {k: v for k, v in os.environ.items() if k != MARKER}
    # the file itself, not ``-m jem.reaper``: only the standard library is imported
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--watch", token], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def release_watcher(watcher: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """Close the watcher's pipe (it then kills any straggler of the instance) and wait for it."""
    if watcher is None:
        return
    try:
        if watcher.stdin is not None:
            watcher.stdin.close()
        watcher.wait(timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--watch", required=True, metavar="TOKEN", help="owner token (pid:start ticks) to watch")
    args = ap.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is for the stage, not for this
    try:
        while sys.stdin.buffer.read(4096):  # until the stage closes the pipe or dies
            pass
    except OSError:
        pass
    reap(args.watch)


if __name__ == "__main__":
    main()
