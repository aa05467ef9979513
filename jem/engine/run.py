"""The pretraining driver: Ray lifecycle, TorchTrainer, and copying results out of Ray storage.

Run identity: the Ray run name is derived from every param that changes the trained weights
(``pretrain-<method>-<hash>``), so re-running a killed stage with the same params resumes its own
checkpoints and never another experiment's. After a successful run the Ray run folder is removed,
so a forced re-run trains from scratch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jem.config import Config, RayConfig, to_dict


class RayUnavailable(RuntimeError):
    pass


class TrainingFailed(RuntimeError):
    """Pretraining raised in a worker; the message is the worker's final error line."""


def _worker_error_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.split(":")[0].endswith(("Error", "Exception", "Loss"))]
    return (errs[-1] if errs else lines[-1] if lines else type(exc).__name__)


def run_name(cfg: Config, data_fingerprint: str) -> str:
    keys = {"method": cfg.method, "seed": cfg.seed, "model": to_dict(cfg.model), "train": to_dict(cfg.train),
            "params": to_dict(cfg.method_params), "data": data_fingerprint}
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:12]
    return f"pretrain-{cfg.method}-{digest}"


@contextmanager
def ray_session(rcfg: RayConfig) -> Iterator[None]:
    """Connect to ``ray.address`` / ``$RAY_ADDRESS`` if given, else start a private local instance
    (dashboard off, quiet logs). Always shuts down, also on Ctrl-C."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    address = rcfg.address or os.environ.get("RAY_ADDRESS", "")
    kwargs: dict[str, Any] = {"log_to_driver": rcfg.log_to_driver, "logging_level": logging.WARNING,
                              "configure_logging": True}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(address="local", num_cpus=rcfg.num_cpus or None, include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address or 'a new local instance'}: "
                             f"{str(exc).splitlines()[0]}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _check_resources(cfg: Config) -> None:
    import ray

    res = ray.cluster_resources()
    need_cpu = cfg.train.workers * cfg.train.cpus_per_worker
    if res.get("CPU", 0) + 1e-9 < need_cpu:
        raise RayUnavailable(f"train.workers x train.cpus_per_worker = {need_cpu:g} CPUs but the Ray cluster has "
                             f"{res.get('CPU', 0):g}; lower train.workers or train.cpus_per_worker")
    if cfg.train.use_gpu and res.get("GPU", 0) < cfg.train.workers:
        raise RayUnavailable(f"train.use_gpu with {cfg.train.workers} worker(s) needs that many GPUs; the Ray "
                             f"cluster has {res.get('GPU', 0):g}")


def pretrain(cfg: Config, raw_params: dict[str, Any], prepared: Path, views: Path, out_dir: Path,
             live_dir: Path | None, storage: Path, progress: bool = True) -> dict[str, Any]:
    """Train with Ray Train and copy the exported encoder to ``out_dir``; returns the run summary."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from jem.engine.loop import train_worker

    fingerprint = (views / "meta.json").read_text() + (prepared / "stats.json").read_text()
    name = run_name(cfg, fingerprint)
    storage.mkdir(parents=True, exist_ok=True)
    resources = {"CPU": cfg.train.cpus_per_worker} | ({"GPU": 1} if cfg.train.use_gpu else {})
    with ray_session(cfg.ray):
        _check_resources(cfg)
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={"params": raw_params, "prepared": str(prepared.resolve()),
                               "views": str(views.resolve()),
                               "live": str(live_dir.resolve()) if live_dir else None, "progress": progress},
            scaling_config=ray.train.ScalingConfig(num_workers=cfg.train.workers, use_gpu=cfg.train.use_gpu,
                                                   resources_per_worker=resources),
            run_config=ray.train.RunConfig(
                name=name, storage_path=str(storage.resolve()),
                failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                logging_config=ray.train.LoggingConfig(log_level="ERROR")),
        )
        try:
            result = trainer.fit()
        except Exception as exc:  # worker errors arrive wrapped, with their traceback as text
            raise TrainingFailed(f"pretraining failed: {_worker_error_line(exc)} (Ray run {name}; full "
                                 f"traceback above)") from None
        if result.checkpoint is None or result.return_value is None:
            raise RuntimeError(f"pretraining run {name} finished without a final checkpoint")
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with result.checkpoint.as_directory() as d:
            for fname in ("encoder.safetensors", "encoder.json", "projector.safetensors"):
                if (Path(d) / fname).exists():
                    shutil.copy2(Path(d) / fname, tmp / fname)
        summary = dict(result.return_value)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    shutil.rmtree(storage / name, ignore_errors=True)
    summary["run_name"] = name
    return summary
