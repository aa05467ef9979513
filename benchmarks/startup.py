"""What a pretrain stage waits for besides training: Ray start-up, Ray Train's worker group,
shutdown (issue 19: "Ray start-up and shutdown cost measured and cut").

    python -m benchmarks.startup                          # digits, 1 epoch, 2 repeats
    python -m benchmarks.startup --dataset fashion-mnist --max-train 2000 --repeats 3 --out /tmp/startup.json

Prepares a data set with the real ``prepare`` and ``augment`` stage scripts in a scratch folder,
then calls :func:`jem.engine.run.pretrain` (what ``stages/pretrain.py`` runs) ``--repeats`` times in
this process, each with its own private local Ray instance, and times the phases:

* ``import_s``: a fresh ``python -c "import jem.engine.run"`` (what every stage process pays first;
  a Ray worker pays ``jem.engine.loop`` plus ``ray.train.torch`` on top);
* ``before_ray_s``: from calling ``pretrain`` to ``ray.init`` (checks: SHA-256 of the prepared
  arrays and the view cache, free space, resources, the orphan sweep);
* ``ray_init_s``: ``ray.init`` of a private local instance;
* ``fit_s``: ``TorchTrainer.fit``, split with the Train controller's own log lines into
  ``placement_group_s``, ``worker_actors_s`` (new worker processes and their imports),
  ``train_context_s`` (the workers' train context: torch.distributed and the backend) and the rest;
  ``train_s`` is the training loop itself (the run summary's), so ``fit_s - train_s`` is what
  Ray Train costs around it;
* ``ray_shutdown_s``: ``ray.shutdown``.

With ``--attach`` the same runs attach to one long-lived local instance (``ray start --head``,
started once before the runs and ended after them), as a user does with ``ray.address`` set: the
runs then pay a connection instead of ``ray.init`` of a new instance, and no instance shutdown.

Medians over repeats. The machine's load is printed beside them: on a shared machine each phase
stretches, so compare phases within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
# the Train controller's "[Worker Group Initialization] <what> in <s>s" lines (Ray Train V2)
INIT_LINES = {"placement_group_s": r"Placement group ready in ([\d.]+)s",
              "worker_actors_s": r"worker actors created in ([\d.]+)s",
              "train_context_s": r"Train context initialized on workers in ([\d.]+)s",
              "worker_group_s": r"Worker group startup completed in ([\d.]+)s total"}


def stage(script: str, *args: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / script), *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed:\n{(proc.stderr or proc.stdout)[-2000:]}")


def import_seconds() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import jem.engine.run"], check=True, env={**os.environ,
                   "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - t0


class Timer:
    """Wraps ``ray.init``, ``ray.shutdown`` and ``TorchTrainer.fit`` to record when each starts and ends."""

    def __init__(self) -> None:
        import ray
        from ray.train.torch import TorchTrainer

        self.marks: dict[str, float] = {}
        self.session_dir: str | None = None
        self._orig = (ray.init, ray.shutdown, TorchTrainer.fit)
        timer = self

        def init(*a: Any, **k: Any) -> Any:
            timer.marks["init_start"] = time.perf_counter()
            out = timer._orig[0](*a, **k)
            timer.marks["init_end"] = time.perf_counter()
            node = ray._private.worker._global_node
            timer.session_dir = node.get_session_dir_path() if node is not None else None
            return out

        def shutdown(*a: Any, **k: Any) -> Any:
            timer.marks.setdefault("shutdown_start", time.perf_counter())
            out = timer._orig[1](*a, **k)
            timer.marks["shutdown_end"] = time.perf_counter()
            return out

        def fit(trainer: Any) -> Any:
            timer.marks["fit_start"] = time.perf_counter()
            out = timer._orig[2](trainer)
            timer.marks["fit_end"] = time.perf_counter()
            return out

        ray.init, ray.shutdown, TorchTrainer.fit = init, shutdown, fit  # type: ignore[method-assign,assignment]

    def restore(self) -> None:
        import ray
        from ray.train.torch import TorchTrainer

        ray.init, ray.shutdown, TorchTrainer.fit = self._orig  # type: ignore[method-assign,assignment]


def controller_phases(session_dir: str | None) -> dict[str, float]:
    """The worker-group start-up phases from the Train controller's log of the latest run on this
    instance (an attached instance keeps the logs of the earlier runs beside it)."""
    out: dict[str, float] = {}
    logs = list(Path(session_dir, "logs", "train").glob("ray-train-sys-controller-*.log")) if session_dir else []
    if not logs:
        return out
    text = max(logs, key=lambda p: p.stat().st_mtime).read_text(errors="replace")
    for key, pattern in INIT_LINES.items():
        m = re.search(pattern, text)
        if m:
            out[key] = float(m.group(1))
    return out


def start_head(work: Path, cpus: int) -> tuple[str, str]:
    """``ray start --head`` on a free port, its processes marked for :func:`jem.reaper.reap`;
    returns (address, owner token)."""
    import socket

    from jem import reaper

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = reaper.owner_token()
    env = {**os.environ, reaper.MARKER: token}
    env.pop("RAY_ADDRESS", None)
    subprocess.run(["ray", "start", "--head", f"--port={port}", f"--num-cpus={cpus}", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, env=env, capture_output=True)
    # the address `ray start` binds, from another process: Ray reads its authentication mode when it
    # is imported, and this one must import it only after use_token_auth_when_attaching
    host = subprocess.run([sys.executable, "-c", "from ray._private.services import get_node_ip_address as g; "
                           "print(g())"], capture_output=True, text=True, check=True).stdout.strip()
    from jem.engine.session import use_token_auth_when_attaching

    use_token_auth_when_attaching()
    return f"{host}:{port}", token


def one_run(cfg: Any, raw: dict[str, Any], work: Path, i: int) -> dict[str, Any]:
    from jem.engine.run import pretrain

    timer = Timer()
    t0 = time.perf_counter()
    try:
        summary = pretrain(cfg, raw, work / "prepared", work / "views", work / f"encoder-{i}", None,
                           str(work / "ray"), progress=False)
    finally:
        timer.restore()
    t_end = time.perf_counter()
    m = timer.marks
    row = {"total_s": t_end - t0, "before_ray_s": m["init_start"] - t0, "ray_init_s": m["init_end"] - m["init_start"],
           "fit_s": m["fit_end"] - m["fit_start"], "train_s": summary["train_s"],
           "ray_shutdown_s": m["shutdown_end"] - m["shutdown_start"],
           "after_shutdown_s": t_end - m["shutdown_end"]}
    row["fit_minus_train_s"] = row["fit_s"] - row["train_s"]
    row.update(controller_phases(timer.session_dir))
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--max-train", type=int, default=0, help="data.max_train (0: all)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--attach", action="store_true",
                    help="attach every run to one long-lived `ray start --head` instead of a fresh instance each")
    ap.add_argument("--out", type=Path, default=None, help="also write the result as JSON")
    args = ap.parse_args(argv)
    from jem.config import parse_config

    work = Path(tempfile.mkdtemp(prefix="jem-startup-"))
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["dataset"] = args.dataset
    raw["data"]["max_train"] = args.max_train
    raw["train"]["epochs"] = args.epochs
    raw["train"]["warmup_epochs"] = 0
    raw["eval"]["monitor_every"] = 0
    params = work / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    stage("prepare.py", "--params", str(params), "--out", str(work / "prepared"), cwd=work)
    stage("augment.py", "--params", str(params), "--prepared", str(work / "prepared"), "--out", str(work / "views"),
          cwd=work)
    imports = [import_seconds() for _ in range(args.repeats)]
    rows = []
    token = None
    if args.attach:
        t0 = time.perf_counter()  # (not jem's local_cpus: it imports ray, which must wait for the auth mode)
        raw["ray"]["address"], token = start_head(work, len(os.sched_getaffinity(0)))
        print(f"head started in {time.perf_counter() - t0:.1f} s at {raw['ray']['address']}", flush=True)
    cfg = parse_config(raw)
    try:
        for i in range(args.repeats):
            rows.append(one_run(cfg, raw, work, i))
            print(json.dumps({k: round(v, 2) for k, v in rows[-1].items()}), flush=True)
    finally:
        if token is not None:
            from jem import reaper

            reaper.reap(token)
    keys = list(rows[0])
    median = {k: statistics.median(r.get(k, float("nan")) for r in rows) for k in keys}
    median["import_s"] = statistics.median(imports)
    result = {"dataset": args.dataset, "max_train": args.max_train, "epochs": args.epochs, "repeats": args.repeats,
              "attach": args.attach,
              "load_avg": os.getloadavg(), "median": median, "runs": rows, "imports": imports}
    order = ["import_s", "before_ray_s", "ray_init_s", "placement_group_s", "worker_actors_s", "train_context_s",
             "worker_group_s", "fit_s", "train_s", "fit_minus_train_s", "ray_shutdown_s", "total_s"]
    print(f"median of {args.repeats} runs, load average {os.getloadavg()[0]:.1f} (1 min):")
    for k in order:
        if k in median:
            print(f"  {k:20s} {median[k]:7.2f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return result


if __name__ == "__main__":
    main()
