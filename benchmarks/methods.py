"""Every method through the real pipeline, at a stated budget, over seeds: one
``dvc exp run -S method=<name> -S seed=<s>`` per (method, seed), mean and standard deviation.

    python -m benchmarks.methods --protocol fashion-mnist                 # every method, its seeds
    python -m benchmarks.methods --protocol fashion-mnist --methods vicreg,simclr --seeds 0,1,2
    python -m benchmarks.methods --protocol digits
    python -m benchmarks.methods --protocol fashion-mnist --methods barlow --seeds 0 \
        --set train.lr=1.0 --out benchmarks/results/probes/barlow-lr1   # a recipe probe, its own file

A protocol is a named budget (:data:`PROTOCOLS`): the data set, the ``-S`` settings every run gets,
and how many seeds each method gets (3 for the nine methods compared in ``docs/methods.md``, 1
for the rest unless ``--seeds`` says otherwise). Runs happen in a fresh ``git clone`` of HEAD (the
committed code is what is measured; this checkout is left alone), seed-major so ``prepare`` and
``augment`` run once per seed. Every finished run is written at once to
``benchmarks/results/methods-<protocol>.json`` (``runs``: one entry per (method, seed); ``rows``:
one per method with ``method``, ``seeds``, ``knn_mean``, ``knn_std``, ``linear_mean``,
``linear_std``, ``pixels_knn``, ``pixels_linear``, ``random_knn``, ``random_linear``, ``budget``,
``commit``), so an interrupted measurement keeps what it finished and a re-run skips the
(method, seed) pairs already measured at the same budget (``--fresh`` measures them again). The
markdown table beside it is what ``docs/methods.md`` shows.

All accuracies are top-1 on the test split, from the evaluate stage; nothing here selects or
tunes on them. The baselines (raw pixels, the random-init encoder of the same architecture) come
from the same runs, so they follow the same protocol and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from jem.methods import image_methods, method_names

ROOT = Path(__file__).resolve().parents[1]

# the nine methods the methods table compares with three seeds (the rest get one unless --seeds)
COMPARED = ("simclr", "moco", "barlow", "wmse", "vicreg", "swav", "byol", "simsiam", "dino")
# joint-embedding methods: targets are "beats raw pixels on linear and random init on kNN"
JOINT_EMBEDDING = COMPARED + ("deepcluster", "sela", "npid")

PROTOCOLS: dict[str, dict[str, Any]] = {
    # the shipped defaults: 1347 digits (1212 after the validation split), 30 epochs of batch 256
    "digits": {"dataset": "digits", "sets": [], "seeds": 3},
    # Fashion-MNIST at a CPU budget of about 6 minutes per run on 2 cores (docs/methods.md says why):
    # 10,000 stratified training images (+ the 6,000-image validation split), the full 10,000-image
    # test split, 12 epochs of batch 256 = 468 steps, 8 cached views per image, natural-image crops
    # and flips, both cores for the one Ray worker; semi-supervised fine-tuning shortened (not in
    # the table)
    "fashion-mnist": {"dataset": "fashion-mnist", "seeds": 3, "sets": [
        "data.max_train=10000", "train.epochs=12", "train.warmup_epochs=1", "train.cpus_per_worker=2",
        "augment.views_per_image=8", "augment.view_a.crop_scale=[0.2,1.0]", "augment.view_b.crop_scale=[0.2,1.0]",
        "augment.view_a.flip_p=0.5", "augment.view_b.flip_p=0.5", "eval.semi_epochs=3", "eval.monitor_every=2"],
        # data2vec's DeiT-Ti (12 blocks on 49 tokens of 4 px) trains at ~25 views/s here: hours at this
        # budget. A stated smaller ViT (4 blocks on 16 tokens of 7 px, teacher average over all 4) runs
        # ~8x faster; its random-init baseline is the same smaller ViT
        # Barlow Twins: a 2048-wide projector (the paper's is 8192 x 3), chosen on the validation split
        # (benchmarks/results/probes/barlow-proj2048: above the shared [256, 256] on all 3 seeds)
        "method_sets": {"data2vec": ["model.depth=4", "model.patch_size=7", "methods.data2vec.top_k=4"],
                        "barlow": ["model.projector=[2048,2048]"]}},
    # the long run: every training image (54,000 after the validation split), 20 epochs = 4,200 steps,
    # otherwise the fashion-mnist protocol; about an hour a method on 2 cores, one seed, for the three
    # methods with the best validation kNN at the short protocol ("where do the curves go")
    "fashion-mnist-long": {"dataset": "fashion-mnist", "seeds": 1, "sets": [
        "train.epochs=20", "train.warmup_epochs=1", "train.cpus_per_worker=2",
        "augment.views_per_image=8", "augment.view_a.crop_scale=[0.2,1.0]", "augment.view_b.crop_scale=[0.2,1.0]",
        "augment.view_a.flip_p=0.5", "augment.view_b.flip_p=0.5", "eval.semi_epochs=3", "eval.monitor_every=2"]},
    # the budget of tests/e2e/test_accuracy.py (a CI-sized check that pretraining beats random init)
    "ci-fashion-mnist": {"dataset": "fashion-mnist", "seeds": 3, "sets": [
        "data.max_train=2000", "data.max_test=2000", "train.epochs=12", "train.warmup_epochs=1",
        "train.cpus_per_worker=2", "augment.views_per_image=8", "augment.view_a.crop_scale=[0.2,1.0]",
        "augment.view_b.crop_scale=[0.2,1.0]", "augment.view_a.flip_p=0.5", "augment.view_b.flip_p=0.5",
        "eval.semi_epochs=1", "eval.monitor_every=0"]},
}

RUN_KEYS = {"knn": "knn.top1", "linear": "linear.top1", "knn200": "knn200.top1",
            "random_knn": "random_init.knn.top1", "random_linear": "random_init.linear.top1",
            "pixels_knn": "pixels.knn.top1", "pixels_linear": "pixels.linear.top1",
            "collapsed": "collapse.collapsed"}


def _get(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def measure(clone: Path, method: str, seed: int, dataset: str, sets: list[str]) -> dict[str, Any]:
    """One ``dvc exp run`` in ``clone``: its metrics, or the error line."""
    subprocess.run(["git", "checkout", "-q", "HEAD", "--", "params.yaml"], cwd=clone, check=True)
    cmd = ["dvc", "exp", "run", "-S", f"method={method}", "-S", f"seed={seed}", "-S", f"dataset={dataset}"]
    for s in sets:
        cmd += ["-S", s]
    # the clone's own package, not an editable install of this checkout, runs the stages
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(clone), os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=clone, capture_output=True, text=True, env=env)
    run: dict[str, Any] = {"method": method, "seed": seed, "wall_s": round(time.perf_counter() - t0, 1)}
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        run["error"] = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "failed")
        return run
    # the full records: knn200 and the pretrain bookkeeping (train_s, optimizer, base_lr) are not
    # in the DVC metrics files
    ev = json.loads((clone / "metrics" / "eval-full.json").read_text())
    pt = json.loads((clone / "metrics" / "pretrain-full.json").read_text())
    run.update({name: _get(ev, key) for name, key in RUN_KEYS.items()})
    run.update({k: pt.get(k) for k in ("train_s", "views_per_s", "final_loss", "epochs", "optimizer", "base_lr")})
    run["val_curve"] = val_curve(clone / "dvclive" / "pretrain")
    return run


def val_curve(live: Path) -> list[list[float]]:
    """[[epoch, validation kNN top-1], ...] from the online monitor's DVCLive series ([] when off):
    where a method is during training, on the validation split (the budget curve of a run)."""
    path = live / "plots" / "metrics" / "monitor" / "val_knn_top1.tsv"
    if not path.is_file():
        return []
    rows = [ln.split("\t") for ln in path.read_text().splitlines()[1:] if ln.strip()]
    return [[int(r[0]) + 1, float(r[1])] for r in rows]


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def aggregate(runs: list[dict[str, Any]], budget: str) -> list[dict[str, Any]]:
    """One row per method: mean and sample standard deviation over its seeds (baselines: means)."""
    rows = []
    for method in sorted({r["method"] for r in runs}):
        ok = sorted((r for r in runs if r["method"] == method and "error" not in r), key=lambda r: r["seed"])
        failed = [r for r in runs if r["method"] == method and "error" in r]
        row: dict[str, Any] = {"method": method, "seeds": [r["seed"] for r in ok]}
        for name in ("knn", "linear"):
            row[f"{name}_mean"], row[f"{name}_std"] = _mean_std([r[name] for r in ok])
        for name in ("pixels_knn", "pixels_linear", "random_knn", "random_linear"):
            row[name] = _mean_std([r[name] for r in ok])[0]
        row["collapsed_runs"] = sum(int(bool(r.get("collapsed"))) for r in ok)
        row["train_s_mean"] = _mean_std([r["train_s"] for r in ok])[0]
        row["wall_s_mean"] = _mean_std([r["wall_s"] for r in ok])[0]
        curves = [dict((int(e), v) for e, v in r.get("val_curve") or []) for r in ok]
        epochs = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        row["val_curve"] = [[e, statistics.fmean(c[e] for c in curves)] for e in epochs]  # mean over seeds
        row["budget"] = budget
        own = sorted({s for r in ok for s in r.get("method_sets", [])})
        row["budget"] = budget + "".join(f" {s}" for s in own)
        if own:
            row["method_sets"] = own
        row["commit"] = ",".join(sorted({str(r.get("commit", "?")) for r in ok})) or None
        if failed:
            row["errors"] = [f"seed {r['seed']}: {r['error']}" for r in failed]
        if ok:
            row["beats_random_knn"] = row["knn_mean"] > row["random_knn"]
            row["beats_pixels_linear"] = row["linear_mean"] > row["pixels_linear"]
            row["beats_pixels_knn"] = row["knn_mean"] > row["pixels_knn"]
        rows.append(row)
    return rows


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def _yes(v: Any) -> str:
    return "-" if v is None else ("yes" if v else "**no**")


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    cols = ["method", "seeds", "kNN top-1", "linear top-1", "random-init kNN", "random-init linear", "pixels kNN",
            "pixels linear", "kNN > random", "linear > pixels", "collapsed runs", "train s"]
    out = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if not r["seeds"]:
            out.append(f"| {r['method']} | failed: {'; '.join(r.get('errors', []))} |" + " |" * (len(cols) - 2))
            continue
        out.append("| " + " | ".join([
            r["method"], ",".join(map(str, r["seeds"])), _pm(r["knn_mean"], r["knn_std"]),
            _pm(r["linear_mean"], r["linear_std"]), _pm(r["random_knn"], None), _pm(r["random_linear"], None),
            _pm(r["pixels_knn"], None), _pm(r["pixels_linear"], None), _yes(r.get("beats_random_knn")),
            _yes(r.get("beats_pixels_linear")), str(r["collapsed_runs"]), f"{r['train_s_mean']:.0f}"]) + " |")
    own = [f"{r['method']}: `{' '.join(r['method_sets'])}`" for r in rows if r.get("method_sets")]
    if own:
        out += ["", "Rows with settings of their own on top of the budget (so are their baselines): " + "; ".join(own)
                + "."]
    return "\n".join(out) + "\n"


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Validation kNN against epochs, one line per method (mean over its seeds): the budget curves
    that show whether a method is still climbing, flat, or falling at the end of the budget."""
    curves = [r for r in rows if r.get("val_curve")]
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, r in enumerate(curves):
        xs, ys = zip(*r["val_curve"])
        ax.plot(xs, ys, marker="o", ms=3, label=r["method"], linestyle="-" if i < 10 else "--")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation kNN top-1 (online monitor)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plan(names: list[str], seeds_arg: str | None, default_seeds: int) -> list[tuple[int, str]]:
    """(seed, method) pairs, seed-major: the nine compared methods get ``default_seeds`` seeds, the
    others one, unless ``seeds_arg`` ("0,1,2") gives every method the same list."""
    pairs = []
    for m in names:
        seeds = ([int(s) for s in seeds_arg.split(",")] if seeds_arg
                 else list(range(default_seeds if m in COMPARED else 1)))
        pairs += [(s, m) for s in seeds]
    return sorted(pairs)


