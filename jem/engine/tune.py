"""Ray Tune sweeps over params.yaml: a YAML search space, one Ray Train run per trial, ASHA on the
per-epoch kNN monitor, a leaderboard, and the best configuration as ``-S`` arguments.

A sweep is declared by a ``sweep`` section (see ``pipelines/sweep/params.yaml``)::

    sweep:
      num_samples: 2             # samples per grid point
      trial: {workers: 1, cpus_per_worker: 1.0, gpus_per_worker: 0.0}   # fractions allowed
      asha: {grace_period: 3, reduction_factor: 2}
      overrides: {train: {epochs: 12}}     # merged into params.yaml for every trial (the budget)
      space:                               # dotted params.yaml keys -> one sampler each
        method: {grid: [vicreg, simclr]}
        train.lr: {loguniform: [0.1, 1.0]}
        methods.simclr.temperature: {choice: [0.1, 0.2, 0.5]}

Samplers: ``grid`` (every value, times ``num_samples``), ``choice``, ``uniform``, ``loguniform``
and ``randint`` (``[low, high)``). A key under ``methods.<name>.`` only affects trials of that
method; the leaderboard and the best params leave it out for the others.

Each trial is a Tune function that launches the same TorchTrainer as the pretrain stage
(:func:`jem.engine.run.make_trainer`) with ``TuneReportCallback``, so every epoch's row, with
``val_knn_top1`` from the online kNN monitor, reaches the ASHA scheduler. The trial function itself
asks for no CPU (only 64 MiB of the ``memory`` resource): a trial costs exactly its Train workers,
so on 2 CPUs two 1-CPU trials run side by side.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jem._schema import knob
from jem.config import ConfigError, _build, parse_config

SAMPLERS = ("grid", "choice", "uniform", "loguniform", "randint")
METRICS = {"val_knn_top1": "max", "loss": "min"}
TRIAL_DRIVER_RESOURCES: dict[str, float] = {"cpu": 0, "memory": 64 * 1024**2}


# ------------------------------------------------------------------------------------------ schema
@dataclass(frozen=True)
class TrialResources:
    workers: int = knob(1, lo=1, hi=4096)  # Ray Train workers per trial (DDP when > 1)
    cpus_per_worker: float = knob(1.0, gt=0.0, hi=256.0)  # fractions allowed (0.5: two per core)
    gpus_per_worker: float = knob(0.0, lo=0.0, hi=8.0)  # fractions share a GPU between trials
    max_failures: int = knob(0, lo=-1)  # Ray Train restarts of a trial's worker group


@dataclass(frozen=True)
class ASHAConfig:
    grace_period: int = knob(3, lo=1)  # epochs every trial gets before it can be stopped
    reduction_factor: int = knob(2, lo=2, hi=16)  # keep the best 1/rf at every rung


@dataclass(frozen=True)
class SweepConfig:
    metric: str = knob("val_knn_top1", choices=tuple(METRICS))  # val_knn_top1: maximised; loss: minimised
    num_samples: int = knob(1, lo=1, hi=10000)
    max_concurrent_trials: int = knob(0, lo=0)  # 0 = as many as the cluster fits
    seed: int = knob(0, lo=0)  # seeds the random samplers
    trial: TrialResources = field(default_factory=TrialResources)
    asha: ASHAConfig = field(default_factory=ASHAConfig)
    overrides: dict = field(default_factory=dict)
    space: dict = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return METRICS[self.metric]


@dataclass(frozen=True)
class Dim:
    key: str  # dotted params.yaml key
    kind: str  # one of SAMPLERS
    values: list


# ---------------------------------------------------------------------------------- dotted params
def get_dotted(params: dict, key: str) -> Any:
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def set_dotted(params: dict, assignments: dict[str, Any]) -> dict:
    """A deep copy of ``params`` with each dotted ``key: value`` set (keys must already exist)."""
    out = copy.deepcopy(params)
    for key, value in assignments.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node[part]
        node[leaf] = value
    return out


def deep_merge(base: dict, overrides: dict, prefix: str = "") -> dict:
    """``base`` with ``overrides`` merged in; every overridden key must exist in ``base``."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        full = f"{prefix}{key}"
        if key not in out:
            raise ConfigError(f"sweep.overrides: unknown key {full}")
        if isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = deep_merge(out[key], value, f"{full}.")
        else:
            out[key] = value
    return out


