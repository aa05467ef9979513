"""Atomic writes: write to a temporary name next to the target, then rename."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jem.errors import NoSpace


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
