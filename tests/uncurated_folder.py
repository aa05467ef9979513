"""A generated uncurated image folder for the stream tests (tests/engine/test_stream.py,
tests/e2e/test_uncurated_stream.py): random PNGs in nested folders plus corrupt files."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

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


def local_feed(root: Path, spec: Any, stats: dict[str, Any], rank: int = 0, world: int = 1) -> Any:
    """A worker's :class:`~jem.engine.sources.StreamFeed` over ``root`` in this process, without Ray:
    the manifest's files in blocks of ``RENDER_ROWS``, block ``b`` going to worker ``b % world`` (Ray
    Data hands blocks to whichever worker asks; any split of whole blocks is one it may make), each
    block read and passed through the stream's own ``render_batch`` / ``decode_batch``."""
    from jem.data.stream import stream_files
    from jem.engine.sources import StreamFeed
    from jem.engine.stream import RENDER_ROWS, FileIndex, decode_batch, render_batch

    files = stream_files(str(root))
    index = FileIndex(files)
    mine = [files[s:s + RENDER_ROWS] for s in range(0, len(files), RENDER_ROWS)][rank::world]

    def passes(fn: Any) -> Any:
        def one_pass(n: int) -> Any:
            for block in mine:
                batch = {"bytes": np.array([Path(f).read_bytes() for f in block], dtype=object),
                         "path": np.array(block, dtype=object)}
                out = fn(batch, spec, index)
                for s in range(0, len(block), n):
                    yield {k: v[s:s + n] for k, v in out.items()}
        return one_pass

    return StreamFeed(passes(render_batch), len(files), tuple(spec.columns()), spec.size, spec.channels, stats,
                      passes(decode_batch))