def flatten(params: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def relevant(key: str, method: str) -> bool:
    """Whether a searched key affects a trial of ``method`` (method-specific keys only their own)."""
    return not key.startswith("methods.") or key.startswith(f"methods.{method}.")


# ------------------------------------------------------------------------------------ validation
def parse_sweep(raw: Any, base: dict) -> tuple[SweepConfig, dict, list[Dim]]:
    """Validate the ``sweep`` mapping against the main ``base`` params (before any compute).
    Returns the config, the per-trial base params (``base`` + overrides) and the search space."""
    if not isinstance(raw, dict):
        raise ConfigError("sweep must be a mapping (see pipelines/sweep/params.yaml)")
    scfg = _build(SweepConfig, {k: v for k, v in raw.items() if k not in ("overrides", "space")}, "sweep.")
    overrides, space = raw.get("overrides") or {}, raw.get("space") or {}
    if not isinstance(overrides, dict) or not isinstance(space, dict):
        raise ConfigError("sweep.overrides and sweep.space must be mappings")
    trial_base = deep_merge(base, overrides, "")
    t = scfg.trial
    trial_base = set_dotted(trial_base, {"train.workers": t.workers, "train.cpus_per_worker": t.cpus_per_worker,
                                         "train.use_gpu": t.gpus_per_worker > 0, "train.max_failures": t.max_failures})
    parse_config(trial_base)
    if not space:
        raise ConfigError("sweep.space is empty; declare at least one key to search")
    dims = [_parse_dim(key, spec, trial_base) for key, spec in space.items()]
    scfg = SweepConfig(**{**scfg.__dict__, "overrides": overrides, "space": space})
    if scfg.asha.grace_period > max_epochs(trial_base, dims):
        raise ConfigError(f"sweep.asha.grace_period = {scfg.asha.grace_period} exceeds the trials' "
                          f"train.epochs = {max_epochs(trial_base, dims)}")
    return scfg, trial_base, dims


def _parse_dim(key: str, spec: Any, base: dict) -> Dim:
    where = f"sweep.space.{key}"
    try:
        get_dotted(base, key)
    except KeyError:
        raise ConfigError(f"{where}: {key} is not a key of params.yaml") from None
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
        raise ConfigError(f"{where} = {spec!r} must be one sampler: {{grid|choice: [values]}} or "
                          "{uniform|loguniform|randint: [low, high]}")
    kind, values = next(iter(spec.items()))
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}.{kind} = {values!r} must be a non-empty list")
    if kind in ("uniform", "loguniform", "randint"):
        if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) \
                or values[0] >= values[1]:
            raise ConfigError(f"{where}.{kind} = {values!r} must be [low, high] numbers with low < high")
        if kind == "loguniform" and values[0] <= 0:
            raise ConfigError(f"{where}.loguniform = {values!r} needs low > 0")
        if kind == "randint" and not all(isinstance(v, int) for v in values):
            raise ConfigError(f"{where}.randint = {values!r} needs integers")
        candidates = [values[0], values[1] - 1] if kind == "randint" else [float(v) for v in values]
    else:
        candidates = values
    for value in candidates:  # every value the trials can see must pass the params schema
        try:
            parse_config(set_dotted(base, {key: value}))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return Dim(key, kind, list(values))


def max_epochs(trial_base: dict, dims: list[Dim]) -> int:
    epochs = [int(trial_base["train"]["epochs"])]
    for d in dims:
        if d.key == "train.epochs":
            epochs += [int(v) for v in d.values] if d.kind in ("grid", "choice") else [int(d.values[1])]
    return max(epochs)


