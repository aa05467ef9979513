import json
import sys
from pathlib import Path

import numpy as np
import pytest

# make tests/dist_harness.py importable as `dist_harness` from any test folder
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def prepared(tmp_path):
    """A small prepared digits folder (300 training, 100 test images, the 1%/10% subsets), as the
    prepare stage writes it; a test module may define its own ``prepared`` instead."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    images = np.clip(x * 16, 0, 255).astype(np.uint8).reshape(-1, 8, 8, 1)
    folder = tmp_path / "prepared"
    folder.mkdir()
    arrays = {"train_x": images[:300], "train_y": y[:300], "test_x": images[300:400], "test_y": y[300:400],
              "subset_1pct": np.arange(0, 300, 30), "subset_10pct": np.arange(0, 300, 3)}
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", arr)
    stats = {"classes": [str(i) for i in range(10)], "num_classes": 10, "mean": [0.3], "std": [0.37],
             "dataset": "digits"}
    (folder / "stats.json").write_text(json.dumps(stats))
    return folder
