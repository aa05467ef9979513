"""benchmarks.methods: the per-method rows are the mean and sample standard deviation of the runs,
failed runs are named and left out, and the seed plan is seed-major."""

import math

from benchmarks.methods import COMPARED, PROTOCOLS, aggregate, kept_runs, markdown, plan


def _run(method, seed, knn, linear, **kw):
    return {"method": method, "seed": seed, "knn": knn, "linear": linear, "random_knn": 0.40 + seed / 100,
            "random_linear": 0.5, "pixels_knn": 0.45, "pixels_linear": 0.62, "collapsed": 0, "train_s": 10.0,
            "wall_s": 20.0, "commit": "abc", **kw}


def test_rows_are_mean_and_sample_std_over_seeds():
    runs = [_run("vicreg", 0, 0.50, 0.70, val_curve=[[2, 0.3], [4, 0.4]]),
            _run("vicreg", 1, 0.60, 0.70, val_curve=[[2, 0.5], [4, 0.6]]),
            _run("vicreg", 2, 0.70, 0.61, val_curve=[[2, 0.1], [4, 0.8]]),
            {"method": "vicreg", "seed": 3, "error": "error: boom"}]
    (row,) = aggregate(runs, "budget")
    assert row["seeds"] == [0, 1, 2] and row["errors"] == ["seed 3: error: boom"]
    assert math.isclose(row["knn_mean"], 0.6) and math.isclose(row["knn_std"], 0.1)  # sqrt(0.02 / 2)
    assert math.isclose(row["linear_mean"], 0.67) and math.isclose(row["linear_std"], math.sqrt(0.0054 / 2))
    assert math.isclose(row["random_knn"], 0.41)  # baselines: means of the same runs
    assert row["beats_random_knn"] and row["beats_pixels_linear"]  # 0.6 > 0.41, 0.67 > 0.62
    assert row["val_curve"] == [[2, 0.3], [4, 0.6]]


def test_linear_beating_pixels_and_one_seed_rows():
    (row,) = aggregate([_run("rotation", 0, 0.3, 0.7)], "b")
    assert row["knn_std"] is None and row["beats_pixels_linear"] and not row["beats_random_knn"]
    table = markdown([row], "h")
    assert "| rotation | 0 | 0.3000 | 0.7000 |" in table and "**no**" in table


def test_plan_is_seed_major_with_three_seeds_for_the_compared_methods():
    assert len(COMPARED) == 9 and PROTOCOLS["fashion-mnist"]["seeds"] == 3
    assert plan(["vicreg", "rotation"], None, 3) == [(0, "rotation"), (0, "vicreg"), (1, "vicreg"), (2, "vicreg")]
    assert plan(["rotation"], "4,5", 3) == [(4, "rotation"), (5, "rotation")]


def test_docs_table_is_replaced_between_its_markers_only(tmp_path):
    from benchmarks.methods import sync_docs

    doc = tmp_path / "methods.md"
    doc.write_text("intro\n<!-- table:methods-digits -->\nold | table\n<!-- /table:methods-digits -->\noutro\n")
    assert sync_docs(doc, "digits", "| new | table |\n")
    assert doc.read_text() == ("intro\n<!-- table:methods-digits -->\n| new | table |\n"
                               "<!-- /table:methods-digits -->\noutro\n")
    assert not sync_docs(doc, "fashion-mnist", "x")  # no markers for that protocol: the page is left alone
    assert "| new | table |" in doc.read_text()


def test_a_rows_own_settings_are_in_its_budget_and_under_the_table():
    own = ["model.depth=4", "model.patch_size=7"]
    rows = aggregate([_run("data2vec", 0, 0.5, 0.7, method_sets=own), _run("vicreg", 0, 0.6, 0.7)], "dataset=x")
    by = {r["method"]: r for r in rows}
    assert by["data2vec"]["budget"] == "dataset=x model.depth=4 model.patch_size=7"
    assert by["vicreg"]["budget"] == "dataset=x" and "method_sets" not in by["vicreg"]
    assert "data2vec: `model.depth=4 model.patch_size=7`" in markdown(rows, "h")
    # the shipped data2vec setting is a valid configuration (top_k within the smaller depth)
    assert "methods.data2vec.top_k=4" in PROTOCOLS["fashion-mnist"]["method_sets"]["data2vec"]


def test_fresh_measures_only_the_planned_pairs_again_and_keeps_the_rest():
    old = {"budget": "b", "runs": [_run("sela", 0, 0.7, 0.8), _run("vicreg", 0, 0.7, 0.8), _run("sela", 1, 0.7, 0.8)]}
    kept = kept_runs(old, "b", [(0, "sela")], fresh=True)
    assert [(r["method"], r["seed"]) for r in kept] == [("vicreg", 0), ("sela", 1)]
    assert len(kept_runs(old, "b", [(0, "sela")], fresh=False)) == 3
    assert kept_runs(old, "another budget", [(0, "sela")], fresh=False) == []
