"""shipped_params_text: the index's params.yaml beats the working file, HEAD backs it up, and the
file on disk is used only outside a git checkout."""

import shutil
import subprocess

import pytest
from shipped_params import ROOT, shipped_params_text

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

COMMITTED = "dataset: digits\nmethod: vicreg\n"
EXPERIMENT = "dataset: imagefolder\nmethod: vicreg\n"  # what `dvc exp run -S dataset=imagefolder` leaves
STAGED = "dataset: digits\nmethod: simclr\n"


def _git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True, text=True)


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


def test_fresh_repo_without_commit_or_index_entry_reads_the_file(tmp_path):
    _git("init", "-q", cwd=tmp_path)
    (tmp_path / "params.yaml").write_text(EXPERIMENT)
    assert shipped_params_text(tmp_path) == EXPERIMENT


def test_not_a_checkout_reads_the_file(tmp_path):
    (tmp_path / "params.yaml").write_text(EXPERIMENT)
    assert shipped_params_text(tmp_path) == EXPERIMENT


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


def test_default_root_is_this_repository():
    text = shipped_params_text()
    assert text.startswith("# jem params")
    if (ROOT / ".git").exists():
        staged = subprocess.run(["git", "show", ":params.yaml"], cwd=ROOT, capture_output=True, text=True)
        if staged.returncode == 0:
            assert text == staged.stdout