def sync_docs(doc: Path, protocol: str, table: str) -> bool:
    """Replace what stands between ``<!-- table:methods-<protocol> -->`` and
    ``<!-- /table:methods-<protocol> -->`` in ``doc`` by ``table`` (the markdown beside the JSON),
    so the page never shows an older table than the results file; False when the markers are absent."""
    begin, end = f"<!-- table:methods-{protocol} -->", f"<!-- /table:methods-{protocol} -->"
    text = doc.read_text() if doc.is_file() else ""
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n{table.strip()}\n{end}{tail}")
    return True


def table_header(protocol: str, budget: str) -> str:
    return (f"### {protocol}: every method through `dvc exp run`, mean ± std over seeds\n\n"
            f"Command: `python -m benchmarks.methods --protocol {protocol}`. Budget: `{budget}`. "
            "Accuracies: top-1 on the test split; baselines from the same runs.")


def kept_runs(old: dict[str, Any], budget: str, planned: list[tuple[int, str]], fresh: bool) -> list[dict[str, Any]]:
    """The runs of an earlier results file that stay: all of them at the same budget (none at another),
    less the planned (seed, method) pairs when ``fresh`` asks to measure those again."""
    runs: list[dict[str, Any]] = old.get("runs", []) if old.get("budget") == budget else []
    return [r for r in runs if (r["seed"], r["method"]) not in set(planned)] if fresh else runs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="digits", choices=sorted(PROTOCOLS))
    ap.add_argument("--methods", default="all",
                    help="comma-separated names, or 'all' (every registered image method; avid and avid_cma "
                         "need an audio-visual data set)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds for every method (default: the protocol's)")
    ap.add_argument("--fresh", action="store_true",
                    help="measure the planned (method, seed) pairs again even where the results file holds them "
                         "(its other runs are kept)")
    ap.add_argument("--out", default=None, help="output stem (default benchmarks/results/methods-<protocol>)")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="one more `-S` setting on top of the protocol's (repeatable): a recipe probe. Needs --out, "
                         "so a probe never mixes into the protocol's own results; choose recipes on the validation "
                         "curve (`val_curve`), never on the test numbers")
    args = ap.parse_args(argv)
    if args.extra and not args.out:
        sys.exit("error: --set changes the protocol's budget; give --out so the probe is written to its own file")
    if shutil.which("dvc") is None:
        sys.exit("error: `dvc` is not on PATH; activate the environment (`. .venv/bin/activate`) first")
    names = image_methods() if args.methods == "all" else [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in names if m not in method_names()]
    if unknown:
        sys.exit(f"error: unknown method(s) {', '.join(unknown)}; `jem methods` lists them")
    if args.seeds is not None and not all(s.strip().isdigit() for s in args.seeds.split(",")):
        sys.exit(f"error: --seeds {args.seeds!r}: expected comma-separated non-negative integers, e.g. 0,1,2")
    proto = PROTOCOLS[args.protocol]
    sets: list[str] = proto["sets"] + args.extra
    budget = f"dataset={proto['dataset']}" + "".join(f" {s}" for s in sets)
    stem = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"methods-{args.protocol}"
    path = stem.with_suffix(".json")
    old = json.loads(path.read_text()) if path.exists() else {}
    planned = plan(names, args.seeds, proto["seeds"])
    runs = kept_runs(old, budget, planned, args.fresh)
    done = {(r["seed"], r["method"]) for r in runs if "error" not in r}
    todo = [p for p in planned if p not in done]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    header = table_header(args.protocol, budget)

    def save() -> None:
        rows = aggregate(runs, budget)
        stem.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"protocol": args.protocol, "budget": budget, "rows": rows, "runs": runs},
                                  indent=2) + "\n")
        tmp.replace(path)
        stem.with_suffix(".md").write_text(markdown(rows, header))
        if not args.out:  # the protocol's own table: docs/methods.md shows it between its markers
            sync_docs(ROOT / "docs" / "methods.md", args.protocol, markdown(rows, header))
        plot_curves(rows, stem.parent / f"{stem.name}-curves.png",
                    f"{args.protocol}: validation kNN during pretraining (mean over seeds)")

    print(f"{len(todo)} run(s) to do ({len(done)} already measured at this budget)", file=sys.stderr)
    tmpdir = Path(tempfile.mkdtemp(prefix="jem-methods-"))
    clone = tmpdir / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    try:
        for seed, name in tqdm(todo, desc="runs", unit="run"):
            own = proto.get("method_sets", {}).get(name, [])
            run = dict(measure(clone, name, seed, proto["dataset"], sets + own), commit=commit)
            if own:
                run["method_sets"] = own
            runs = sorted([r for r in runs if (r["seed"], r["method"]) != (seed, name)] + [run],
                          key=lambda r: (r["method"], r["seed"]))
            tqdm.write(json.dumps(run))
            save()
    finally:
        subprocess.run(["rm", "-rf", str(tmpdir)], check=False)
    save()
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
