"""The run report: ``report.md`` (readable on GitHub, PNGs next to it) and a self-contained
``report.html`` (the same content, images inlined), plus the CSV files declared as DVC plots.

Inputs: the raw params mapping, ``metrics/pretrain.json``, ``metrics/eval.json``, the DVCLive
folder of the pretrain stage and the evaluate stage's artefacts folder (``data/eval``, see
:mod:`jem.evaluate_run`); optionally the stage time records (``.jem/stage_times``, for the
provenance block) and other runs (for means and error bars over seeds, see
:mod:`jem.report.seeds`). Anything missing is reported as missing, never silently dropped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jem.io import flatten
from jem.report import plots, provenance, seeds
from jem.report.document import Document

NOT_IN_SCHEMA = "(not in the schema)"
BASELINES = (("random init", "random_init"), ("raw pixels", "pixels"))
COLLAPSE_ROWS = (("std of L2-normalised embeddings", "std"), ("healthy std = 1/sqrt(D)", "std_healthy"),
                 ("RankMe (effective rank)", "rankme"), ("RankMe / min(N, D)", "rankme_ratio"),
                 ("alignment (two views, lower = more invariant)", "alignment"),
                 ("uniformity (lower = more spread)", "uniformity"), ("collapsed", "collapsed"))


def _get(d: Any, *keys: str) -> float | None:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return None if isinstance(d, dict) else float(d)


def _fmt(v: float | None, digits: int = 4) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def metric_rows(ev: dict[str, Any], knn_k: list[int]) -> list[tuple[str, tuple[str, ...]]]:
    """(label, key path) of every accuracy in the metrics table; kNN keys follow ``eval.knn_k``."""
    k0 = knn_k[0] if knn_k else 20
    rows = [(f"kNN top-1 (k={k0})", ("knn", "top1")), (f"kNN top-5 (k={k0})", ("knn", "top5"))]
    rows += [(f"kNN top-1 (k={k})", (f"knn{k}", "top1")) for k in knn_k[1:]]
    rows += [("linear top-1", ("linear", "top1")), ("linear top-5", ("linear", "top5"))] + SEMI_ROWS
    return [r for r in rows if _get(ev, *r[1]) is not None]


SEMI_ROWS = [("semi-sup. 1% top-1", ("semi_1pct", "top1")), ("semi-sup. 10% top-1", ("semi_10pct", "top1"))]
# the rows of the accuracy figure (top-1 of each protocol)
FIGURE_ROWS = [("kNN", ("knn", "top1")), ("linear probe", ("linear", "top1")),
               ("semi-sup. 1%", ("semi_1pct", "top1")), ("semi-sup. 10%", ("semi_10pct", "top1"))]


def negative_gains(rows: list[list[str]]) -> frozenset[tuple[int, int]]:
    """(row, column) of every negative gain in a :func:`metrics_table`: pretraining lost to a baseline."""
    return frozenset((k, len(r) - 1) for k, r in enumerate(rows) if r[-1].startswith("-"))


def metrics_table(ev: dict[str, Any], knn_k: list[int]) -> tuple[list[str], list[list[str]]]:
    header = ["metric", "pretrained"] + [name for name, _ in BASELINES] + ["gain over best baseline"]
    rows = []
    for label, keys in metric_rows(ev, knn_k):
        ours = _get(ev, *keys)
        base = [_get(ev, key, *keys) for _, key in BASELINES]
        known = [b for b in base if b is not None]
        gain = None if ours is None or not known else ours - max(known)
        rows.append([label, _fmt(ours)] + [_fmt(b) for b in base] + ["—" if gain is None else f"{gain:+.4f}"])
    return header, rows


def params_diff(params: dict[str, Any], defaults: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, value, default)`` for every params.yaml value that differs from the schema default.

    Only the selected method's ``methods.<name>.*`` section is compared (the others do not affect
    the run); keys absent from ``params`` take their default and are not listed.
    """
    method = params.get("method", defaults.get("method"))
    flat, base = flatten(params), flatten(defaults)
    out = []
    for key, value in flat.items():
        if key.startswith("methods.") and not key.startswith(f"methods.{method}."):
            continue
        default = base.get(key, NOT_IN_SCHEMA)
        if value != default:
            out.append((key, value, default))
    return out


