"""The ``jem`` command line. Pipelines run through ``dvc repro``; this is for everything around
them: listing methods, checking params, summarising a run, comparing experiments, exporting the
encoder and embedding a folder of images with it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jem.errors import fail, run_main
from jem.io import flatten


def _cmd_methods(args: argparse.Namespace) -> None:
    from jem.methods import registry

    for name, spec in registry().items():
        print(f"{name:<12} {spec.description} ({spec.paper})")


def _cmd_validate(args: argparse.Namespace) -> None:
    from jem.config import load_config
    from jem.data import check_dataset
    from jem.preflight import check_run

    cfg = load_config(args.params)  # the same checks as the pipeline's validate stage
    check_dataset(cfg.dataset, cfg.data.root, test_fraction=cfg.data.test_fraction,
                  group_regex=cfg.data.group_regex, seed=cfg.seed, audio_root=cfg.data.audio_root)
    notes = check_run(cfg)
    print(f"{args.params} ok: dataset={cfg.dataset} method={cfg.method} seed={cfg.seed}")
    for note in notes:
        print(note)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _cmd_info(args: argparse.Namespace) -> None:
    root = Path(args.root)
    # the stages' full records (metrics/*.json hold the subset `dvc exp show` compares)
    files = {name: next((p for p in (root / "metrics" / f"{name}-full.json", root / "metrics" / f"{name}.json")
                         if p.is_file()), None) for name in ("pretrain", "eval")}
    pre, ev = (_read_json(p) if p is not None else None for p in files.values())
    notes = _staleness(root, pre, ev)
    if pre is None and ev is None:
        if notes:  # a failed or killed run: say so rather than just "no metrics"
            for note in notes:
                print(f"note: {note}")
        raise FileNotFoundError(f"no metrics under {root / 'metrics'}: run `dvc repro` first")
    for note in notes:
        print(f"note: {note}")
    if args.all:
        for name, data in (("pretrain", pre), ("eval", ev)):
            if data is not None:
                print(f"== {files[name]}")
                for key, value in flatten(data).items():
                    print(f"{key:<36} {value:.4f}" if isinstance(value, float) else f"{key:<36} {value}")
        return
    import yaml

    params_file = root / "params.yaml"
    params = yaml.safe_load(params_file.read_text()) if params_file.is_file() else {}
    print(f"run: {params.get('method', '?')} on {params.get('dataset', '?')}, seed {params.get('seed', '?')} "
          f"({root.resolve()})")
    if pre is not None:
        print(f"pretrain: {pre.get('epochs', '?')} epochs, final loss {pre.get('final_loss', float('nan')):.4f}, "
              f"{pre.get('views_per_s', 0):.0f} views/s, wall {pre.get('wall_s', 0):.0f} s")
    if ev is not None:
        from jem.report.build import collapse_sections, metrics_table

        knn_k = list((params.get("eval") or {}).get("knn_k", [20, 200]))
        header, rows = metrics_table(ev, knn_k)
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        for name, s in collapse_sections(ev.get("collapse", {})).items():
            print(f"collapse ({name}): std {s.get('std', 0):.4f} (healthy {s.get('std_healthy', 0):.4f}), "
                  f"RankMe {s.get('rankme', 0):.1f} (ratio {s.get('rankme_ratio', 0):.3f})"
                  + (f", alignment {s['alignment']:.3f}" if "alignment" in s else "")
                  + f", uniformity {s.get('uniformity', 0):.3f}" + (" -> COLLAPSED" if s.get("collapsed") else ""))
    meta = _read_json(root / "models" / "encoder" / "encoder.json")
    if meta is not None:
        arch = meta.get("arch", {})
        print(f"encoder: {root / 'models' / 'encoder'} ({arch.get('backbone')} width {arch.get('width', '-')}, "
              f"{arch.get('in_channels')}x{arch.get('image_size')}px in, {meta.get('feat_dim')}-d features)")
    for rel in ("reports/report.html", "reports/report.md"):
        if (root / rel).is_file():
            print(f"report: {root / rel}")


def _staleness(root: Path, pre: dict[str, Any] | None, ev: dict[str, Any] | None) -> list[str]:
    """Lines saying when what ``jem info`` shows is not from the last run, or is missing."""
    from jem.lastgood import status

    notes = [line for stage in ("pretrain", "evaluate", "report") if (line := status(stage, root))]
    if pre is None and ev is not None:
        notes.append("metrics/pretrain.json is missing: the evaluation below has no pretraining record beside it")
    encoder = _read_json(root / "models" / "encoder" / "encoder.json")
    evaluated = (ev or {}).get("encoder_sha256")
    if ev is not None and encoder is None:
        notes.append("models/encoder is missing: the evaluation below is of an encoder that is no longer there")
    elif evaluated and encoder is not None and encoder.get("sha256", {}).get("encoder.safetensors") != evaluated:
        notes.append("metrics/eval.json was computed for another encoder than models/encoder (stale): "
                     "`dvc repro evaluate` brings it up to date")
    return notes


def _cmd_restore(args: argparse.Namespace) -> None:
    from jem.lastgood import restore_all

    restored = restore_all(Path(args.root), args.stages)
    for stage, paths in restored.items():
        print(f"{stage}: " + (f"put back {', '.join(paths)}" if paths else "no last good copy kept"))
    if not any(restored.values()):
        raise FileNotFoundError(f"nothing to restore under {Path(args.root) / '.jem' / 'last-good'}")


def _cmd_compare(args: argparse.Namespace) -> None:
    from jem.report.compare import DEFAULT_METRICS, compare

    metrics = tuple(args.metrics.split(",")) if args.metrics else DEFAULT_METRICS
    md, runs = compare(Path(args.repo), Path(args.out), args.all_commits, metrics)
    print(md)
    print(f"{len(runs)} runs compared; wrote {Path(args.out) / 'compare.md'}, compare.csv and compare.png")


def _cmd_export(args: argparse.Namespace) -> None:
    from jem.export import export_encoder

    meta = export_encoder(args.encoder, args.out, args.stats)
    print(f"exported {meta['arch']['backbone']} encoder ({meta['feat_dim']}-d features, input "
          f"{meta['arch']['in_channels']}x{meta['arch']['image_size']}px, mean {meta['mean']}, std {meta['std']}) "
          f"to {args.out}; load it with jem.load_encoder({str(args.out)!r})")


def _cmd_embed(args: argparse.Namespace) -> None:
    import numpy as np

    from jem.export import embed_folder

    out = Path(args.out)
    if out.suffix != ".npy":
        raise ValueError(f"--out {out} must end in .npy")
    feats, paths = embed_folder(args.encoder, args.images, args.stats, args.batch_size, args.device, progress=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.npy")
    np.save(tmp, feats)
    tmp.replace(out)
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"{p.relative_to(args.images)}\n" for p in paths))
    print(f"embedded {len(paths)} images -> {out} {feats.shape} float32 (row order in {listing})")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jem", description="Joint-embedding self-supervised learning: DVC "
                                 "pipelines (`dvc repro`, `dvc exp run -S method=...`) plus these helpers.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("methods", help="list registered methods: name, description, paper")
    p.set_defaults(func=_cmd_methods)
    p = sub.add_parser("validate", help="check a params file against the data and this machine without running "
                       "anything (the validate stage's checks)")
    p.add_argument("params", nargs="?", default="params.yaml")
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser("info", help="summary of the run in a repo: metrics vs baselines, collapse, encoder, report")
    p.add_argument("root", nargs="?", default=".")
    p.add_argument("--all", action="store_true",
                   help="print every key of metrics/pretrain-full.json and metrics/eval-full.json instead")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("restore", help="put back the metrics, curves and report of each stage's last good run "
                       "(after a run that was killed before it could do so itself; see docs/reliability.md)")
    p.add_argument("stages", nargs="*", default=["pretrain", "evaluate", "report"])
    p.add_argument("--root", default=".")
    p.set_defaults(func=_cmd_restore)
    p = sub.add_parser("compare", help="all DVC experiments side by side (dvc exp show): markdown table + bar chart")
    p.add_argument("--repo", default=".", help="the DVC repo (default: .)")
    p.add_argument("--out", default="compare", help="folder for compare.md, compare.csv, compare.png")
    p.add_argument("--all-commits", action="store_true", help="every commit's experiments, not only HEAD's")
    p.add_argument("--metrics", default="", help="comma-separated metric keys for the chart (default: "
                   "knn.top1,linear.top1,semi_1pct.top1,semi_10pct.top1)")
    p.set_defaults(func=_cmd_compare)
    p = sub.add_parser("export", help="validate a trained encoder and write a portable copy (safetensors + json)")
    p.add_argument("--encoder", default="models/encoder", help="trained encoder folder (default: models/encoder)")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--stats", default=None, help="normalisation stats (default: data/prepared/stats.json)")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("embed", help="embeddings of a folder of PNG/JPEG images -> .npy")
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="output .npy, (N, D) float32; row order in the .txt next to it")
    p.add_argument("--encoder", default="models/encoder", help="encoder folder (default: models/encoder)")
    p.add_argument("--stats", default=None, help="normalisation stats when encoder.json has none "
                   "(default: data/prepared/stats.json)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.set_defaults(func=_cmd_embed)
    return ap


def _user_errors(func: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> None:
    """ValueError / RuntimeError raised by these commands are user-facing: one line, exit 2."""
    try:
        func(args)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_main(lambda: _user_errors(args.func, args))


if __name__ == "__main__":
    main()
