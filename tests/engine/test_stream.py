"""The uncurated pretraining folder (``data.pretrain_root``): its manifest, the render step of the
Ray Data stream (corrupt files skipped and counted), the source that re-cuts the stream into
batches (never more than two batches of rows held), the config checks, and a real short Ray Train
pretraining on a generated folder of PNGs with corrupt files among them."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image
from uncurated_folder import CORRUPT, make_folder, png_bytes

from jem.config import ConfigError, defaults_dict, parse_config
from jem.data.stream import check_pretrain_root, count_files, stream_files, stream_manifest
from jem.engine.sources import StreamFeed, StreamViews
from jem.engine.stream import StreamSpec, render_batch
from jem.errors import DataError
from jem.sweep.space import set_dotted


def test_manifest_counts_and_hashes_without_decoding(tmp_path):
    root = make_folder(tmp_path / "raw", 10)
    expected = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".png", ".jpg")
                      and not p.name.startswith("."))
    assert len(expected) == 10 + len(CORRUPT)
    m = stream_manifest(str(root))
    assert m["files"] == count_files(str(root)) == len(expected)
    assert m["bytes"] == sum(p.stat().st_size for p in expected)
    assert sorted(stream_files(str(root))) == [str(p) for p in expected]
    (root / "part2" / "new.webp").write_bytes(b"x")
    m2 = stream_manifest(str(root))
    assert (m2["files"], m2["bytes"]) == (m["files"] + 1, m["bytes"] + 1)
    assert m2["list_sha256"] != m["list_sha256"]
    os.utime(root / "part2" / "new.webp", ns=(1, 1))  # same names and sizes, one file edited
    assert stream_manifest(str(root))["list_sha256"] != m2["list_sha256"]


def test_check_pretrain_root_errors(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        check_pretrain_root(str(tmp_path / "missing"))
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="holds no image file"):
        check_pretrain_root(str(tmp_path / "empty"))
    (tmp_path / "empty" / "sub" / "a" / "b").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "a" / "b" / "x.JPEG").write_bytes(b"")  # found by name, any depth, any case
    check_pretrain_root(str(tmp_path / "empty"))


def _spec(size: int = 16, channels: int = 3, n_global: int = 2, n_local: int = 1) -> StreamSpec:
    cfg = parse_config(defaults_dict())
    base = StreamSpec.for_run(cfg, size, channels)
    return StreamSpec(size, channels, n_global, n_local, 7, base.view_a, base.view_b, base.local)


def test_render_batch_skips_corrupt_files():
    rng = np.random.default_rng(1)
    good = png_bytes(rng)
    huge = io.BytesIO()
    Image.new("L", (3000, 2000), 128).save(huge, format="PNG")  # decoded, then resized to 16 px
    blobs = np.array([good, b"", good[:40], huge.getvalue(), b"GIF89a garbage"], dtype=object)
    out = render_batch({"bytes": blobs}, _spec())
    assert out["ok"].tolist() == [True, False, False, True, False]
    assert sorted(out) == ["g0", "g1", "l0", "ok"]
    for name, side in (("g0", 16), ("g1", 16), ("l0", 7)):
        assert out[name].shape == (5, side, side, 3) and out[name].dtype == np.uint8
        assert not out[name][~out["ok"]].any()  # bad rows: zeros
    grey = out["g0"][3].astype(int)  # a uniform grey image stays near-grey through crop/jitter/blur
    assert grey.std() < 40 and grey.mean() > 20


class _Feed:
    """A stand-in for a worker's dataset shard: ``parts`` dicts replayed on every pass."""

    def __init__(self, parts: list[dict[str, np.ndarray]]) -> None:
        self.parts = parts

    def __call__(self, n: int):
        for p in self.parts:
            assert len(p["ok"]) <= n
            yield p


def _part(rows: int, bad: list[int], start: int) -> dict[str, np.ndarray]:
    ok = np.ones(rows, dtype=bool)
    ok[bad] = False
    ids = np.arange(start, start + rows, dtype=np.uint8)
    return {"ok": ok, "idx": 1000 + np.arange(start, start + rows),  # file indices: 1000 + the view value
            "g0": np.broadcast_to(ids[:, None, None, None], (rows, 4, 4, 1)).copy(),
            "g1": np.broadcast_to(ids[:, None, None, None], (rows, 4, 4, 1)).copy() + 100}


