"""The pretraining driver: the TorchTrainer, the run's identity and storage, and copying the
exported encoder out of Ray storage.

Run identity: the Ray run name is derived from every param that changes the trained weights
(``pretrain-<method>-<hash>``), so re-running a killed stage with the same params resumes its own
checkpoints (Ray Train V2 resumes a run whose ``storage_path/name`` already holds checkpoints) and
never another experiment's. Knobs that only change *where* or *how safely* training runs
(``train.max_failures``, ``train.checkpoint_every``, ``train.cpus_per_worker``, the ``ray``
section) are left out of the hash, so changing them does not orphan a half-finished run. After a
successful run the Ray run folder is removed, so a forced re-run trains from scratch; after a failed
or interrupted one it is kept only if it holds a checkpoint to resume from.

The Ray lifecycle around it (attach or start, always shut down) is :mod:`jem.engine.session`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jem.augment.cache import verify_view_cache
from jem.config import Config, to_dict
from jem.engine.address import check_attached_fit
from jem.engine.session import (
    check_local_fit,
    check_resources,
    cluster_address,
    local_cpus,
    ray_session,
    resolve_cpus_per_worker,
)
from jem.errors import DataError, RayUnavailable, TrainingFailed
from jem.io import check_free_space, verify_prepared

# train.* knobs that do not change the trained weights: not part of the run identity
NOT_IN_RUN_IDENTITY = ("max_failures", "checkpoint_every", "cpus_per_worker")
ENCODER_FILES = ("encoder.safetensors", "encoder.json", "projector.safetensors", "audio.safetensors")


def worker_error_line(exc: BaseException) -> str:
    """The line of a worker's error (it arrives wrapped, with the traceback as text) that names the
    exception, else its last line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.split(":")[0].endswith(("Error", "Exception", "Loss"))]
    return (errs[-1] if errs else lines[-1] if lines else type(exc).__name__)


def data_fingerprint(prepared: Path, views: Path, stream: dict[str, Any] | None = None) -> str:
    """What identifies the training data: the view cache's and the prepared set's metadata, and the
    manifest of the ``data.pretrain_root`` folder when it is streamed."""
    extra = json.dumps(stream, sort_keys=True) if stream else ""
    return (views / "meta.json").read_text() + (prepared / "stats.json").read_text() + extra


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


def keep_or_discard(storage: str, name: str) -> str:
    """After a failed or interrupted run: keep its Ray folder if it holds a checkpoint (re-running with
    the same params resumes from it), else delete it (nothing there is worth keeping). Returns what
    happened, for the error line. A URI storage is left as it is."""
    if "://" in storage:
        return ""
    folder = Path(storage) / name
    checkpoints = sorted(folder.glob("checkpoint_*"))
    if checkpoints:
        return f"kept its {len(checkpoints)} checkpoint(s) in {folder}: re-run with the same params to resume; "
    remove_run(storage, name)
    return ""


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


def progress_mode(enabled: bool) -> str:
    """How rank 0 shows progress: a live bar on a terminal, one plain line per epoch when the driver's
    stderr is a log file or a pipe (CI, ``make run > log``: no carriage returns or escape codes),
    nothing when ``enabled`` is false."""
    if not enabled:
        return "off"
    return "bar" if sys.stderr.isatty() else "lines"


def _whole_pass_split() -> Any:
    from jem.engine.stream import WholePassSplit

    return WholePassSplit()


