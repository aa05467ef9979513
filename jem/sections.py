"""The method-independent sections of params.yaml as frozen dataclasses, and the strict builder.

Every knob of a run lives in ``params.yaml``; this module and :mod:`jem.config` are its schema.
Loading fails *before any compute* with one :class:`ConfigError` line that names the key, the bad
value and what is allowed (with a did-you-mean for typos).

This module never imports the method registry (nor torch): the ``prepare`` and ``augment`` stages
read their sections through :func:`load_base_config`, so a change to a method, loss or model does
not invalidate the data or the view cache in DVC's eyes. :mod:`jem.config` adds the ``methods``
section and the cross-field checks on top (the ``validate`` stage, which always runs first, checks
the whole file).

Constraints are declared next to each field through :func:`knob` metadata:
``choices`` (allowed values), ``lo``/``hi`` (inclusive bounds), ``gt`` (strict lower bound) and
``pair`` (a two-element ``[low, high]`` list whose first value does not exceed the second).
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from jem._schema import OPTIMIZERS, knob

DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "stl10", "imagefolder", "av-digits", "avfolder")
BACKBONES = ("small_cnn", "resnet18", "vit_tiny")  # jem's own; any torchvision classification model too
STEMS = ("auto", "imagenet", "cifar")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class ConfigError(ValueError):
    """A params.yaml problem, phrased as one line for the user."""


# --------------------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class DataConfig:
    root: str = knob("")  # "" -> the dataset's default location (see jem.data)
    image_size: int = knob(0, lo=0, hi=512)  # 0 -> native size (imagefolder: 32)
    test_fraction: float = knob(0.25, gt=0.0, hi=0.9)  # for sets without an official split
    val_fraction: float = knob(0.1, gt=0.0, hi=0.5)  # stratified validation part of the training split
    max_train: int = knob(0, lo=0)  # 0 -> all; else a stratified subsample (taken after the validation split)
    max_test: int = knob(0, lo=0)
    use_unlabelled: bool = knob(False)  # stl10: pretrain on the 100k unlabelled split
    channels: int = knob(0, choices=(0, 1, 3))  # 0 -> native (imagefolder: 1 if every file is greyscale)
    group_regex: str = knob("")  # imagefolder: group = 1st capture group on the path below root; kept whole
    audio_root: str = knob("")  # av-digits: the FSDD recordings folder ({digit}_{speaker}_{take}.wav)
    pretrain_root: str = knob("")  # "" -> pretrain on `dataset`; else a folder tree of unlabelled images, streamed


@dataclass(frozen=True)
class ViewConfig:
    """One view's augmentation recipe (SimCLR/BYOL parametrisation)."""

    crop_scale: list = knob([0.4, 1.0], pair=True, gt=0.0, hi=1.0)  # paper: [0.08|0.2, 1]
    crop_ratio: list = knob([0.75, 1.3333333], pair=True, gt=0.0, hi=10.0)
    flip_p: float = knob(0.0, lo=0.0, hi=1.0)  # paper: 0.5; digits are not mirror-symmetric
    jitter_p: float = knob(0.8, lo=0.0, hi=1.0)
    brightness: float = knob(0.4, lo=0.0, hi=1.0)
    contrast: float = knob(0.4, lo=0.0, hi=1.0)
    saturation: float = knob(0.2, lo=0.0, hi=1.0)
    hue: float = knob(0.1, lo=0.0, hi=0.5)
    grayscale_p: float = knob(0.2, lo=0.0, hi=1.0)
    blur_p: float = knob(1.0, lo=0.0, hi=1.0)
    blur_sigma: list = knob([0.1, 2.0], pair=True, gt=0.0, hi=50.0)  # at 224 px, scaled to size
    solarize_p: float = knob(0.0, lo=0.0, hi=1.0)


def _view_b() -> ViewConfig:
    # BYOL/VICReg asymmetric pair: view A always blurred, view B rarely blurred but solarised.
    return ViewConfig(blur_p=0.1, solarize_p=0.2)


@dataclass(frozen=True)
class MultiCropConfig:
    local_crops: int = knob(0, lo=0, hi=16)  # local views per image (0 = multi-crop off)
    local_size: int = knob(0, lo=0, hi=512)  # 0 -> about half the global size
    local_scale: list = knob([0.05, 0.4], pair=True, gt=0.0, hi=1.0)


