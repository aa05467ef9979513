"""Augmentation: view recipes as per-sample random parameters, batched tensor ops, the view cache.

- :mod:`jem.augment.ops`: vectorised image ops with one parameter per sample (CPU or GPU).
- :mod:`jem.augment.recipe`: :func:`sample_view_params` / :func:`apply_view` for a
  :class:`~jem.sections.ViewConfig`, and :func:`augment_batch` (the on-device path).
- :mod:`jem.augment.cache`: :func:`build_view_cache` and the memory-mapped :class:`ViewCache`.
"""

from jem.augment.cache import ViewCache, build_view_cache, local_recipe, local_size
from jem.augment.recipe import (
    ViewParams,
    apply_view,
    augment_batch,
    sample_view_params,
    to_float_nchw,
    to_uint8_nhwc,
)

__all__ = ["ViewCache", "ViewParams", "apply_view", "augment_batch", "build_view_cache", "local_recipe",
           "local_size", "sample_view_params", "to_float_nchw", "to_uint8_nhwc"]
