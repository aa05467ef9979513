"""The throughput benchmark end to end on a tiny setting (no timing assertions), and the reference
pipeline's views. (No __init__.py here: a package named ``benchmarks`` would shadow the real one.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `benchmarks`

from benchmarks import run  # noqa: E402
from benchmarks.reference import reference_loader, reference_transforms  # noqa: E402
from jem.config import AugmentConfig, MultiCropConfig  # noqa: E402


def test_benchmark_writes_json_and_table_with_ratios(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    threads = torch.get_num_threads()
    try:
        result = run.main(["--dataset", "digits", "--max-train", "200", "--methods", "vicreg,no-such-method",
                           "--steps", "2", "--warmup", "1", "--repeats", "1", "--batch-size", "32",
                           "--loader-workers", "1", "--threads", "1", "--device", "cpu",
                           "--set", "model.width=4", "--set", "model.projector=[16,16]", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)  # main() sets the process's threads
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert {"command", "machine", "settings", "cache", "results"} <= set(saved)
    assert saved["settings"]["pipelines"] == ["jem-cache", "jem-device", "reference"]
    assert saved["settings"]["gflop_per_view"] > 0 and saved["cache"]["build_s"] > 0
    ok, failed = saved["results"]
    assert ok["method"] == "vicreg" and ok["error"] is None
    assert set(ok["pipelines"]) == {"jem-cache", "jem-device", "reference"}
    for entry in ok["pipelines"].values():
        assert entry["views_per_s"] > 0 and len(entry["rounds"]) == 1 and entry["peak_rss_mb"] > 0
        assert entry["views_per_step"] == 2 and entry["cpu_ms_per_view"] > 0 and entry["pss_mb"] > 0
    for ratios in (ok["ratio"], ok["paired_ratio"], ok["cpu_cost_ratio"]):
        assert set(ratios) == {"jem-cache", "jem-device"} and all(r > 0 for r in ratios.values())
    assert failed["method"] == "no-such-method" and "not registered" in failed["error"]
    table = out.with_suffix(".md").read_text()
    assert "| vicreg | jem-cache |" in table and "| vicreg | reference |" in table and "failed" in table


def test_reference_views_match_jem_shapes_and_normalisation() -> None:
    aug = AugmentConfig(multicrop=MultiCropConfig(local_crops=2))
    images = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 3), dtype=np.uint8)
    assert len(reference_transforms(aug, 12, 2, 2, [0.5] * 3, [0.25] * 3)) == 4
    loader = reference_loader(images, aug, 2, 2, [0.5] * 3, [0.25] * 3, batch_size=8, num_workers=0)
    views, idx = next(iter(loader))
    assert [tuple(v.shape) for v in views] == [(8, 3, 12, 12)] * 2 + [(8, 3, 5, 5)] * 2
    assert idx.shape == (8,) and len(loader) == 2
    for v in views:
        assert v.dtype == torch.float32
        pixels = v * 0.25 + 0.5
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_parity_command_trains_every_pipeline_and_scores_knn(tmp_path: Path) -> None:
    from benchmarks import parity

    out = tmp_path / "parity"
    threads = torch.get_num_threads()
    try:
        result = parity.main(["--dataset", "digits", "--max-train", "160", "--epochs", "1", "--threads", "1",
                              "--loader-workers", "1", "--set", "train.batch_size=32", "--set", "model.width=4",
                              "--set", "model.projector=[16,16]", "--jem-set", "train.precision=bf16",
                              "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    # --jem-set reaches the jem pipelines only: the reference trains as --set says (fp32 on CPU)
    assert [r["bf16"] for r in result["runs"]] == [True, True, False]
    assert json.loads(out.with_suffix(".json").read_text())["summary"] == result["summary"]
    assert [r["pipeline"] for r in result["runs"]] == ["jem-cache", "jem-device", "reference"]
    assert all(r["steps"] == 5 and 0.0 < r["knn_top1"] <= 1.0 for r in result["runs"])
    assert result["summary"]["reference"]["minus_reference_points"] == 0.0
    assert 0.5 < result["raw_pixels_knn_top1"] <= 1.0
    assert "| jem-cache |" in out.with_suffix(".md").read_text()
