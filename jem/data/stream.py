"""The uncurated, unlabelled pretraining folder (``data.pretrain_root``): what is in it, without
decoding a single image.

Any folder tree of image files, any depth, any file names, no labels. A file counts when its
extension (any case) is one of :data:`STREAM_EXTENSIONS`; hidden files and folders (leading ``.``)
are skipped, as in the image-folder reader. Whether a file really decodes is only known when the
stream reads it (:mod:`jem.engine.stream`): unreadable files are skipped and counted there.

:func:`stream_manifest` is what the ``stream`` stage writes to ``data/stream/manifest.json``: the
SHA-256 of the sorted list of ``relative path, size in bytes, mtime in ns`` lines, the file count
and the total size. DVC cannot hash a folder outside the repository cheaply, so this manifest is
what makes ``dvc repro`` re-run pretraining when a file is added, removed, replaced or edited.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

from jem.errors import DataError

STREAM_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_HOW = "set data.pretrain_root to a folder holding image files (png, jpg, webp, bmp, gif, tiff; any depth)"


def _walk(root: str) -> Iterator[os.DirEntry[str]]:
    """Image files under ``root`` as directory entries, in a stable sorted order (folders first
    visited in sorted order, hidden entries skipped, symlinks to files followed)."""
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        subdirs = []
        for e in entries:
            if e.is_dir():
                subdirs.append(e.path)
            elif e.is_file() and e.name.lower().endswith(STREAM_EXTENSIONS):
                yield e
        stack.extend(reversed(subdirs))


def check_pretrain_root(root: str) -> None:
    """DataError (one line) unless ``root`` is a folder holding at least one image file; stops at the
    first one found (nothing decoded)."""
    if not os.path.isdir(root):
        raise DataError(f"data.pretrain_root {root!r} is not a folder; {_HOW}")
    if next(_walk(root), None) is None:
        raise DataError(f"data.pretrain_root {root!r} holds no image file; {_HOW}")


def count_files(root: str) -> int:
    """How many image files :func:`stream_files` would list (names only, nothing decoded)."""
    return sum(1 for _ in _walk(root))


def stream_files(root: str) -> list[str]:
    """Absolute paths of every image file under ``root``, sorted as :func:`_walk` visits them."""
    return [e.path for e in _walk(os.path.abspath(root))]


def stream_manifest(root: str) -> dict[str, Any]:
    """``{"root", "files", "bytes", "list_sha256"}`` of the pretraining folder (stat only, no decoding);
    DataError if it is not a folder or holds no image."""
    check_pretrain_root(root)
    top = os.path.abspath(root)
    digest, files, total = hashlib.sha256(), 0, 0
    for e in _walk(top):
        st = e.stat()
        rel = os.path.relpath(e.path, top).replace(os.sep, "/")
        digest.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        files += 1
        total += st.st_size
    return {"root": top, "files": files, "bytes": total, "list_sha256": digest.hexdigest()}


