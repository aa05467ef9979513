"""Atomic writes: write to a temporary name next to the target, then rename."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jem.errors import DataError, NoSpace

PREPARED_SUMS = "sha256"  # stats.json key: {file name: SHA-256} of every array the prepare stage wrote


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> one level with dotted keys (``{"knn": {"top1": x}}`` -> ``{"knn.top1": x}``),
    the way params and metrics are named on the command line and in ``dvc exp show``."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def pick(d: dict[str, Any], keys: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """The dotted ``keys`` of nested mapping ``d`` that exist in it, nested again, in ``d``'s order
    (``pick({"knn": {"top1": x, "top5": y}}, ["knn.top1"])`` -> ``{"knn": {"top1": x}}``)."""
    out: dict[str, Any] = {}
    for key, value in flatten(d).items():
        if key in keys:
            *parents, leaf = key.split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    return out


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_free_space(path: str | Path, needed: int, what: str) -> None:
    """:class:`~jem.errors.NoSpace` (one line naming ``path`` and both sizes) when the file system holding ``path`` (or its
    nearest existing parent) has fewer than ``needed`` bytes free, before anything is written."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise NoSpace(f"not enough disk space for {what} in {path}: needs {_size(needed)}, "
                      f"{_size(free)} free on {probe}")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def write_json(path: str | Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def save_npy(path: str | Path, arr: Any) -> None:
    """``np.save``, except that a disk that fills up is an ``OSError`` with errno ENOSPC naming
    ``path`` (numpy's own short-write error carries no errno, so it surfaced as a traceback)."""
    import numpy as np

    try:
        np.save(path, arr)
    except OSError as exc:
        if exc.errno is not None or shutil.disk_usage(Path(path).parent).free >= arr.nbytes:
            raise
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc


def verify_prepared(folder: str | Path, skip: tuple[str, ...] = ()) -> None:
    """One :class:`~jem.errors.DataError` line naming the first array of a prepared folder whose
    SHA-256 differs from the one the prepare stage recorded in its ``stats.json`` (a bit flip, a
    truncation, a file changed by hand), or that is missing. A folder whose ``stats.json`` records
    no sums (written before they were recorded, or by hand) is not checked. Arrays whose names start
    with one of ``skip`` are not checked (pretraining and sweeps pass ``("test_",)``: they never open
    the test split)."""
    folder = Path(folder)
    stats_file = folder / "stats.json"
    if not stats_file.is_file():
        return  # the callers say "run the prepare stage first"
    try:
        sums = json.loads(stats_file.read_text()).get(PREPARED_SUMS) or {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise DataError(f"{stats_file} is damaged (not a JSON object): re-run the prepare stage "
                        "(dvc repro -f prepare)") from None
    for name, digest in sorted(sums.items()):
        if name.startswith(skip):  # arrays the caller never opens (pretraining: the test split)
            continue
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path} is missing (listed in {stats_file}): re-run the prepare stage "
                            "(dvc repro -f prepare)")
        if sha256_file(path) != digest:
            raise DataError(f"{path} does not match the SHA-256 recorded in {stats_file} (damaged or changed "
                            "since it was prepared): re-run the prepare stage (dvc repro -f prepare)")


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
