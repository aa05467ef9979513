"""params.yaml validation: every failure kind gives one line naming key, value and what is allowed."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from shipped_params import shipped_params_text

from jem.config import Config, ConfigError, defaults_dict, load_config, parse_config, to_dict

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("raw, expected", [
    ({"train": {"epoch": 3}}, "unknown key train.epoch; did you mean train.epochs?"),
    ({"trian": {}}, "unknown key trian; did you mean train?"),
    ({"methods": {"vicreg": {"gama": 1.0}}}, "unknown key methods.vicreg.gama; did you mean methods.vicreg.gamma?"),
    ({"methods": {"wsme": {}}}, "unknown key methods.wsme"),
    ({"method": "simcrl"}, "method 'simcrl' is not registered; choose one of:"),
    ({"dataset": "digit"}, "dataset = 'digit' is not allowed; choose one of: digits,"),
    ({"train": {"epochs": "ten"}}, "train.epochs = 'ten' has the wrong type; expected an integer"),
    ({"train": {"epochs": 2.5}}, "train.epochs = 2.5 has the wrong type; expected an integer"),
    ({"train": {"use_gpu": "yes"}}, "train.use_gpu = 'yes' has the wrong type; expected a boolean"),
    ({"train": {"lr": 0}}, "train.lr = 0.0 is out of range; must be > 0.0"),
    ({"train": {"epochs": 0}}, "train.epochs = 0 is out of range; must be >= 1"),
    ({"augment": {"view_a": {"flip_p": 1.5}}}, "augment.view_a.flip_p = 1.5 is out of range; must be <= 1.0"),
    ({"augment": {"view_b": {"crop_scale": [0.9, 0.1]}}}, "augment.view_b.crop_scale = [0.9, 0.1] must have low <= high"),
    ({"model": {"projector": [256, 0]}}, "model.projector = [256, 0]: every item must be an integer >= 1"),
    ({"model": {"backbone": "resnet5"}},
     "model.backbone = 'resnet5' is not allowed; choose small_cnn, resnet18, vit_tiny or a torchvision classification"),
    ({"model": {"backbone": "regnet_y_400"}}, "did you mean regnet_y_400mf"),
    ({"model": {"weights": "IMAGENET1K_V1"}}, "model.weights = 'IMAGENET1K_V1': jem never downloads or loads"),
    ({"model": {"stem": "cifar"}}, "model.stem = cifar applies to torchvision ResNet and RegNet backbones, not small_cnn"),
    ({"model": {"backbone": "convnext_tiny", "stem": "cifar"}}, "model.stem = cifar is defined for ResNet and RegNet"),
    ({"model": {"stem": "tiny"}}, "model.stem = 'tiny' is not allowed; choose one of: auto, imagenet, cifar"),
    ({"train": 5}, "train. = 5 must be a mapping"),
    ({"augment": {"views_per_image": 1}}, "augment.views_per_image = 1 is too small"),
    ({"dataset": "imagefolder"}, "dataset imagefolder needs data.root"),
    ({"method": "wmse", "methods": {"wmse": {"w_size": 32, "emb_dim": 32}}}, "methods.wmse.w_size = 32 must exceed"),
    ({"method": "moco", "train": {"batch_size": 4}}, "train.batch_size = 4 is too small for methods.moco.bn_splits"),
    ({"method": "dino", "methods": {"dino": {"local_crops": 2}}}, "methods.dino.local_crops = 2 exceeds"),
])
def test_each_failure_kind_is_one_clear_line(raw, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    msg = str(info.value)
    assert expected in msg
    assert "\n" not in msg


def test_did_you_mean_only_when_close():
    with pytest.raises(ConfigError, match="allowed keys: dataset, method, seed"):
        parse_config({"zzzzzz": 1})


def test_shipped_params_equal_schema_defaults(tmp_path):
    """params.yaml is the documented default: it must parse and match the dataclass defaults.
    The shipped (staged) version is checked, not the one an experiment left in the working copy."""
    text = shipped_params_text()
    assert to_dict(parse_config(yaml.safe_load(text))) == defaults_dict()
    (tmp_path / "params.yaml").write_text(text)
    assert to_dict(load_config(tmp_path / "params.yaml")) == to_dict(Config())


def test_overrides_are_applied_and_ints_widen_to_floats():
    cfg = parse_config({"method": "simclr", "train": {"lr": 1, "epochs": 7}, "methods": {"simclr": {"temperature": 0.5}}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 7
    assert cfg.method_params.temperature == 0.5
    assert cfg.methods["vicreg"].inv_weight == 25.0  # untouched sections keep defaults


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_validate_stage_exits_nonzero_with_one_line_and_no_traceback(tmp_path):
    params = tmp_path / "params.yaml"
    text = shipped_params_text().replace("  epochs: 30\n", "  epochs: 30\n  epoch: 3\n")
    params.write_text(text)
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "validate.py"), "--params", str(params)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown key train.epoch; did you mean train.epochs?"
    assert "Traceback" not in proc.stdout + proc.stderr


def test_jem_methods_lists_name_first():
    proc = subprocess.run([sys.executable, "-m", "jem.cli", "methods"], capture_output=True, text=True, check=True)
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert {"vicreg", "simclr"} <= set(names)
    assert all("arXiv:" in line for line in proc.stdout.splitlines())


def test_a_method_recipe_replaces_the_train_optimiser_only_for_that_method():
    base = defaults_dict()
    vic = parse_config(dict(base, train=dict(base["train"], lr=0.5)))
    assert (vic.train.optimizer, vic.train.lr, vic.train.weight_decay) == ("lars", 0.5, 1e-6)
    assert vic.train_overrides == {}
    dino = parse_config(dict(base, method="dino", train=dict(base["train"], lr=0.5)))
    assert (dino.train.optimizer, dino.train.lr, dino.train.weight_decay) == ("adamw", 0.001, 0.04)
    assert dino.train.epochs == vic.train.epochs and dino.train.batch_size == vic.train.batch_size
    raw = dict(base, method="byol")
    raw["methods"] = dict(base["methods"], byol=dict(base["methods"]["byol"], lr=7.0))
    assert parse_config(raw).train.lr == 7.0
    raw["methods"]["byol"]["optimizer"] = "adam"
    with pytest.raises(ConfigError, match="methods.byol.optimizer"):
        parse_config(raw)


def test_data2vec_selects_the_transformer_it_needs():
    base = defaults_dict()
    assert base["model"]["backbone"] == "small_cnn"
    assert parse_config(dict(base, method="data2vec")).model.backbone == "vit_tiny"
    assert parse_config(base).model.backbone == "small_cnn"


def test_validate_stage_notes_method_recipes_and_backbones(tmp_path):
    for method, needle in (("dino", "note: dino trains with its own recipe"),
                           ("data2vec", "note: data2vec needs model.backbone=vit_tiny")):
        path = tmp_path / f"{method}.yaml"
        path.write_text(yaml.safe_dump(dict(defaults_dict(), method=method)))
        proc = subprocess.run([sys.executable, "stages/validate.py", "--params", str(path)], capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parents[1])
        assert proc.returncode == 0 and needle in proc.stdout, proc.stdout + proc.stderr


def test_data2vec_top_k_cannot_exceed_the_vit_depth():
    base = defaults_dict()
    with pytest.raises(ConfigError, match="methods.data2vec.top_k = 6 exceeds model.depth = 4"):
        parse_config(dict(base, method="data2vec", model=dict(base["model"], depth=4)))


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    """PyYAML reads `5e-4` as a string (YAML 1.1 wants a dot); it is a number to YAML 1.2, DVC and users."""
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  weight_decay: 5e-4\n  lr: 1E+0\n")
    cfg = load_config(path)
    assert cfg.train.weight_decay == 0.0005 and cfg.train.lr == 1.0
    with pytest.raises(ConfigError, match="train.lr = 'fast' has the wrong type"):
        parse_config({"train": {"lr": "fast"}})
    with pytest.raises(ConfigError, match="train.optimizer = 0.0005 has the wrong type; expected a string"):
        parse_config({"train": {"optimizer": 5e-4}})


def test_method_notes_are_what_the_pretrain_stage_records():
    """The notes validate prints are a function of the params, so the pretrain stage records the
    same lines in metrics/pretrain-full.json ("notes"): nothing the method changed goes unrecorded."""
    from jem.config import method_notes

    raw = dict(defaults_dict(), method="data2vec")
    assert method_notes(parse_config(raw), raw) == [
        "note: data2vec needs model.backbone=vit_tiny; model.backbone=small_cnn is not used for it",
        "note: data2vec trains with its own recipe methods.data2vec.{optimizer,lr,weight_decay} (optimizer=adamw, "
        "lr=0.001, weight_decay=0.05); train.optimizer/lr/weight_decay do not apply to it"]
    raw = defaults_dict()
    assert method_notes(parse_config(raw), raw) == []