@dataclass(frozen=True)
class AudioConfig:
    """The audio front end and its augmentations (audio-visual data sets; see jem.augment.audio)."""

    n_fft: int = knob(256, lo=16, hi=8192)  # STFT window (samples): 32 ms at 8 kHz
    hop: int = knob(128, lo=1, hi=8192)  # STFT hop (samples)
    n_mels: int = knob(40, lo=4, hi=256)  # mel bands (HTK scale)
    f_min: float = knob(0.0, lo=0.0)  # Hz
    f_max: float = knob(0.0, lo=0.0)  # Hz; 0 -> the Nyquist frequency
    shift_s: float = knob(0.1, lo=0.0, hi=10.0)  # time shift up to +- this many seconds
    gain_db: float = knob(6.0, lo=0.0, hi=40.0)  # gain U(-g, g) dB
    noise_p: float = knob(0.5, lo=0.0, hi=1.0)  # probability of white noise
    snr_db: list = knob([10.0, 40.0], pair=True, gt=-100.0, hi=100.0)  # its SNR range (dB)
    freq_masks: int = knob(2, lo=0, hi=8)  # SpecAugment frequency masks
    freq_width: int = knob(6, lo=0, hi=256)  # up to this many mel bands each
    time_masks: int = knob(2, lo=0, hi=8)  # SpecAugment time masks
    time_width: int = knob(8, lo=0, hi=1024)  # up to this many frames each


@dataclass(frozen=True)
class AugmentConfig:
    views_per_image: int = knob(4, lo=0, hi=64)  # K global views cached per image; 0 = on device
    view_a: ViewConfig = field(default_factory=ViewConfig)
    view_b: ViewConfig = field(default_factory=_view_b)
    multicrop: MultiCropConfig = field(default_factory=MultiCropConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)  # audio-visual data sets only


@dataclass(frozen=True)
class ModelConfig:
    # one of BACKBONES or a torchvision classification model by name (resnet50, regnet_y_400mf, ...), always
    # with random weights; checked against torchvision's list by jem.config (this module imports no torch)
    backbone: str = knob("small_cnn")
    stem: str = knob("auto", choices=STEMS)  # torchvision ResNet/RegNet: cifar = 3x3 stride-1, no max-pool (jem.models.tv)
    # torchvision ResNet/RegNet (and resnet18): the last BatchNorm of every residual block starts at gamma 0,
    # so each block starts as the identity (Goyal et al. 2017, arXiv:1706.02677, section 5.1; jem.models.tv)
    zero_init_residual: bool = knob(False)
    width: int = knob(32, lo=4, hi=1024)  # small_cnn base channel count
    projector: list = knob([256, 256], min_len=1, item_lo=1)  # hidden..., output widths
    patch_size: int = knob(0, lo=0, hi=64)  # vit_tiny patch size; 0 -> automatic (8x8 -> 2, 28/32 -> 4)
    depth: int = knob(12, lo=1, hi=48)  # vit_tiny transformer blocks (DeiT-Ti: 12)
    mask_ratio: float = knob(0.0, lo=0.0, hi=0.95)  # vit_tiny: fraction of patch tokens dropped in training


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = knob(30, lo=1, hi=100000)
    batch_size: int = knob(256, lo=2, hi=65536)  # per worker; effective = workers x batch_size
    optimizer: str = knob("lars", choices=OPTIMIZERS)
    lr: float = knob(0.3, gt=0.0, hi=100.0)  # base lr, for a batch of 256 under lr_scaling
    lr_scaling: str = knob("linear", choices=("linear", "sqrt", "none"))
    weight_decay: float = knob(1.0e-6, lo=0.0, hi=1.0)
    momentum: float = knob(0.9, lo=0.0, hi=0.999)
    warmup_epochs: int = knob(3, lo=0)
    min_lr_ratio: float = knob(0.0, lo=0.0, hi=1.0)
    workers: int = knob(1, lo=1, hi=4096)
    cpus_per_worker: float = knob(0.0, lo=0.0, hi=256.0)  # 0 = auto: a local instance's CPUs shared by the workers
    use_gpu: bool = knob(False)
    precision: str = knob("auto", choices=("auto", "fp32", "bf16"))  # auto: bf16 autocast on GPU, fp32 on CPU
    memory_format: str = knob("auto", choices=("auto", "contiguous", "channels_last"))  # auto: channels_last
    compile: str = knob("none", choices=("none", "backbone", "step"))  # what torch.compile covers: jem.engine.step
    sync_bn: bool = knob(False)
    checkpoint_every: int = knob(5, lo=1)
    max_failures: int = knob(0, lo=-1)


@dataclass(frozen=True)
class EvalConfig:
    knn_k: list = knob([20, 200], min_len=1, item_lo=1)  # first -> knn.*, others -> knn<k>.*
    knn_temperature: float = knob(0.07, gt=0.0, hi=10.0)
    linear_l2: float = knob(1.0e-4, lo=0.0, hi=10.0)
    linear_max_iter: int = knob(500, lo=1)
    semi_epochs: int = knob(30, lo=0)
    semi_lr: float = knob(0.01, gt=0.0, hi=10.0)
    batch_size: int = knob(512, lo=1)
    monitor_every: int = knob(5, lo=0)  # online kNN monitor during pretraining (0 = off)


