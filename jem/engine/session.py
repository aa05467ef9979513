"""The Ray lifecycle of a stage: attach to a cluster or start a private local instance, and always
shut it down.

:func:`ray_session` attaches to ``ray.address`` / ``$RAY_ADDRESS`` (checked first with a 2-second
probe that it is a Ray endpoint, :func:`jem.engine.address.check_address`, so a wrong address is one
error line, not minutes of retries), else starts a private
local instance with the dashboard off; it always shuts down, also on Ctrl-C and SIGTERM, within
:data:`SHUTDOWN_TIMEOUT_S`, and no process of a private instance outlives the stage, even after a
SIGKILL (:mod:`jem.reaper`).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import Any

from jem import reaper
from jem.config import Config, RayConfig
from jem.engine.address import check_address
from jem.errors import RayUnavailable

# Ray Train V2 workers hand each ray.train.report to a queue of size 1 that the controller empties
# once per health-check interval (default 2 s): with short epochs every epoch then lasts >= 2 s
# (digits: 58 s of a 20 s run). Polling every 0.1 s removes that floor.
REPORT_POLL_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
# environment forwarded to every Ray process when attaching to an existing cluster
FORWARDED_ENV_PREFIXES = ("DVC_", "OMP_", *REPORT_POLL_ENV)


# seconds ray.shutdown() may take before the instance's processes are killed and the stage exits
SHUTDOWN_TIMEOUT_S = 30.0


@contextmanager
def _signals_as_exit() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt and SIGTERM SystemExit(143), so ``finally`` blocks
    (ray.shutdown) run and the process exits with the conventional status; both are recorded
    (:func:`jem.errors.note_signal`), so a stage that was interrupted never reports success even
    if a library swallows the exception. A second Ctrl-C or SIGTERM during the shutdown is
    recorded and ignored: the shutdown is bounded anyway (:func:`_bounded_shutdown`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from jem.errors import interrupted_by, note_signal

    def handler(signum: int, frame: Any) -> None:
        first = interrupted_by() is None
        note_signal(signum)
        if first:
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev)


def _bounded_shutdown(token: str | None) -> None:
    """``ray.shutdown()``, at most :data:`SHUTDOWN_TIMEOUT_S` seconds. A Ctrl-C that reached the whole
    process group also stops the instance's GCS, and the driver's shutdown then waits on it; past
    the limit the instance's processes are killed (those marked with ``token``) and the process
    exits at once: 130 / 143 when interrupted, else 1, with one line."""
    import ray

    from jem.errors import interrupted_by

    def expire() -> None:
        sig = interrupted_by()
        print(f"error: Ray did not shut down within {SHUTDOWN_TIMEOUT_S:.0f} s; killed its processes",
              file=sys.stderr, flush=True)
        if token:
            reaper.reap(token)
        os._exit(128 + sig if sig else 1)

    timer = threading.Timer(SHUTDOWN_TIMEOUT_S, expire)
    timer.daemon = True
    timer.start()
    try:
        ray.shutdown()
    finally:
        timer.cancel()


# addresses of the private local instances this process started (and runs now). Their address is
# published as $RAY_ADDRESS, which must not make the code below believe it runs on a cluster.
_OWN_LOCAL: set[str] = set()


@contextmanager
def _local_address_env() -> Iterator[None]:
    """Pick the GCS port of a new local instance and publish it as ``$RAY_ADDRESS`` to the Ray
    processes it spawns. Ray's own helpers that look the cluster up by themselves (Train V2's
    placement-group cleaner) otherwise fail with "Found multiple active Ray instances" whenever
    another local instance runs on the machine (parallel experiments, CI jobs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    patch = {"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": f"127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in patch}
    os.environ.update(patch)
    _OWN_LOCAL.add(patch["RAY_ADDRESS"])
    try:
        yield
    finally:
        _OWN_LOCAL.discard(patch["RAY_ADDRESS"])
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def token_available() -> bool:
    """Whether a Ray authentication token is at hand for this user: ``$RAY_AUTH_TOKEN``, the file
    ``$RAY_AUTH_TOKEN_PATH``, or Ray's default ``~/.ray/auth_token`` (which ``ray start`` writes)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    return os.path.isfile(path)


def use_token_auth_when_attaching() -> None:
    """``ray start --head`` (Ray 2.5x) turns on token authentication and writes a token to
    ``~/.ray/auth_token``, but a driver that attaches with ``ray.init(address=...)`` and no
    ``RAY_AUTH_MODE`` does not send it: the connection fails with "Failed to connect to Ray cluster"
    (measured: the docs' own `ray start --head` + `ray.address` recipe failed so). A token-mode driver
    also connects to a cluster without authentication, so with a token at hand and no mode chosen
    by the user, attach in token mode. Ray reads the mode when it is first imported, so this acts
    only in a process that has not imported Ray yet (every stage); a process that already has (a
    notebook, a test that started a ``ray.cluster_utils`` cluster) keeps the mode it started with,
    and changing the variable there would only hand a different mode to the processes it spawns."""
    if "RAY_AUTH_MODE" not in os.environ and "ray" not in sys.modules and token_available():
        os.environ["RAY_AUTH_MODE"] = "token"


def cluster_address(rcfg: RayConfig) -> str:
    """The cluster to attach to (``ray.address``, else ``$RAY_ADDRESS``); ``''`` = a private local
    instance, also while one started by :func:`ray_session` in this process runs (it publishes its
    own address as ``$RAY_ADDRESS``)."""
    address = rcfg.address or os.environ.get("RAY_ADDRESS", "")
    return "" if address == "local" or address in _OWN_LOCAL else address


def local_cpus(rcfg: RayConfig) -> float:
    """CPUs a private local instance of ``rcfg`` gets: ``ray.num_cpus``, else what Ray itself detects
    on this machine (container CPU quotas included), without starting Ray."""
    if rcfg.num_cpus:
        return float(rcfg.num_cpus)
    try:
        from ray._private.utils import get_num_cpus  # what ray.init(num_cpus=None) uses

        return float(get_num_cpus(override_docker_cpu_warning=True))
    except (ImportError, TypeError):  # another Ray version: the CPUs this process may use
        return float(len(os.sched_getaffinity(0)))


def resolve_cpus_per_worker(cfg: Config) -> Config:
    """``train.cpus_per_worker: 0`` (auto) made concrete, before Ray starts: on a private local
    instance its CPUs (``ray.num_cpus`` or what Ray detects) split evenly among the workers, less
    one CPU for Ray Data's read and render tasks when a stream feeds them, at least 1 each; on an
    attached cluster 1 (its nodes may differ: set it there). An explicit value stays."""
    if cfg.train.cpus_per_worker > 0:
        return cfg
    cpus = 1.0
    if not cluster_address(cfg.ray):
        spare = 1.0 if cfg.data.pretrain_root else 0.0
        cpus = max(1.0, float(math.floor((local_cpus(cfg.ray) - spare) / cfg.train.workers)))
    return replace(cfg, train=replace(cfg.train, cpus_per_worker=cpus))


def local_gpus() -> int:
    """GPUs a private local instance would see (CUDA devices visible to torch)."""
    import torch

    return int(torch.cuda.device_count())


def resource_shortfall(workers: int, cpus_per_worker: float, gpus_per_worker: float, what: str,
                       cpus: float, gpus: float, where: str, section: str = "train") -> str | None:
    """The one line saying why ``workers`` workers can never fit ``cpus`` CPUs / ``gpus`` GPUs, or None;
    ``section`` names the params section holding ``workers`` and ``cpus_per_worker``."""
    need_cpu, need_gpu = workers * cpus_per_worker, workers * gpus_per_worker
    if cpus + 1e-9 < need_cpu:
        return (f"{what}: {section}.workers={workers} x {section}.cpus_per_worker={cpus_per_worker:g} = "
                f"{need_cpu:g} CPUs but {where} has {cpus:g}; lower {section}.workers or "
                f"{section}.cpus_per_worker, or attach to a cluster (ray.address)")
    if gpus + 1e-9 < need_gpu:
        return (f"{what}: {workers} worker(s) x {gpus_per_worker:g} GPU = {need_gpu:g} GPUs but {where} has "
                f"{gpus:g}; train without GPUs or attach to a cluster with GPUs (ray.address)")
    return None


@contextmanager
def ray_session(rcfg: RayConfig) -> Iterator[str]:
    """Connect to ``ray.address`` / ``$RAY_ADDRESS`` if given, else start a private local instance
    (dashboard off unless ``ray.dashboard``, quiet logs). Yields the address attached to; always
    shuts down, also on Ctrl-C and SIGTERM."""
    address = cluster_address(rcfg)
    if address:
        check_address(address)  # not a TCP probe only: a port that is not Ray fails here, not in retries
        use_token_auth_when_attaching()
        local = None
    else:
        local = _local_address_env()
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if not sys.stdout.isatty():  # a log file or pipe: worker lines without ANSI colour codes around "(pid=...)"
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    for key, value in REPORT_POLL_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # Train V2 workers log every report at INFO through a logger its log level does not reach
    os.environ.setdefault("RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING", "0")
    if local is not None:  # spot-instance preemption does not happen on this machine
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    import ray

    # Ray processes of this job log errors only: among others this silences Train V2's placement-group
    # cleaner, which warns every second when the state API is off (no dashboard)
    kwargs: dict[str, Any] = {"log_to_driver": rcfg.log_to_driver, "logging_level": logging.WARNING,
                              "configure_logging": True, "logging_config": ray.LoggingConfig(log_level="ERROR")}
    token = watcher = None
    if local is not None:  # mark every process of the instance, and watch for this process's death
        reaper.reap_orphans()  # what a killed stage (and its killed watcher) left behind
        token = reaper.owner_token()
        watcher = reaper.spawn_watcher(token)
    with local if local is not None else nullcontext(), _marked(token):
        try:
            try:
                if local is None:
                    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
                    ray.init(address=address, runtime_env={"env_vars": env} if env else None, **kwargs)
                else:
                    ray.init(address="local", num_cpus=rcfg.num_cpus or None, include_dashboard=rcfg.dashboard,
                             **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise RayUnavailable(f"cannot reach the Ray cluster at {address or 'a new local instance'}: "
                                     f"{str(exc).strip().splitlines()[0]}") from None
            with _signals_as_exit():  # after ray.init, which installs a SIGTERM handler that aborts
                try:
                    yield ray.get_runtime_context().gcs_address
                finally:
                    _bounded_shutdown(token)
        finally:
            reaper.release_watcher(watcher)  # it ends any straggler of the instance


@contextmanager
def _marked(token: str | None) -> Iterator[None]:
    """``$JEM_RAY_OWNER`` = ``token`` while a private instance starts and runs (its processes
    inherit it; see :mod:`jem.reaper`)."""
    if token is None:
        yield
        return
    saved = os.environ.get(reaper.MARKER)
    os.environ[reaper.MARKER] = token
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(reaper.MARKER, None)
        else:
            os.environ[reaper.MARKER] = saved


def check_local_fit(rcfg: RayConfig, workers: int, cpus_per_worker: float, gpus_per_worker: float, what: str,
                    section: str = "train") -> None:
    """Before Ray starts: when ``rcfg`` gives no cluster (a private local instance will run), one
    line if ``workers`` x ``cpus_per_worker`` CPUs (or GPUs) exceed what that instance will have.
    Ray would otherwise retry the worker group forever. Nothing is checked for a cluster."""
    if cluster_address(rcfg):
        return
    where = f"the local Ray instance (ray.num_cpus={rcfg.num_cpus})" if rcfg.num_cpus else "this machine"
    line = resource_shortfall(workers, cpus_per_worker, gpus_per_worker, what, local_cpus(rcfg),
                              local_gpus() if gpus_per_worker > 0 else 0.0, where, section)
    if line:
        raise RayUnavailable(line)


def check_resources(workers: int, cpus_per_worker: float, gpus_per_worker: float, what: str,
                    section: str = "train") -> None:
    """One clear line when a private local instance can never fit ``workers`` workers (instead of
    waiting forever). Not used on clusters, where an autoscaler may still add nodes."""
    import ray

    res = ray.cluster_resources()
    line = resource_shortfall(workers, cpus_per_worker, gpus_per_worker, what, res.get("CPU", 0.0),
                              res.get("GPU", 0.0), "the local Ray instance", section)
    if line:
        raise RayUnavailable(line)
