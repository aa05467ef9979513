"""The portable encoder: export it, load it, embed a folder of images with it.

An encoder folder holds ``encoder.safetensors`` (the backbone's tensors: no pickle, safe to load),
``encoder.json`` (architecture, feature dim, method, projector widths and, once exported, the
input normalisation) and optionally ``projector.safetensors`` (the projector / expander head, for
collapse diagnostics of its outputs). :func:`load_encoder` (also ``jem.load_encoder``) rebuilds
the backbone as a ready ``nn.Module``.

:func:`export_encoder` validates a trained encoder (strict weight load, a forward pass of the right
shape) and writes a self-describing copy: the per-channel ``mean`` / ``std`` the encoder was trained
with go into ``encoder.json`` together with SHA-256 sums of the weight files, so the folder is all
a downstream user needs. :func:`embed_folder` reads PNG/JPEG files, converts them to the encoder's
channels and size, normalises them exactly like the training pipeline and returns features.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from jem.errors import DataError
from jem.io import check_free_space, sha256_file

FORMAT = "jem-encoder/1"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
WEIGHT_FILES = ("encoder.safetensors", "projector.safetensors")


def read_meta(folder: str | Path) -> dict[str, Any]:
    """Parse and check ``encoder.json`` of an encoder folder; FileNotFoundError / DataError (one line)."""
    folder = Path(folder)
    path = folder / "encoder.json"
    for p in (path, folder / "encoder.safetensors"):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: not an encoder folder (run `dvc repro` to train one)")
    try:
        meta = json.loads(path.read_text())
        arch = meta["arch"]
        for key in ("backbone", "in_channels", "image_size"):
            arch[key]  # noqa: B018 - presence check
        int(meta["feat_dim"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path} is not a valid encoder description ({exc!r})") from None
    return meta


def verify_weights(folder: str | Path, meta: dict[str, Any]) -> None:
    """Check every weight file of an encoder folder against the SHA-256 that ``encoder.json``
    records (the pretrain stage and ``jem export`` write them). DataError naming the file when one
    differs (bit flips, truncation, a corrupt header), is missing, or has no recorded sum."""
    folder = Path(folder)
    digests = meta.get("sha256")
    if not isinstance(digests, dict) or not isinstance(digests.get("encoder.safetensors"), str):
        raise DataError(f"{folder / 'encoder.json'} records no SHA-256 of encoder.safetensors, so its weights "
                        "cannot be verified: re-run the pretrain stage (or `jem export`) to rewrite it")
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            if name in digests:
                raise DataError(f"{path} is listed in encoder.json but missing: copy the whole encoder folder")
            continue
        if name not in digests:
            raise DataError(f"{path} has no SHA-256 in encoder.json: it does not belong to this encoder")
        if sha256_file(path) != digests[name]:
            raise DataError(f"{path} does not match the SHA-256 recorded in encoder.json: the file is corrupt "
                            "or truncated; re-run the pretrain stage or copy the encoder again")


def _load_tensors(path: Path) -> dict[str, Any]:
    """``safetensors`` load with a one-line DataError for an unreadable file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable safetensors file ({exc})") from None


def load_encoder(path: str | Path) -> Any:
    """Rebuild an exported encoder from its folder (or either of its two files) as an ``nn.Module``;
    eval mode, CPU. The weights are checked against the SHA-256 sums in ``encoder.json`` first."""
    from jem.models import build_backbone

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    meta_path, weights = folder / "encoder.json", folder / "encoder.safetensors"
    for p in (meta_path, weights):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: export an encoder with `dvc repro` (stage pretrain) first")
    meta = read_meta(folder)
    verify_weights(folder, meta)
    net, feat_dim = build_backbone(meta["arch"])
    try:
        net.load_state_dict(_load_tensors(weights))
    except RuntimeError as exc:
        raise DataError(f"{weights} does not fit the architecture in {meta_path} "
                        f"({str(exc).strip().splitlines()[0]})") from None
    net.out_dim = feat_dim  # type: ignore[assignment]
    return net.eval()


def normalisation(meta: dict[str, Any], stats: str | Path | None = None) -> tuple[list[float], list[float]]:
    """The per-channel input ``(mean, std)``: from ``encoder.json`` when it has them (an exported
    encoder), else from a ``stats.json`` of the prepare stage (``stats``, default
    ``data/prepared/stats.json`` when it exists)."""
    if "mean" in meta and "std" in meta:
        mean, std = meta["mean"], meta["std"]
    else:
        path = Path(stats) if stats is not None else Path("data/prepared/stats.json")
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found and encoder.json has no mean/std: pass --stats "
                                    "data/prepared/stats.json (the stats of the data the encoder was trained on)")
        loaded = json.loads(path.read_text())
        mean, std = loaded["mean"], loaded["std"]
    channels = int(meta["arch"]["in_channels"])
    if len(mean) != channels or len(std) != channels or not all(s > 0 for s in std):
        raise ValueError(f"normalisation mean {mean} / std {std} does not fit an encoder with {channels} "
                         "input channels (std must be positive)")
    return [float(m) for m in mean], [float(s) for s in std]


