"""The uncurated pretraining folder (``data.pretrain_root``) as a Ray Data stream.

``ray.data.read_binary_files`` reads the files the manifest lists in read tasks pinned to the
driver's node (where the folder is: no other node needs to see it; Ray Data's ``local://`` paths
did the same and are deprecated),
and :func:`render_batch` runs in ``map_batches`` tasks on the CPU workers of any node: it decodes
each file with the image-folder reader (:func:`jem.data.imagefolder.read_image`: converted to the
labelled set's channels and resized to its side, bilinear), then renders the method's views with
jem's own recipe (:func:`~jem.augment.recipe.sample_view_params` /
:func:`~jem.augment.recipe.apply_view`: global view j uses ``view_a`` when j is even and
``view_b`` when odd, local crops :func:`~jem.augment.cache.local_recipe` at
:func:`~jem.augment.cache.local_size`, the same recipes the view cache and on-device paths use),
stored as uint8 like the view cache. The views reach the training workers through Ray Train's
``get_dataset_shard("train")`` (the object store; no shared filesystem).

A file that does not decode (empty, truncated, not an image, a decompression bomb) is never fatal:
its row comes out with ``ok`` False and zero views, and the training worker's source
(:class:`jem.engine.sources.StreamViews`) skips and counts it.

File indices: every row carries ``idx``, the file's position in the manifest's file list
(:func:`jem.data.stream.stream_files`, the order of ``data/stream/manifest.json``'s hash), looked up
from the row's path by :class:`FileIndex`. They are the stream's image indices
(``StepContext.indices``), as row numbers of the training array are on the view-cache path, so
methods whose state is indexed by image (DeepCluster's pseudo-labels) run on the stream.

The feature pass (:func:`build_stream` with ``features=True``): a second dataset over the same
files that only decodes them (:func:`decode_batch`: the whole image at the labelled set's side and
channels, no random view), which the methods that embed every image at an epoch start
(``Method.feature_pass``) read once per clustering as ``get_dataset_shard("features")``.

Randomness: the views are drawn from fresh OS entropy per rendered batch (a stream has no stable
row order to seed from, and the views must differ between epochs), so a streamed run is not
bit-reproducible; the view cache is.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from ray.train import DataConfig

from jem.augment.cache import local_recipe, local_size
from jem.augment.recipe import apply_view, sample_view_params, to_float_nchw, to_uint8_nhwc
from jem.config import Config
from jem.errors import DataError
from jem.sections import ViewConfig

RENDER_ROWS = 32  # files decoded and rendered per map_batches call: bounds a render task's memory


@dataclass(frozen=True)
class StreamSpec:
    """What :func:`render_batch` makes of each file: ``n_global`` views of side ``size`` and
    ``n_local`` local crops of side ``local_size``, ``channels`` channels."""

    size: int
    channels: int
    n_global: int
    n_local: int
    local_size: int
    view_a: ViewConfig
    view_b: ViewConfig
    local: ViewConfig

    @classmethod
    def for_run(cls, cfg: Config, size: int, channels: int) -> StreamSpec:
        """The views ``cfg.method`` consumes per image, at the labelled set's ``size`` and ``channels``."""
        p = cfg.method_params
        return cls(size=size, channels=channels, n_global=int(getattr(p, "views", 2)),
                   n_local=int(getattr(p, "local_crops", 0)), local_size=local_size(cfg.augment, size),
                   view_a=cfg.augment.view_a, view_b=cfg.augment.view_b, local=local_recipe(cfg.augment))

    def columns(self) -> list[str]:
        return [f"g{j}" for j in range(self.n_global)] + [f"l{j}" for j in range(self.n_local)]


def _path_key(path: str) -> int:
    """A 63-bit key of a path, the same in every process (not Python's salted ``hash``)."""
    digest = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class FileIndex:
    """Path -> position in the file list it was built from, for the read tasks: 16 bytes per file
    (sorted 63-bit keys of the paths and their positions), not the paths themselves, so a task of a
    million-file stream carries 16 MB, not the path list."""

    def __init__(self, files: Sequence[str]) -> None:
        keys = np.fromiter((_path_key(f) for f in files), dtype=np.int64, count=len(files))
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]
        if self.keys.size > 1 and bool((self.keys[1:] == self.keys[:-1]).any()):
            dup = int(np.flatnonzero(self.keys[1:] == self.keys[:-1])[0])
            a, b = (files[int(self.order[j])] for j in (dup, dup + 1))
            raise ValueError(f"the stream's file list holds {a!r} twice or two paths with the same 63-bit key ({b!r})")

    def __len__(self) -> int:
        return int(self.keys.size)

    def lookup(self, paths: Sequence[str]) -> np.ndarray:
        """(B,) int64 positions of ``paths``; ValueError naming the first path not in the list."""
        keys = np.fromiter((_path_key(str(p)) for p in paths), dtype=np.int64, count=len(paths))
        at = np.minimum(np.searchsorted(self.keys, keys), max(len(self) - 1, 0))
        found = self.keys[at] == keys if len(self) else np.zeros(len(keys), dtype=bool)
        if not found.all():
            raise ValueError(f"the stream read {str(paths[int(np.flatnonzero(~found)[0])])!r}, which is not in its "
                             "file list")
        return self.order[at].astype(np.int64)


