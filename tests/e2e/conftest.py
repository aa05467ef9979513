"""Shared end-to-end fixture: one copy of the repo in a temp git repo with a tiny budget and one
real `dvc repro` (real Ray Train), reused by every e2e module in the session. The copy runs on the
shipped params.yaml (git's index), not on what `dvc exp run -S ...` left in the working copy."""

import shutil

import pytest
import yaml
from e2e_util import ROOT, _sh, _tracked_files, git_commit_all, use_shipped_params


@pytest.fixture(scope="session")
def repo(tmp_path_factory):
    dst = tmp_path_factory.mktemp("jem-e2e")
    for rel in _tracked_files():
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst / rel)
    use_shipped_params(dst)  # not whatever an experiment left in the working params.yaml
    params = yaml.safe_load((dst / "params.yaml").read_text())
    text = (dst / "params.yaml").read_text()
    text = text.replace(f"  epochs: {params['train']['epochs']}\n", "  epochs: 3\n")
    text = text.replace(f"  semi_epochs: {params['eval']['semi_epochs']}\n", "  semi_epochs: 1\n")
    (dst / "params.yaml").write_text(text)
    git_commit_all(dst, "e2e baseline")
    return dst


@pytest.fixture(scope="session")
def baseline(repo):
    proc = _sh(["dvc", "repro"], repo)
    _sh(["git", "add", "-A"], repo)
    _sh(["git", "commit", "-qm", "baseline run"], repo)
    return proc


@pytest.fixture(scope="session")
def simclr_exp(repo, baseline):
    """`dvc exp run -S method=simclr` on top of the committed baseline run (once per session)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return _sh(["dvc", "exp", "run", "-S", "method=simclr"], repo), lock