def to_tune_space(dims: list[Dim]) -> dict[str, Any]:
    from ray import tune

    make = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v), "randint": lambda v: tune.randint(*v)}
    return {d.key: make[d.kind](d.values) for d in dims}


def sweep_name(scfg: SweepConfig, trial_base: dict, data_fingerprint: str) -> str:
    blob = json.dumps({"sweep": scfg.__dict__ | {"trial": scfg.trial.__dict__, "asha": scfg.asha.__dict__},
                       "base": trial_base, "data": data_fingerprint}, sort_keys=True, default=str)
    return f"sweep-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


# ---------------------------------------------------------------------------------------- trials
def _trial(config: dict[str, Any], *, base: dict, prepared: str, views: str, storage: str, experiment: str,
           gpus_per_worker: float) -> None:
    """One Tune trial: the pretrain TorchTrainer on ``base`` + ``config``, epochs reported to Tune."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from jem.engine.run import make_trainer

    params = set_dotted(base, config)
    cfg = parse_config(params)
    trainer = make_trainer(cfg, params, Path(prepared), Path(views),
                           name=f"{experiment}-{ray.tune.get_context().get_trial_id()}",
                           storage=f"{storage}/{experiment}-train", callbacks=[TuneReportCallback()],
                           gpus_per_worker=gpus_per_worker)
    trainer.fit()


def _recorder(n_trials: int, metric: str, base_method: str, echo: bool) -> Any:
    import ray.tune

    from jem.engine.run import remove_orphaned_placement_groups

    class Recorder(ray.tune.Callback):
        """Per-epoch rows, final status and error line of every trial (kept in the driver); frees
        the placement groups of the Train runs of stopped trials every 2 s."""

        def __init__(self) -> None:
            self.last_cleanup = 0.0
            self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
            self.config: dict[str, dict] = {}
            self.status: dict[str, str] = {}
            self.error: dict[str, str] = {}
            self.t0: dict[str, float] = {}
            self.seconds: dict[str, float] = {}

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            if time.monotonic() - self.last_cleanup > 2.0:
                self.last_cleanup = time.monotonic()
                remove_orphaned_placement_groups()

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.t0[trial.trial_id] = time.perf_counter()
            self.config[trial.trial_id] = dict(trial.config)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self.rows[trial.trial_id].append({k: result.get(k) for k in ("epoch", "loss", "val_knn_top1", "epoch_s")})

        def _end(self, trial: Any, status: str) -> None:
            self.status[trial.trial_id] = status
            self.seconds[trial.trial_id] = time.perf_counter() - self.t0.get(trial.trial_id, time.perf_counter())
            if echo:
                rows = self.rows[trial.trial_id]
                last = rows[-1].get(metric) if rows else None
                config = self.config[trial.trial_id]
                method = config.get("method", base_method)
                shown = ", ".join(f"{k}={_fmt(v)}" for k, v in config.items() if relevant(k, method))
                print(f"[{len(self.status)}/{n_trials}] {trial.trial_id} {shown}: {status} after {len(rows)} "
                      f"epoch(s), {metric} {_fmt(last)}", file=sys.stderr, flush=True)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._end(trial, "done")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            from jem.engine.run import _worker_error_line

            self.error[trial.trial_id] = _worker_error_line(RuntimeError(getattr(trial, "error_msg", None) or
                                                                         "trial failed"))
            self._end(trial, "error")

    return Recorder()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def count_trials(scfg: SweepConfig, dims: list[Dim]) -> int:
    return scfg.num_samples * math.prod(len(d.values) for d in dims if d.kind == "grid")


def run_sweep(scfg: SweepConfig, trial_base: dict, dims: list[Dim], prepared: Path, views: Path, storage: str,
              local: bool, echo: bool = True) -> list[dict[str, Any]]:
    """Run the sweep in the current Ray session; returns one leaderboard row per trial, best first."""
    import ray
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from jem.engine.run import check_resources, data_fingerprint, remove_run

    t = scfg.trial
    if local:
        check_resources(t.workers, t.cpus_per_worker, t.gpus_per_worker, "one sweep trial")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic reporter is silent at verbose=0
    concurrent = scfg.max_concurrent_trials or _fits(t)
    experiment = sweep_name(scfg, trial_base, data_fingerprint(prepared, views))
    for stale in (experiment, f"{experiment}-train"):  # a killed sweep starts over
        remove_run(storage, stale)
    n_trials = count_trials(scfg, dims)
    recorder = _recorder(n_trials, scfg.metric, trial_base["method"], echo)
    trainable = ray.tune.with_parameters(_trial, base=trial_base, prepared=str(prepared.resolve()),
                                         views=str(views.resolve()), storage=storage, experiment=experiment,
                                         gpus_per_worker=t.gpus_per_worker)
    tuner = ray.tune.Tuner(
        ray.tune.with_resources(trainable, TRIAL_DRIVER_RESOURCES),
        param_space=to_tune_space(dims),
        tune_config=ray.tune.TuneConfig(
            metric=scfg.metric, mode=scfg.mode, num_samples=scfg.num_samples, max_concurrent_trials=concurrent,
            search_alg=BasicVariantGenerator(random_state=scfg.seed),
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=max_epochs(trial_base, dims),
                                    grace_period=scfg.asha.grace_period,
                                    reduction_factor=scfg.asha.reduction_factor)),
        run_config=ray.tune.RunConfig(name=experiment, storage_path=storage, verbose=0, callbacks=[recorder]),
    )
    if echo:
        print(f"sweep {experiment}: {n_trials} trial(s), up to {concurrent} at a time, each {t.workers} worker(s) "
              f"x {t.cpus_per_worker:g} CPU x {t.gpus_per_worker:g} GPU", file=sys.stderr, flush=True)
    tuner.fit()
    from jem.engine.leaderboard import leaderboard

    rows = leaderboard(recorder, trial_base, dims, scfg)
    for stale in (experiment, f"{experiment}-train"):
        remove_run(storage, stale)
    return rows


def _fits(t: TrialResources) -> int:
    import ray

    res = ray.cluster_resources()
    fits = res.get("CPU", 0) / (t.workers * t.cpus_per_worker)
    if t.gpus_per_worker > 0:
        fits = min(fits, res.get("GPU", 0) / (t.workers * t.gpus_per_worker))
    return max(1, int(fits + 1e-9))


def set_args(params: dict[str, Any]) -> list[str]:
    """Nested params -> ``-S key=value`` words for ``dvc exp run`` (no quoting needed)."""
    words = []
    for key, value in flatten(params).items():
        text = json.dumps(value, separators=(",", ":")) if isinstance(value, (list, bool)) else str(value)
        if any(c.isspace() for c in text):
            raise ValueError(f"{key} = {value!r} contains whitespace; pass it to dvc exp run -S by hand")
        words += ["-S", f"{key}={text}"]
    return words


def main(argv: list[str] | None = None) -> None:
    """``python -m jem.engine.tune --set-args best_params.yaml`` prints the ``-S`` arguments that
    apply a sweep's best configuration: ``dvc exp run $(python -m jem.engine.tune --set-args FILE)``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m jem.engine.tune", description=main.__doc__)
    ap.add_argument("--set-args", type=Path, required=True, metavar="BEST_PARAMS_YAML")
    args = ap.parse_args(argv)
    if not args.set_args.is_file():
        raise FileNotFoundError(f"{args.set_args} not found: run `dvc repro pipelines/sweep/dvc.yaml` first")
    print(" ".join(set_args(yaml.safe_load(args.set_args.read_text()) or {})))


if __name__ == "__main__":
    from jem.errors import run_main

    run_main(main)
