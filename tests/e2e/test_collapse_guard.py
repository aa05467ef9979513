"""Collapse guard, end to end: VICReg with its variance and covariance weights at 0 is invariance
only, whose global minimum is a constant output (VICReg paper, section 4.4 and table 7: without
the variance term the run collapses). A real `dvc repro` of that broken configuration must be
flagged by the collapse diagnostic in `metrics/eval.json`. The healthy default is checked not to be
flagged in `test_report_browser.py::test_repro_report_has_every_element`."""

import json
import shutil

import pytest
import yaml
from e2e_util import ROOT, _sh, _tracked_files, use_shipped_params

pytestmark = pytest.mark.e2e


def test_vicreg_without_variance_and_covariance_is_flagged_collapsed(tmp_path):
    for rel in _tracked_files():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, tmp_path / rel)
    use_shipped_params(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["method"] == "vicreg"
    params["methods"]["vicreg"].update(var_weight=0.0, cov_weight=0.0)  # invariance only
    params["eval"]["semi_epochs"] = 1  # the diagnostic does not need the fine-tune
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _sh(["git", "init", "-q"], tmp_path)
    out = _sh(["dvc", "repro", "evaluate"], tmp_path)  # default budget: 30 epochs on digits

    metrics = json.loads((tmp_path / "metrics" / "eval-full.json").read_text())  # the diagnostics' details
    col = metrics["collapse"]
    assert col["collapsed"] == 1, col
    # the projector output is (nearly) constant: its per-dimension std of normalised embeddings is far
    # below 1/sqrt(D), and only about one direction is left (RankMe ~ 1)
    assert col["projector"]["std"] < 0.1 * col["projector"]["std_healthy"], col["projector"]
    assert col["projector"]["rankme"] < 2.0, col["projector"]
    assert "WARNING: collapsed" in out.stdout + out.stderr
