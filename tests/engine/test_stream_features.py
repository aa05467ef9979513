"""File indices on the ``data.pretrain_root`` stream and the epoch-start feature pass of the
clustering methods: the index column (position in the manifest's file list), the features of the
folder's files in file-index order on one and on two workers (a real 2-process gloo group), and
DeeperCluster training a few steps on a stream in this process (the stream's own decode and render
functions, fed without Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from dist_harness import run_workers
from PIL import Image
from uncurated_folder import CORRUPT, local_feed, make_folder

from jem.config import defaults_dict, parse_config
from jem.data.stream import stream_files
from jem.dist import current_comm
from jem.engine.sources import StreamViews
from jem.engine.stream import FileIndex, StreamSpec, decode_batch, render_batch
from jem.methods.base import EpochData
from jem.methods.deepcluster import all_features, embed_all
from jem.sweep.space import set_dotted

SIZE, CHANNELS = 8, 1
STATS = {"mean": [0.25], "std": [0.5]}


def _spec(n_global: int = 1) -> StreamSpec:
    base = StreamSpec.for_run(parse_config(defaults_dict()), SIZE, CHANNELS)
    return StreamSpec(SIZE, CHANNELS, n_global, 0, 4, base.view_a, base.view_b, base.local)


def _expected_pixels(path: str) -> np.ndarray | None:
    """The file as the feature pass must see it, decoded here with PIL directly: greyscale, bilinear
    to 8 px, normalised; None for a file PIL cannot read."""
    try:
        with Image.open(path) as img:
            a = np.asarray(img.convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.float32)
    except Exception:  # noqa: BLE001 - any unreadable file
        return None
    return ((a / 255.0 - STATS["mean"][0]) / STATS["std"][0]).reshape(-1)


def test_file_index_is_the_position_in_the_manifest_list(tmp_path):
    files = stream_files(str(make_folder(tmp_path / "raw", 40)))
    index = FileIndex(files)
    order = np.random.default_rng(0).permutation(len(files))
    assert index.lookup([files[i] for i in order]).tolist() == order.tolist()
    with pytest.raises(ValueError, match="not in its file list"):
        index.lookup([files[0], str(tmp_path / "elsewhere.png")])
    with pytest.raises(ValueError, match="twice"):
        FileIndex(files + files[:1])


def test_rows_carry_their_file_index(tmp_path):
    files = stream_files(str(make_folder(tmp_path / "raw", 12)))
    pick = [7, 0, 14, 3, 11]  # out of order, with corrupt files among them
    batch = {"bytes": np.array([Path(files[i]).read_bytes() for i in pick], dtype=object),
             "path": np.array([files[i] for i in pick], dtype=object)}
    index = FileIndex(files)
    views = render_batch(batch, _spec(2), index)
    plain = decode_batch(batch, _spec(), index)
    for out in (views, plain):
        assert out["idx"].dtype == np.int64 and out["idx"].tolist() == pick
        assert out["ok"].tolist() == [_expected_pixels(files[i]) is not None for i in pick]
    assert sorted(plain) == ["idx", "ok", "x"] and plain["x"].shape == (5, SIZE, SIZE, CHANNELS)
    for row, i in enumerate(pick):  # the whole image, no random view
        want = _expected_pixels(files[i])
        if want is not None:
            got = (plain["x"][row].reshape(-1) / 255.0 - 0.25) / 0.5
            np.testing.assert_allclose(got, want, atol=1e-6)
    assert "idx" not in render_batch({"bytes": batch["bytes"]}, _spec())  # no index: no column (benchmarks)


def _pass_data(root: Path, rank: int, world: int) -> EpochData:
    src = StreamViews(local_feed(root, _spec(), STATS, rank, world), CHANNELS, SIZE, torch.zeros(1, 1, 1, 1),
                      torch.ones(1, 1, 1, 1), torch.device("cpu"))
    return EpochData(0, np.zeros((0, SIZE, SIZE, CHANNELS), np.uint8), STATS["mean"], STATS["std"],
                     torch.device("cpu"), current_comm(), 1, stream_files=src.num_images, stream=src.image_batches)


def _features_on_rank(rank: int, world: int, root: str) -> tuple[list[list[float]], list[bool]]:
    feats, ok = embed_all(lambda x: x.flatten(1), _pass_data(Path(root), rank, world), batch=16)
    return feats.tolist(), ok.tolist()


def test_feature_pass_is_in_file_index_order_on_one_and_two_workers(tmp_path):
    root = make_folder(tmp_path / "raw", 70)  # 73 files: 3 blocks of 32 rows, split 2 + 1 over two workers
    files = stream_files(str(root))
    expected = [_expected_pixels(f) for f in files]
    assert sum(e is None for e in expected) == len(CORRUPT)
    one = _features_on_rank(0, 1, str(root))
    two = run_workers(_features_on_rank, 2, str(root))
    for feats, ok in (one, *two):
        assert ok == [e is not None for e in expected]
        for row, want in zip(feats, expected):
            if want is None:
                assert not any(row)  # zeros for a file that did not decode
            else:
                np.testing.assert_allclose(row, want, atol=1e-6)
    assert two[0] == two[1]  # every worker ends with the same matrix


def test_all_features_refuses_a_stream_with_undecodable_files(tmp_path):
    with pytest.raises(ValueError, match=f"^{len(CORRUPT)} of the {20 + len(CORRUPT)} files"):
        all_features(lambda x: x.flatten(1), _pass_data(make_folder(tmp_path / "raw", 20), 0, 1))


def test_epoch_data_on_the_view_cache_path_is_unchanged():
    images = np.arange(5 * 2 * 2 * 1, dtype=np.uint8).reshape(5, 2, 2, 1)

    class Rank:  # worker 1 of 2: images 3, 4 and the last one repeated
        rank, world_size, gather_nograd = 1, 2, staticmethod(lambda x: x)

    data = EpochData(0, images, [0.0], [1.0], torch.device("cpu"), Rank())  # type: ignore[arg-type]
    got = list(data.image_batches(2))
    assert [idx.tolist() for idx, _ in got] == [[3, 4], [4]]
    assert all((x == images[idx]).all() for idx, x in got)
    assert data.num_images == 5


def test_deepercluster_trains_on_a_stream(tmp_path):
    """Two epochs of the engine's own stream loop, one worker, in this process: the first clusters
    the folder's decoded files (the corrupt ones left out, with label -1), every step classifies
    the batch's files by their indices."""
    from jem.engine.loop import run_stream_epoch, setup

    root = make_folder(tmp_path / "raw", 64)
    files = stream_files(str(root))
    raw = set_dotted(defaults_dict(), {
        "method": "deepercluster", "data.pretrain_root": str(root), "train.batch_size": 16, "train.epochs": 2,
        "train.warmup_epochs": 0, "methods.deepercluster.super_clusters": 2, "methods.deepercluster.sub_clusters": 3,
        "methods.deepercluster.pca_dim": 8, "methods.deepercluster.recluster_every": 1})
    cfg = parse_config(raw)
    feed = local_feed(root, StreamSpec.for_run(cfg, SIZE, CHANNELS), STATS)
    w = setup(cfg, 0, 1, tmp_path / "no-prepared", tmp_path / "no-views", feed)

    class Quiet:
        def step(self) -> None:
            pass

    rows = [run_stream_epoch(w, w.source, e, Quiet()) for e in range(2)]  # type: ignore[arg-type]
    method = w.method
    bad = [i for i, f in enumerate(files) if _expected_pixels(f) is None]
    assert method.super_labels is not None and method.super_labels.numel() == len(files)
    assert sorted(torch.nonzero(method.super_labels < 0).squeeze(1).tolist()) == bad
    assert method.weights is not None and method.weights[bad].eq(0).all()
    good = method.super_labels >= 0
    assert set(method.super_labels[good].tolist()) <= {0, 1} and set(method.sub_labels[good].tolist()) <= {0, 1, 2}
    for row in rows:
        assert row["steps"] == 64 // 16 and row["skipped_files"] == len(CORRUPT) and np.isfinite(row["loss"])
    assert rows[0]["loss"] < np.log(4 * 2) + np.log(3) + 0.5  # near-uniform heads: about ln 8 + ln 3

