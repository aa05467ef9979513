"""jem: joint-embedding self-supervised learning of image encoders, as a DVC + Ray Train pipeline.

``import jem`` stays light (no torch); ``jem.load_encoder(path)`` imports what it needs on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_encoder"]


def __getattr__(name: str) -> Any:
    if name == "load_encoder":
        from jem.export import load_encoder

        return load_encoder
    raise AttributeError(f"module 'jem' has no attribute {name!r}")
