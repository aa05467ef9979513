"""Checks before compute (rule 1) and nothing waits forever (rule 7): bad params, bad data roots
and params that can never run on this data or machine fail in the ``validate`` stage, in seconds,
with one line, before any data is prepared or Ray starts."""

from __future__ import annotations

import os

import pytest
from conftest import assert_one_error, stage

from jem.engine.session import local_cpus
from jem.sections import RayConfig

CPUS = int(local_cpus(RayConfig()))
TOO_MANY = CPUS + 1

CASES = [
    # params typos, types, ranges, names (clean before this issue; kept covered)
    ("typo-key", {"train.epoch": 3}, ("train.epoch", "train.epochs")),
    ("wrong-type", {"train.epochs": "ten"}, ("train.epochs",)),
    ("out-of-range", {"train.lr": -1.0}, ("train.lr",)),
    ("unknown-method", {"method": "wsme"}, ("wsme",)),
    ("unknown-dataset", {"dataset": "mnist"}, ("mnist",)),
    ("unknown-backbone", {"model.backbone": "resnet5O"}, ("model.backbone", "did you mean resnet50")),
    ("missing-root", {"dataset": "fashion-mnist", "data.root": "/nonexistent/fmnist"}, ("/nonexistent/fmnist",)),
    ("imagefolder-no-root", {"dataset": "imagefolder"}, ("data.root",)),
    # the machine: workers that a local instance can never fit (hung forever before)
    ("workers-vs-cpus", {"train.workers": TOO_MANY},
     (f"train.workers={TOO_MANY} x train.cpus_per_worker=1 = {TOO_MANY} CPUs", f"has {CPUS}")),
    ("cpus-per-worker", {"train.cpus_per_worker": float(TOO_MANY)}, (f"train.cpus_per_worker={TOO_MANY}",)),
    ("ray-num-cpus", {"ray.num_cpus": 1, "train.workers": 2}, ("= 2 CPUs", "ray.num_cpus=1")),
    # params against the data (each failed after minutes of compute, with a traceback, before)
    ("image-size-1", {"data.image_size": 1}, ("1x1 px", "data.image_size")),
    ("vit-patch", {"model.backbone": "vit_tiny", "data.image_size": 7}, ("vit_tiny", "7x7")),
    ("torchvision-size", {"model.backbone": "vit_b_16"}, ("model.backbone=vit_b_16", "8x8 px")),
    ("batch-vs-train-set", {"train.batch_size": 5000}, ("train.batch_size=5000", "pretraining images")),
    ("batch-vs-max-train", {"data.max_train": 100}, ("train.batch_size=256", "exceeds the 100 pretraining")),
    ("knn-k-vs-bank", {"data.max_train": 150, "train.batch_size": 64}, ("eval.knn_k", "k = 200 exceeds the kNN bank of")),
]


@pytest.mark.parametrize("overrides,needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validate_fails_before_compute(tmp_path, params_file, overrides, needles):
    params_file(**{k.replace(".", "__"): v for k, v in overrides.items()})
    proc = stage("validate", "--params", "params.yaml", cwd=tmp_path, timeout=300)
    assert_one_error(proc, *needles)
    assert sorted(os.listdir(tmp_path)) == ["params.yaml"]  # nothing written, nothing started


def test_broken_yaml(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  epochs: [3\n")
    assert_one_error(stage("validate", "--params", "params.yaml", cwd=tmp_path), "params.yaml")


def test_valid_params_pass(tmp_path, params_file):
    params_file()
    proc = stage("validate", "--params", "params.yaml", cwd=tmp_path)
    assert proc.returncode == 0 and "params ok" in proc.stdout, proc.stderr


def _image_folder(root, per_class: dict[str, int]) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, n in per_class.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / name / f"{i}.png")


@pytest.mark.parametrize("per_class,needle", [({"a": 6}, "class"), ({"a": 1, "b": 1}, "image")],
                         ids=["single-class", "one-image-per-class"])
def test_image_folder_that_cannot_be_evaluated(tmp_path, params_file, per_class, needle):
    _image_folder(tmp_path / "imgs", per_class)
    params_file(dataset="imagefolder", data__root=str(tmp_path / "imgs"), train__batch_size=2)
    assert_one_error(stage("validate", "--params", "params.yaml", cwd=tmp_path), needle)


def test_image_folder_batch_larger_than_its_training_set(tmp_path, params_file):
    _image_folder(tmp_path / "imgs", {"a": 8, "b": 8})
    # 8 per class: 2 to test (0.25), 1 to validation (0.1 of 6, at least one) -> 5 per class for training
    params_file(dataset="imagefolder", data__root=str(tmp_path / "imgs"), train__batch_size=11)
    assert_one_error(stage("validate", "--params", "params.yaml", cwd=tmp_path),
                     "train.batch_size=11", "exceeds the 10 pretraining images")


def test_jem_validate_runs_the_same_checks(tmp_path, params_file):
    from conftest import jem_cli

    params_file(train__workers=TOO_MANY)
    assert_one_error(jem_cli("validate", "params.yaml", cwd=tmp_path), f"train.workers={TOO_MANY}")
