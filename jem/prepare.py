"""The `prepare` step as a library function: dataset -> arrays, labelled subsets, channel stats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jem.io import PREPARED_SUMS, check_free_space, save_npy, sha256_file, write_json
from jem.sections import BaseConfig


def stratified_subset(labels: np.ndarray, fraction: float, seed: int | list[int], leave: int = 0) -> np.ndarray:
    """Sorted indices of a seeded, stratified ``fraction`` of ``labels``: ``round(fraction * n_c)``
    per class ``c`` but at least one, so every class is represented even in the 1% subset, and
    never more than ``n_c - leave`` (classes with no more than ``leave`` members give none)."""
    rng = np.random.default_rng(seed)
    picked = [np.zeros(0, np.int64)]
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = min(len(members) - leave, max(1, int(round(fraction * len(members)))))
        if k > 0:
            picked.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(picked)).astype(np.int64)


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices that partition ``labels``: a seeded, stratified ``fraction`` of
    each class goes to validation (at least one where the class has two or more members, never its
    last member, so every class keeps a training image)."""
    # its own random stream: independent of the labelled subsets drawn with ``seed``
    val_idx = stratified_subset(labels, fraction, [seed, 0x7A1], leave=1)
    return np.setdiff1d(np.arange(len(labels), dtype=np.int64), val_idx), val_idx


def channel_stats(images: np.ndarray, chunk: int = 8192) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, H, W, C) images scaled to [0, 1] (float64 sums)."""
    c = images.shape[-1]
    s, s2, n = np.zeros(c), np.zeros(c), 0
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].reshape(-1, c).astype(np.float64) / 255.0
        s += x.sum(0)
        s2 += (x * x).sum(0)
        n += len(x)
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 1e-12))
    return mean.tolist(), std.tolist()


def prepare(cfg: BaseConfig, out: Path) -> dict[str, Any]:
    """Load ``cfg.dataset``, carve the validation split out of its training split, apply
    ``data.max_*`` subsampling, write arrays + subsets + stats (with the SHA-256 of every array,
    after a free-space check).

    Three disjoint splits: ``train_*`` (pretraining images when there is no unlabelled set, the
    kNN bank and the linear probe's training set), ``val_*`` (``data.val_fraction`` of the official
    training split, seeded and stratified: the online monitor, sweeps and anything that selects)
    and ``test_*`` (read by the evaluate stage only). The validation split is carved before
    ``data.max_train`` subsamples what is left, so it does not shrink a subsampled budget and is the
    same for every ``max_train``. With ``data.group_regex`` (image folders) both splits keep each
    group whole."""
    from jem.data import load_dataset

    d = cfg.data
    ds = load_dataset(cfg.dataset, d.root, d.image_size, d.test_fraction, cfg.seed, d.use_unlabelled,
                      d.channels, d.group_regex, d.audio_root)
    train_a, test_a = ds.train_audio, ds.test_audio  # int16 (N, T) for the audio-visual sets, else None
    train_x, train_y, test_x, test_y = ds.train_x, ds.train_y, ds.test_x, ds.test_y
    n_groups: dict[str, int] = {}
    if ds.train_groups is None:
        keep, val = validation_split(train_y, d.val_fraction, cfg.seed)
    else:  # no group straddles training and validation either
        from jem.data.imagefolder import group_split

        keep, val = group_split(train_y, ds.train_groups, d.val_fraction, [cfg.seed, 0x7A1])
        n_groups = {"train": len(np.unique(ds.train_groups[keep])), "val": len(np.unique(ds.train_groups[val]))}
    val_x, val_y = train_x[val], train_y[val]
    train_x, train_y = train_x[keep], train_y[keep]
    val_a = None if train_a is None else train_a[val]
    train_a = None if train_a is None else train_a[keep]
    if d.max_train and d.max_train < len(train_y):
        keep = stratified_subset(train_y, d.max_train / len(train_y), cfg.seed)
        train_x, train_y = train_x[keep], train_y[keep]
        train_a = None if train_a is None else train_a[keep]
    if d.max_test and d.max_test < len(test_y):
        keep = stratified_subset(test_y, d.max_test / len(test_y), cfg.seed + 1)
        test_x, test_y = test_x[keep], test_y[keep]
        test_a = None if test_a is None else test_a[keep]
    pretrain_x = ds.unlabelled_x if (d.use_unlabelled and ds.unlabelled_x is not None) else train_x
    arrays = {"train_x": train_x, "train_y": train_y, "val_x": val_x, "val_y": val_y, "test_x": test_x,
              "test_y": test_y, "subset_1pct": stratified_subset(train_y, 0.01, cfg.seed),
              "subset_10pct": stratified_subset(train_y, 0.10, cfg.seed)}
    if pretrain_x is not train_x:
        arrays["pretrain_x"] = pretrain_x
    if train_a is not None and val_a is not None and test_a is not None:  # row i pairs with image i
        arrays.update(train_audio=train_a, val_audio=val_a, test_audio=test_a)
    # the arrays, a .npy header each (at most 4 KiB) and stats.json: one line before anything is written
    check_free_space(out, sum(a.nbytes for a in arrays.values()) + 4096 * (len(arrays) + 1), "the prepared arrays")
    for name, arr in arrays.items():
        save_npy(out / f"{name}.npy", np.ascontiguousarray(arr))
    mean, std = channel_stats(pretrain_x)
    stats = {"dataset": cfg.dataset, "classes": list(ds.classes), "num_classes": len(ds.classes),
             "image_size": int(train_x.shape[1]), "channels": int(train_x.shape[3]), "mean": mean, "std": std,
             "n_train": len(train_y), "n_val": len(val_y), "n_test": len(test_y), "n_pretrain": len(pretrain_x)}
    notes = list(ds.notes)
    for key, asked, got in (("max_train", d.max_train, len(train_y)), ("max_test", d.max_test, len(test_y))):
        if asked and asked != got:  # the stratified subsample rounds per class
            notes.append(f"data.{key} = {asked} gives {got} images (rounded per class)")
    if notes:  # what was changed from what the files or params say (rule 2 of docs/reliability.md)
        stats["notes"] = notes
    if n_groups:
        stats["n_groups"] = n_groups
    # every reader checks these (jem.io.verify_prepared): a damaged array is one line naming it
    stats[PREPARED_SUMS] = {f"{name}.npy": sha256_file(out / f"{name}.npy") for name in arrays}
    if train_a is not None:
        stats["audio"] = {"sample_rate": ds.sample_rate, "samples": int(train_a.shape[1])}
    write_json(out / "stats.json", stats)
    return stats