def test_stream_views_recuts_exact_batches_and_holds_at_most_two():
    batch = 8
    sizes, bads = [8, 8, 3, 8, 8, 8, 5], [[0], [], [1, 2], [7], [], [2, 3, 4], []]
    parts, start = [], 0
    for n, bad in zip(sizes, bads):
        parts.append(_part(n, bad, start))
        start += n
    good_ids = [i for p in parts for i, ok in zip(p["g0"][:, 0, 0, 0], p["ok"]) if ok]
    src = StreamViews(StreamFeed(_Feed(parts), files=sum(sizes), columns=("g0", "g1"), size=4, channels=1,
                                 stats={"mean": [0.0], "std": [1.0]}), 1, 4,
                      torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), torch.device("cpu"))
    for _ in range(2):  # every pass is the whole stream again
        got_idx = list(src.epoch(batch))
        got = [arrays for _, arrays in got_idx]
        assert [len(a) for b in got for a in b] == [batch] * (2 * len(got))
        assert len(got) == len(good_ids) // batch  # 41 good rows -> 5 full batches, 1 row dropped
        flat = [int(v) for b in got for v in b[0][:, 0, 0, 0]]
        assert flat == good_ids[: len(flat)]  # order kept, bad rows gone
        assert all((b[1] == b[0] + 100).all() for b in got)  # the columns stay row-aligned
        for idx, arrays in got_idx:  # each batch's file indices are its rows' own
            assert idx.dtype == np.int64 and idx.tolist() == (1000 + arrays[0][:, 0, 0, 0].astype(int)).tolist()
        assert src.skipped == sum(len(b) for b in bads) == 7
        assert src.delivered == 5 * batch
        assert src.max_rows_held < 2 * batch  # never more than one incoming batch + a partial one
    views = src.to_views(got[0])
    assert len(views) == 2 and views[0].shape == (batch, 1, 4, 4) and views[0].dtype == torch.float32


def test_config_refuses_methods_that_need_the_whole_set(tmp_path):
    base = {"data.pretrain_root": str(tmp_path)}
    for method in ("simclr", "deepcluster", "deepercluster"):  # clustering methods get the feature pass
        parse_config(set_dotted(defaults_dict(), {**base, "method": method}))
    for method in ("sela", "npid"):
        with pytest.raises(ConfigError, match=f"^method {method} needs the whole training set"):
            parse_config(set_dotted(defaults_dict(), {**base, "method": method}))


def test_preflight_checks_the_folder(tmp_path):
    from jem.preflight import check_run

    root = make_folder(tmp_path / "raw", 5)
    sets = {"data.pretrain_root": str(root), "train.batch_size": 8, "ray.num_cpus": 2}
    check_run(parse_config(set_dotted(defaults_dict(), sets)))
    check_run(parse_config(set_dotted(defaults_dict(), {**sets, "method": "deepercluster"})))  # streams now
    with pytest.raises(ConfigError, match="exceeds the 8 image files"):
        check_run(parse_config(set_dotted(defaults_dict(), {**sets, "train.batch_size": 9})))
    with pytest.raises(DataError, match="is not a folder"):
        check_run(parse_config(set_dotted(defaults_dict(), {**sets, "data.pretrain_root": str(tmp_path / "no")})))


N_GOOD, BATCH, EPOCHS = 200, 32, 2


@pytest.mark.e2e
def test_pretrain_on_stream_counts_corrupt_files(tmp_path):
    """A real Ray Train run (1 worker, a local Ray instance) on 200 PNGs + 3 corrupt files, evaluated
    shape-wise on digits (8 px, one channel: the stream is decoded to that)."""
    import json

    from jem.augment.cache import build_view_cache
    from jem.engine.run import pretrain
    from jem.prepare import prepare

    root = make_folder(tmp_path / "raw", N_GOOD)

    raw = set_dotted(defaults_dict(), {"data.pretrain_root": str(root), "train.epochs": EPOCHS,
                                       "train.batch_size": BATCH, "train.warmup_epochs": 0,
                                       "eval.monitor_every": 0, "ray.num_cpus": 2, "ray.log_to_driver": False})
    cfg = parse_config(raw)
    prepared, views = tmp_path / "prepared", tmp_path / "views"
    prepared.mkdir()
    prepare(cfg, prepared)
    build_view_cache(np.load(prepared / "train_x.npy", mmap_mode="r"), cfg.augment, views, cfg.seed, progress=False)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(stream_manifest(str(root))))
    out = tmp_path / "run"
    summary = pretrain(cfg, raw, prepared, views, out / "encoder", None, str(out / "ray"), progress=False,
                       stream_manifest=manifest)
    assert summary["stream_files"] == N_GOOD + len(CORRUPT)
    assert summary["skipped_files"] == len(CORRUPT)
    assert summary["stream_images"] == (N_GOOD // BATCH) * BATCH  # one pass, the last partial batch dropped
    assert summary["steps_per_epoch"] == (N_GOOD + len(CORRUPT)) // BATCH
    assert summary["stream_max_rows_held"] < 2 * BATCH
    assert (out / "encoder" / "encoder.safetensors").is_file()
    assert np.isfinite(summary["final_loss"])
    (root / "part0" / "extra.png").write_bytes(png_bytes(np.random.default_rng(3)))  # the folder changed
    with pytest.raises(DataError, match="changed since the stream stage"):
        pretrain(cfg, raw, prepared, views, out / "encoder2", None, str(out / "ray"), progress=False,
                 stream_manifest=manifest)


def test_local_instance_keeps_a_cpu_for_the_stream():
    from jem.engine.run import _check_stream_cpus
    from jem.errors import RayUnavailable

    sets = {"data.pretrain_root": "/raw", "ray.num_cpus": 2, "train.cpus_per_worker": 1.0}
    _check_stream_cpus(parse_config(set_dotted(defaults_dict(), {**sets, "train.workers": 1})))
    with pytest.raises(RayUnavailable, match="needs 1 CPU beside train.workers=2"):
        _check_stream_cpus(parse_config(set_dotted(defaults_dict(), {**sets, "train.workers": 2})))
