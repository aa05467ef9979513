"""The SEER preset documented in docs/methods.md validates as written and builds its backbone."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from jem.config import defaults_dict, parse_config
from jem.preflight import check_run
from jem.sweep.space import set_dotted

DOC = Path(__file__).resolve().parents[2] / "docs" / "methods.md"


def seer_sets() -> dict:
    section = DOC.read_text().split("## SEER recipe", 1)[1]
    command = re.search(r"```\n(dvc exp run [^\n]+)\n```", section)
    assert command, "docs/methods.md: the SEER section has no dvc exp run block"
    args = shlex.split(command.group(1))
    return {args[i + 1].split("=", 1)[0]: yaml.safe_load(args[i + 1].split("=", 1)[1])
            for i, a in enumerate(args) if a == "-S"}


def test_seer_preset_validates_and_fits_digits():
    sets = seer_sets()
    assert sets["method"] == "swav" and sets["model.backbone"].startswith("regnet_y")
    cfg = parse_config(set_dotted(defaults_dict(), sets))
    assert cfg.model.projector == [512, 512, 128] and cfg.method_params.local_crops == 4
    check_run(cfg)  # the validate stage's checks: the backbone takes 8 px globals and the local crops
