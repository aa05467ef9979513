"""The view cache: files and meta, determinism, chunk independence, atomicity, and the reader."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import jem.augment.cache as cache_mod
from jem.augment import ViewCache, build_view_cache, local_recipe, local_size
from jem.config import AugmentConfig, MultiCropConfig, ViewConfig

N, S = 300, 12  # N > 256 crosses a parameter block


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (N, S, S, 3), dtype=np.uint8)


CFG = AugmentConfig(views_per_image=3, multicrop=MultiCropConfig(local_crops=2))


@pytest.fixture(scope="module")
def built(images: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "views"
    build_view_cache(images, CFG, out, seed=3, chunk=1000, progress=False)
    return out


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_files_shapes_and_meta(built: Path) -> None:
    assert sorted(p.name for p in built.iterdir()) == ["global.npy", "local.npy", "meta.json"]
    glob, loc = np.load(built / "global.npy"), np.load(built / "local.npy")
    ls = round(S * 0.43)
    assert glob.dtype == np.uint8 and glob.shape == (N, 3, S, S, 3)
    assert loc.dtype == np.uint8 and loc.shape == (N, 2, ls, ls, 3)
    assert glob.std() > 10 and loc.std() > 10  # real images, not zeros
    assert json.loads((built / "meta.json").read_text()) == {
        "num_images": N, "views_per_image": 3, "size": S, "channels": 3, "local_crops": 2,
        "local_size": ls, "seed": 3, "version": 1,
        "sha256": {name: hashlib.sha256((built / name).read_bytes()).hexdigest() for name in ("global.npy", "local.npy")}}


def test_deterministic_and_chunk_independent(images: np.ndarray, built: Path, tmp_path: Path) -> None:
    ref = _bytes(built)
    for chunk in (37, 256, 1000):
        out = tmp_path / f"c{chunk}"
        build_view_cache(images, CFG, out, seed=3, chunk=chunk, progress=False)
        assert _bytes(out) == ref, chunk
    other = tmp_path / "seed4"
    build_view_cache(images, CFG, other, seed=4, progress=False)
    assert (other / "global.npy").read_bytes() != ref["global.npy"]
    assert (other / "local.npy").read_bytes() != ref["local.npy"]


_IDENTITY = dict(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], flip_p=0.0, jitter_p=0.0,
                 grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


def test_even_views_use_view_a_and_odd_views_view_b(images: np.ndarray, tmp_path: Path) -> None:
    cfg = AugmentConfig(views_per_image=4, view_a=ViewConfig(**_IDENTITY),
                        view_b=ViewConfig(**{**_IDENTITY, "solarize_p": 1.0}))
    build_view_cache(images[:20], cfg, tmp_path, seed=0, progress=False)
    glob = np.load(tmp_path / "global.npy")
    solarized = np.where(images[:20] >= 128, 255 - images[:20], images[:20])  # 1 - x where x >= 0.5
    for k in range(4):
        np.testing.assert_array_equal(glob[:, k], images[:20] if k % 2 == 0 else solarized)


def test_local_recipe_and_size() -> None:
    cfg = AugmentConfig(view_a=ViewConfig(hue=0.05, blur_p=1.0),
                        multicrop=MultiCropConfig(local_crops=4, local_scale=[0.1, 0.3]))
    rec = local_recipe(cfg)
    assert rec.blur_p == 0.5 and rec.crop_scale == [0.1, 0.3] and rec.hue == 0.05
    assert rec.solarize_p == cfg.view_a.solarize_p and rec.crop_ratio == cfg.view_a.crop_ratio
    assert local_size(cfg, 224) == 96 and local_size(cfg, 28) == 12 and local_size(cfg, 5) == 4
    sized = AugmentConfig(multicrop=MultiCropConfig(local_crops=1, local_size=10))
    assert local_size(sized, 224) == 10


def test_on_device_mode_writes_meta_only(images: np.ndarray, tmp_path: Path) -> None:
    meta = build_view_cache(images, AugmentConfig(views_per_image=0), tmp_path, seed=0, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"] and meta["views_per_image"] == 0
    vc = ViewCache(tmp_path)
    assert vc.globals is None and vc.locals is None and len(vc) == N
    with pytest.raises(ValueError, match="holds no views"):
        vc.pick_views(2, 4, np.random.default_rng(0))


def test_failed_build_leaves_old_cache_and_no_temp(images: np.ndarray, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    small = AugmentConfig(views_per_image=2)
    build_view_cache(images[:10], small, tmp_path, seed=0, progress=False)
    before = _bytes(tmp_path)
    (tmp_path / ".tmp-stale").mkdir()  # as left by a killed run

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed")

    monkeypatch.setattr(cache_mod, "apply_view", boom)
    with pytest.raises(RuntimeError, match="killed"):
        build_view_cache(images, small, tmp_path, seed=1, progress=False)
    assert _bytes(tmp_path) == before  # the old cache is untouched, no temp folder is left
    ViewCache(tmp_path)


def test_bad_input_is_rejected(images: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        build_view_cache(images.astype(np.float32), CFG, tmp_path, seed=0)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        build_view_cache(images[..., :2], CFG, tmp_path, seed=0)
    with pytest.raises(ValueError, match="chunk"):
        build_view_cache(images, CFG, tmp_path, seed=0, chunk=0)


# ------------------------------------------------------------------------------------- reader
def test_pick_views_pairs_are_one_even_one_odd(built: Path) -> None:
    vc = ViewCache(built)
    for k_views in (2, 3, 4, 5):
        vc.globals = np.zeros((1, k_views, 1, 1, 1), np.uint8)  # only the view count matters
        ids = vc.pick_views(2, 4000, np.random.default_rng(k_views))
        assert ids.shape == (4000, 2) and ids.dtype == np.int64
        assert ((ids >= 0) & (ids < k_views)).all()
        assert (ids[:, 0] % 2 != ids[:, 1] % 2).all()  # one view_a, one view_b
        first_even = (ids[:, 0] % 2 == 0).mean()
        assert abs(first_even - 0.5) < 4.5 * 0.5 / np.sqrt(4000)  # random order
        assert set(np.unique(ids)) == set(range(k_views))  # every view gets used


def test_pick_views_distinct(built: Path) -> None:
    vc = ViewCache(built)
    vc.globals = np.zeros((1, 6, 1, 1, 1), np.uint8)
    for n in (1, 3, 6):
        ids = vc.pick_views(n, 1000, np.random.default_rng(n))
        assert ids.shape == (1000, n) and ((ids >= 0) & (ids < 6)).all()
        assert all(len(set(row)) == n for row in ids.tolist())
    with pytest.raises(ValueError, match="holds 6"):
        vc.pick_views(7, 3, np.random.default_rng(0))


def test_gather_returns_stored_views(built: Path) -> None:
    vc = ViewCache(built)
    stored = np.load(built / "global.npy")
    rng = np.random.default_rng(0)
    idx = np.array([5, 299, 0, 5, 123, 77])  # unsorted, with a repeat
    ids = vc.pick_views(2, len(idx), rng)
    views = vc.gather(idx, ids)
    assert len(views) == 2
    for j in range(2):
        assert views[j].shape == (len(idx), S, S, 3) and views[j].dtype == np.uint8
        for b, i in enumerate(idx):
            np.testing.assert_array_equal(views[j][b], stored[i, ids[b, j]])


def test_gather_locals_returns_distinct_stored_crops(built: Path) -> None:
    vc = ViewCache(built)
    stored = np.load(built / "local.npy")
    idx = np.array([3, 1, 250, 3])
    crops = vc.gather_locals(idx, 2, np.random.default_rng(0))
    assert len(crops) == 2 and crops[0].shape == (4, stored.shape[2], stored.shape[2], 3)
    for b, i in enumerate(idx):
        which = [[ell for ell in range(2) if np.array_equal(crops[j][b], stored[i, ell])] for j in range(2)]
        assert all(len(w) == 1 for w in which) and which[0] != which[1]
    with pytest.raises(ValueError, match="holds 2"):
        vc.gather_locals(idx, 3, np.random.default_rng(0))


def test_reader_rejects_missing_or_inconsistent_cache(built: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        ViewCache(tmp_path / "nope")
    with pytest.raises(ValueError, match="no meta.json"):
        ViewCache(tmp_path)
    meta = json.loads((built / "meta.json").read_text())
    for name in ("global.npy", "local.npy"):
        (tmp_path / name).write_bytes((built / name).read_bytes())

    def write_meta(**changes: object) -> None:
        (tmp_path / "meta.json").write_text(json.dumps({**meta, **changes}))

    write_meta(num_images=N + 1)
    with pytest.raises(ValueError, match="meta.json says"):
        ViewCache(tmp_path)
    write_meta(version=99)
    with pytest.raises(ValueError, match="version 99"):
        ViewCache(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt meta.json"):
        ViewCache(tmp_path)
    write_meta()
    ViewCache(tmp_path)
    data = (built / "global.npy").read_bytes()
    (tmp_path / "global.npy").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match="unreadable"):
        ViewCache(tmp_path)
    (tmp_path / "local.npy").unlink()
    (tmp_path / "global.npy").write_bytes(data)
    with pytest.raises(ValueError, match="local.npy missing"):
        ViewCache(tmp_path)
