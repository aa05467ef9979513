"""Checks of params against the data and the machine, before any compute (rule 1 of
docs/reliability.md). The ``validate`` stage calls :func:`check_run`.

Everything here is cheap: data sizes come from the datasets' known official splits (their files
were already checked by :func:`jem.data.check_dataset`), digits' labels (shipped with
scikit-learn) or an image folder's file listing; nothing is decoded. The split arithmetic mirrors
:mod:`jem.prepare` and :func:`jem.data.common.stratified_split` exactly, so the counts are the ones
the prepare stage will produce.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jem.config import Config
from jem.sections import ConfigError

# official splits: (per-class train counts, per-class test counts, image side, channels)
_KNOWN: dict[str, tuple[list[int], list[int], int, int]] = {
    "fashion-mnist": ([6000] * 10, [1000] * 10, 28, 1),
    "cifar10": ([5000] * 10, [1000] * 10, 32, 3),
    "cifar100": ([500] * 100, [100] * 100, 32, 3),
    "stl10": ([500] * 10, [800] * 10, 96, 3),
}
STL10_UNLABELLED = 100000
IMAGEFOLDER_SIZE = 32


@dataclass(frozen=True)
class DataSizes:
    """What the prepare stage will produce, counted without reading images."""

    train: int  # labelled training images (the kNN bank, the linear probe's training set)
    val: int
    test: int
    pretrain: int  # images pretraining iterates over
    classes: int
    image_size: int  # side after data.image_size
    channels: int
    what: str  # how the numbers came about, for error lines


def _val_counts(counts: list[int], fraction: float) -> list[int]:
    """Per-class validation images of :func:`jem.prepare.validation_split` (stratified_subset, leave=1)."""
    return [max(0, min(n - 1, max(1, int(round(fraction * n))))) for n in counts]


def _subset_counts(counts: list[int], fraction: float) -> list[int]:
    """Per-class sizes of :func:`jem.prepare.stratified_subset` (leave=0)."""
    return [max(0, min(n, max(1, int(round(fraction * n))))) for n in counts]


def _test_counts(counts: list[int], fraction: float) -> list[int]:
    """Per-class test images of :func:`jem.data.common.stratified_split`."""
    return [min(max(round(n * fraction), 1 if n >= 2 else 0), max(n - 1, 0)) for n in counts]


def _pool_counts(cfg: Config) -> tuple[list[int], list[int], int, int] | None:
    """(per-class training counts, per-class test counts, native side, channels) of the dataset's official or
    seeded split; None when it cannot be counted cheaply (a group-aware image-folder split)."""
    name, d = cfg.dataset, cfg.data
    if name in _KNOWN:
        return _KNOWN[name]
    if name == "digits":
        from sklearn.datasets import load_digits

        pool = np.bincount(load_digits().target).tolist()
        tests = _test_counts(pool, d.test_fraction)
        return [n - t for n, t in zip(pool, tests)], tests, 8, 1
    if name == "imagefolder":
        if getattr(d, "group_regex", ""):
            return None
        from jem.data import imagefolder

        _, _, y = imagefolder._index(d.root or "")
        pool = np.bincount(y).tolist()
        tests = _test_counts(pool, d.test_fraction)
        channels = getattr(d, "channels", 0) or 3  # 0: decided by the files; 3 is the larger network input
        return [n - t for n, t in zip(pool, tests)], tests, IMAGEFOLDER_SIZE, channels
    return None


def data_sizes(cfg: Config) -> DataSizes | None:
    """The sizes the prepare stage will produce for ``cfg`` (None when they cannot be counted cheaply)."""
    pool = _pool_counts(cfg)
    if pool is None:
        return None
    counts, tests, side, channels = pool
    n_test = sum(tests)
    d = cfg.data
    val = _val_counts(counts, d.val_fraction)
    train = [n - v for n, v in zip(counts, val)]
    what = f"{cfg.dataset}: {sum(counts)} training images, {sum(val)} to validation (data.val_fraction={d.val_fraction:g})"
    if d.max_train and d.max_train < sum(train):
        train = _subset_counts(train, d.max_train / sum(train))
        what += f", data.max_train={d.max_train}"
    if d.max_test and d.max_test < n_test:
        n_test = sum(_subset_counts(tests, d.max_test / n_test))
    pretrain = STL10_UNLABELLED if (cfg.dataset == "stl10" and d.use_unlabelled) else sum(train)
    if getattr(d, "channels", 0):
        channels = d.channels
    return DataSizes(train=sum(train), val=sum(val), test=n_test, pretrain=pretrain,
                     classes=sum(1 for n in counts if n > 0), image_size=d.image_size or side,
                     channels=channels, what=what)


def _check_backbone(cfg: Config, sizes: DataSizes) -> None:
    """Build the backbone for the run's input and push zero images (global size and local crops)
    through it and through the semi-supervised fine-tuning's shift augmentation."""
    import torch

    from jem.augment.cache import local_size
    from jem.evaluate.semi import flip_and_shift
    from jem.models import backbone_arch, build_backbone

    arch = backbone_arch(cfg.model, sizes.channels, sizes.image_size)  # torchvision models: the resolved stem
    if cfg.model.backbone == "vit_tiny":
        arch.update(depth=1)  # depth does not change what sizes fit
    sides = [sizes.image_size]
    if cfg.augment.multicrop.local_crops:
        sides.append(local_size(cfg.augment, sizes.image_size))
    key = "data.image_size" if cfg.data.image_size else f"the native size of {cfg.dataset}"
    side = sizes.image_size
    try:
        net, feat_dim = build_backbone(arch)
        net.eval()
        for side in sides:
            x = torch.zeros(2, sizes.channels, side, side)
            if side == sizes.image_size:
                try:
                    x = flip_and_shift(x, torch.Generator())
                except RuntimeError:
                    raise ValueError("the semi-supervised fine-tuning's reflection-padded shift needs at least "
                                     "2 px") from None
            with torch.no_grad():
                y = net(x).flatten(1)
            if tuple(y.shape) != (2, feat_dim):
                raise ValueError(f"features of shape {tuple(y.shape)} instead of (2, {feat_dim})")
    except (RuntimeError, ValueError, AssertionError, ZeroDivisionError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"model.backbone={cfg.model.backbone} cannot train on {side}x{side} px images ({key} = "
                          f"{sizes.image_size}): {reason}; choose another data.image_size") from None


def _check_stream(cfg: Config) -> None:
    """``data.pretrain_root``: a folder with at least one image file, and at least one batch of files
    per step (counted from the file names, nothing decoded)."""
    from jem.data.stream import check_pretrain_root, count_files

    check_pretrain_root(cfg.data.pretrain_root)
    t = cfg.train
    n, batch = count_files(cfg.data.pretrain_root), t.workers * t.batch_size
    if batch > n:
        raise ConfigError(f"train.batch_size={t.batch_size} x train.workers={t.workers} = {batch} exceeds the {n} "
                          f"image files of data.pretrain_root {cfg.data.pretrain_root!r}; lower train.batch_size")


def check_run(cfg: Config) -> list[str]:
    """ConfigError / RayUnavailable (one line) for what can never work; returns notes to print."""
    from jem.engine.session import check_local_fit, resolve_cpus_per_worker

    cfg = resolve_cpus_per_worker(cfg)  # train.cpus_per_worker 0 = auto
    t, d = cfg.train, cfg.data
    check_local_fit(cfg.ray, t.workers, t.cpus_per_worker, 1.0 if t.use_gpu else 0.0, "pretrain")
    if d.pretrain_root:
        _check_stream(cfg)
    sizes = data_sizes(cfg)
    if sizes is None:
        return ["note: the data sizes of a group-aware image-folder split are checked by the prepare stage"]
    if sizes.classes < 2:
        raise ConfigError(f"{cfg.dataset} has {sizes.classes} class(es); evaluation needs at least 2")
    if sizes.test < 1:
        raise ConfigError(f"{cfg.dataset} leaves no test image ({sizes.what}); add images or raise "
                          "data.test_fraction / data.max_test")
    batch = t.workers * t.batch_size
    if batch > sizes.pretrain and not d.pretrain_root:
        raise ConfigError(f"train.batch_size={t.batch_size} x train.workers={t.workers} = {batch} exceeds the "
                          f"{sizes.pretrain} pretraining images ({sizes.what}); lower train.batch_size")
    too_big = [k for k in cfg.eval.knn_k if k > sizes.train]
    if too_big:
        raise ConfigError(f"eval.knn_k = {list(cfg.eval.knn_k)}: k = {too_big[0]} exceeds the kNN bank of "
                          f"{sizes.train} training images ({sizes.what}); use smaller k")
    for key, value in (("data.max_train", d.max_train), ("data.max_test", d.max_test)):
        if 0 < value < sizes.classes:  # the stratified subsample keeps one image of every class
            raise ConfigError(f"{key} = {value} is below the {sizes.classes} classes of {cfg.dataset}; a stratified "
                              f"subsample keeps at least one image per class: use {key} >= {sizes.classes} (0 = all)")
    _check_backbone(cfg, sizes)
    notes = []
    if d.max_train and sizes.train != d.max_train:  # stratified rounding per class, or fewer images exist
        notes.append(f"note: data.max_train = {d.max_train} gives {sizes.train} training images ({sizes.what})")
    return notes