def collapse_sections(collapse: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"backbone": {...}, "projector": {...}}`` from either the nested or the old flat form."""
    if "std" in collapse:  # flat form: backbone only
        return {"backbone": collapse}
    return {k: v for k, v in collapse.items() if isinstance(v, dict)}


def load_curves(live_dir: Path) -> dict[str, pd.DataFrame]:
    """DVCLive series of the pretrain stage that the report plots: loss and the kNN monitor."""
    found = {}
    for name, rel in (("loss", "train/loss.tsv"), ("val_knn_top1", "monitor/val_knn_top1.tsv")):
        path = live_dir / "plots" / "metrics" / rel
        if path.is_file():
            df = pd.read_csv(path, sep="\t")
            if len(df) and name in df.columns:
                found[name] = df
    return found


def per_class_table(preds: dict[str, np.ndarray], classes: list[str]) -> pd.DataFrame:
    """Per-class test accuracy of the linear probe and the kNN classifier, one row per class."""
    y = np.asarray(preds["y_true"])
    rows = []
    for c, name in enumerate(classes):
        sel = y == c
        n = int(sel.sum())
        rows.append({"class": name, "n": n,
                     "linear": float((preds["linear_pred"][sel] == c).mean()) if n else float("nan"),
                     "knn": float((preds["knn_pred"][sel] == c).mean()) if n else float("nan")})
    return pd.DataFrame(rows, columns=["class", "n", "linear", "knn"])


def split_note(artefacts: Path | None) -> str:
    """Which split every number of the report comes from (sizes from the evaluate artefacts)."""
    meta: dict[str, Any] = {}
    if artefacts is not None and (artefacts / "meta.json").is_file():
        meta = json.loads((artefacts / "meta.json").read_text())

    def n(key: str) -> str:
        return f" ({meta[key]} images)" if meta.get(key) is not None else ""

    return (f"Splits: every accuracy above is measured on the test split{n('n_test')}; the kNN bank and the "
            f"linear probe are fitted on the training split{n('n_train')}, which excludes the validation "
            f"split{n('n_val')}. The validation split alone drives the online monitor and sweeps; the test "
            "split is read by the evaluate stage only.")


def _summary(params: dict[str, Any], pretrain: dict[str, Any]) -> str:
    def num(key: str, fmt: str) -> str:
        v = pretrain.get(key)
        return "?" if v is None else format(v, fmt)

    return (f"Seed {params.get('seed')}; {pretrain.get('epochs', '?')} epochs (started at epoch "
            f"{pretrain.get('start_epoch', '?')}); effective batch {pretrain.get('effective_batch', '?')}, "
            f"effective lr {num('effective_lr', '.4g')}; final loss {num('final_loss', '.4f')}; "
            f"{num('views_per_s', '.0f')} views/s ({pretrain.get('precision', '?')}, "
            f"{pretrain.get('memory_format', '?')}, {pretrain.get('threads', '?')} thread(s) a worker); pretraining "
            f"wall time {num('wall_s', '.0f')} s (every stage's time and the total are under Provenance).")


def build_report(out_dir: Path, params: dict[str, Any], pretrain: dict[str, Any], ev: dict[str, Any],
                 live_dir: Path, artefacts: Path | None = None, times_dir: Path | None = None,
                 root: Path | None = None, runs: list[tuple[str, dict[str, Any], dict[str, Any]]] | None = None
                 ) -> Path:
    """Write ``out_dir`` (replaced atomically): report.md, report.html, PNGs, CSVs; returns report.md.

    ``times_dir``: the stage time records; ``root``: the git checkout the commit is read from
    (default: the current directory); ``runs``: other runs (:func:`jem.report.seeds.load_runs`)
    from which the seeds of this experiment are gathered."""
    from jem.config import defaults_dict
    from jem.io import atomic_dir

    with atomic_dir(out_dir) as tmp:
        doc = _compose(tmp, params, pretrain, ev, live_dir, artefacts, defaults_dict(), runs or [])
        _provenance_section(doc, root or Path.cwd(), times_dir)
        (tmp / "report.md").write_text(doc.markdown())
        (tmp / "report.html").write_text(doc.html(tmp))
    return out_dir / "report.md"


def _compose(out: Path, params: dict[str, Any], pretrain: dict[str, Any], ev: dict[str, Any], live_dir: Path,
             artefacts: Path | None, defaults: dict[str, Any],
             runs: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> Document:
    doc = Document(f"jem report: {params.get('method')} on {params.get('dataset')}")
    doc.para(_summary(params, pretrain))
    sections = collapse_sections(ev.get("collapse", {}))
    _collapse_warning(doc, ev, sections)
    knn_k = list(params.get("eval", {}).get("knn_k", defaults["eval"]["knn_k"]))
    meta = json.loads((artefacts / "meta.json").read_text()) if artefacts and (artefacts / "meta.json").is_file() else {}
    budget = f"{pretrain.get('epochs', '?')} epochs" + (f" on {meta['n_train']} images" if meta.get("n_train") else "")
    _metrics_section(doc, out, ev, knn_k, artefacts, str(params.get("dataset", "")), budget)
    group = seeds.seed_group(params, flatten(ev), runs, defaults)
    if len(group) > 1:
        _seeds_section(doc, out, group, knn_k)
    if "xmodal" in ev:
        _audio_visual_section(doc, ev, out, artefacts)
    _collapse_section(doc, sections)
    _params_section(doc, params, defaults)
    _curves_section(doc, out, live_dir)
    if artefacts is None or not (artefacts / "meta.json").is_file():
        doc.heading("Embeddings")
        doc.note("No evaluate artefacts (data/eval): t-SNE, retrieval, correlation, views, per-class "
                 "accuracy and the confusion matrix are not available.")
        return doc
    _artefact_sections(doc, out, artefacts)
    return doc


def _collapse_warning(doc: Document, ev: dict[str, Any], sections: dict[str, dict[str, Any]]) -> None:
    collapsed = [name for name, s in sections.items() if s.get("collapsed")]
    if ev.get("collapse", {}).get("collapsed") or "backbone" in collapsed:
        doc.warn(f"the {' and '.join(collapsed) or 'embedding'} outputs look collapsed (see the collapse "
                 "diagnostics below); the accuracies of this run measure a degenerate encoder.")
    elif collapsed:
        doc.note(f"The {' and '.join(collapsed)} outputs show dimensional collapse (low RankMe) while the "
                 "backbone does not: common for projector heads (Jing et al. 2022, arXiv:2110.09348), not a "
                 "failure by itself.")


def _figure_series(get: Any) -> tuple[list[str], dict[str, list[float | None]]]:
    """(protocols, {encoder: top-1 per protocol}) for the accuracy figure; ``get(*path)`` reads one
    value. A protocol the pretrained encoder lacks is left out; a baseline it lacks is None."""
    groups: list[str] = []
    series: dict[str, list[float | None]] = {"pretrained": [], **{name: [] for name, _ in BASELINES}}
    for label, keys in FIGURE_ROWS:
        if get(*keys) is not None:
            groups.append(label)
            series["pretrained"].append(get(*keys))
            for name, key in BASELINES:
                series[name].append(get(key, *keys))
    return groups, {k: v for k, v in series.items() if any(x is not None for x in v)}


def _metrics_section(doc: Document, out: Path, ev: dict[str, Any], knn_k: list[int], artefacts: Path | None,
                     dataset: str = "", budget: str = "this budget") -> None:
    doc.heading("Metrics")
    header, rows = metrics_table(ev, knn_k)
    bad = negative_gains(rows)
    doc.table(header, rows, bad=bad)
    if bad:
        lost = ", ".join(rows[k][0] for k, _ in sorted(bad))
        why = (f"on 8x8 digits raw pixels are a strong baseline and {budget} is a toy budget; "
               "docs/methods.md's Fashion-MNIST protocol shows the methods at a real budget"
               if dataset == "digits" else "usually too small a budget (epochs, images) or a view recipe that "
               "does not suit the images; docs/methods.md has tested recipes")
        doc.warn(f"pretraining is below a baseline on {lost} (highlighted): {why}.")
    if any(_get(ev, *keys) is not None and all(_get(ev, b, *keys) is None for _, b in BASELINES)
           for _, keys in SEMI_ROWS):
        doc.note("The semi-supervised rows have no baseline in metrics/eval.json (this evaluate run did not "
                 "fine-tune the baselines); their gain column is empty.")
    doc.note("Gain = pretrained minus the best baseline of the row.")
    doc.note(split_note(artefacts))
    groups, series = _figure_series(lambda *keys: _get(ev, *keys))
    plots.plot_accuracy(series, groups, out / "accuracy.png")
    doc.image("accuracy.png", "accuracy", "Top-1 accuracy of the pretrained encoder against the baselines "
              "(same protocol: weighted kNN on cosine similarity, linear probe on standardised features, "
              "fine-tuning on the 1% / 10% labelled subsets). Each panel's axis is zoomed to its own "
              "values (not from 0), so small differences show.")


def _seeds_section(doc: Document, out: Path, group: dict[int, dict[str, Any]], knn_k: list[int]) -> None:
    seeds_list = sorted(group)
    doc.heading(f"Across seeds ({len(seeds_list)} seeds: {', '.join(map(str, seeds_list))})")
    header = ["metric", "pretrained", *[name for name, _ in BASELINES], "gain (of the means)", "seeds"]
    rows: list[list[str]] = []
    bad: set[tuple[int, int]] = set()

    def cell(stat: tuple[float, float, int] | None) -> str:
        return "—" if stat is None else f"{stat[0]:.4f} ± {stat[1]:.4f}"

    this_run = next(iter(group.values()))  # seed_group puts this run first
    for label, keys in metric_rows(_unflatten(this_run), knn_k):
        key = ".".join(keys)
        ours = seeds.mean_std(group, key)
        base = [seeds.mean_std(group, f"{b}.{key}") for _, b in BASELINES]
        known = [b[0] for b in base if b is not None]
        gain = None if ours is None or not known else ours[0] - max(known)
        if gain is not None and gain < 0:
            bad.add((len(rows), len(header) - 2))
        rows.append([label, cell(ours), *[cell(b) for b in base], "—" if gain is None else f"{gain:+.4f}",
                     "—" if ours is None else str(ours[2])])
    doc.table(header, rows, bad=frozenset(bad))
    doc.note("Mean ± sample standard deviation over the seeds of this experiment (runs whose params differ "
             "from this one only in `seed`, gathered with `--runs`).")

    def get(*keys: str) -> float | None:
        stat = seeds.mean_std(group, ".".join(keys))
        return None if stat is None else stat[0]

    def err(*keys: str) -> float | None:
        stat = seeds.mean_std(group, ".".join(keys))
        return None if stat is None else stat[1]

    groups, series = _figure_series(get)
    _, errors = _figure_series(err)
    plots.plot_accuracy(series, groups, out / "accuracy_seeds.png", errors=errors,
                        title=f"mean ± std over {len(seeds_list)} seeds")
    doc.image("accuracy_seeds.png", "accuracy over seeds", "Mean top-1 accuracy over the seeds with one "
              "standard deviation as error bars (axis zoomed to the data range).")


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                break
        else:
            node[last] = value
    return nested


def _provenance_section(doc: Document, root: Path, times_dir: Path | None) -> None:
    doc.heading("Provenance")
    doc.table(["item", "value"], [[label, value] for label, value in provenance.environment(root)], numeric_from=2)
    records = provenance.stage_times(times_dir) if times_dir is not None else []
    if records:
        rows, total = provenance.stage_rows(records)
        doc.table(["stage", "wall time", "finished (UTC)", "ran in this run"], rows, numeric_from=1)
        doc.para(total)
    else:
        doc.note(f"No stage time records{'' if times_dir is None else f' in {times_dir}'} (each `stages/*.py` "
                 "writes one when it succeeds); only the pretraining wall time above is known.")


def _audio_visual_section(doc: Document, ev: dict[str, Any], out: Path, artefacts: Path | None) -> None:
    """The audio encoder and cross-modal retrieval of an audio-visual method (jem.evaluate.audiovisual):
    the numbers, and the figures of the evaluate artefacts' ``audiovisual.npz``."""
    doc.heading("Audio and cross-modal retrieval")
    rows = [("audio kNN top-1", ("audio", "knn", "top1"), ("raw", "audio", "knn", "top1")),
            ("audio linear top-1", ("audio", "linear", "top1"), None)]
    rows += [(f"{'audio -> image' if d == 'a2v' else 'image -> audio'} recall@{k}", ("xmodal", d, f"r{k}"), None)
             for d in ("a2v", "v2a") for k in (1, 5)]
    doc.table(["test split", "trained", "random init", "raw (log-mel means)"],
              [[label, _fmt(_get(ev, *key)), _fmt(_get(ev, "random_init", *key)), _fmt(_get(ev, *raw) if raw else None)]
               for label, key, raw in rows])
    doc.note("Retrieval in the joint embedding (each encoder's head, cosine similarity) over the test pairs: a "
             "query is a hit at k when one of its k nearest items of the other modality shows the same class. "
             "Raw: kNN on the time-averaged log-mel spectrogram.")
    arrays = _load_npz(artefacts, "audiovisual") if artefacts is not None else None
    if arrays is None:
        doc.note("No spectrogram or retrieval arrays (data/eval/audiovisual.npz, written by the evaluate stage): "
                 "the figures of this section are not available.")
        return
    meta = json.loads((artefacts / "meta.json").read_text()) if artefacts and (artefacts / "meta.json").is_file() else {}
    n_cls = 1 + int(max(arrays["spec_y"].max(), arrays["a2v_neigh_y"].max(), arrays["v2a_neigh_y"].max()))
    classes = [str(c) for c in meta.get("classes", range(n_cls))]
    views = arrays.get("spec_view")
    plots.plot_spectrograms(arrays["spec_x"], arrays["spec_y"], arrays["spec_clean"], views, classes,
                            out / "spectrograms.png")
    doc.image("spectrograms.png", "spectrograms", f"{len(arrays['spec_y'])} test pairs: the image (left), the "
              "standardised log-mel spectrogram of its recording (the un-augmented input of the audio encoder)"
              + (" and one augmented view of the same recording drawn with this run's `augment.audio` recipe "
                 "(time shift, gain, noise, SpecAugment masks; drawn for the report, since the view cache holds "
                 "training recordings only)" if views is not None else "") + ".")
    plots.plot_xmodal_retrieval(arrays, classes, out / "xmodal_retrieval.png")
    k = int(arrays["a2v_neigh"].shape[1])
    hits = {d: float((arrays[f"{d}_neigh_y"] == arrays[f"{d}_query_y"][:, None]).mean()) for d in ("a2v", "v2a")}
    doc.image("xmodal_retrieval.png", "cross-modal retrieval", f"Cross-modal retrieval on the test pairs in the "
              f"joint embedding: audio queries and their top-{k} images ({hits['a2v']:.0%} same digit), then image "
              f"queries and their top-{k} recordings ({hits['v2a']:.0%} same digit); green = same digit, red = "
              "another digit; the number is the cosine similarity.")


