"""A sweep's declaration: the search space parsed and checked against params.yaml before any compute."""

from pathlib import Path

import pytest
import yaml
from shipped_params import shipped_params_text

from jem.config import ConfigError, defaults_dict
from jem.sweep.space import count_trials, parse_sweep

ROOT = Path(__file__).resolve().parents[2]

SPACE = {"method": {"grid": ["vicreg", "simclr"]}, "train.lr": {"loguniform": [0.1, 1.0]},
         "methods.simclr.temperature": {"choice": [0.1, 0.5]}, "train.batch_size": {"randint": [64, 257]}}


def _sweep(**extra):
    return {"num_samples": 2, "overrides": {"train": {"epochs": 4}, "eval": {"monitor_every": 1}},
            "space": SPACE, **extra}


def test_parse_sweep_builds_trial_base_and_space():
    scfg, base, dims = parse_sweep(_sweep(trial={"workers": 2, "cpus_per_worker": 0.5, "gpus_per_worker": 0.25}),
                                   defaults_dict())
    assert base["train"]["epochs"] == 4 and base["eval"]["monitor_every"] == 1
    assert base["train"]["workers"] == 2 and base["train"]["cpus_per_worker"] == 0.5
    assert base["train"]["use_gpu"] is True
    assert [d.kind for d in dims] == ["grid", "loguniform", "choice", "randint"]
    assert count_trials(scfg, dims) == 4 and scfg.mode == "max"


@pytest.mark.parametrize("bad, message", [
    ({"space": {"train.epoch": {"grid": [1, 2]}}}, "sweep.space.train.epoch: train.epoch is not a key"),
    ({"space": {"method": {"grid": ["vicreg", "wsme"]}}}, "method 'wsme' is not registered"),
    ({"space": {"train.lr": {"loguniform": [0.0, 1.0]}}}, "needs low > 0"),
    ({"space": {"train.lr": {"uniform": [1.0, 0.1]}}}, "low < high"),
    ({"space": {"train.lr": {"normal": [0, 1]}}}, "must be one sampler"),
    ({"space": {"train.lr": {"choice": [0.1, -1.0]}}}, "train.lr = -1.0 is out of range"),
    ({"space": {}}, "sweep.space is empty"),
    ({"overrides": {"train": {"epoch": 3}}}, "sweep.overrides: unknown key train.epoch"),
    ({"trial": {"cpus_per_worker": 0}}, "sweep.trial.cpus_per_worker = 0"),
    ({"asha": {"grace_period": 9}}, "grace_period = 9 exceeds"),
    ({"metrik": "loss"}, "unknown key sweep.metrik; did you mean sweep.metric?"),
    ({"overrides": {"data": {"pretrain_root": "/raw"}}}, "sweeps do not stream an uncurated folder yet"),
    ({"space": {"data.pretrain_root": {"grid": ["", "/raw"]}}}, "sweeps do not stream an uncurated folder yet"),
])
def test_parse_sweep_rejects_bad_input_with_one_line(bad, message):
    with pytest.raises(ConfigError) as err:
        parse_sweep(_sweep(**bad), defaults_dict())
    assert message in str(err.value) and "\n" not in str(err.value)


def test_shipped_sweep_params_are_valid():
    raw = yaml.safe_load((ROOT / "pipelines" / "sweep" / "params.yaml").read_text())
    scfg, base, dims = parse_sweep(raw["sweep"], yaml.safe_load(shipped_params_text()))
    assert count_trials(scfg, dims) >= 4
