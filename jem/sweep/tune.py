"""Running a sweep on Ray Tune: one Ray Train run per trial, ASHA on the per-epoch kNN monitor.

Each trial is a Tune function that launches the same TorchTrainer as the pretrain stage
(:func:`jem.engine.run.make_trainer`) with ``TuneReportCallback``, so every epoch's row, with
``val_knn_top1`` from the online kNN monitor, reaches the ASHA scheduler. The trial function itself
asks for no CPU (only 64 MiB of the ``memory`` resource): a trial costs exactly its Train workers,
so on 2 CPUs two 1-CPU trials run side by side.
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from jem.config import parse_config
from jem.io import verify_prepared
from jem.sweep.leaderboard import fmt, leaderboard
from jem.sweep.space import Dim, SweepConfig, TrialResources, count_trials, max_epochs, relevant, set_dotted, sweep_name

TRIAL_DRIVER_RESOURCES: dict[str, float] = {"cpu": 0, "memory": 64 * 1024**2}


def to_tune_space(dims: list[Dim]) -> dict[str, Any]:
    from ray import tune

    make = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v), "randint": lambda v: tune.randint(*v)}
    return {d.key: make[d.kind](d.values) for d in dims}


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


class TrialLog:
    """Per-epoch rows, final status, error line and duration of every trial (kept in the driver;
    :func:`jem.sweep.leaderboard.leaderboard` reads it), and the one-line echo of each finished trial."""

    def __init__(self, n_trials: int, metric: str, base_method: str, echo: bool) -> None:
        self.n_trials, self.metric, self.base_method, self.echo = n_trials, metric, base_method, echo
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.config: dict[str, dict] = {}
        self.status: dict[str, str] = {}
        self.error: dict[str, str] = {}
        self.t0: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def start(self, trial_id: str, config: dict) -> None:
        self.t0[trial_id] = time.perf_counter()
        self.config[trial_id] = dict(config)

    def result(self, trial_id: str, result: dict) -> None:
        self.rows[trial_id].append({k: result.get(k) for k in ("epoch", "loss", "val_knn_top1", "epoch_s")})

    def end(self, trial_id: str, status: str, error: str | None = None) -> None:
        if error is not None:
            self.error[trial_id] = error
        self.status[trial_id] = status
        self.seconds[trial_id] = time.perf_counter() - self.t0.get(trial_id, time.perf_counter())
        if self.echo:
            rows = self.rows[trial_id]
            last = rows[-1].get(self.metric) if rows else None
            config = self.config[trial_id]
            method = config.get("method", self.base_method)
            shown = ", ".join(f"{k}={fmt(v)}" for k, v in config.items() if relevant(k, method))
            print(f"[{len(self.status)}/{self.n_trials}] {trial_id} {shown}: {status} after {len(rows)} "
                  f"epoch(s), {self.metric} {fmt(last)}", file=sys.stderr, flush=True)


def _recorder(log: TrialLog) -> Any:
    """A Tune callback feeding ``log``; it also frees the placement groups of the Train runs of
    stopped trials every 2 s (:func:`remove_orphaned_placement_groups`)."""
    import ray.tune

    from jem.engine.run import worker_error_line

    class Recorder(ray.tune.Callback):
        def __init__(self) -> None:
            self.last_cleanup = 0.0

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            if time.monotonic() - self.last_cleanup > 2.0:
                self.last_cleanup = time.monotonic()
                remove_orphaned_placement_groups()

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            log.start(trial.trial_id, trial.config)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            log.result(trial.trial_id, result)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            log.end(trial.trial_id, "done")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            error = worker_error_line(RuntimeError(getattr(trial, "error_msg", None) or "trial failed"))
            log.end(trial.trial_id, "error", error)

    return Recorder()


def _tuner(scfg: SweepConfig, trial_base: dict, dims: list[Dim], prepared: Path, views: Path, storage: str,
           experiment: str, concurrent: int, callback: Any) -> Any:
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    trainable = ray.tune.with_parameters(_trial, base=trial_base, prepared=str(prepared.resolve()),
                                         views=str(views.resolve()), storage=storage, experiment=experiment,
                                         gpus_per_worker=scfg.trial.gpus_per_worker)
    return ray.tune.Tuner(
        ray.tune.with_resources(trainable, TRIAL_DRIVER_RESOURCES),
        param_space=to_tune_space(dims),
        tune_config=ray.tune.TuneConfig(
            metric=scfg.metric, mode=scfg.mode, num_samples=scfg.num_samples, max_concurrent_trials=concurrent,
            search_alg=BasicVariantGenerator(random_state=scfg.seed),
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=max_epochs(trial_base, dims),
                                    grace_period=scfg.asha.grace_period,
                                    reduction_factor=scfg.asha.reduction_factor)),
        run_config=ray.tune.RunConfig(name=experiment, storage_path=storage, verbose=0, callbacks=[callback]),
    )


def run_sweep(scfg: SweepConfig, trial_base: dict, dims: list[Dim], prepared: Path, views: Path, storage: str,
              local: bool, echo: bool = True) -> list[dict[str, Any]]:
    """Run the sweep in the current Ray session; returns one leaderboard row per trial, best first."""
    from jem.engine.run import data_fingerprint, remove_run
    from jem.engine.session import check_resources

    verify_prepared(prepared, skip=("test_",))  # a sweep never opens the test split
    t = scfg.trial
    if local:
        check_resources(t.workers, t.cpus_per_worker, t.gpus_per_worker, "one sweep trial", "sweep.trial")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic reporter is silent at verbose=0
    concurrent = scfg.max_concurrent_trials or _fits(t)
    experiment = sweep_name(scfg, trial_base, data_fingerprint(prepared, views))
    for stale in (experiment, f"{experiment}-train"):  # a killed sweep starts over
        remove_run(storage, stale)
    n_trials = count_trials(scfg, dims)
    log = TrialLog(n_trials, scfg.metric, trial_base["method"], echo)
    tuner = _tuner(scfg, trial_base, dims, prepared, views, storage, experiment, concurrent, _recorder(log))
    if echo:
        print(f"sweep {experiment}: {n_trials} trial(s), up to {concurrent} at a time, each {t.workers} worker(s) "
              f"x {t.cpus_per_worker:g} CPU x {t.gpus_per_worker:g} GPU", file=sys.stderr, flush=True)
    tuner.fit()
    rows = leaderboard(log, trial_base, dims, scfg)
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
