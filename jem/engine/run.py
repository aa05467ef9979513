"""The pretraining driver: Ray lifecycle, TorchTrainer, and copying results out of Ray storage.

Run identity: the Ray run name is derived from every param that changes the trained weights
(``pretrain-<method>-<hash>``), so re-running a killed stage with the same params resumes its own
checkpoints (Ray Train V2 resumes a run whose ``storage_path/name`` already holds checkpoints) and
never another experiment's. Knobs that only change *where* or *how safely* training runs
(``train.max_failures``, ``train.checkpoint_every``, ``train.cpus_per_worker``, the ``ray``
section) are left out of the hash, so changing them does not orphan a half-finished run. After a
successful run the Ray run folder is removed, so a forced re-run trains from scratch.

Lifecycle (:func:`ray_session`): attach to ``ray.address`` / ``$RAY_ADDRESS`` (checked with a
2-second TCP probe first, so a wrong address is one error line, not minutes of retries), else start
a private local instance with the dashboard off; always shut down, also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from jem.config import Config, RayConfig, to_dict
from jem.errors import RayUnavailable, TrainingFailed

# train.* knobs that do not change the trained weights: not part of the run identity
NOT_IN_RUN_IDENTITY = ("max_failures", "checkpoint_every", "cpus_per_worker")
# environment forwarded to every Ray process when attaching to an existing cluster
# Ray Train V2 workers hand each ray.train.report to a queue of size 1 that the controller empties
# once per health-check interval (default 2 s): with short epochs every epoch then lasts >= 2 s
# (digits: 58 s of a 20 s run). Polling every 0.1 s removes that floor.
REPORT_POLL_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
FORWARDED_ENV_PREFIXES = ("DVC_", "JEM_", *REPORT_POLL_ENV)


def _worker_error_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.split(":")[0].endswith(("Error", "Exception", "Loss"))]
    return (errs[-1] if errs else lines[-1] if lines else type(exc).__name__)


def data_fingerprint(prepared: Path, views: Path) -> str:
    """What identifies the training data: the view cache's and the prepared set's metadata."""
    return (views / "meta.json").read_text() + (prepared / "stats.json").read_text()


def run_name(cfg: Config, data_fingerprint: str, prefix: str = "pretrain") -> str:
    train = {k: v for k, v in to_dict(cfg.train).items() if k not in NOT_IN_RUN_IDENTITY}
    keys = {"method": cfg.method, "seed": cfg.seed, "model": to_dict(cfg.model), "train": train,
            "params": to_dict(cfg.method_params), "data": data_fingerprint}
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:12]
    return f"{prefix}-{cfg.method}-{digest}"


def resolve_storage(setting: str, root: Path) -> str:
    """``ray.storage`` -> what Ray gets as ``storage_path``: ``''`` -> ``<root>/.jem/ray_results``;
    a relative path is relative to the repo ``root``; URIs (``s3://``, ``gs://`` ...) pass through."""
    if "://" in setting:
        return setting
    path = Path(setting) if setting else Path(".jem") / "ray_results"
    return str((path if path.is_absolute() else Path(root) / path).resolve())


def remove_run(storage: str, name: str) -> None:
    """Delete ``storage/name`` (a local folder or a folder under a pyarrow-supported URI)."""
    if "://" not in storage:
        shutil.rmtree(Path(storage) / name, ignore_errors=True)
        return
    import pyarrow.fs

    fs, base = pyarrow.fs.FileSystem.from_uri(storage)
    try:
        fs.delete_dir(f"{base.rstrip('/')}/{name}")
    except (FileNotFoundError, OSError):
        pass


def _check_reachable(address: str, timeout_s: float = 2.0) -> None:
    """A TCP probe of ``host:port`` (also ``ray://host:port``); ``auto`` is left to Ray."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise RayUnavailable(f"ray.address = {address!r} is not host:port (or ray://host:port, auto); "
                             "fix ray.address or $RAY_ADDRESS")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RayUnavailable(f"cannot reach the Ray cluster at {address} ({reason.lower()}): start it with "
                             "`ray start --head` or fix ray.address / $RAY_ADDRESS") from None


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit(143) so ``finally`` blocks (ray.shutdown) run and the
    process exits with the conventional status."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cluster_address(rcfg: RayConfig) -> str:
    """The cluster to attach to (``ray.address``, else ``$RAY_ADDRESS``); ``''`` = a private local instance."""
    address = rcfg.address or os.environ.get("RAY_ADDRESS", "")
    return "" if address == "local" else address


@contextmanager
def ray_session(rcfg: RayConfig) -> Iterator[str]:
    """Connect to ``ray.address`` / ``$RAY_ADDRESS`` if given, else start a private local instance
    (dashboard off unless ``ray.dashboard``, quiet logs). Yields the address attached to; always
    shuts down, also on Ctrl-C and SIGTERM."""
    address = cluster_address(rcfg)
    if address:
        _check_reachable(address)
        local = None
    else:
        local = _local_address_env()
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
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
    with local if local is not None else nullcontext():
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
        try:
            with _sigterm_as_exit():  # after ray.init, which installs a SIGTERM handler that aborts
                yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()


def remove_orphaned_placement_groups() -> int:
    """Remove this job's placement groups whose creating actor has died; returns how many.

    When Tune stops a trial (ASHA) it kills the trial actor, and with it the Ray Train controller
    that created the workers' placement group. Ray frees a placement group only when its creating
    actor *and* job are both gone, so the group would keep its CPUs until the sweep ends; Train
    V2's own cleaner needs the state API, which a local instance without dashboard does not run.
    Without this, a 2-CPU sweep deadlocks after its first two stopped trials."""
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    table = gcs_pb2.PlacementGroupTableData  # type: ignore[attr-defined]  # generated protobuf
    live = (table.PENDING, table.CREATED)
    job = ray.get_runtime_context().get_job_id()
    removed = 0
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        pg = table.FromString(raw)
        if (pg.state in live and pg.creator_actor_dead and not pg.is_detached
                and ray.JobID(pg.creator_job_id).hex() == job and not ray.ActorID(pg.creator_actor_id).is_nil()):
            try:
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(pg.placement_group_id)))
                removed += 1
            except Exception:  # already removed by Ray Train's own cleaner
                pass
    return removed


def check_resources(workers: int, cpus_per_worker: float, gpus_per_worker: float, what: str) -> None:
    """One clear line when a private local instance can never fit ``workers`` workers (instead of
    waiting forever). Not used on clusters, where an autoscaler may still add nodes."""
    import ray

    res = ray.cluster_resources()
    need_cpu, need_gpu = workers * cpus_per_worker, workers * gpus_per_worker
    if res.get("CPU", 0) + 1e-9 < need_cpu:
        raise RayUnavailable(f"{what}: {workers} worker(s) x {cpus_per_worker:g} CPU = {need_cpu:g} CPUs but the "
                             f"Ray cluster has {res.get('CPU', 0):g}; lower the workers or CPUs per worker")
    if res.get("GPU", 0) + 1e-9 < need_gpu:
        raise RayUnavailable(f"{what}: {workers} worker(s) x {gpus_per_worker:g} GPU = {need_gpu:g} GPUs but the "
                             f"Ray cluster has {res.get('GPU', 0):g}")


def fit(trainer: Any) -> Any:
    """``trainer.fit()`` in a helper thread, so that Ctrl-C raises KeyboardInterrupt here.

    Called from the main thread, Ray Train installs its own SIGINT handler, which aborts the run
    and then exits the process with status 1 and no message. Here Ctrl-C unwinds to
    :func:`ray_session`, whose ``ray.shutdown()`` stops the controller and workers, and the stage
    exits with "interrupted" (130)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as exc:  # handed to the main thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="ray-train-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
    if "error" in box:
        raise box["error"]
    return box["result"]


def make_trainer(cfg: Config, raw_params: dict[str, Any], prepared: Path, views: Path, *, name: str,
                 storage: str, live_dir: Path | None = None, progress: bool = False,
                 callbacks: Sequence[Any] = (), gpus_per_worker: float | None = None) -> Any:
    """The TorchTrainer running :func:`jem.engine.loop.train_worker` for ``cfg`` (used by the
    pretrain stage and by every sweep trial)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from jem.engine.loop import train_worker

    gpus = (1.0 if cfg.train.use_gpu else 0.0) if gpus_per_worker is None else gpus_per_worker
    resources = {"CPU": cfg.train.cpus_per_worker} | ({"GPU": gpus} if gpus > 0 else {})
    return TorchTrainer(
        train_worker,  # type: ignore[arg-type]  # Ray's stub: no return value
        train_loop_config={"params": raw_params, "prepared": str(Path(prepared).resolve()),
                           "views": str(Path(views).resolve()),
                           "live": str(Path(live_dir).resolve()) if live_dir else None, "progress": progress},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.train.workers, use_gpu=gpus > 0,
                                               resources_per_worker=resources,
                                               placement_strategy=cfg.ray.placement_strategy),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage, callbacks=list(callbacks),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level="ERROR")),  # type: ignore[call-arg]  # V2 RunConfig
    )


def pretrain(cfg: Config, raw_params: dict[str, Any], prepared: Path, views: Path, out_dir: Path,
             live_dir: Path | None, storage: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train with Ray Train and copy the exported encoder to ``out_dir``; returns the run summary.

    ``storage`` is an absolute folder or a URI (see :func:`resolve_storage`)."""
    storage = str(storage)
    name = run_name(cfg, data_fingerprint(prepared, views))
    if "://" not in storage:
        Path(storage).mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    with ray_session(cfg.ray):
        if not cluster_address(cfg.ray):
            check_resources(cfg.train.workers, cfg.train.cpus_per_worker, 1.0 if cfg.train.use_gpu else 0.0,
                            "pretrain")
        trainer = make_trainer(cfg, raw_params, prepared, views, name=name, storage=storage, live_dir=live_dir,
                               progress=progress)
        try:
            result = fit(trainer)
        except Exception as exc:  # worker errors arrive wrapped, with their traceback as text
            raise TrainingFailed(f"pretraining failed: {_worker_error_line(exc)} (Ray run {name}; full "
                                 f"traceback above)") from None
        if result.checkpoint is None or result.return_value is None:
            raise RuntimeError(f"pretraining run {name} finished without a final checkpoint")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with result.checkpoint.as_directory() as d:
            for fname in ("encoder.safetensors", "encoder.json", "projector.safetensors"):
                if (Path(d) / fname).exists():
                    shutil.copy2(Path(d) / fname, tmp / fname)
        summary = dict(result.return_value)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    remove_run(storage, name)
    summary.update(run_name=name, lr_scaling=cfg.train.lr_scaling, base_lr=cfg.train.lr,
                   optimizer=cfg.train.optimizer, weight_decay=cfg.train.weight_decay,
                   batch_size_per_worker=cfg.train.batch_size)  # cfg.train: the method's own recipe applied
    return summary
