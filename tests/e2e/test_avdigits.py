"""End to end on the audio-visual set: `dvc exp run --temp -S dataset=av-digits -S method=avid_cma`
on the shared FSDD copy (real DVC, real Ray Train, the e2e fixture's 3-epoch budget with CMA from
epoch 1), then `dvc exp show --json`: the audio-visual metrics reach eval.json, the exported
encoder folder holds the audio encoder, and an unreadable recording stops the run before compute."""

import json
import shutil

import pytest
from e2e_util import _flat, _sh
from requirements_util import fsdd_recordings, require_fsdd

pytestmark = pytest.mark.e2e

FSDD = fsdd_recordings()
AV_KEYS = ["audio.knn.top1", "audio.linear.top1", "raw.audio.knn.top1", "random_init.audio.knn.top1",
           "random_init.audio.linear.top1"] + [f"{p}xmodal.{d}.r{k}" for p in ("", "random_init.")
                                               for d in ("a2v", "v2a") for k in (1, 5)]


def _eval_metrics(repo, method):
    """metrics/eval.json of the experiment that ran ``method`` (from `dvc exp show --json`)."""
    rows = json.loads(_sh(["dvc", "exp", "show", "--json"], repo).stdout)
    for row in rows:
        for r in [row] + [r for e in (row.get("experiments") or []) for r in e["revs"]]:
            data = r.get("data") or {}
            if r.get("rev") != "workspace" and data.get("params", {}).get("params.yaml", {}).get(
                    "data", {}).get("method") == method:
                return _flat(data["metrics"]["metrics/eval.json"]["data"])
    raise AssertionError(f"no experiment of method {method} in dvc exp show")


def test_avid_cma_runs_end_to_end(repo, tmp_path):
    require_fsdd()
    _sh(["dvc", "exp", "run", "--temp", "-S", "dataset=av-digits", "-S", "method=avid_cma",
                "-S", f"data.audio_root={FSDD}", "-S", "methods.avid_cma.warmup_epochs=1"], repo)
    ev = _eval_metrics(repo, "avid_cma")
    for key in AV_KEYS + ["knn.top1", "random_init.knn.top1"]:
        assert 0.0 <= ev[key] <= 1.0, key
    assert ev["raw.audio.knn.top1"] > 0.5  # spoken digits are far from chance (0.1) before any learning
    for d in ("a2v", "v2a"):
        assert ev[f"xmodal.{d}.r1"] <= ev[f"xmodal.{d}.r5"]


def test_a_stereo_recording_stops_the_run_before_compute(repo, tmp_path):
    require_fsdd()
    rec = tmp_path / "recordings"
    shutil.copytree(FSDD, rec)
    bad = rec / "5_theo_12.wav"
    data = bytearray(bad.read_bytes())
    data[22] = 2  # the header's channel count: stereo
    bad.write_bytes(bytes(data))
    proc = _sh(["dvc", "exp", "run", "--temp", "-S", "dataset=av-digits", "-S", "method=avid",
                "-S", f"data.audio_root={rec}"], repo, check=False)
    assert proc.returncode != 0
    assert f"error: audio file {bad} has 2 channels; expected mono (1 channel)" in proc.stdout + proc.stderr