def export_encoder(src: str | Path, out: str | Path, stats: str | Path | None = None) -> dict[str, Any]:
    """Validate the encoder in ``src`` and write a self-describing copy to ``out``; returns its meta.

    Checks: ``encoder.json`` parses, the weights load strictly into the described architecture, a
    forward pass of one zero image gives finite (1, feat_dim) features, the weight files' hashes
    match what ``encoder.json`` records. ``out`` is replaced atomically, after a free-space check.
    """
    import torch

    src, out = Path(src), Path(out)
    meta = read_meta(src)
    if out.resolve() == src.resolve():
        raise ValueError(f"--out {out} is the encoder folder itself; choose another folder")
    verify_weights(src, meta)
    mean, std = normalisation(meta, stats)
    net = load_encoder(src)
    arch = meta["arch"]
    size, cin = int(arch["image_size"]), int(arch["in_channels"])
    with torch.no_grad():
        y = net(torch.zeros(1, cin, size, size)).flatten(1)
    if tuple(y.shape) != (1, int(meta["feat_dim"])) or not bool(torch.isfinite(y).all()):
        raise ValueError(f"encoder in {src} gives features of shape {tuple(y.shape)} (finite: "
                         f"{bool(torch.isfinite(y).all())}); encoder.json says feat_dim {meta['feat_dim']}")
    meta = {**meta, "format": FORMAT, "mean": mean, "std": std}
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    check_free_space(out.parent, sum((src / n).stat().st_size for n in WEIGHT_FILES if (src / n).is_file())
                     + (1 << 20), "the exported encoder")
    tmp.mkdir(parents=True)
    try:
        digests = {}
        for name in WEIGHT_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, tmp / name)
                digests[name] = sha256_file(tmp / name)
        meta["sha256"] = digests
        (tmp / "encoder.json").write_text(json.dumps(meta, indent=2) + "\n")
        load_encoder(tmp)  # the copy loads too
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return meta


def load_projector(folder: str | Path, method_params: Any = None) -> Any:
    """The projector head saved next to an encoder (``projector.safetensors``), eval mode, or None.

    Rebuilt through the method registry (``method`` and ``projector`` widths of ``encoder.json``,
    ``method_params`` or the method's default hyperparameters), so each method's own head shape is
    used; failing that, as ``jem.models.mlp(feat_dim, projector)`` variants. None when the file is
    absent, no candidate loads strictly, or the head does not map backbone features (B, feat_dim)
    to (B, P) (heads of pretext methods such as jigsaw): then the projector diagnostics are skipped.
    """
    import torch

    from jem.models import mlp

    folder = Path(folder)
    weights = folder / "projector.safetensors"
    meta = read_meta(folder)
    verify_weights(folder, meta)
    if not weights.is_file():
        return None
    state = _load_tensors(weights)
    dims = [int(d) for d in meta.get("projector", [])]
    feat_dim = int(meta["feat_dim"])

    def from_registry() -> Any:
        from jem.methods import get_method_class, params_class

        name = meta.get("method", "")
        params = method_params if method_params is not None else params_class(name)()
        return get_method_class(name)(dict(meta["arch"]), dims, params).projector

    builders: list[Callable[[], Any]] = [from_registry] if meta.get("method") else []
    if dims:
        builders += [partial(mlp, feat_dim, dims, last_bn=lb, last_bias=bias)
                     for lb, bias in ((False, True), (False, False), (True, False))]
    with torch.random.fork_rng(devices=[]):  # building heads must not move the caller's RNG
        for build in builders:
            try:
                head = build()
                head.load_state_dict(state, strict=True)
                head.eval()
                with torch.no_grad():  # it must map backbone features (B, feat_dim) to (B, P)
                    probe = head(torch.zeros(2, feat_dim))
                if not isinstance(probe, torch.Tensor) or probe.ndim != 2 or probe.shape[0] != 2:
                    continue
            except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError):
                continue
            return head
    return None


def list_images(folder: str | Path) -> list[Path]:
    """PNG/JPEG files under ``folder`` (recursively; hidden entries skipped), in sorted order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} not found")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    if not found:
        raise FileNotFoundError(f"no .png/.jpg/.jpeg files under {folder}")
    return found


def load_images(paths: Sequence[Path], size: int, channels: int, progress: bool = False) -> np.ndarray:
    """Decode image files to uint8 (N, size, size, channels): converted to grayscale (``channels``
    1) or RGB (3), bilinear resize to a square like the data readers. ValueError names a bad file."""
    from PIL import Image

    from jem.data.common import BILINEAR
    from jem.progress import progress as bar

    if channels not in (1, 3):
        raise ValueError(f"encoders with {channels} input channels are not supported (1 or 3)")
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(paths), size, size, channels), dtype=np.uint8)
    for i, path in enumerate(bar(paths, desc="read images", unit="img", disable=not progress)):
        try:
            with Image.open(path) as img:
                pic = img.convert(mode)
            if pic.size != (size, size):
                pic = pic.resize((size, size), BILINEAR)
            out[i] = np.asarray(pic, dtype=np.uint8).reshape(size, size, channels)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ValueError(f"cannot decode image {path} ({exc})") from None
    return out


def embed_folder(encoder_dir: str | Path, images_dir: str | Path, stats: str | Path | None = None,
                 batch_size: int = 256, device: str = "cpu", progress: bool = False
                 ) -> tuple[np.ndarray, list[Path]]:
    """Backbone features of every image under ``images_dir``: ``(float32 (N, D), file paths)``."""
    import torch

    from jem.evaluate.features import extract_features

    meta = read_meta(encoder_dir)
    verify_weights(encoder_dir, meta)  # before any image is read
    mean, std = normalisation(meta, stats)
    paths = list_images(images_dir)
    arch = meta["arch"]
    images = load_images(paths, int(arch["image_size"]), int(arch["in_channels"]), progress)
    net = load_encoder(encoder_dir).to(torch.device(device))
    feats = extract_features(net, images, mean, std, batch_size, device, progress)
    if not np.isfinite(feats).all():
        raise ValueError("the encoder produced non-finite features")
    return feats, paths
