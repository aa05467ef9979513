"""The params.yaml the project ships, as opposed to whatever the working copy holds right now.

``dvc exp run -S dataset=imagefolder ...`` rewrites the working params.yaml (and leaves it so
after the run) but never stages it, while a developer who deliberately changes a default stages
the change with ``git add``. So the tests take params.yaml from git's index (``git show
:params.yaml``), fall back to HEAD when the index has none, and read the file on disk only where
``root`` is not a git checkout (a CI tarball, a copy) or git cannot be run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git_show(spec: str, root: Path) -> str | None:
    try:
        proc = subprocess.run(["git", "show", spec], cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _is_checkout_root(root: Path) -> bool:
    """``root`` is the top of its own git work tree (not a folder inside some other repository)."""
    if not (root / ".git").exists():  # a directory, or a file in a worktree / submodule
        return False
    try:
        proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and Path(proc.stdout.strip()).resolve() == root.resolve()


def shipped_params_text(root: Path | None = None) -> str:
    """Text of ``root``/params.yaml as staged in git's index, else as in HEAD, else as on disk.

    ``root`` defaults to this repository. See the module docstring for why the index wins over
    the working file: an experiment's ``-S`` overrides are never staged, a new default is.
    """
    root = Path(root) if root is not None else ROOT
    if _is_checkout_root(root):
        for spec in (":params.yaml", "HEAD:params.yaml"):
            text = _git_show(spec, root)
            if text is not None:
                return text
    return (root / "params.yaml").read_text()