def _collapse_section(doc: Document, sections: dict[str, dict[str, Any]]) -> None:
    doc.heading("Collapse diagnostics")
    if not sections:
        doc.note("No collapse diagnostics in metrics/eval.json.")
        return
    names = list(sections)
    doc.table(["test embeddings", *names],
              [[label, *[_fmt(_get(sections[n], key)) if key != "collapsed"
                         else ("yes" if sections[n].get(key) else "no") for n in names]]
               for label, key in COLLAPSE_ROWS])
    doc.note("Collapse rule per column: std < 0.2/sqrt(D) or RankMe / min(N, D) < 0.02 (see "
             "`jem.evaluate.collapse.collapse_report`); the run is flagged when the backbone collapses or "
             "the projector collapses completely (std rule). Alignment is measured on two augmented views "
             "(`augment.view_a`, `augment.view_b`) of the test images; uniformity uses t = 2.")


def _params_section(doc: Document, params: dict[str, Any], defaults: dict[str, Any]) -> None:
    doc.heading("Params that differ from the defaults")
    diff = params_diff(params, defaults)
    if diff:
        rows = [[f"`{k}`", json.dumps(v), d if d == NOT_IN_SCHEMA else json.dumps(d)] for k, v, d in diff]
        doc.table(["param", "value", "default"], rows, numeric_from=3)
    else:
        doc.para("None: this run uses the defaults of `jem/config.py`.")


