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

Randomness: the views are drawn from fresh OS entropy per rendered batch (a stream has no stable
row order to seed from, and the views must differ between epochs), so a streamed run is not
bit-reproducible; the view cache is.
"""

from __future__ import annotations

import io
import os
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


def _decode(blob: Any, size: int, channels: int) -> np.ndarray | None:
    from jem.data.imagefolder import read_image

    try:
        return read_image(io.BytesIO(bytes(blob)), size, channels)
    except DataError:
        return None


def render_batch(batch: dict[str, np.ndarray], spec: StreamSpec) -> dict[str, np.ndarray]:
    """``{"bytes": (B,) file contents}`` -> ``{"ok": (B,) bool, "g0".. : uint8 (B, S, S, C),
    "l0".. : uint8 (B, L, L, C)}``; rows of files that do not decode have ``ok`` False and zeros."""
    blobs = batch["bytes"]
    n, s, c = len(blobs), spec.size, spec.channels
    images = np.zeros((n, s, s, c), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    for i, blob in enumerate(blobs):
        img = _decode(blob, s, c)
        if img is not None:
            images[i], ok[i] = img, True
    good = np.flatnonzero(ok)
    g = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    x = to_float_nchw(torch.from_numpy(images[good]))  # (G, C, S, S) in [0, 1]
    out: dict[str, np.ndarray] = {"ok": ok}

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


def build_stream(files: list[str], spec: StreamSpec) -> Any:
    """The lazy Ray Data dataset of the rendered views of ``files`` (absolute local paths); nothing
    is read until a consumer iterates it. Needs a connected Ray."""
    import ray
    import ray.data

    quiet = ray.data.DataContext.get_current()  # the dataset keeps this context: the stage log stays readable
    quiet.enable_progress_bars = False
    quiet.print_on_execution_start = False
    here = {"ray.io/node-id": ray.get_runtime_context().get_node_id()}  # Ray's own label of every node
    ds = ray.data.read_binary_files(files, label_selector=here)
    return ds.map_batches(partial(render_batch, spec=spec), batch_size=RENDER_ROWS, batch_format="numpy")
