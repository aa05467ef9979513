"""Dataset readers: every supported on-disk format -> uint8 images ``(N, H, W, C)`` + int64 labels.

``check_dataset`` is the cheap presence check the validation stage runs before any compute (file
existence, sizes and headers, nothing decoded); ``load_dataset`` reads, validates and optionally
resizes. Every problem with the data surfaces as one :class:`~jem.errors.DataError` line saying what is wrong
and how to fix it. Nothing here downloads.
"""

from __future__ import annotations

from jem.data.avdigits import check_av_digits, check_avfolder, load_av_digits, load_avfolder
from jem.data.cifar import check_cifar, load_cifar
from jem.data.common import Dataset, resize_images, to_channels
from jem.data.digits import load_digits_dataset
from jem.data.idx import check_fashion_mnist, load_fashion_mnist
from jem.data.imagefolder import check_imagefolder, load_imagefolder
from jem.data.stl10 import check_stl10, load_stl10
from jem.errors import DataError

__all__ = ["DEFAULT_ROOTS", "DataError", "Dataset", "check_dataset", "load_dataset"]

# Where each dataset is looked for when ``data.root`` is "". Debian's dataset packages install under
# /usr/share/datasets/<name>; the others follow that convention. digits ships inside scikit-learn and
# imagefolder has no default (a root is required).
DEFAULT_ROOTS: dict[str, str] = {
    "digits": "",
    "fashion-mnist": "/usr/share/datasets/fashion-mnist",
    "cifar10": "/usr/share/datasets/cifar10",
    "cifar100": "/usr/share/datasets/cifar100",
    "stl10": "/usr/share/datasets/stl10",
    "imagefolder": "",
    "av-digits": "",
    "avfolder": "",
}


def _root(name: str, root: str) -> str:
    if name not in DEFAULT_ROOTS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DEFAULT_ROOTS)}")
    return root or DEFAULT_ROOTS[name]


def check_dataset(name: str, root: str = "", use_unlabelled: bool = False, test_fraction: float = 0.25,
                  group_regex: str = "", seed: int = 0, audio_root: str = "") -> None:
    """Cheaply check that dataset ``name`` is present and complete under ``root`` ("" -> default).

    Only file existence, sizes and headers are looked at (milliseconds, no decoding), so truncated
    downloads are caught but a corrupt image inside a complete file is only found by
    :func:`load_dataset`. ``use_unlabelled`` also checks STL-10's unlabelled file. An image folder's
    layout is checked too (two or more class folders of three or more images; with ``group_regex``,
    every file has a group and the group-aware ``test_fraction`` split under ``seed`` leaves every
    class a test image). The audio-visual sets have every WAV header checked (mono, 16-bit, the
    sample rate, not truncated): ``av-digits`` reads its recordings from ``audio_root``, ``avfolder``
    pairs ``<id>.wav`` beside each image under ``root``. Raises :class:`DataError` naming what is
    missing and how to get it.
    """
    path = _root(name, root)
    if name == "fashion-mnist":
        check_fashion_mnist(path)
    elif name in ("cifar10", "cifar100"):
        check_cifar(name, path)
    elif name == "stl10":
        check_stl10(path, use_unlabelled)
    elif name == "imagefolder":
        check_imagefolder(path, test_fraction, group_regex, seed)
    elif name == "av-digits":
        check_av_digits(audio_root)
    elif name == "avfolder":
        check_avfolder(path)
    # digits ships inside scikit-learn: nothing to check.


def load_dataset(
    name: str,
    root: str = "",
    image_size: int = 0,
    test_fraction: float = 0.25,
    seed: int = 0,
    use_unlabelled: bool = False,
    channels: int = 0,
    group_regex: str = "",
    audio_root: str = "",
) -> Dataset:
    """Load dataset ``name`` ("digits", "fashion-mnist", "cifar10", "cifar100", "stl10", "imagefolder",
    "av-digits", "avfolder"; the last two also fill ``Dataset.train_audio``/``test_audio``).

    Args:
        root: folder holding the official files ("" -> ``DEFAULT_ROOTS[name]``).
        image_size: 0 keeps the native size (imagefolder: 32); otherwise every image is resized
            with PIL bilinear to ``image_size x image_size``.
        test_fraction, seed: the stratified split of sets without an official one (digits,
            imagefolder); ignored for the others.
        use_unlabelled: stl10 only, also return the 100k unlabelled images (memory-mapped).
        channels: 1 (greyscale) or 3 (RGB); 0 keeps the native channels (imagefolder: one channel
            when every file is stored greyscale, see :mod:`jem.data.imagefolder`).
        group_regex: imagefolder only, a group-aware split (see :mod:`jem.data.imagefolder`).
        audio_root: av-digits only, the FSDD recordings folder (see :mod:`jem.data.avdigits`).

    Returns:
        A :class:`Dataset` of uint8 ``(N, H, W, C)`` images and int64 labels.
    """
    path = _root(name, root)
    if image_size < 0:
        raise DataError(f"image_size must be >= 0 (0 = native size), got {image_size}")
    if use_unlabelled and name != "stl10":
        raise DataError(f"use_unlabelled is only available for stl10, not {name}")
    if channels not in (0, 1, 3):
        raise DataError(f"channels must be 0 (native), 1 or 3, got {channels}")
    if group_regex and name != "imagefolder":
        raise DataError(f"group_regex is only used with imagefolder, not {name}")
    if audio_root and name != "av-digits":
        raise DataError(f"audio_root is only used with av-digits, not {name}")
    if name == "imagefolder":  # resizes and converts while decoding
        return load_imagefolder(path, image_size, test_fraction, seed, channels, group_regex)
    if name == "avfolder":
        return load_avfolder(path, image_size, test_fraction, seed, channels)
    if name == "av-digits":
        ds = load_av_digits(audio_root, test_fraction, seed)
    elif name == "digits":
        ds = load_digits_dataset(test_fraction, seed)
    elif name == "fashion-mnist":
        ds = load_fashion_mnist(path)
    elif name in ("cifar10", "cifar100"):
        ds = load_cifar(name, path)
    else:
        ds = load_stl10(path, use_unlabelled)
    if image_size:
        ds.train_x = resize_images(ds.train_x, image_size, desc=f"{name} train")
        ds.test_x = resize_images(ds.test_x, image_size, desc=f"{name} test")
        if ds.unlabelled_x is not None:
            ds.unlabelled_x = resize_images(ds.unlabelled_x, image_size, desc=f"{name} unlabelled")
    if channels:
        ds.train_x, ds.test_x = to_channels(ds.train_x, channels), to_channels(ds.test_x, channels)
        if ds.unlabelled_x is not None:
            ds.unlabelled_x = to_channels(ds.unlabelled_x, channels)
    return ds