@dataclass(frozen=True)
class RayConfig:
    address: str = knob("")  # "" -> $RAY_ADDRESS, else a fresh local instance
    num_cpus: int = knob(0, lo=0)  # local instance CPUs (0 = all of this machine)
    storage: str = knob("")  # "" -> <repo>/.jem/ray_results (git-ignored); or a shared path / s3:// URI
    log_to_driver: bool = knob(True)
    placement_strategy: str = knob("PACK", choices=PLACEMENT_STRATEGIES)  # how workers spread over nodes
    dashboard: bool = knob(False)  # start the Ray dashboard with a local instance (needs ray[default])


# ------------------------------------------------------------------------- every section but methods
@dataclass(frozen=True)
class BaseConfig:
    """Every section of params.yaml except ``methods``; ``method`` is not checked against the
    registry here (:class:`jem.config.Config` does that)."""

    dataset: str = knob("digits", choices=DATASETS)
    method: str = knob("vicreg")
    seed: int = knob(0, lo=0, hi=2**31 - 1)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)


# ------------------------------------------------------------------------------------- validation
def _did_you_mean(word: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _type_name(tp: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list"}.get(tp, str(tp))


_YAML12_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_scalar(key: str, value: Any, tp: Any) -> Any:
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        if isinstance(value, str) and _YAML12_FLOAT.fullmatch(value.strip()):
            value = float(value)  # PyYAML (YAML 1.1) reads 5e-4 as a string; YAML 1.2 and DVC read a number
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    elif tp is list:
        ok = isinstance(value, list)
    else:  # pragma: no cover - schema bug
        raise TypeError(f"unsupported field type {tp} for {key}")
    if not ok:
        raise ConfigError(f"{key} = {value!r} has the wrong type; expected {_type_name(tp)}")
    return value


def _check_number(key: str, value: Any, rules: dict) -> None:
    if "lo" in rules and value < rules["lo"]:
        raise ConfigError(f"{key} = {value!r} is out of range; must be >= {rules['lo']}")
    if "gt" in rules and value <= rules["gt"]:
        raise ConfigError(f"{key} = {value!r} is out of range; must be > {rules['gt']}")
    if "hi" in rules and value > rules["hi"]:
        raise ConfigError(f"{key} = {value!r} is out of range; must be <= {rules['hi']}")


def _check_rules(key: str, value: Any, rules: dict) -> None:
    if "choices" in rules and value not in rules["choices"]:
        allowed = ", ".join(map(str, rules["choices"]))
        raise ConfigError(f"{key} = {value!r} is not allowed; choose one of: {allowed}"
                          + _did_you_mean(str(value), map(str, rules["choices"])))
    if isinstance(value, list):
        if rules.get("pair"):
            if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                          for v in value):
                raise ConfigError(f"{key} = {value!r} must be a [low, high] pair of numbers")
            if value[0] > value[1]:
                raise ConfigError(f"{key} = {value!r} must have low <= high")
            for v in value:
                _check_number(key, v, rules)
        if "min_len" in rules and len(value) < rules["min_len"]:
            raise ConfigError(f"{key} = {value!r} needs at least {rules['min_len']} item(s)")
        if "item_lo" in rules:
            for v in value:
                if not isinstance(v, int) or isinstance(v, bool) or v < rules["item_lo"]:
                    raise ConfigError(f"{key} = {value!r}: every item must be an integer >= "
                                      f"{rules['item_lo']}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_number(key, value, rules)


def build(cls: type, raw: Any, prefix: str, special: dict[str, Callable[[Any], Any]] | None = None) -> Any:
    """Build dataclass ``cls`` from mapping ``raw`` strictly (unknown keys are errors); ``special``
    maps a field name to its own builder (the ``methods`` section)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'params'} = {raw!r} must be a mapping of keys")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            full = f"{prefix}{key}"
            options = [f"{prefix}{k}" for k in known]
            raise ConfigError(f"unknown key {full}" + (_did_you_mean(full, options)
                                                       or f"; allowed keys: {', '.join(known)}"))
    kwargs = {}
    for name, f in known.items():
        key = f"{prefix}{name}"
        tp = hints[name]
        if name not in raw:
            continue
        value = raw[name]
        if isinstance(tp, type) and is_dataclass(tp):
            kwargs[name] = build(tp, value, f"{key}.")
        elif special and name in special:
            kwargs[name] = special[name](value)
        else:
            if isinstance(tp, types.GenericAlias):  # pragma: no cover - schema uses bare list
                tp = typing.get_origin(tp)
            value = _check_scalar(key, value, tp)
            _check_rules(key, value, dict(f.metadata))
            kwargs[name] = value
    return cls(**kwargs)


def read_params(path: str | Path = "params.yaml") -> Any:
    """The YAML mapping in ``path``; a missing file or bad YAML raises :class:`ConfigError` with one line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return raw


def load_base_config(path: str | Path = "params.yaml") -> BaseConfig:
    """Read and validate every section of ``path`` except ``methods`` (for stages that never build a
    method: ``prepare``, ``augment``)."""
    raw = read_params(path)
    if isinstance(raw, dict):
        raw = {k: v for k, v in raw.items() if k != "methods"}
    return build(BaseConfig, raw, "")


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain dict (for logging and hashing)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj
