"""Stage `sweep` (pipelines/sweep): a Ray Tune sweep of pretraining runs with ASHA early stopping.

Reads the `sweep` section of this folder's params.yaml and the main params.yaml (--base); writes
results/leaderboard.{csv,md}, results/curves.{csv,png}, results/best.json and
results/best_params.yaml."""

import argparse
import os
import time
from pathlib import Path

import yaml

from jem.config import ConfigError, load_config
from jem.errors import run_main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--base", type=Path, default=Path("../../params.yaml"))
    ap.add_argument("--prepared", type=Path, default=Path("../../data/prepared"))
    ap.add_argument("--views", type=Path, default=Path("../../data/views"))
    ap.add_argument("--out", type=Path, default=Path("results"))
    args = ap.parse_args()
    cfg = load_config(args.base)
    if not args.params.is_file():
        raise ConfigError(f"params file {str(args.params)!r} not found")
    raw = yaml.safe_load(args.params.read_text()) or {}
    from jem.sweep.space import parse_sweep

    scfg, trial_base, dims = parse_sweep(raw.get("sweep"), yaml.safe_load(args.base.read_text()))
    # the validation split feeds the online monitor; the test split is never read here
    for p in (args.prepared / "stats.json", args.prepared / "val_x.npy", args.views / "meta.json"):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: run the main pipeline's prepare and augment stages first")
    from jem.engine.address import check_attached_fit
    from jem.engine.run import resolve_storage
    from jem.engine.session import cluster_address, ray_session
    from jem.sweep.leaderboard import write_results
    from jem.sweep.tune import run_sweep

    root = Path(os.environ.get("DVC_ROOT", args.base.resolve().parent))
    storage = resolve_storage(cfg.ray.storage, root)
    t0 = time.perf_counter()
    with ray_session(cfg.ray):
        t = scfg.trial  # RAY_ADDRESS=auto: a busy instance on this machine must fit one trial within $JEM_RAY_WAIT_S
        check_attached_fit(cluster_address(cfg.ray), t.workers, t.cpus_per_worker, t.gpus_per_worker,
                           "one sweep trial", "sweep.trial")
        rows = run_sweep(scfg, trial_base, dims, args.prepared, args.views, storage,
                         local=not cluster_address(cfg.ray))
    best_path = os.path.relpath((args.out / "best_params.yaml").resolve(), root.resolve())
    summary = write_results(rows, dims, scfg, args.out, time.perf_counter() - t0, best_path)
    best = summary["best"]
    print(f"sweep: {summary['trials']} trials ({summary['completed']} completed, {summary['early_stopped']} "
          f"stopped early, {summary['errored']} failed) in {summary['wall_s']:.0f} s; best: "
          + (f"{best['method']} {best['trial']} {scfg.metric} {best[scfg.metric]:.4f}" if best else "none"))
    print(f"leaderboard: {args.out / 'leaderboard.md'}; apply: dvc exp run $(python -m jem.sweep "
          f"--set-args {best_path})")


if __name__ == "__main__":
    run_main(main)
