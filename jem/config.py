"""params.yaml -> a frozen :class:`Config`, with strict validation of every section.

The method-independent sections and the strict builder live in :mod:`jem.sections` (light, for the
data stages). The ``methods`` section and the checks that belong to one method come from the method
modules (:mod:`jem.methods`: each holds its params dataclass and a ``validate`` hook), so building a
:class:`Config` imports the registered methods and with them torch.

Constraints are declared next to each field through :func:`knob` metadata:
``choices`` (allowed values), ``lo``/``hi`` (inclusive bounds), ``gt`` (strict lower bound) and
``pair`` (a two-element ``[low, high]`` list whose first value does not exceed the second).
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, field, replace
from pathlib import Path
from typing import Any

from jem import methods as method_registry
from jem._schema import OPTIMIZERS, TRAIN_OVERRIDES, knob
from jem.sections import (
    BACKBONES,
    DATASETS,
    AugmentConfig,
    BaseConfig,
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    MultiCropConfig,
    RayConfig,
    TrainConfig,
    ViewConfig,
    _did_you_mean,
    build,
    read_params,
    to_dict,
)


def _all_method_params() -> dict[str, Any]:
    return {name: spec.params() for name, spec in method_registry.registry().items()}


@dataclass(frozen=True)
class Config(BaseConfig):
    """Every section, ``methods`` included (each registered method's params dataclass)."""

    methods: dict = field(default_factory=_all_method_params)

    @property
    def method_params(self) -> Any:
        """The hyperparameter dataclass of the selected method."""
        return self.methods[self.method]

    @property
    def train_overrides(self) -> dict[str, Any]:
        """``train.*`` knobs the selected method sets itself (``methods.<name>.optimizer|lr|weight_decay``:
        e.g. BYOL, SimSiam and DINO carry their papers' own optimiser recipes). Already applied to
        :attr:`train` by :func:`parse_config`."""
        p = self.method_params
        return {k: getattr(p, k) for k in TRAIN_OVERRIDES if hasattr(p, k)}

    @property
    def backbone_override(self) -> str | None:
        """The backbone the selected method needs instead of ``model.backbone`` (None: no change).
        Already applied to :attr:`model` by :func:`parse_config`."""
        allowed = method_registry.get_method_class(self.method).backbones
        return allowed[0] if allowed and self.model.backbone not in allowed else None


# ------------------------------------------------------------------------------------- validation
def _build_methods(raw: Any) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"methods = {raw!r} must be a mapping of method name -> hyperparameters")
    specs = method_registry.registry()
    out = _all_method_params()
    for name, section in raw.items():
        if name not in specs:
            raise ConfigError(f"unknown key methods.{name}; registered methods: "
                              f"{', '.join(specs)}" + _did_you_mean(name, specs))
        out[name] = build(specs[name].params, section, f"methods.{name}.")
    return out


def parse_config(raw: Any) -> Config:
    """Validate a params mapping (as read from params.yaml) into a :class:`Config`."""
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict) and "weights" in raw["model"]:
        raise ConfigError(f"model.weights = {raw['model']['weights']!r}: jem never downloads or loads pretrained "
                          "weights; every backbone starts from random init (remove model.weights)")
    cfg = build(Config, raw, "", {"methods": _build_methods})
    _check_backbone(cfg.model.backbone, cfg.model.stem)
    _check_zero_init(cfg.model.backbone, cfg.model.zero_init_residual)
    specs = method_registry.registry()
    if cfg.method not in specs:
        raise ConfigError(f"method {cfg.method!r} is not registered; choose one of: "
                          f"{', '.join(specs)}" + _did_you_mean(cfg.method, specs))
    _check_cross_field(cfg)
    if cfg.train_overrides:  # the method's own optimiser recipe replaces train.optimizer/lr/weight_decay
        cfg = replace(cfg, train=replace(cfg.train, **cfg.train_overrides))
    if cfg.backbone_override:  # e.g. data2vec: masked patch tokens need vit_tiny
        cfg = replace(cfg, model=replace(cfg.model, backbone=cfg.backbone_override))
    if cfg.model.mask_ratio > 0 and cfg.model.backbone != "vit_tiny":
        raise ConfigError(f"model.mask_ratio = {cfg.model.mask_ratio} needs model.backbone = vit_tiny (patch tokens "
                          f"to mask); {cfg.model.backbone} has none")
    return cfg


def _check_backbone(name: str, stem: str) -> None:
    """``model.backbone`` is one of jem's own or a torchvision classification model; ``model.stem``
    other than auto only where a stem can be swapped (torchvision ResNet / RegNet models)."""
    from jem.models import tv

    try:
        tv.check_name(name, BACKBONES)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if stem != "auto" and name in ("small_cnn", "vit_tiny"):
        raise ConfigError(f"model.stem = {stem} applies to torchvision ResNet and RegNet backbones, not "
                          f"{name}; set model.stem = auto")
    if stem == "cifar" and tv.family(name) == "other":
        raise ConfigError(f"model.stem = cifar is defined for ResNet and RegNet models, not {name}; set "
                          "model.stem = imagenet or auto")


def _check_zero_init(name: str, zero_init: bool) -> None:
    from jem.models import tv

    if zero_init and tv.family(name) == "other":  # small_cnn and vit_tiny are "other" too
        raise ConfigError(f"model.zero_init_residual applies to ResNet and RegNet backbones (residual blocks ending "
                          f"in BatchNorm), not {name}; set it to false")


