"""scikit-learn's digits set: 1797 grey 8x8 images of handwritten digits, shipped inside sklearn."""

from __future__ import annotations

import numpy as np

from jem.data.common import Dataset, split_dataset

CLASSES = [str(d) for d in range(10)]


def load_digits_dataset(test_fraction: float, seed: int) -> Dataset:
    """Load digits as uint8 ``(N, 8, 8, 1)``; pixel values 0..16 become 0..255 (x 255/16, rounded).

    There is no official split, so train/test is stratified by ``test_fraction`` under ``seed``.
    """
    from sklearn.datasets import load_digits  # deferred: sklearn import costs about a second

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    y = bunch.target.astype(np.int64)
    return split_dataset(x, y, list(CLASSES), test_fraction, seed)
