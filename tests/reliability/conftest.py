"""Harness of the reliability suite (issue 15, docs/reliability.md): every case is a real run of a
stage script or the ``jem`` CLI as a subprocess on real files, and asserts what a user sees:
a non-zero exit, exactly one ``error:`` line naming the problem, no traceback, and that what was
there before is intact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from shipped_params import shipped_params_text

ROOT = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out.update(DVC_NO_ANALYTICS="true", PYTHONWARNINGS="ignore")
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out['PATH']}"
    return out


def run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def stage(name: str, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return run([sys.executable, str(ROOT / "stages" / f"{name}.py"), *args], cwd, timeout)


def jem_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "jem.cli", *args], cwd)


def assert_one_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, stderr is exactly one ``error: ...`` line containing every needle, no traceback."""
    assert proc.returncode not in (0, None), f"exit 0:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def set_key(params: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = params
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


@pytest.fixture
def params_file(tmp_path):
    """Write the shipped params.yaml with dotted overrides into ``tmp_path``; returns its path."""

    def write(**overrides: Any) -> Path:
        params = yaml.safe_load(shipped_params_text())
        for key, value in overrides.items():
            set_key(params, key.replace("__", "."), value)
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        return path

    return write
