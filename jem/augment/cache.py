"""The view cache: K augmented global views (and L local crops) per training image, as uint8 arrays.

Augmentation dominates the CPU cost of SSL pretraining, so the ``augment`` stage renders every
view once and every method and sweep trial reuses them (DESIGN.md section 5). Layout of a cache
folder:

- ``global.npy``: uint8 (N, K, S, S, C), S = the input height. View k uses ``view_a`` when k is
  even and ``view_b`` when k is odd, so one even and one odd view form the asymmetric BYOL/VICReg
  pair (:meth:`ViewCache.pick_views` draws exactly that for two views).
- ``local.npy`` (only with ``multicrop.local_crops > 0``): uint8 (N, L, s, s, C), DINO-style
  local crops (see :func:`local_recipe` and :func:`local_size`).
- ``meta.json``: counts, sizes, seed, format version. Written last; its presence marks a
  complete cache.

Determinism: the randomness of image i, view slot k comes from a CPU generator seeded with
(seed, i // 256, kind, k), so the parameters of each 256-image block are fixed whatever ``chunk``
is, and the rendering is per-image arithmetic. Same images, config and seed give byte-identical
files for any chunk size (on the same torch build and CPU).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jem.augment.recipe import ViewParams, apply_view, sample_view_params, to_float_nchw, to_uint8_nhwc
from jem.io import check_free_space, sha256_file
from jem.progress import progress as bar
from jem.sections import AugmentConfig, ViewConfig

CACHE_VERSION = 1
PARAM_BLOCK = 256  # images per random-parameter block (the unit of chunk independence)
LOCAL_FRACTION = 0.43  # DINO: 96-px local crops of 224-px images
LOCAL_BLUR_P = 0.5  # DINO's local-crop blur probability
_GLOBAL, _LOCAL = 0, 1
_FILES = ("global.npy", "local.npy", "meta.json")


def local_size(cfg: AugmentConfig, global_size: int) -> int:
    """Side of the local crops: ``multicrop.local_size``, or round(0.43 S) (>= 4) when it is 0."""
    return cfg.multicrop.local_size or max(4, round(global_size * LOCAL_FRACTION))


def local_recipe(cfg: AugmentConfig) -> ViewConfig:
    """DINO's local-crop recipe: view_a's photometrics with blur p = 0.5, crop scale local_scale.

    DINO (Caron et al. 2021, arXiv 2104.14294, appendix / ``main_dino.py``) gives local crops the
    first global view's jitter and grayscale, a blur probability of 0.5 and no solarisation
    (``view_a`` has none by default; a user-set ``view_a.solarize_p`` is kept).
    """
    return replace(cfg.view_a, crop_scale=list(cfg.multicrop.local_scale), blur_p=LOCAL_BLUR_P)


def cache_bytes(n: int, k_views: int, size: int, n_local: int, lsize: int, channels: int) -> int:
    """Bytes of the view arrays of ``n`` images (without the .npy headers)."""
    if k_views == 0:
        return 0
    return n * channels * (k_views * size * size + n_local * lsize * lsize)


def _block_seed(seed: int, block: int, kind: int, slot: int) -> int:
    state = np.random.SeedSequence([seed, block, kind, slot]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])  # < 2**63, a valid torch seed


def _chunk_params(start: int, stop: int, recipe: ViewConfig, in_size: tuple[int, int], seed: int,
                  kind: int, slot: int) -> ViewParams:
    """Parameters of images [start, stop) for one view slot, cut from their 256-image blocks."""
    first, last = start // PARAM_BLOCK, (stop - 1) // PARAM_BLOCK
    parts = []
    for block in range(first, last + 1):
        g = torch.Generator().manual_seed(_block_seed(seed, block, kind, slot))
        parts.append(sample_view_params(PARAM_BLOCK, recipe, in_size, g))
    offset = first * PARAM_BLOCK
    return ViewParams.cat(parts).select(slice(start - offset, stop - offset))


def _check_images(images: Any) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = f"{type(images).__name__} {getattr(images, 'dtype', '')} {getattr(images, 'shape', '')}"
        raise ValueError(f"build_view_cache needs uint8 images of shape (N, H, W, C); got {got.strip()}")
    if images.shape[-1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"build_view_cache needs N > 0 images with 1 or 3 channels; got shape "
                         f"{images.shape}")


def build_view_cache(images: np.ndarray, cfg: AugmentConfig, out_dir: str | Path, seed: int,
                     chunk: int = 1024, progress: bool = True) -> dict:
    """Render the view cache of ``images`` (uint8 (N, H, W, C)) into ``out_dir``; return its meta.

    Global views keep the input height S = H; ``cfg.views_per_image == 0`` (on-device
    augmentation) writes only ``meta.json``. Files are built in ``out_dir/.tmp-*`` and moved into
    place at the end (``meta.json`` last), so a killed run never leaves a cache that opens. The
    free space the arrays need is checked before anything is written (:class:`jem.errors.NoSpace`).
    """
    _check_images(images)
    if chunk < 1:
        raise ValueError(f"build_view_cache: chunk = {chunk} must be >= 1")
    n, h, w, c = images.shape
    k_views, n_local = cfg.views_per_image, cfg.multicrop.local_crops
    size, lsize = h, local_size(cfg, h)
    meta = {"num_images": int(n), "views_per_image": k_views, "size": size, "channels": int(c),
            "local_crops": n_local, "local_size": lsize, "seed": seed, "version": CACHE_VERSION}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".tmp-*"):  # left by a killed build
        shutil.rmtree(stale, ignore_errors=True)
    # the arrays are memory-mapped sparse files: a disk that fills up while they are written kills the
    # process with SIGBUS and no message, so the space they need is checked first (+ 1 MiB for headers)
    check_free_space(out_dir, cache_bytes(n, k_views, size, n_local, lsize, c) + (1 << 20), "the view cache")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out_dir))
    try:
        if k_views > 0:
            _render(images, tmp, cfg, seed, chunk, progress, size, lsize)
        # each array's SHA-256: verify_view_cache (the pretrain stage, before Ray starts) catches a bit flip
        meta["sha256"] = {name: sha256_file(tmp / name) for name in _FILES[:2] if (tmp / name).exists()}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        for name in reversed(_FILES):  # drop the old meta first: a half-replaced cache never opens
            (out_dir / name).unlink(missing_ok=True)
        for name in _FILES:  # meta.json last
            if (tmp / name).exists():
                os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _render(images: np.ndarray, tmp: Path, cfg: AugmentConfig, seed: int, chunk: int, progress: bool,
            size: int, lsize: int) -> None:
    n, h, w, c = images.shape
    k_views, n_local = cfg.views_per_image, cfg.multicrop.local_crops
    open_mm = np.lib.format.open_memmap
    glob = open_mm(tmp / "global.npy", mode="w+", dtype=np.uint8, shape=(n, k_views, size, size, c))
    loc = (open_mm(tmp / "local.npy", mode="w+", dtype=np.uint8, shape=(n, n_local, lsize, lsize, c))
           if n_local > 0 else None)
    lrecipe = local_recipe(cfg)
    with bar(total=n, desc="views", unit="img", disable=not progress) as pbar:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            x = to_float_nchw(torch.from_numpy(np.array(images[start:stop])))  # (B, C, H, W)
            for k in range(k_views):
                recipe = cfg.view_a if k % 2 == 0 else cfg.view_b
                p = _chunk_params(start, stop, recipe, (h, w), seed, _GLOBAL, k)
                glob[start:stop, k] = to_uint8_nhwc(apply_view(x, p, size)).numpy()
            for j in range(n_local):
                p = _chunk_params(start, stop, lrecipe, (h, w), seed, _LOCAL, j)
                # blur in global-view pixel units (see apply_view)
                view = to_uint8_nhwc(apply_view(x, p, lsize, blur_ref_size=size)).numpy()
                if loc is not None:
                    loc[start:stop, j] = view
            pbar.update(stop - start)
    glob.flush()
    del glob
    if loc is not None:
        loc.flush()
        del loc


def verify_view_cache(path: str | Path) -> None:
    """One :class:`~jem.errors.DataError` line naming the first array of a view cache whose SHA-256
    differs from the one recorded in its ``meta.json`` (a bit flip, a file changed by hand). A cache
    whose ``meta.json`` records no sums (built before they were recorded) is not checked; a
    truncated or missing array is already caught when the cache opens."""
    from jem.errors import DataError

    path = Path(path)
    try:
        sums = json.loads((path / "meta.json").read_text()).get("sha256") or {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return  # ViewCache says what is wrong with meta.json
    for name, digest in sorted(sums.items()):
        f = path / name
        if f.is_file() and sha256_file(f) != digest:
            raise DataError(f"{f} does not match the SHA-256 recorded in {path / 'meta.json'} (damaged or changed "
                            "since it was built): re-run the augment stage (dvc repro -f augment)")


class ViewCache:
    """Memory-mapped reader of a cache folder written by :func:`build_view_cache`.

    Attributes:
        globals: (N, K, S, S, C) uint8 memmap, or None for an on-device cache (K = 0).
        locals: (N, L, s, s, C) uint8 memmap, or None without local crops (or when K = 0).
        meta: the parsed ``meta.json``.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        meta_file = path / "meta.json"
        if not path.is_dir():
            raise ValueError(f"view cache {str(path)!r} not found; run the augment stage first")
        if not meta_file.is_file():
            raise ValueError(f"view cache {str(path)!r} is incomplete (no meta.json); rebuild it")
        try:
            self.meta: dict = json.loads(meta_file.read_text())
            m = self.meta
            if m.get("version") != CACHE_VERSION:
                raise ValueError(f"view cache {str(path)!r} has version {m.get('version')!r}; "
                                 f"expected {CACHE_VERSION}, rebuild it")
            n, k, s, c = m["num_images"], m["views_per_image"], m["size"], m["channels"]
            n_local, ls = m["local_crops"], m["local_size"]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"view cache {str(path)!r} has a corrupt meta.json ({exc!r}); "
                             "rebuild it") from None
        self.path = path
        self.globals: np.ndarray | None = None
        self.locals: np.ndarray | None = None
        if k > 0:
            self.globals = _open_array(path / "global.npy", (n, k, s, s, c))
            if n_local > 0:
                self.locals = _open_array(path / "local.npy", (n, n_local, ls, ls, c))

    def __len__(self) -> int:
        return int(self.meta["num_images"])

    @property
    def views_per_image(self) -> int:
        return int(self.meta["views_per_image"])

    def _require_globals(self) -> np.ndarray:
        if self.globals is None:
            raise ValueError(f"view cache {str(self.path)!r} holds no views (views_per_image = 0: "
                             "augment on the device instead)")
        return self.globals

    def pick_views(self, n_global: int, batch: int, rng: np.random.Generator) -> np.ndarray:
        """(batch, n_global) int64 view ids, distinct within each row.

        For two views each row holds one even id (``view_a``) and one odd id (``view_b``) in a
        random order, i.e. the asymmetric pair; otherwise a uniformly random distinct subset.
        """
        k = self._require_globals().shape[1]
        if not 1 <= n_global <= k:
            raise ValueError(f"pick_views: {n_global} views per image requested but the cache "
                             f"holds {k}")
        if n_global == 2:
            even = 2 * rng.integers(0, (k + 1) // 2, size=batch)  # (batch,)
            odd = 2 * rng.integers(0, k // 2, size=batch) + 1
            swap = rng.random(batch) < 0.5
            pair = np.stack([even, odd], 1)  # (batch, 2)
            pair[swap] = pair[swap, ::-1]
            return pair.astype(np.int64)
        return rng.random((batch, k)).argsort(1)[:, :n_global].astype(np.int64)

    def gather(self, idx: np.ndarray, view_ids: np.ndarray) -> list[np.ndarray]:
        """Views ``globals[idx[b], view_ids[b, j]]``: n_global arrays each uint8 (B, S, S, C).

        Reads in sorted image order (memmap locality) and returns rows in the order of ``idx``.
        """
        glob = self._require_globals()
        idx, view_ids = np.asarray(idx), np.asarray(view_ids)
        order = np.argsort(idx, kind="stable")
        picked = glob[idx[order, None], view_ids[order]]  # (B, n_global, S, S, C), sorted rows
        out = np.empty_like(picked)
        out[order] = picked
        return [out[:, j] for j in range(out.shape[1])]

    def gather_locals(self, idx: np.ndarray, n_local: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``n_local`` distinct local crops per image, random per row: arrays each uint8 (B, s, s, C)."""
        if self.locals is None:
            raise ValueError(f"view cache {str(self.path)!r} holds no local crops "
                             "(augment.multicrop.local_crops = 0)")
        total = self.locals.shape[1]
        if not 0 <= n_local <= total:
            raise ValueError(f"gather_locals: {n_local} local crops requested but the cache holds {total}")
        idx = np.asarray(idx)
        ids = rng.random((len(idx), total)).argsort(1)[:, :n_local]  # (B, n_local)
        order = np.argsort(idx, kind="stable")
        picked = self.locals[idx[order, None], ids[order]]  # (B, n_local, s, s, C)
        out = np.empty_like(picked)
        out[order] = picked
        return [out[:, j] for j in range(n_local)]


def _open_array(file: Path, shape: tuple) -> np.ndarray:
    if not file.is_file():
        raise ValueError(f"view cache {str(file.parent)!r} is incomplete ({file.name} missing); "
                         "rebuild it")
    try:
        arr = np.load(file, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise ValueError(f"view cache file {str(file)!r} is unreadable ({exc}); rebuild it") from None
    if arr.dtype != np.uint8 or tuple(arr.shape) != tuple(shape):
        raise ValueError(f"view cache file {str(file)!r} holds {arr.dtype} {tuple(arr.shape)} but "
                         f"meta.json says uint8 {tuple(shape)}; rebuild it")
    return arr


__all__ = ["build_view_cache", "ViewCache", "local_recipe", "local_size", "CACHE_VERSION", "PARAM_BLOCK"]
