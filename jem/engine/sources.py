"""Where training batches come from. The loop asks a source for the views of a batch of image
indices; it does not care whether they are read from the view cache or made on the device.

* :class:`CachedViews`: memory-mapped view cache (``augment.views_per_image`` = K > 0), vectorised
  numpy gathers, one host->device copy per view. The CPU path: augmentation was paid for once, by
  the ``augment`` stage.
* :class:`DeviceAugment`: ``augment.views_per_image: 0``. The training images live as one uint8
  tensor on the training device and every batch's views are rendered there with the batched
  per-sample ops of :mod:`jem.augment` (the GPU path; it runs unchanged on the CPU).

Both take the same arguments and return the same thing: a list of ``n_global`` global views
followed by ``n_local`` local crops, each a normalised float (B, C, S, S) tensor on the device.
:class:`StreamViews` (``data.pretrain_root`` set) takes ready-rendered views from a Ray Data stream
(:mod:`jem.engine.stream`) instead of image ids: :meth:`StreamViews.epoch` yields whole batches with
their file indices, one pass over the folder per epoch. :class:`CachedAudio` adds the audio views of
the audio-visual methods (log-mel spectrograms). :func:`make_source` picks one from the config.
Which images make each batch is
:func:`epoch_shards`: one seeded permutation per epoch, cut into disjoint per-worker shards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jem.augment.cache import ViewCache, local_recipe, local_size
from jem.augment.recipe import ViewParams, apply_view, sample_view_params, to_float_nchw
from jem.config import AugmentConfig, Config


def epoch_shards(seed: int, epoch: int, n_images: int, steps: int, world: int, batch: int) -> np.ndarray:
    """Image ids of every worker's batches in ``epoch``: (steps, world, batch). One seeded
    permutation shared by all workers, cut into disjoint shards, so global batch ``i`` is the same
    set of images for 2 x 128 as for 1 x 256."""
    order = np.random.default_rng([seed, epoch]).permutation(n_images)
    return order[: steps * world * batch].reshape(steps, world, batch)


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def normalise_into(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``(x - mean) / std`` written into a new (B, C, H, W) tensor with the strides of the training
    memory format, whatever ``x``'s are. ``.contiguous(memory_format=...)`` is not enough: with one
    channel, channels-last strides (the permuted (B, H, W, 1) cache batch) also count as contiguous,
    so nothing is copied and convolutions silently pick channels_last (issue 19's hidden switch)."""
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device, memory_format=_memory_format(channels_last))
    return torch.sub(x, mean, out=out).div_(std)


