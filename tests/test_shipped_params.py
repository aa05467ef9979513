"""shipped_params_text: the index's params.yaml beats the working file, HEAD backs it up, and the
file on disk is used only outside a git checkout. And the shipped ``methods:`` section against the
method registry: one block per registered method, holding exactly its params dataclass defaults."""

import shutil
import subprocess

import pytest
import yaml
from shipped_params import ROOT, shipped_params_text

from jem.config import parse_config, to_dict
from jem.methods import registry

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

COMMITTED = "dataset: digits\nmethod: vicreg\n"
EXPERIMENT = "dataset: imagefolder\nmethod: vicreg\n"  # what `dvc exp run -S dataset=imagefolder` leaves
STAGED = "dataset: digits\nmethod: simclr\n"


def _git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True, text=True)


@needs_git
def test_index_wins_over_the_working_file_and_head_backs_it_up(tmp_path):
    _git("init", "-q", cwd=tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(COMMITTED)
    _git("add", "params.yaml", cwd=tmp_path)
    _git("commit", "-qm", "defaults", cwd=tmp_path)

    params.write_text(EXPERIMENT)  # unstaged, as an experiment leaves it
    assert shipped_params_text(tmp_path) == COMMITTED

    params.write_text(STAGED)
    _git("add", "params.yaml", cwd=tmp_path)  # a deliberate new default, staged
    params.write_text(EXPERIMENT)
    assert shipped_params_text(tmp_path) == STAGED

    _git("rm", "-q", "-f", "--cached", "params.yaml", cwd=tmp_path)  # not in the index: HEAD's version
    assert shipped_params_text(tmp_path) == COMMITTED


@needs_git
def test_fresh_repo_without_commit_or_index_entry_reads_the_file(tmp_path):
    _git("init", "-q", cwd=tmp_path)
    (tmp_path / "params.yaml").write_text(EXPERIMENT)
    assert shipped_params_text(tmp_path) == EXPERIMENT


@needs_git
def test_not_a_checkout_reads_the_file(tmp_path):
    (tmp_path / "params.yaml").write_text(EXPERIMENT)
    assert shipped_params_text(tmp_path) == EXPERIMENT


@needs_git
def test_a_folder_inside_another_repo_reads_its_own_file(tmp_path):
    """An unpacked tarball inside some other git checkout must not pick up that repo's params.yaml."""
    _git("init", "-q", cwd=tmp_path)
    (tmp_path / "params.yaml").write_text(COMMITTED)
    _git("add", "params.yaml", cwd=tmp_path)
    _git("commit", "-qm", "outer", cwd=tmp_path)
    inner = tmp_path / "unpacked"
    inner.mkdir()
    (inner / "params.yaml").write_text(EXPERIMENT)
    assert shipped_params_text(inner) == EXPERIMENT


@needs_git
def test_default_root_is_this_repository():
    text = shipped_params_text()
    assert text.startswith("# jem params")
    if (ROOT / ".git").exists():
        staged = subprocess.run(["git", "show", ":params.yaml"], cwd=ROOT, capture_output=True, text=True)
        if staged.returncode == 0:
            assert text == staged.stdout


def test_shipped_methods_section_matches_the_registry():
    """No registered method without a block in params.yaml, no block without a method, and no drift:
    each block lists every field of the method's params dataclass with its default value."""
    shipped = yaml.safe_load(shipped_params_text())["methods"]
    specs = registry()
    assert not sorted(set(specs) - set(shipped)), "registered methods without a methods.<name> block in params.yaml"
    assert not sorted(set(shipped) - set(specs)), "methods.<name> blocks in params.yaml without a registered method"
    for name, spec in specs.items():
        defaults = to_dict(spec.params())
        block = shipped[name] or {}
        assert list(block) == list(defaults), f"methods.{name}: params.yaml keys differ from {spec.params.__name__}'s fields"
        parsed = parse_config({"methods": {name: block}}).methods[name]  # YAML values, typed as the schema reads them
        assert parsed == spec.params(), (f"methods.{name}: params.yaml {to_dict(parsed)} != "
                                         f"{spec.params.__name__} defaults {defaults}")
