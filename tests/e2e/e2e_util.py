"""Helpers for the end-to-end tests: run commands with the venv on PATH, copy the repo.

A copy always gets the shipped params.yaml (git's index, else HEAD), never the one a
`dvc exp run -S ...` left in the working copy: see tests/shipped_params.py.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from shipped_params import shipped_params_text

ROOT = Path(__file__).resolve().parents[2]


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _env():
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(DVC_NO_ANALYTICS="true", RAY_DEDUP_LOGS="1", DVC_PAGER="")
    return env


def _sh(args, cwd, check=True, env=None):
    proc = subprocess.run(args, cwd=cwd, env={**_env(), **(env or {})}, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _tracked_files() -> list[str]:
    if (ROOT / ".git").exists():
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
        return [f for f in out if (ROOT / f).is_file() and not f.startswith(("metrics/", "dvclive/", "reports/"))]
    skip = {".venv", "data", "models", "metrics", "reports", "dvclive", ".jem", ".pytest_cache"}
    return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()
            and not (set(p.relative_to(ROOT).parts) & skip) and "__pycache__" not in p.parts]


TOP_SKIP = {".git", ".venv", "data", "models", "metrics", "reports", "dvclive", ".jem", ".pytest_cache",
            ".mypy_cache", ".ruff_cache"}


def use_shipped_params(dst: Path) -> None:
    """Overwrite ``dst``/params.yaml (a copy of the repo) with the shipped params.yaml."""
    (dst / "params.yaml").write_text(shipped_params_text())


def git_commit_all(dst: Path, message: str = "base") -> None:
    """``git init`` ``dst`` and commit everything in it (DVC experiments need a commit)."""
    for cmd in (["git", "init", "-q"], ["git", "config", "user.name", "jem-e2e"],
                ["git", "config", "user.email", "e2e@jem.invalid"], ["git", "add", "-A"],
                ["git", "commit", "-qm", message]):
        _sh(cmd, dst)


def copy_repo(dst: Path) -> None:
    """The project's source files (outputs, caches and run folders are left out), with the shipped
    params.yaml rather than the working one."""
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if (not path.is_file() or rel.parts[0] in TOP_SKIP or rel.parts[0].endswith(".egg-info")
                or "__pycache__" in rel.parts or rel.parts[:2] in ((".dvc", "cache"), (".dvc", "tmp"))
                or (rel.parts[0] == "pipelines" and "results" in rel.parts)):
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dst / rel)
    use_shipped_params(dst)