def to_input(batch: np.ndarray, mean: torch.Tensor, std: torch.Tensor, device: torch.device,
             channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, H, W, C) -> normalised float (B, C, H, W) on ``device``, in the training memory format."""
    x = torch.from_numpy(np.ascontiguousarray(batch))
    if device.type == "cuda":
        x = x.pin_memory()
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    return normalise_into(x, mean, std, channels_last)


class CachedViews:
    """Views read from the cache: ``n_global`` distinct cached views per image plus local crops."""

    def __init__(self, cache: ViewCache, mean: torch.Tensor, std: torch.Tensor, device: torch.device,
                 channels_last: bool = False) -> None:
        self.cache, self.mean, self.std, self.device = cache, mean, std, device
        self.channels_last = channels_last
        self.num_images = len(cache)
        self.channels, self.size = int(cache.meta["channels"]), int(cache.meta["size"])

    def views(self, idx: np.ndarray, n_global: int, n_local: int, rng: np.random.Generator) -> list[torch.Tensor]:
        arrays = self.cache.gather(idx, self.cache.pick_views(n_global, len(idx), rng))
        if n_local:
            arrays += self.cache.gather_locals(idx, n_local, rng)
        return [to_input(a, self.mean, self.std, self.device, self.channels_last) for a in arrays]


class DeviceAugment:
    """On-device augmentation (``augment.views_per_image: 0``): every step renders fresh views.

    The uint8 training images are copied once to ``device`` (through pinned memory and a
    non-blocking copy on CUDA) and stay there. For a batch, global view j uses ``view_a`` when j is
    even and ``view_b`` when j is odd (two views: the asymmetric BYOL/VICReg pair, view_a first),
    local crops use :func:`~jem.augment.cache.local_recipe` at
    :func:`~jem.augment.cache.local_size` -- the same recipes, sizes and samplers as the view cache,
    so the per-sample parameters follow the cached distributions exactly. All global views of a
    batch are rendered in one batched call (and the local crops in another) to keep the number of
    kernel launches per step small.

    Randomness: each call draws one 63-bit seed from the loop's ``rng`` (seeded by (seed, epoch,
    rank)) for a fresh CPU ``torch.Generator``; all parameters of the step come from it, so the
    views are deterministic under seed, epoch and rank, whatever the device.
    """

    def __init__(self, images: np.ndarray, aug: AugmentConfig, mean: torch.Tensor, std: torch.Tensor,
                 device: torch.device, channels_last: bool = False) -> None:
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError("DeviceAugment needs uint8 training images of shape (N, H, W, C); got "
                             f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}")
        self.num_images, h, w, self.channels = (int(v) for v in images.shape)
        self.in_size = (h, w)
        self.size = h  # global views keep the input height, as in the view cache
        self.local_size = local_size(aug, self.size)
        self.max_local = aug.multicrop.local_crops
        self.recipes = (aug.view_a, aug.view_b)
        self.local = local_recipe(aug)
        self.mean, self.std, self.device, self.channels_last = mean, std, device, channels_last
        host = torch.from_numpy(np.ascontiguousarray(images))  # (N, H, W, C) uint8
        if device.type == "cuda":
            host = host.pin_memory()
        self.images = host.to(device, non_blocking=True)

    def sample_params(self, batch: int, n_global: int, n_local: int, generator: torch.Generator
                      ) -> tuple[ViewParams, ViewParams | None]:
        """Parameters of one step: global views stacked view-major ((n_global x batch) rows, view j
        in rows [j B, (j + 1) B)), and the local crops likewise (or None)."""
        if n_global < 1:
            raise ValueError(f"DeviceAugment: n_global = {n_global} must be >= 1")
        if not 0 <= n_local <= self.max_local:
            raise ValueError(f"DeviceAugment: {n_local} local crops requested but "
                             f"augment.multicrop.local_crops = {self.max_local}")
        glob = ViewParams.cat([sample_view_params(batch, self.recipes[j % 2], self.in_size, generator)
                               for j in range(n_global)])
        loc = (ViewParams.cat([sample_view_params(batch, self.local, self.in_size, generator)
                               for _ in range(n_local)]) if n_local else None)
        return glob, loc

    def views(self, idx: np.ndarray, n_global: int, n_local: int, rng: np.random.Generator) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
        glob_p, loc_p = self.sample_params(len(idx), n_global, n_local, g)
        rows = torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64))
        if self.device.type == "cuda":
            rows = rows.pin_memory()
        x = to_float_nchw(self.images[rows.to(self.device, non_blocking=True)])  # (B, C, H, W) in [0, 1]
        out = self._finish(apply_view(x.repeat(n_global, 1, 1, 1), glob_p, self.size)).chunk(n_global)
        if loc_p is not None:
            # blurred in global-view pixel units, as in the cache (see apply_view)
            loc = apply_view(x.repeat(n_local, 1, 1, 1), loc_p, self.local_size, blur_ref_size=self.size)
            out += self._finish(loc).chunk(n_local)
        return list(out)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] float -> normalised, in the training memory format."""
        return normalise_into(x, self.mean, self.std, self.channels_last)


class CachedAudio:
    """Audio views of the audio-visual data sets, read from the cache's ``audio.npy`` (float16
    (N, K, 1, M, T) standardised log-mel spectrograms, see :mod:`jem.augment.audio`), row ``i``
    paired with training image ``i``. Each call picks ``n`` distinct cached views per sample."""

    def __init__(self, views: Path, device: torch.device) -> None:
        file = views / "audio.npy"
        if not file.is_file() or not (views / "audio_meta.json").is_file():
            raise ValueError(f"no audio views in {str(views)!r}: an audio-visual method needs dataset av-digits "
                             "or avfolder and augment.views_per_image > 0; re-run the augment stage")
        self.array = np.load(file, mmap_mode="r")
        self.num_recordings, self.views_per_recording = int(self.array.shape[0]), int(self.array.shape[1])
        self.device = device

    def views(self, idx: np.ndarray, n: int, rng: np.random.Generator) -> list[torch.Tensor]:
        if n > self.views_per_recording:
            raise ValueError(f"{n} audio views requested per sample but the cache holds {self.views_per_recording}")
        picks = np.argsort(rng.random((len(idx), self.views_per_recording)), axis=1)[:, :n]  # (B, n) distinct
        return [torch.from_numpy(np.asarray(self.array[idx, picks[:, j]], dtype=np.float32)).to(self.device)
                for j in range(n)]


@dataclass(frozen=True)
class StreamFeed:
    """Where a worker's streamed views come from: ``batches(n)`` starts one pass over this worker's
    share of the stream and yields dicts of numpy columns of at most ``n`` rows (``ok``, ``idx`` the
    file indices, plus one uint8 column per view, see :func:`jem.engine.stream.render_batch`);
    ``files`` is the manifest's file count, which plans the learning-rate schedule; ``columns`` names
    the view columns in order; ``size`` and ``channels`` are the global views' (the labelled set's);
    ``stats`` is the prepared set's ``stats.json`` (mean, std), sent by the driver so a worker reads
    no file of the checkout; ``plain(n)``, for methods with a feature pass, starts one pass over
    this worker's share of the decoded whole images (``ok``, ``idx``, ``x``: see
    :func:`jem.engine.stream.decode_batch`)."""

    batches: Callable[[int], Iterable[dict[str, Any]]]
    files: int
    columns: tuple[str, ...]
    size: int
    channels: int
    stats: dict[str, Any]
    plain: Callable[[int], Iterable[dict[str, Any]]] | None = None


