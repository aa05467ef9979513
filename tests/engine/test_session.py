"""The Ray lifecycle without a cluster: an unreachable or malformed address is one error line,
fast, also from the pretrain stage."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from shipped_params import shipped_params_text

from jem.config import RayConfig
from jem.engine.session import ray_session
from jem.errors import RayUnavailable

ROOT = Path(__file__).resolve().parents[2]


def test_unreachable_address_fails_fast_with_one_line():
    t0 = time.perf_counter()
    with pytest.raises(RayUnavailable) as err:
        with ray_session(RayConfig(address="127.0.0.1:1")):
            pass
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    assert "\n" not in msg and "127.0.0.1:1" in msg and "ray start --head" in msg


def test_malformed_address_is_a_clear_error():
    with pytest.raises(RayUnavailable, match="not host:port"):
        with ray_session(RayConfig(address="no-port-here")):
            pass


def _fake_data(tmp_path):
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / "stats.json").write_text("{}")
    (tmp_path / "prepared" / "val_x.npy").write_bytes(b"")
    (tmp_path / "views").mkdir()
    (tmp_path / "views" / "meta.json").write_text("{}")


@pytest.mark.parametrize("via", ["param", "env"])
def test_pretrain_stage_unreachable_cluster_exits_nonzero_with_one_line(tmp_path, via):
    _fake_data(tmp_path)
    params = yaml.safe_load(shipped_params_text())
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if via == "param":
        params["ray"]["address"] = "127.0.0.1:1"
    else:
        env["RAY_ADDRESS"] = "127.0.0.1:1"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "pretrain.py"), "--params", "params.yaml",
                           "--prepared", "prepared", "--views", "views", "--out", "enc", "--metrics", "m.json",
                           "--live", "live"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: cannot reach the Ray cluster at 127.0.0.1:1")
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "enc").exists() and not (tmp_path / "m.json").exists()
