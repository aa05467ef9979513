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


def test_attaches_to_a_ray_start_head_with_token_authentication():
    """docs/cluster.md's recipe: `ray start --head`, then stages attach with `ray.address`. Ray 2.5x's
    `ray start` turns on token authentication, and a driver that attaches without RAY_AUTH_MODE did
    not send the token ("Failed to connect to Ray cluster"). A real head, forced to token mode; the
    attaching process is a fresh one, like a stage, with no RAY_AUTH_MODE of its own (Ray reads the
    mode when it is imported, so only a process that has not imported it yet can be tested)."""
    import socket

    from jem import reaper

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    owner = reaper.owner_token()  # every process of the head is marked: reaped below, whatever happens
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    ray_bin = str(Path(sys.executable).with_name("ray"))
    attach = ("import sys\nfrom jem.config import RayConfig\nfrom jem.engine.session import ray_session\n"
              "with ray_session(RayConfig(address=sys.argv[1])):\n"
              "    import ray\n    print(ray.cluster_resources().get('CPU'))\n")
    try:
        subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                        "--disable-usage-stats"], env=base | {"RAY_AUTH_MODE": "token", reaper.MARKER: owner},
                       check=True, capture_output=True, timeout=180)
        host = subprocess.run([sys.executable, "-c", "from ray._private.services import get_node_ip_address as g; "
                               "print(g())"], capture_output=True, text=True, check=True).stdout.strip()
        proc = subprocess.run([sys.executable, "-c", attach, f"{host}:{port}"], env=base, capture_output=True,
                              text=True, timeout=180)
        assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == "1.0", proc.stderr[-2000:]
    finally:
        reaper.reap(owner)
