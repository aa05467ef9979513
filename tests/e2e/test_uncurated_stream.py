"""The uncurated stream end to end: a real `dvc repro` of the pretrain stage with
`data.pretrain_root` set to a generated folder of 200 PNGs and 3 corrupt files (zero-byte,
truncated, not an image), in a temp git repo with a real local Ray. The corrupt files are counted in
metrics/pretrain-full.json; a second `dvc repro` re-runs only the (always_changed) stream stage and
skips pretraining; adding one image changes the manifest and re-runs pretraining."""

import json
import shutil

import numpy as np
import pytest
import yaml
from e2e_util import ROOT, _sh, _tracked_files, use_shipped_params
from uncurated_folder import CORRUPT, make_folder, png_bytes

pytestmark = pytest.mark.e2e
N_GOOD = 200


def test_dvc_repro_streams_counts_corrupt_files_and_reruns_on_change(tmp_path):
    repo = tmp_path / "repo"
    for rel in _tracked_files():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, repo / rel)
    use_shipped_params(repo)
    root = make_folder(tmp_path / "raw photos", N_GOOD)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["pretrain_root"] = str(root)
    params["train"].update(epochs=2, batch_size=32, warmup_epochs=0)
    params["eval"]["monitor_every"] = 0
    params["ray"].update(num_cpus=2, log_to_driver=False)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _sh(["git", "init", "-q"], repo)

    _sh(["dvc", "repro", "pretrain"], repo)
    manifest = json.loads((repo / "data" / "stream" / "manifest.json").read_text())
    assert manifest["files"] == N_GOOD + len(CORRUPT)
    full = json.loads((repo / "metrics" / "pretrain-full.json").read_text())
    assert full["skipped_files"] == len(CORRUPT)
    assert full["stream_files"] == N_GOOD + len(CORRUPT)
    assert full["stream_images"] == (N_GOOD // 32) * 32
    assert np.isfinite(full["final_loss"])

    out = _sh(["dvc", "repro", "pretrain"], repo)
    text = out.stdout + out.stderr
    assert "Running stage 'stream'" in text
    assert "Stage 'pretrain' didn't change, skipping" in text

    (root / "part2" / "one more.png").write_bytes(png_bytes(np.random.default_rng(7)))
    out = _sh(["dvc", "repro", "pretrain"], repo)
    assert "Running stage 'pretrain'" in out.stdout + out.stderr
    assert json.loads((repo / "metrics" / "pretrain-full.json").read_text())["stream_files"] == N_GOOD + 4