def _curves_section(doc: Document, out: Path, live_dir: Path) -> None:
    doc.heading("Training curves")
    curves = load_curves(live_dir)
    if "loss" in curves:
        plots.plot_curve(curves["loss"], "loss", "training loss", out / "loss.png", "pretraining loss per epoch")
        doc.image("loss.png", "loss", "Mean training loss per epoch.")
    if "val_knn_top1" in curves:
        plots.plot_curve(curves["val_knn_top1"], "val_knn_top1", "kNN top-1", out / "knn_monitor.png",
                         "online kNN monitor (validation split)")
        doc.image("knn_monitor.png", "kNN monitor", "Online kNN top-1 on the validation split (up to 1000 "
                  "images, bank: up to 5000 training images), every `eval.monitor_every` epochs during "
                  "pretraining. Sweeps select on this curve; the test split is not read before `evaluate`.")
    if not curves:
        doc.note(f"No DVCLive curves under {live_dir}.")


def _load_npz(art: Path, name: str) -> dict[str, np.ndarray] | None:
    path = art / f"{name}.npz"
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _artefact_sections(doc: Document, out: Path, art: Path) -> None:
    meta = json.loads((art / "meta.json").read_text())
    classes = [str(c) for c in meta["classes"]]
    _tsne_section(doc, out, _load_npz(art, "tsne"), classes)
    _retrieval_section(doc, out, _load_npz(art, "retrieval"), classes)
    _correlation_section(doc, out, _load_npz(art, "correlation"))
    _views_section(doc, out, _load_npz(art, "views"))
    _per_class_section(doc, out, _load_npz(art, "predictions"), classes)


