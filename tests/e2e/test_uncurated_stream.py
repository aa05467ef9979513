"""The uncurated stream end to end: a real `dvc repro` of the pretrain stage with
`data.pretrain_root` set to a generated folder of 200 PNGs and 3 corrupt files (zero-byte,
truncated, not an image), in a temp git repo with a real local Ray. The corrupt files are counted in
metrics/pretrain-full.json; a second `dvc repro` re-runs only the (always_changed) stream stage and
skips pretraining; adding one image changes the manifest and re-runs pretraining."""

import json
import shutil
from pathlib import Path

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


def test_two_node_cluster_trains_on_the_stream(tmp_path):
    """One Ray Train worker on each node of a 2-node ``ray.cluster_utils`` cluster (2 logical CPUs
    each: one for the worker, one for the stream's tasks), training DeeperCluster. The files are
    read by tasks pinned to the driver's (head) node; both workers get their views and the feature
    pass of the clustering (the ``features`` dataset) through ``get_dataset_shard``, every corrupt
    file is counted once over the two shares (the run's checkpoints are removed after it, so the
    pseudo-labels are checked in tests/engine/test_stream_features.py)."""
    from ray._common.utils import get_ray_address_file
    from ray.cluster_utils import Cluster

    from jem.augment.cache import build_view_cache
    from jem.config import defaults_dict, parse_config
    from jem.engine.run import pretrain
    from jem.prepare import prepare
    from jem.sweep.space import set_dotted

    root = make_folder(tmp_path / "raw", N_GOOD)
    address_file = Path(get_ray_address_file(None))
    before = address_file.read_text() if address_file.exists() else None
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    if before is None:  # Cluster() advertises itself machine-wide as "the current cluster"; undo that
        address_file.unlink(missing_ok=True)
    else:
        address_file.write_text(before)
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        raw = set_dotted(defaults_dict(), {
            "data.pretrain_root": str(root), "train.epochs": 2, "train.batch_size": 32, "train.workers": 2,
            "method": "deepercluster", "methods.deepercluster.recluster_every": 1,
            "train.warmup_epochs": 0, "eval.monitor_every": 0, "ray.log_to_driver": False,
            "ray.address": cluster.address, "ray.placement_strategy": "SPREAD"})
        cfg = parse_config(raw)
        prepared, views = tmp_path / "prepared", tmp_path / "views"
        prepared.mkdir()
        prepare(cfg, prepared)
        build_view_cache(np.load(prepared / "train_x.npy", mmap_mode="r"), cfg.augment, views, cfg.seed,
                         progress=False)
        summary = pretrain(cfg, raw, prepared, views, tmp_path / "encoder", None, str(tmp_path / "ray"),
                           progress=False)
    finally:
        cluster.shutdown()
    assert summary["workers"] == 2 and summary["nodes"] == 2
    assert summary["replica_param_spread"] == 0.0
    assert summary["skipped_files"] == len(CORRUPT)  # summed over both workers' shares: each file once
    assert summary["stream_files"] == N_GOOD + len(CORRUPT)
    assert 0 < summary["stream_images"] <= N_GOOD and summary["stream_images"] % 32 == 0
    assert np.isfinite(summary["final_loss"])


def test_ray_stream_rows_carry_their_manifest_index(tmp_path):
    """Both datasets of a real local Ray Data stream (views and the feature pass): every file of the
    manifest comes out once with its position in the list as ``idx``; exactly the corrupt files
    have ``ok`` False; the feature pass's ``x`` is the file decoded whole."""
    from jem.config import defaults_dict, parse_config
    from jem.data.imagefolder import read_image
    from jem.data.stream import stream_files
    from jem.engine.session import ray_session
    from jem.engine.stream import StreamSpec, build_stream
    from jem.sweep.space import set_dotted

    root = make_folder(tmp_path / "raw", 40)
    files = stream_files(str(root))
    cfg = parse_config(set_dotted(defaults_dict(), {"method": "deepercluster", "ray.num_cpus": 2,
                                                    "ray.log_to_driver": False}))
    with ray_session(cfg.ray):
        datasets = build_stream(files, StreamSpec.for_run(cfg, 8, 1), features=True)
        rows = {name: [b for b in ds.iter_batches(batch_size=16, batch_format="numpy")]
                for name, ds in datasets.items()}
    assert sorted(rows) == ["features", "train"]
    corrupt = sorted(i for i, f in enumerate(files) if Path(f).name in CORRUPT)
    for batches in rows.values():
        idx = np.concatenate([b["idx"] for b in batches])
        ok = np.concatenate([b["ok"] for b in batches])
        assert sorted(idx.tolist()) == list(range(len(files)))
        assert sorted(idx[~ok].tolist()) == corrupt
    for b in rows["features"]:
        for i, good, x in zip(b["idx"], b["ok"], b["x"]):
            if good:
                assert (x == read_image(files[int(i)], 8, 1)).all()
