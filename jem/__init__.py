"""jem: joint-embedding self-supervised learning of image encoders, as a DVC + Ray Train pipeline.

``import jem`` stays light (no torch); ``jem.load_encoder(path)`` imports what it needs on first use.
"""

from __future__ import annotations

import os
from typing import Any

# OpenMP threads that finish a parallel region sleep instead of spinning for the next one. Spinning
# (the runtime's default) is a little faster on an idle machine but collapses on a shared one:
# rendering 8k views took 0.39 s on 1 thread, 8.3 s on 2 spinning threads and 0.18 s on 2 passive
# ones (issue 19, 2-core EPYC). Set here, before torch loads its OpenMP runtime, so every stage and
# the Ray workers of a local instance (which inherit it) wait passively; a user's own value stays.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["load_encoder"]


def __getattr__(name: str) -> Any:
    if name == "load_encoder":
        from jem.export import load_encoder

        return load_encoder
    raise AttributeError(f"module 'jem' has no attribute {name!r}")
