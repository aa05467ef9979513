"""Nothing waits forever (rule 7), the cluster address: a port that accepts TCP but is not a Ray
GCS (``ray.init`` retried "Failed to get cluster ID from GCS server" without end) and
``RAY_ADDRESS=auto`` attached to a busy or small instance on this machine (Ray Train waited for
its resources without end) each give one line naming what is wrong."""

from __future__ import annotations

import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from conftest import assert_one_error, run, stage
from test_resource_cases import _fake_data

from jem.engine.address import attached_shortfall, check_address, check_attached_fit, wait_s
from jem.engine.session import ray_session
from jem.errors import RayUnavailable
from jem.sections import RayConfig


@pytest.fixture
def plain_socket():
    """A port that accepts TCP connections and never says a word (the measured case)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def web_server():
    """An HTTP/1 web server (a dashboard port, say)."""
    server = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _check_in_subprocess(address: str, tmp_path):
    code = f"from jem.errors import run_main\nfrom jem.engine.address import check_address\n" \
           f"run_main(lambda: check_address({address!r}))\n"
    return run([sys.executable, "-c", code], tmp_path, timeout=60)


def test_a_port_that_says_nothing_is_one_line_within_seconds(tmp_path, plain_socket):
    t0 = time.perf_counter()
    proc = _check_in_subprocess(plain_socket, tmp_path)
    assert_one_error(proc, f"{plain_socket} accepts connections but is not a Ray cluster", "no reply within 2 s",
                     "fix ray.address or $RAY_ADDRESS")
    assert time.perf_counter() - t0 < 30  # ray.init used to retry for ever


def test_a_web_server_is_one_line(tmp_path, web_server):
    proc = _check_in_subprocess(f"ray://{web_server}", tmp_path)
    assert_one_error(proc, f"ray://{web_server} accepts connections but is not a Ray cluster",
                     "it replied '<!DOCTYPE'..., not HTTP/2")  # http.server answers HTTP/0.9-style


def test_a_closed_port_is_one_line(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
    proc = _check_in_subprocess(f"127.0.0.1:{port}", tmp_path)
    assert_one_error(proc, f"cannot reach the Ray cluster at 127.0.0.1:{port} (connection refused)")


def test_a_malformed_address_is_one_line(tmp_path):
    proc = _check_in_subprocess("headnode", tmp_path)
    assert_one_error(proc, "ray.address = 'headnode' is not host:port")


def test_pretrain_stage_with_a_non_ray_address_fails_fast(tmp_path, plain_socket, params_file):
    """The reported case end to end: the pretrain stage given ``ray.address`` of a plain socket."""
    _fake_data(tmp_path)
    params_file(ray__address=plain_socket)
    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "encoder.json").write_text("previous")
    t0 = time.perf_counter()
    proc = stage("pretrain", "--params", "params.yaml", "--prepared", "prepared", "--views", "views", "--out", "enc",
                 "--metrics", "m.json", "--live", "live", cwd=tmp_path, timeout=120)
    assert_one_error(proc, f"{plain_socket} accepts connections but is not a Ray cluster")
    assert time.perf_counter() - t0 < 60
    assert (tmp_path / "enc" / "encoder.json").read_text() == "previous" and not (tmp_path / "m.json").exists()


def test_shortfall_lines_say_what_is_missing():
    """Independent arithmetic: 3 workers x 1 CPU against 2 CPUs in all, 1 of 4 free, 4 free."""
    where = "the Ray instance"
    assert attached_shortfall(3, 1.0, 0.0, "pretrain", {"CPU": 2.0}, {"CPU": 2.0}, where) == (
        "pretrain: train.workers=3 x train.cpus_per_worker=1 = 3 CPUs but the Ray instance has 2 CPUs in all; "
        "lower train.workers or train.cpus_per_worker, free the instance, or attach elsewhere (ray.address)")
    busy = attached_shortfall(3, 1.0, 0.0, "pretrain", {"CPU": 1.0}, {"CPU": 4.0}, where)
    assert busy is not None and "has 1 of its 4 CPUs free (other jobs hold the rest)" in busy
    assert attached_shortfall(3, 1.0, 0.0, "pretrain", {"CPU": 4.0}, {"CPU": 4.0}, where) is None
    gpu = attached_shortfall(2, 1.0, 1.0, "pretrain", {"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}, where)
    assert gpu is not None and "2 worker(s) x 1 GPU = 2 GPUs but the Ray instance has 1 GPUs in all" in gpu


def test_wait_env(monkeypatch):
    monkeypatch.delenv("JEM_RAY_WAIT_S", raising=False)
    assert wait_s() == 60.0
    monkeypatch.setenv("JEM_RAY_WAIT_S", "0.5")
    assert wait_s() == 0.5
    monkeypatch.setenv("JEM_RAY_WAIT_S", "soon")
    with pytest.raises(RayUnavailable, match=r"\$JEM_RAY_WAIT_S = 'soon' is not a number"):
        wait_s()


def test_against_a_real_ray_instance():
    """A real GCS passes the probe; an instance with 1 CPU, attached as ``auto`` would be, can never
    fit 2 workers, and while an actor holds its CPU it cannot fit 1: each one line, after the
    bounded wait; once the CPU is free the check passes."""
    import ray

    with ray_session(RayConfig(num_cpus=1, log_to_driver=False)) as gcs:
        check_address(gcs)  # the GCS answers the HTTP/2 preface
        assert check_attached_fit("10.0.0.1:6379", 9, 1.0, 0.0, "pretrain", wait=0) is None  # a cluster: unchecked
        with pytest.raises(RayUnavailable, match=r"= 2 CPUs but the Ray instance found by address 'auto' \(.+\) "
                                                 r"has 1 CPUs in all; lower"):
            check_attached_fit("auto", 2, 1.0, 0.0, "pretrain", wait=0)

        @ray.remote(num_cpus=1)
        class Holder:
            def ping(self) -> int:
                return 1

        holder = Holder.remote()  # type: ignore[attr-defined]
        assert ray.get(holder.ping.remote()) == 1
        t0 = time.perf_counter()
        with pytest.raises(RayUnavailable, match=r"has 0 of its 1 CPUs free \(other jobs hold the rest\) after "
                                                 r"waiting 2 s \(\$JEM_RAY_WAIT_S\)"):
            check_attached_fit("auto", 1, 1.0, 0.0, "pretrain", wait=2)
        assert 2 <= time.perf_counter() - t0 < 10
        ray.kill(holder)
        deadline = time.monotonic() + 30
        while ray.available_resources().get("CPU", 0.0) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        check_attached_fit("auto", 1, 1.0, 0.0, "pretrain", wait=5)
