"""Shared pieces of the benchmarks: data sets, configs, the jem batch stream, machine facts."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import yaml

from jem.config import Config, parse_config
from jem.engine.device import cpu_has_native_bf16
from jem.engine.sources import CachedViews, DeviceAugment, epoch_shards
from jem.prepare import channel_stats
from jem.report.provenance import cpu_model

SYNTHETIC = "cifar-synthetic"  # random CIFAR-shaped images: (50000, 32, 32, 3) uint8
PADDED = "fashion-mnist-32"  # Fashion-MNIST zero-padded from 28 to 32 px
DATASETS = ("digits", "fashion-mnist", PADDED, SYNTHETIC, "cifar10", "cifar100", "stl10")


@dataclass
class Data:
    """Training (and, for real sets, test) images as uint8 (N, H, W, C), labels, channel stats."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray | None
    test_x: np.ndarray | None
    test_y: np.ndarray | None
    num_classes: int
    mean: list[float]
    std: list[float]


def _subset(n: int, keep: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[:keep]) if 0 < keep < n else np.arange(n)


def load_data(name: str, max_train: int = 0, seed: int = 0) -> Data:
    """``name`` from :data:`DATASETS`; ``max_train`` > 0 keeps a seeded random subset of the training set."""
    if name == SYNTHETIC:
        n = max_train or 50000
        x = np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        return Data(name, x, None, None, None, 10, *channel_stats(x))
    from jem.data import load_dataset

    ds = load_dataset("fashion-mnist" if name == PADDED else name, seed=seed)
    train_x, test_x = ds.train_x, ds.test_x
    if name == PADDED:
        pad = ((0, 0), (2, 2), (2, 2), (0, 0))
        train_x, test_x = np.pad(train_x, pad), np.pad(test_x, pad)
    keep = _subset(len(train_x), max_train, seed)
    train_x, train_y = np.ascontiguousarray(train_x[keep]), ds.train_y[keep]
    return Data(name, train_x, train_y, test_x, ds.test_y, len(ds.classes), *channel_stats(train_x))


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``["train.lr=0.1", "augment.view_a.flip_p=0.5"]`` -> nested mapping (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE, e.g. train.lr=0.1")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def method_config(raw: dict[str, Any], method: str, views_per_image: int) -> Config:
    """Validated config of ``raw`` with ``method`` selected and ``augment.views_per_image`` set."""
    return parse_config(merge(raw, {"method": method, "augment": {"views_per_image": views_per_image}}))


def views_needed(raw: dict[str, Any], method: str) -> int:
    """Global views per image that ``method`` consumes under ``raw``."""
    return int(getattr(method_config(raw, method, 0).method_params, "views", 2))


def jem_batches(source: CachedViews | DeviceAugment, n_images: int, batch: int, n_global: int, n_local: int,
                seed: int) -> Iterator[tuple[list[torch.Tensor], np.ndarray, int]]:
    """The training loop's data order (jem/engine/loop.py and jem/engine/sources.py, one worker), epoch after epoch:
    yields (views, sorted image ids, epoch)."""
    epoch, steps = 0, n_images // batch
    while True:
        shards = epoch_shards(seed, epoch, n_images, steps, 1, batch)[:, 0]  # (steps, batch)
        view_rng = np.random.default_rng([seed, epoch, 0, 1])
        for i in range(steps):
            idx = np.sort(shards[i])
            yield source.views(idx, n_global, n_local, view_rng), idx, epoch
        epoch += 1


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
                            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                            "cpu_native_bf16": cpu_has_native_bf16(), "platform": platform.platform(),
                            "python": platform.python_version(), "torch": torch.__version__,
                            "loadavg_start": list(os.getloadavg()),
                            "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")
                                    if k in os.environ}}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
