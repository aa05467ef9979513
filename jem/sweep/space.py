"""A sweep's declaration: its schema (the ``sweep`` section of ``pipelines/sweep/params.yaml``),
the search space parsed and checked against params.yaml before any compute, and the dotted-key
helpers trials and results share. No Ray here (:mod:`jem.sweep.tune` runs the trials)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from jem._schema import knob
from jem.config import ConfigError, parse_config
from jem.sections import build

SAMPLERS = ("grid", "choice", "uniform", "loguniform", "randint")
METRICS = {"val_knn_top1": "max", "loss": "min"}


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


def relevant(key: str, method: str) -> bool:
    """Whether a searched key affects a trial of ``method`` (method-specific keys only their own)."""
    return not key.startswith("methods.") or key.startswith(f"methods.{method}.")


# ------------------------------------------------------------------------------------ validation
def parse_sweep(raw: Any, base: dict) -> tuple[SweepConfig, dict, list[Dim]]:
    """Validate the ``sweep`` mapping against the main ``base`` params (before any compute).
    Returns the config, the per-trial base params (``base`` + overrides) and the search space."""
    if not isinstance(raw, dict):
        raise ConfigError("sweep must be a mapping (see pipelines/sweep/params.yaml)")
    scfg = build(SweepConfig, {k: v for k, v in raw.items() if k not in ("overrides", "space")}, "sweep.")
    overrides, space = raw.get("overrides") or {}, raw.get("space") or {}
    if not isinstance(overrides, dict) or not isinstance(space, dict):
        raise ConfigError("sweep.overrides and sweep.space must be mappings")
    trial_base = deep_merge(base, overrides, "")
    t = scfg.trial
    trial_base = set_dotted(trial_base, {"train.workers": t.workers, "train.cpus_per_worker": t.cpus_per_worker,
                                         "train.use_gpu": t.gpus_per_worker > 0, "train.max_failures": t.max_failures})
    if parse_config(trial_base).data.pretrain_root or "data.pretrain_root" in space:
        raise ConfigError("data.pretrain_root is set, but sweeps do not stream an uncurated folder yet (their trials "
                          "train on the prepared set); set sweep.overrides.data.pretrain_root: ''")
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


def sweep_name(scfg: SweepConfig, trial_base: dict, data_fingerprint: str) -> str:
    blob = json.dumps({"sweep": scfg.__dict__ | {"trial": scfg.trial.__dict__, "asha": scfg.asha.__dict__},
                       "base": trial_base, "data": data_fingerprint}, sort_keys=True, default=str)
    return f"sweep-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def count_trials(scfg: SweepConfig, dims: list[Dim]) -> int:
    return scfg.num_samples * math.prod(len(d.values) for d in dims if d.kind == "grid")
