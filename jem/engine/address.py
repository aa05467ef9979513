"""Checks of a Ray cluster given by ``ray.address`` / ``$RAY_ADDRESS`` that keep a stage from waiting
forever (rule 7 of docs/reliability.md).

- :func:`check_address`, before ``ray.init``: the port must answer as a gRPC server (a Ray GCS or a
  Ray Client server both are). A port that accepts TCP but is something else (a web server, a plain
  socket) made ``ray.init`` retry "Failed to get cluster ID from GCS server" without end.
- :func:`check_attached_fit`, after ``ray.init(address="auto")``: the instance found on this
  machine must have the requested CPUs / GPUs free, within a bounded wait (``$JEM_RAY_WAIT_S``,
  default 60 s); Ray Train would otherwise wait for them forever.

Imports nothing heavy: Ray is imported only inside :func:`check_attached_fit`.
"""

from __future__ import annotations

import os
import socket
import time

from jem.errors import RayUnavailable

# HTTP/2 connection preface (RFC 9113, section 3.4) followed by an empty SETTINGS frame: a gRPC
# server (Ray's GCS and Ray Client server speak plaintext gRPC unless RAY_USE_TLS) answers with a
# SETTINGS frame of its own at once.
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 0x4, 0, 0, 0, 0, 0])
_GOAWAY = bytes([0, 0, 8, 0x7, 0, 0, 0, 0, 0]) + bytes(8)  # last stream 0, NO_ERROR: a polite close
_SETTINGS = 0x4
WAIT_ENV = "JEM_RAY_WAIT_S"
DEFAULT_WAIT_S = 60.0
_FIX = "fix ray.address or $RAY_ADDRESS"


def _host_port(address: str) -> tuple[str, int]:
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise RayUnavailable(f"ray.address = {address!r} is not host:port (or ray://host:port, auto); {_FIX}")
    return host.strip("[]"), int(port)


def _recv_frame_header(sock: socket.socket) -> bytes:
    data = b""
    while len(data) < 9:
        chunk = sock.recv(9 - len(data))
        if not chunk:
            break
        data += chunk
    return data


def check_address(address: str, timeout_s: float = 2.0) -> None:
    """One :class:`~jem.errors.RayUnavailable` line unless ``address`` (``host:port`` or
    ``ray://host:port``) accepts a TCP connection and answers the HTTP/2 preface with a SETTINGS
    frame within ``timeout_s``, as Ray's GCS and Ray Client server do. ``auto`` and ``local`` are
    left to Ray; with ``RAY_USE_TLS`` on only the TCP connection is checked."""
    if address in ("auto", "local", ""):
        return
    host, port = _host_port(address)
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise RayUnavailable(f"cannot reach the Ray cluster at {address} ({reason}): start it with "
                             f"`ray start --head` or {_FIX}") from None
    with sock:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return
        try:
            sock.sendall(_PREFACE)
            header = _recv_frame_header(sock)
        except TimeoutError:
            header = None
        except OSError as exc:
            header = f"connection error: {(exc.strerror or type(exc).__name__).lower()}".encode()
        if header is not None and len(header) == 9 and header[3] == _SETTINGS and header[5:9] == bytes(4):
            try:
                sock.sendall(_GOAWAY)
            except OSError:
                pass
            return
    if header is None:
        what = f"no reply within {timeout_s:g} s"
    elif not header:
        what = "it closed the connection"
    elif header.startswith(b"HTTP/"):
        what = "it answered as an HTTP/1 web server"
    elif header.isascii() and header.decode().isprintable():
        what = f"it replied {header.decode()!r}..., not HTTP/2"
    else:
        what = "its reply is not HTTP/2"
    raise RayUnavailable(f"{address} accepts connections but is not a Ray cluster ({what}; a Ray GCS or "
                         f"Ray Client server answers at once): {_FIX} (the GCS port is 6379 unless "
                         "`ray start --port` says otherwise, Ray Client's 10001)")


def wait_s() -> float:
    """How long :func:`check_attached_fit` waits for resources to become free: ``$JEM_RAY_WAIT_S``
    seconds, default 60."""
    raw = os.environ.get(WAIT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_WAIT_S
    except ValueError:
        raise RayUnavailable(f"${WAIT_ENV} = {raw!r} is not a number of seconds") from None
    if value < 0:
        raise RayUnavailable(f"${WAIT_ENV} = {raw!r} must be >= 0 seconds")
    return value


def attached_shortfall(workers: int, cpus_per_worker: float, gpus_per_worker: float, what: str,
                       free: dict[str, float], total: dict[str, float], where: str,
                       section: str = "train") -> str | None:
    """Why ``workers`` workers do not fit the ``free`` resources of an attached instance (with
    ``total`` its resources in all, busy or not), or None when they fit."""
    request = f"{section}.workers={workers} x {section}.cpus_per_worker={cpus_per_worker:g}"
    for key, per_worker, ask in (("CPU", cpus_per_worker, request),
                                 ("GPU", gpus_per_worker, f"{workers} worker(s) x {gpus_per_worker:g} GPU")):
        need = workers * per_worker
        have, total_n = free.get(key, 0.0), total.get(key, 0.0)
        if have + 1e-9 >= need:
            continue
        if total_n + 1e-9 < need:
            state = f"has {total_n:g} {key}s in all"
        else:
            state = f"has {have:g} of its {total_n:g} {key}s free (other jobs hold the rest)"
        return (f"{what}: {ask} = {need:g} {key}s but {where} {state}; lower {section}.workers"
                + (f" or {section}.cpus_per_worker" if key == "CPU" else "")
                + ", free the instance, or attach elsewhere (ray.address)")
    return None


def check_attached_fit(address: str, workers: int, cpus_per_worker: float, gpus_per_worker: float, what: str,
                       section: str = "train", wait: float | None = None) -> None:
    """After ``ray.init(address="auto")`` attached to a Ray instance already running on this
    machine: one :class:`~jem.errors.RayUnavailable` line naming what is missing when its free
    resources cannot fit ``workers`` workers within ``wait`` seconds (default :func:`wait_s`),
    polled once a second. Other addresses are clusters, where an autoscaler may still add nodes:
    nothing is checked for them."""
    if address != "auto":
        return
    import ray

    limit = wait_s() if wait is None else wait
    deadline = time.monotonic() + limit
    where = f"the Ray instance found by address 'auto' ({ray.get_runtime_context().gcs_address})"
    while True:
        line = attached_shortfall(workers, cpus_per_worker, gpus_per_worker, what, ray.available_resources(),
                                  ray.cluster_resources(), where, section)
        if line is None:
            return
        if time.monotonic() >= deadline:
            waited = f" after waiting {limit:g} s (${WAIT_ENV})" if limit > 0 else ""
            raise RayUnavailable(line.replace("; lower", f"{waited}; lower", 1))
        time.sleep(1.0)
