"""A generated uncurated image folder for the stream tests (tests/engine/test_stream.py,
tests/e2e/test_uncurated_stream.py): random PNGs in nested folders plus corrupt files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

CORRUPT = {"zero.png": b"", "truncated.png": None, "garbage.jpg": b"not an image at all" * 10}


def png_bytes(rng: np.random.Generator, side: int = 32, mode: str = "RGB") -> bytes:
    shape = (side, side, 3) if mode == "RGB" else (side, side)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, format="PNG")
    return buf.getvalue()


def make_folder(root: Path, n_good: int, seed: int = 0) -> Path:
    """``n_good`` random 32-px PNGs spread over nested folders (any names), plus the files of
    :data:`CORRUPT` (empty, truncated, not an image), a hidden image and a text file (both ignored)."""
    rng = np.random.default_rng(seed)
    for i in range(n_good):
        sub = root / f"part{i % 3}" / ("deeper" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:05d} photo.png").write_bytes(png_bytes(rng, mode="RGB" if i % 4 else "L"))
    good = png_bytes(rng)
    for name, blob in CORRUPT.items():
        (root / "part0" / name).write_bytes(good[: len(good) // 2] if blob is None else blob)
    (root / "part1" / ".hidden.png").write_bytes(good)
    (root / "part1" / "notes.txt").write_text("not an image")
    return root