def _check_cross_field(cfg: Config) -> None:
    """The checks every method shares (the views it consumes against what ``augment`` caches), then
    the selected method's own ``validate`` hook."""
    p = cfg.method_params
    needs = getattr(p, "views", 2)
    k = cfg.augment.views_per_image
    if 0 < k < needs:
        raise ConfigError(f"augment.views_per_image = {k} is too small; method {cfg.method} needs "
                          f"at least {needs} views per image")
    n_local = getattr(p, "local_crops", 0)
    if n_local > cfg.augment.multicrop.local_crops and cfg.augment.views_per_image > 0:
        raise ConfigError(f"methods.{cfg.method}.local_crops = {n_local} exceeds "
                          f"augment.multicrop.local_crops = {cfg.augment.multicrop.local_crops}")
    method_registry.get_method_class(cfg.method).validate(cfg)
    if cfg.dataset == "imagefolder" and not cfg.data.root:
        raise ConfigError("data.root = '' but dataset imagefolder needs data.root (one sub-folder "
                          "per class)")
    _check_group_regex(cfg.dataset, cfg.data.group_regex)
    if cfg.dataset == "av-digits" and not cfg.data.audio_root:
        raise ConfigError("data.audio_root = '' but dataset av-digits needs it: the 'recordings' folder of "
                          "github.com/Jakobovski/free-spoken-digit-dataset (e.g. ../shared/data/fsdd/recordings)")
    if cfg.data.audio_root and cfg.dataset != "av-digits":
        raise ConfigError(f"data.audio_root = {cfg.data.audio_root!r} is only used with dataset av-digits, "
                          f"not {cfg.dataset}; set it to ''")
    if cfg.dataset == "avfolder" and not cfg.data.root:
        raise ConfigError("data.root = '' but dataset avfolder needs data.root (one sub-folder per class "
                          "holding <id>.png beside <id>.wav)")
    if cfg.data.pretrain_root:
        _check_stream_method(cfg)


def _check_stream_method(cfg: Config) -> None:
    """What the streamed pretraining folder (``data.pretrain_root``) cannot give a method: the training
    image array at each epoch start (SeLa's labelling of every image, memory banks; a method that
    only embeds every image, ``Method.feature_pass``, gets the stream's feature pass instead),
    audio views, or more local crops than ``augment.multicrop`` renders."""
    from jem.methods.base import Method

    cls = method_registry.get_method_class(cfg.method)
    if (cls.on_epoch_start is not Method.on_epoch_start and not cls.feature_pass) or cls.n_audio:
        raise ConfigError(f"method {cfg.method} needs the whole training set in memory (or its audio) at every "
                          "epoch, which the stream of data.pretrain_root never holds; set data.pretrain_root = '' "
                          "or choose a method that streams (e.g. simclr, byol, vicreg, swav, dino, deepcluster, "
                          "deepercluster)")
    n_local = getattr(cfg.method_params, "local_crops", 0)
    if n_local > cfg.augment.multicrop.local_crops:
        raise ConfigError(f"methods.{cfg.method}.local_crops = {n_local} exceeds "
                          f"augment.multicrop.local_crops = {cfg.augment.multicrop.local_crops} (the stream renders "
                          "augment.multicrop.local_crops local crops per image)")


def _check_group_regex(dataset: str, group_regex: str) -> None:
    if not group_regex:
        return
    if dataset != "imagefolder":
        raise ConfigError(f"data.group_regex = {group_regex!r} is only used with dataset imagefolder, "
                          f"not {dataset}; set it to ''")
    try:
        n_groups = re.compile(group_regex).groups
    except re.error as exc:
        raise ConfigError(f"data.group_regex = {group_regex!r} is not a valid regular expression ({exc})") from None
    if n_groups < 1:
        raise ConfigError(f"data.group_regex = {group_regex!r} has no capture group; put the part of the "
                          "path that names the group in parentheses, e.g. '^[^/]+/([^_]+)_'")


def method_notes(cfg: Config, raw: Any) -> list[str]:
    """What the selected method changes of the user's params, one ``note:`` line each (the validate
    stage prints them; the pretrain stage records them in ``metrics/pretrain-full.json``)."""
    notes = []
    requested = ((raw or {}).get("model") or {}).get("backbone", ModelConfig().backbone)
    if requested != cfg.model.backbone:
        notes.append(f"note: {cfg.method} needs model.backbone={cfg.model.backbone}; model.backbone={requested} "
                     "is not used for it")
    if cfg.train_overrides:
        own = ", ".join(f"{k}={v}" for k, v in cfg.train_overrides.items())
        notes.append(f"note: {cfg.method} trains with its own recipe methods.{cfg.method}.{{optimizer,lr,"
                     f"weight_decay}} ({own}); train.optimizer/lr/weight_decay do not apply to it")
    return notes


def load_config(path: str | Path = "params.yaml") -> Config:
    """Read and validate ``path``; any problem raises :class:`ConfigError` with one line."""
    return parse_config(read_params(path))


def defaults_dict() -> dict[str, Any]:
    """The schema's defaults as a plain mapping (what a pristine params.yaml holds)."""
    return to_dict(Config())


__all__ = ["Config", "ConfigError", "DataConfig", "AugmentConfig", "ViewConfig", "MultiCropConfig",
           "ModelConfig", "TrainConfig", "EvalConfig", "RayConfig", "BaseConfig", "load_config", "parse_config",
           "to_dict", "defaults_dict", "knob", "DATASETS", "BACKBONES", "OPTIMIZERS", "MISSING"]
