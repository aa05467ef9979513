"""`jem compare` parsing of `dvc exp show --json` rows (the DVC 3 layout), without running DVC."""

from __future__ import annotations

from jem.report.compare import changed_params, collect_runs, compare_table, markdown_table


def entry(rev, name, method, lr, knn, wd=1e-6):
    params = {"params.yaml": {"data": {"method": method, "train": {"lr": lr, "weight_decay": wd, "epochs": 3},
                                       "methods": {"vicreg": {"t": 0.1}, "simclr": {"t": 0.2},
                                                   "other": {"x": lr}}}}}
    metrics = {"metrics/eval.json": {"data": {"knn": {"top1": knn}, "linear": {"top1": knn + 0.01}}},
               "metrics/pretrain.json": {"data": {"wall_s": 123.4}}}
    return {"rev": rev, "name": name, "data": {"rev": rev, "params": params, "metrics": metrics}}


def rows():
    base = entry("a" * 40, "main", "vicreg", 0.3, 0.9)
    base["experiments"] = [{"name": "e1", "revs": [entry("b" * 40, "e1", "simclr", 0.3, 0.8)]},
                           {"name": "e2", "revs": [{**entry("c" * 40, None, "vicreg", 0.1, 0.85), "name": None}]},
                           {"name": "failed", "revs": [{"rev": "d" * 40, "name": "failed", "data": {}}]}]
    workspace = entry("workspace", None, "vicreg", 0.1, 0.85)  # same as e2: not listed twice
    return [workspace, base]


def test_collect_runs_order_names_and_workspace_dedupe():
    runs = collect_runs(rows())
    assert [r.name for r in runs] == ["main", "e1", "e2"]
    assert runs[1].metrics["knn.top1"] == 0.8 and runs[1].params["train.lr"] == 0.3
    ws = rows()
    ws[0]["data"]["metrics"]["metrics/eval.json"]["data"]["knn"]["top1"] = 0.5  # uncommitted results
    assert [r.name for r in collect_runs(ws)] == ["workspace", "main", "e1", "e2"]


def test_changed_params_only_and_table():
    runs = collect_runs(rows())
    assert changed_params(runs) == ["method", "train.lr"]  # epochs, weight_decay, other methods: same/ignored
    header, table = compare_table(runs)
    assert header == ["experiment", "method", "train.lr", "knn.top1", "linear.top1", "wall_s"]
    assert table[0] == ["main", "vicreg", "0.3", "0.9000", "0.9100", "123"]
    md = markdown_table(header, table)
    assert md.splitlines()[1] == "|---|---|---|---|---|---|" and len(md.splitlines()) == 5
