"""A folder of PNG/JPEG files per class: decoding, resizing, splitting, and broken inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_writers import Fixture
from PIL import Image

from jem.data import DataError, check_dataset, load_dataset
from jem.data.imagefolder import read_image


def test_load_shapes_classes_and_split(imagefolder_root: Fixture) -> None:
    check_dataset("imagefolder", str(imagefolder_root.root))
    ds = load_dataset("imagefolder", str(imagefolder_root.root), test_fraction=0.25, seed=0)
    assert ds.classes == ["cat", "dog"]  # hidden folder skipped, sorted
    assert ds.train_x.shape[1:] == (32, 32, 3) and ds.train_x.dtype == np.uint8
    assert len(ds.train_x) + len(ds.test_x) == 8  # notes.txt ignored, nested and upper-case found
    assert np.bincount(ds.train_y).tolist() == [3, 3] and np.bincount(ds.test_y).tolist() == [1, 1]
    assert ds.train_y.dtype == np.int64 and ds.unlabelled_x is None


def test_split_is_deterministic(imagefolder_root: Fixture) -> None:
    root = str(imagefolder_root.root)
    a, b = (load_dataset("imagefolder", root, seed=3) for _ in range(2))
    np.testing.assert_array_equal(a.test_x, b.test_x)
    seen = {load_dataset("imagefolder", root, seed=s).test_x.tobytes() for s in range(6)}
    assert len(seen) > 1


def test_exact_pixels_without_resize(imagefolder_root: Fixture) -> None:
    exact = imagefolder_root.train_x[0]
    got = read_image(str(imagefolder_root.root / "cat" / "a.png"), 32)
    np.testing.assert_array_equal(got, exact)
    assert tuple(got[0, 31]) == (255, 0, 0)  # top-right, not transposed or flipped


def test_image_size_and_modes(imagefolder_root: Fixture) -> None:
    ds = load_dataset("imagefolder", str(imagefolder_root.root), image_size=12)
    assert ds.train_x.shape[1:] == (12, 12, 3) and ds.test_x.shape[1:] == (12, 12, 3)
    grey = read_image(str(imagefolder_root.root / "cat" / "nested" / "c.jpg"), 20)
    assert grey.shape == (20, 20, 3)
    np.testing.assert_array_equal(grey[..., 0], grey[..., 1])  # greyscale replicated to RGB


def test_resize_is_bilinear_to_a_square(tmp_path: Path) -> None:
    img = np.zeros((10, 40, 3), dtype=np.uint8)
    img[:, 20:] = 255  # left half black, right half white
    Image.fromarray(img).save(tmp_path / "wide.png")
    out = read_image(str(tmp_path / "wide.png"), 8)
    assert out.shape == (8, 8, 3)
    assert np.all(out[:, :3] == 0) and np.all(out[:, 5:] == 255)


def test_undecodable_png_names_the_file(imagefolder_root: Fixture) -> None:
    bad = imagefolder_root.root / "dog" / "broken.png"
    bad.write_bytes(b"this is not a PNG")
    check_dataset("imagefolder", str(imagefolder_root.root))  # cheap check does not decode
    with pytest.raises(DataError, match=r"cannot decode image .*dog/broken.png"):
        load_dataset("imagefolder", str(imagefolder_root.root))


def test_truncated_jpeg(imagefolder_root: Fixture) -> None:
    path = imagefolder_root.root / "dog" / "1.JPEG"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"cannot decode image .*1.JPEG"):
        load_dataset("imagefolder", str(imagefolder_root.root))


def test_empty_and_missing_roots(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="imagefolder needs a root folder"):
        check_dataset("imagefolder")
    with pytest.raises(DataError, match="has no class sub-folders"):
        check_dataset("imagefolder", str(tmp_path))
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match=r"class folder .*cls' holds no .png/.jpg/.jpeg files"):
        load_dataset("imagefolder", str(tmp_path))