def _tsne_section(doc: Document, out: Path, tsne: dict[str, np.ndarray] | None, classes: list[str]) -> None:
    doc.heading("Embedding map (t-SNE)")
    if tsne is not None:
        plots.plot_tsne(tsne["xy"], tsne["labels"], classes, out / "tsne.png")
        pd.DataFrame({"x": tsne["xy"][:, 0], "y": tsne["xy"][:, 1],
                      "class": [classes[int(c)] for c in tsne["labels"]]}).to_csv(out / "tsne.csv", index=False)
        doc.image("tsne.png", "t-SNE", f"2-D t-SNE of {len(tsne['xy'])} test backbone embeddings, coloured by "
                  "class (labels are not used to compute the map).")


def _retrieval_section(doc: Document, out: Path, ret: dict[str, np.ndarray] | None, classes: list[str]) -> None:
    doc.heading("Nearest-neighbour retrieval")
    if ret is not None:
        plots.plot_retrieval(ret["query_x"], ret["query_y"], ret["neigh_x"], ret["neigh_y"], ret["neigh_sim"],
                             classes, out / "retrieval.png")
        hit = float((ret["neigh_y"] == ret["query_y"][:, None]).mean())
        doc.image("retrieval.png", "retrieval", f"Test queries (first column) and their top-{ret['neigh_y'].shape[1]} "
                  f"training neighbours; green = same class, red = another class ({hit:.0%} same class).")