def _indices(batch: dict[str, np.ndarray], index: FileIndex | None) -> dict[str, np.ndarray]:
    """``{"idx": (B,) int64}`` from the rows' ``path`` column, or nothing without an index."""
    if index is None:
        return {}
    if "path" not in batch:
        raise ValueError("the stream's rows carry no 'path' column to look their file index up from")
    return {"idx": index.lookup(list(batch["path"]))}


def _decode(blob: Any, size: int, channels: int) -> np.ndarray | None:
    from jem.data.imagefolder import read_image

    try:
        return read_image(io.BytesIO(bytes(blob)), size, channels)
    except DataError:
        return None


def _decode_all(blobs: Any, size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (B, S, S, C) images, (B,) bool decoded); rows of files that do not decode are zeros."""
    n = len(blobs)
    images = np.zeros((n, size, size, channels), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    for i, blob in enumerate(blobs):
        img = _decode(blob, size, channels)
        if img is not None:
            images[i], ok[i] = img, True
    return images, ok


def decode_batch(batch: dict[str, np.ndarray], spec: StreamSpec, index: FileIndex | None = None
                 ) -> dict[str, np.ndarray]:
    """The feature pass's rows: ``{"bytes", "path"}`` -> ``{"ok": (B,) bool, "x": uint8 (B, S, S, C)
    the whole image at the labelled set's side and channels (no random view), "idx": (B,) int64}``
    (``idx`` only with ``index``); rows of files that do not decode have ``ok`` False and zeros."""
    images, ok = _decode_all(batch["bytes"], spec.size, spec.channels)
    return {"ok": ok, "x": images} | _indices(batch, index)


def render_batch(batch: dict[str, np.ndarray], spec: StreamSpec, index: FileIndex | None = None
                 ) -> dict[str, np.ndarray]:
    """``{"bytes": (B,) file contents, "path": (B,) their paths}`` -> ``{"ok": (B,) bool, "idx": (B,)
    int64 file indices (only with ``index``), "g0".. : uint8 (B, S, S, C), "l0".. : uint8 (B, L, L,
    C)}``; rows of files that do not decode have ``ok`` False and zeros."""
    s, c = spec.size, spec.channels
    images, ok = _decode_all(batch["bytes"], s, c)
    n = len(ok)
    good = np.flatnonzero(ok)
    g = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    x = to_float_nchw(torch.from_numpy(images[good]))  # (G, C, S, S) in [0, 1]
    out: dict[str, np.ndarray] = {"ok": ok} | _indices(batch, index)

    def render(recipe: ViewConfig, side: int) -> np.ndarray:
        view = np.zeros((n, side, side, c), dtype=np.uint8)
        if good.size:
            p = sample_view_params(good.size, recipe, (s, s), g)
            # local crops are blurred in global-view pixel units, as in the view cache
            view[good] = to_uint8_nhwc(apply_view(x, p, side, blur_ref_size=s)).numpy()
        return view

    for j in range(spec.n_global):
        out[f"g{j}"] = render(spec.view_a if j % 2 == 0 else spec.view_b, s)
    for j in range(spec.n_local):
        out[f"l{j}"] = render(spec.local, spec.local_size)
    return out


class WholePassSplit(DataConfig):
    """Ray Train's data config with one change: the stream is split among the workers with
    ``equal=False``. Ray's default (``equal=True``) drops up to ``workers - 1`` rows per pass to even
    the shares out, and an undecodable file among them would go uncounted; here every file reaches a
    worker (blocks of :data:`RENDER_ROWS` rows go to whichever worker asks next, so the shares stay
    close) and the loop's lock-step ends the epoch when the first worker runs out."""

    def configure(self, datasets: dict[str, Any], world_size: int, worker_handles: Any, worker_node_ids: Any,
                  **kwargs: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{} for _ in range(world_size)]
        hints = worker_node_ids if self._enable_shard_locality else None
        for name, ds in datasets.items():
            ds = ds.copy(ds)
            ds.context.execution_options = self._resolve_execution_options(name)
            for i, split in enumerate(ds.streaming_split(world_size, equal=False, locality_hints=hints)):
                out[i][name] = split
        return out


def build_stream(files: list[str], spec: StreamSpec, features: bool = False) -> dict[str, Any]:
    """The lazy Ray Data datasets of ``files`` (absolute local paths, the manifest's order, which
    numbers the rows' ``idx``): ``"train"``, their rendered views, and with ``features`` also
    ``"features"``, their decoded whole images for the feature pass. Nothing is read until a
    consumer iterates one. Needs a connected Ray."""
    import ray
    import ray.data

    quiet = ray.data.DataContext.get_current()  # the dataset keeps this context: the stage log stays readable
    quiet.enable_progress_bars = False
    quiet.print_on_execution_start = False
    here = {"ray.io/node-id": ray.get_runtime_context().get_node_id()}  # Ray's own label of every node
    index = FileIndex(files)

    def dataset(fn: Any) -> Any:
        ds = ray.data.read_binary_files(files, include_paths=True, label_selector=here)
        return ds.map_batches(partial(fn, spec=spec, index=index), batch_size=RENDER_ROWS, batch_format="numpy")

    return {"train": dataset(render_batch)} | ({"features": dataset(decode_batch)} if features else {})
