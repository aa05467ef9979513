"""The pretraining driver without a training run: run identity and storage resolution."""

from pathlib import Path

from jem.config import defaults_dict, parse_config
from jem.engine.run import resolve_storage, run_name
from jem.sweep.space import set_dotted

ROOT = Path(__file__).resolve().parents[2]


def _cfg(**sets):
    return parse_config(set_dotted(defaults_dict(), sets))


# ------------------------------------------------------------------------------------ run identity
def test_run_name_same_params_same_name_and_different_params_different_name():
    assert run_name(_cfg(), "data") == run_name(_cfg(), "data")
    names = {run_name(_cfg(), "data"), run_name(_cfg(**{"train.lr": 0.5}), "data"),
             run_name(_cfg(method="simclr"), "data"), run_name(_cfg(seed=1), "data"),
             run_name(_cfg(**{"methods.vicreg.inv_weight": 10.0}), "data"),
             run_name(_cfg(**{"train.workers": 2}), "data"), run_name(_cfg(), "other data")}
    assert len(names) == 7


def test_run_name_ignores_knobs_that_do_not_change_the_weights():
    """A killed run re-run with more retries, other checkpoint spacing, other CPUs or another Ray
    setup still resumes its own checkpoints."""
    base = run_name(_cfg(), "data")
    for sets in ({"train.max_failures": 3}, {"train.checkpoint_every": 1}, {"train.cpus_per_worker": 0.5},
                 {"ray.placement_strategy": "SPREAD"}, {"ray.address": "auto"}, {"eval.monitor_every": 1}):
        assert run_name(_cfg(**sets), "data") == base, sets


def test_resolve_storage(tmp_path):
    assert resolve_storage("", tmp_path) == str((tmp_path / ".jem" / "ray_results").resolve())
    assert resolve_storage("scratch/ray", tmp_path) == str((tmp_path / "scratch" / "ray").resolve())
    assert resolve_storage("/abs/ray", tmp_path) == "/abs/ray"
    assert resolve_storage("s3://bucket/jem", tmp_path) == "s3://bucket/jem"


def test_storage_default_is_git_ignored():
    assert "/.jem/" in (ROOT / ".gitignore").read_text().split()
