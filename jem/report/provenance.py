"""Where and when a report's numbers were made: git commit, date, machine, library versions and the
wall time of every pipeline stage (from the records :func:`jem.errors.run_main` leaves in
``.jem/stage_times/``). Everything here is best effort: what cannot be found says so."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

STAGE_ORDER = ("validate", "prepare", "augment", "pretrain", "baselines", "evaluate", "report")


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_commit(root: Path) -> str:
    """``<sha> (<subject>)``, with a note when tracked files differ from it (a `dvc exp run` leaves
    the experiment's params in the working tree, so it usually does)."""
    sha = _git(root, "rev-parse", "HEAD")
    if not sha:
        return "unknown (not a git checkout)"
    subject = _git(root, "log", "-1", "--format=%s") or ""
    dirty = _git(root, "diff", "--name-only", "HEAD")
    out = f"{sha[:10]} ({subject[:60]}{'...' if len(subject) > 60 else ''})"
    if dirty:
        changed = dirty.splitlines()
        out += f" + uncommitted changes to {', '.join(changed[:4])}{' ...' if len(changed) > 4 else ''}"
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> str:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return f"{pages * size / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        return "RAM unknown"


def _gpus() -> str:
    torch = sys.modules.get("torch")  # only if the report already imported it: no CUDA init for this
    if torch is None or not torch.cuda.is_available():
        return "no GPU visible"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return ", ".join(names)


def _version(dist: str) -> str:
    """The imported module's ``__version__`` (torch's carries the CUDA build, e.g. ``+cu130``), else
    the installed distribution's."""
    module = sys.modules.get(dist)
    if module is not None and isinstance(getattr(module, "__version__", None), str):
        return str(module.__version__)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(root: Path, now: float | None = None) -> list[tuple[str, str]]:
    """(label, value) rows: commit, DVC experiment, date, machine, versions."""
    rows = [("git commit", git_commit(root))]
    if os.environ.get("DVC_EXP_NAME"):
        rows.append(("DVC experiment", os.environ["DVC_EXP_NAME"]))
    rows += [
        ("report date", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now if now is not None else time.time()))),
        ("machine", f"{cpu_model()}, {os.cpu_count()} logical CPUs, {_memory_gib()}; {_gpus()}"),
        ("system", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("versions", f"jem {_version('jem')}, torch {_version('torch')}, Python {platform.python_version()}, "
                     f"numpy {_version('numpy')}, ray {_version('ray')}, dvc {_version('dvc')}"),
    ]
    return rows


def stage_times(folder: Path) -> list[dict[str, Any]]:
    """The stage records in ``folder`` in pipeline order (unknown stages last, by name)."""
    records = []
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            try:
                rec = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(rec, dict) and isinstance(rec.get("wall_s"), (int, float)) and rec.get("started"):
                records.append(rec)
    rank = {name: i for i, name in enumerate(STAGE_ORDER)}
    return sorted(records, key=lambda r: (rank.get(str(r.get("stage")), len(rank)), str(r.get("stage"))))


def fmt_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds + 0.5), 60)  # half up (round() would give 188 for 188.5)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def stage_rows(records: list[dict[str, Any]]) -> tuple[list[list[str]], str]:
    """Table rows (stage, wall, finished, in this run?) and a one-line total.

    The ``validate`` stage always runs (``always_changed``), so its start marks the start of the
    current ``dvc repro`` / ``dvc exp run``: a stage that finished before it was skipped by DVC
    this time (its outputs are cached) and shows when it last ran."""
    run_start = next((r["started"] for r in records if r.get("stage") == "validate"), None)
    rows, total, this_run = [], 0.0, 0.0
    for r in records:
        if r.get("stage") == "report":
            continue  # the report is being written now: its record is the previous run's
        fresh = run_start is None or str(r.get("finished", "")) >= run_start
        total += float(r["wall_s"])
        this_run += float(r["wall_s"]) if fresh else 0.0
        rows.append([str(r["stage"]), fmt_duration(float(r["wall_s"])), str(r.get("finished", "?")),
                     "yes" if fresh else "no (cached; last ran then)"])
    line = (f"Total pipeline time {fmt_duration(total)} (every stage's last execution, the report excluded); "
            f"{fmt_duration(this_run)} of it ran in this run.")
    return rows, line