def _correlation_section(doc: Document, out: Path, corr: dict[str, np.ndarray] | None) -> None:
    doc.heading("Embedding correlation")
    if corr is not None:
        mats = {"backbone: correlation of dimensions": corr["backbone"]}
        if "projector_xcorr" in corr:
            mats["projector: cross-correlation of two views"] = corr["projector_xcorr"]
        plots.plot_correlation(mats, out / "correlation.png")
        doc.image("correlation.png", "correlation", "Left: Pearson correlation between backbone dimensions on "
                  "the test split (redundancy shows as off-diagonal mass). Right: Barlow Twins' cross-correlation "
                  "of the projector outputs of two augmented views (the identity is invariant and decorrelated).")


def _views_section(doc: Document, out: Path, views: dict[str, np.ndarray] | None) -> None:
    doc.heading("What the method saw")
    if views is not None:
        plots.plot_views(views["originals"], views["views"], views.get("locals"), str(views["source"]),
                         out / "views.png")
        doc.image("views.png", "augmented views", "Pretraining images (first column) and their augmented views: "
                  "even columns use `augment.view_a`, odd ones `augment.view_b`.")
    else:
        doc.note("No view sample.")


def _per_class_section(doc: Document, out: Path, preds: dict[str, np.ndarray] | None, classes: list[str]) -> None:
    doc.heading("Per-class accuracy")
    if preds is not None:
        table = per_class_table(preds, classes)
        table.to_csv(out / "per_class_accuracy.csv", index=False)
        pd.DataFrame({"actual": [classes[int(c)] for c in preds["y_true"]],
                      "predicted": [classes[int(c)] for c in preds["linear_pred"]]}).to_csv(
            out / "confusion.csv", index=False)
        plots.plot_per_class(table, out / "per_class.png")
        plots.plot_confusion(preds["y_true"], preds["linear_pred"], classes, out / "confusion.png",
                             "confusion matrix of the linear probe")
        doc.image("per_class.png", "per-class accuracy", "Test accuracy per class of the linear probe and the "
                  "kNN classifier (k = first `eval.knn_k`).")
        doc.table(["class", "test images", "linear", "kNN"],
                  [[str(r["class"]), str(r["n"]), _fmt(r["linear"], 3), _fmt(r["knn"], 3)]
                   for _, r in table.iterrows()])
        doc.image("confusion.png", "confusion matrix", "Linear probe on the test split: rows are the true "
                  "classes, columns the predicted ones; colour is the share of the true class, numbers are "
                  "image counts (also in confusion.csv).")