def make_trainer(cfg: Config, raw_params: dict[str, Any], prepared: Path, views: Path, *, name: str,
                 storage: str, live_dir: Path | None = None, progress: bool = False,
                 callbacks: Sequence[Any] = (), gpus_per_worker: float | None = None,
                 stream: tuple[Any, dict[str, Any]] | None = None) -> Any:
    """The TorchTrainer running :func:`jem.engine.loop.train_worker` for ``cfg`` (used by the
    pretrain stage and by every sweep trial). ``stream``: (the Ray Data datasets of
    ``data.pretrain_root`` by name, {"files", "columns", ...}), handed to the workers as their
    ``"train"`` (and, for a method with a feature pass, ``"features"``) shards."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from jem.engine.loop import train_worker

    cfg = resolve_cpus_per_worker(cfg)
    gpus = (1.0 if cfg.train.use_gpu else 0.0) if gpus_per_worker is None else gpus_per_worker
    resources = {"CPU": cfg.train.cpus_per_worker} | ({"GPU": gpus} if gpus > 0 else {})
    return TorchTrainer(
        train_worker,  # type: ignore[arg-type]  # Ray's stub: no return value
        train_loop_config={"params": raw_params, "prepared": str(Path(prepared).resolve()),
                           "views": str(Path(views).resolve()),
                           "live": str(Path(live_dir).resolve()) if live_dir else None,
                           "progress": progress_mode(progress),
                           "cpus_per_worker": cfg.train.cpus_per_worker}  # resolved (0 = auto in the params)
                          | ({"stream": stream[1]} if stream else {}),
        datasets=stream[0] if stream else None,
        dataset_config=_whole_pass_split() if stream else None,
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.train.workers, use_gpu=gpus > 0,
                                               resources_per_worker=resources,
                                               placement_strategy=cfg.ray.placement_strategy),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage, callbacks=list(callbacks),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level="ERROR")),  # type: ignore[call-arg]  # V2 RunConfig
    )


def _copy_encoder(checkpoint: Any, folder: Path) -> None:
    """The exported encoder files of the final Ray checkpoint, copied into a fresh ``folder`` after a
    free-space check; nothing of ``folder`` is left when the copy fails."""
    shutil.rmtree(folder, ignore_errors=True)
    with checkpoint.as_directory() as d:
        files = [Path(d) / f for f in ENCODER_FILES if (Path(d) / f).exists()]
        check_free_space(folder.parent, sum(f.stat().st_size for f in files) + (1 << 20), "the trained encoder")
        try:
            folder.mkdir(parents=True)
            for f in files:
                shutil.copy2(f, folder / f.name)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise


def stream_plan(cfg: Config, prepared: Path, manifest: Path | None) -> tuple[list[str], dict[str, Any]]:
    """(the files of ``data.pretrain_root``, its manifest). With ``manifest`` (what the ``stream`` stage
    wrote), the folder must still be what it records: a changed folder is one error line."""
    from jem.data.stream import stream_files, stream_manifest

    now = stream_manifest(cfg.data.pretrain_root)
    if manifest is not None:
        recorded = json.loads(Path(manifest).read_text())
        if recorded.get("list_sha256") != now["list_sha256"] or recorded.get("root") != now["root"]:
            raise DataError(f"data.pretrain_root {cfg.data.pretrain_root!r} changed since the stream stage recorded "
                            f"{manifest} ({recorded.get('files')} -> {now['files']} files); re-run dvc repro")
    return stream_files(cfg.data.pretrain_root), now


def _check_stream_cpus(cfg: Config) -> None:
    """A private local instance must keep a CPU for the stream's read and render tasks beside the
    training workers, or they would wait for ever."""
    need = cfg.train.workers * cfg.train.cpus_per_worker + 1
    have = local_cpus(cfg.ray)
    if have + 1e-9 < need:
        raise RayUnavailable(f"pretrain: data.pretrain_root streams through Ray Data, which needs 1 CPU beside "
                             f"train.workers={cfg.train.workers} x train.cpus_per_worker={cfg.train.cpus_per_worker:g}; "
                             f"this machine's instance has {have:g}: lower train.cpus_per_worker or train.workers")


def pretrain(cfg: Config, raw_params: dict[str, Any], prepared: Path, views: Path, out_dir: Path,
             live_dir: Path | None, storage: str | Path, progress: bool = True,
             stream_manifest: Path | None = None) -> dict[str, Any]:
    """Train with Ray Train and copy the exported encoder to ``out_dir``; returns the run summary.

    ``storage`` is an absolute folder or a URI (see :func:`resolve_storage`). With
    ``data.pretrain_root`` the workers train on its stream (:mod:`jem.engine.stream`);
    ``stream_manifest`` is the ``stream`` stage's record of the folder, checked against it first."""
    storage = str(storage)
    cfg = resolve_cpus_per_worker(cfg)
    files, manifest = stream_plan(cfg, prepared, stream_manifest) if cfg.data.pretrain_root else ([], None)
    name = run_name(cfg, data_fingerprint(prepared, views, manifest))
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    gpus = 1.0 if cfg.train.use_gpu else 0.0
    local = not cluster_address(cfg.ray)
    verify_prepared(prepared, skip=("test_",))  # the arrays the workers read are those prepare and augment wrote (SHA-256)
    verify_view_cache(views)
    check_local_fit(cfg.ray, cfg.train.workers, cfg.train.cpus_per_worker, gpus, "pretrain")  # before Ray starts
    if files and local:
        _check_stream_cpus(cfg)
    if "://" not in storage:
        Path(storage).mkdir(parents=True, exist_ok=True)
    with ray_session(cfg.ray):
        if local:  # what the started instance really has
            check_resources(cfg.train.workers, cfg.train.cpus_per_worker, gpus, "pretrain")
        else:  # `auto` (an instance already on this machine): its free resources, within a bounded wait
            check_attached_fit(cluster_address(cfg.ray), cfg.train.workers, cfg.train.cpus_per_worker, gpus,
                               "pretrain")
        stream = None
        if files:
            from jem.engine.stream import StreamSpec, build_stream
            from jem.methods import get_method_class

            _, h, _, c = np.load(prepared / "train_x.npy", mmap_mode="r").shape
            spec = StreamSpec.for_run(cfg, int(h), int(c))
            stats = json.loads((prepared / "stats.json").read_text())
            features = get_method_class(cfg.method).feature_pass  # it embeds every image at epoch starts
            stream = (build_stream(files, spec, features), {"files": len(files), "columns": spec.columns(),
                                                            "size": spec.size, "channels": spec.channels,
                                                            "stats": stats, "features": features})
        trainer = make_trainer(cfg, raw_params, prepared, views, name=name, storage=storage, live_dir=live_dir,
                               progress=progress, stream=stream)
        try:
            result = fit(trainer)
        except Exception as exc:  # worker errors arrive wrapped, with their traceback as text
            kept = keep_or_discard(storage, name)
            raise TrainingFailed(f"pretraining failed: {worker_error_line(exc)} (Ray run {name}; {kept}full "
                                 f"traceback above)") from None
        except BaseException:  # Ctrl-C, SIGTERM: the checkpoints stay for the resume
            keep_or_discard(storage, name)
            raise
        if result.checkpoint is None or result.return_value is None:
            raise RuntimeError(f"pretraining run {name} finished without a final checkpoint")
        _copy_encoder(result.checkpoint, tmp)
        summary = dict(result.return_value)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    remove_run(storage, name)
    summary.update(run_name=name, lr_scaling=cfg.train.lr_scaling, base_lr=cfg.train.lr,
                   optimizer=cfg.train.optimizer, weight_decay=cfg.train.weight_decay,
                   batch_size_per_worker=cfg.train.batch_size)  # cfg.train: the method's own recipe applied
    return summary