class StreamViews:
    """Views of the uncurated folder (``data.pretrain_root``), rendered by Ray Data on the CPU workers
    and handed over as uint8 columns; this source only drops the rows of files that did not decode
    (counted in :attr:`skipped`), re-cuts the rest into batches of exactly ``batch`` images and
    normalises them on the device. It holds at most the rows of one incoming batch plus fewer than
    ``batch`` carried rows (:attr:`max_rows_held` records the most it held), never the folder.

    ``num_images`` is the manifest's file count: the loop plans ``num_images // (workers x batch)``
    steps per epoch from it; an epoch ends earlier when skipped files leave fewer full batches. Every
    batch comes with its file indices (positions in the manifest's file list), the index space of
    ``StepContext.indices`` on the stream."""

    def __init__(self, feed: StreamFeed, channels: int, size: int, mean: torch.Tensor, std: torch.Tensor,
                 device: torch.device, channels_last: bool = False) -> None:
        self.feed, self.channels, self.size = feed, channels, size
        self.mean, self.std, self.device, self.channels_last = mean, std, device, channels_last
        self.num_images = feed.files
        self.skipped = 0  # rows of undecodable files seen in the current (or last) pass
        self.delivered = 0  # images handed to the loop in the current (or last) pass
        self.max_rows_held = 0

    def epoch(self, batch: int) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
        """One pass over this worker's share: ((batch,) int64 file indices, uint8 arrays (one per view
        column) of exactly ``batch`` rows); the last incomplete batch is dropped."""
        self.skipped = self.delivered = 0
        cols = ("idx",) + self.feed.columns
        carry: list[list[np.ndarray]] = []
        held = 0
        for part in self.feed.batches(batch):
            ok = np.asarray(part["ok"], dtype=bool)
            self.skipped += int((~ok).sum())
            rows = [np.asarray(part[c]) if ok.all() else np.asarray(part[c])[ok] for c in cols]
            carry.append(rows)
            held += int(ok.sum())
            self.max_rows_held = max(self.max_rows_held, held)
            while held >= batch:
                joined = [np.concatenate([r[j] for r in carry]) for j in range(len(cols))]
                out = [a[:batch] for a in joined]
                carry = [[a[batch:] for a in joined]]
                held -= batch
                self.delivered += batch
                yield out[0].astype(np.int64, copy=False), out[1:]

    def image_batches(self, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One pass over this worker's share of the decoded whole images (the feature pass): ((b,)
        int64 file indices, uint8 (b, S, S, C)) of the files that decoded, b <= ``batch``."""
        if self.feed.plain is None:
            raise ValueError("the data.pretrain_root stream was started without its feature pass")
        for part in self.feed.plain(batch):
            ok = np.asarray(part["ok"], dtype=bool)
            if ok.any():
                yield np.asarray(part["idx"])[ok].astype(np.int64, copy=False), np.asarray(part["x"])[ok]

    def to_views(self, arrays: list[np.ndarray]) -> list[torch.Tensor]:
        return [to_input(a, self.mean, self.std, self.device, self.channels_last) for a in arrays]


def training_images(prepared: Path) -> np.ndarray:
    """The pretraining images of a prepared folder (``pretrain_x.npy``, else ``train_x.npy``)."""
    for name in ("pretrain_x.npy", "train_x.npy"):
        if (prepared / name).is_file():
            return np.load(prepared / name)
    raise ValueError(f"no pretrain_x.npy or train_x.npy in {str(prepared)!r}; run the prepare stage first")


def make_source(cfg: Config, prepared: Path, views: Path, mean: torch.Tensor, std: torch.Tensor,
                device: torch.device, channels_last: bool = False, feed: StreamFeed | None = None
                ) -> CachedViews | DeviceAugment | StreamViews:
    """The batch source a run's config asks for: the stream of ``data.pretrain_root`` when it is set
    (``feed``: views at the side and channels of the prepared labelled set, which the encoder is
    evaluated on), else the view cache when it holds views (``augment.views_per_image`` > 0), else
    on-device augmentation of the prepared images."""
    if cfg.data.pretrain_root:
        if feed is None:
            raise ValueError(f"data.pretrain_root = {cfg.data.pretrain_root!r} but no stream was handed to the worker")
        return StreamViews(feed, feed.channels, feed.size, mean, std, device, channels_last)
    cache = ViewCache(views)
    if cache.views_per_image > 0:
        return CachedViews(cache, mean, std, device, channels_last)
    source = DeviceAugment(training_images(prepared), cfg.augment, mean, std, device, channels_last)
    if source.num_images != len(cache):
        raise ValueError(f"view cache {str(views)!r} describes {len(cache)} images but {str(prepared)!r} holds "
                         f"{source.num_images}; re-run the augment stage")
    return source
