"""System packages and shared data some tests need (Fashion-MNIST, headless Chromium, the FSDD
recordings): a skip on a developer's
machine, a failure in CI.

CI (``.ci/run``, which exports ``CI=true``) runs as root and ``make datasets`` installs both with
apt-get, so a missing one there means the install broke: skipping would hide that the tests which
need it never ran. Everywhere else the test skips with the reason and how to install it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def in_ci() -> bool:
    """True when the environment variable CI is exactly "true" (what .ci/run and CI services set)."""
    return os.environ.get("CI") == "true"


def require_or_skip(condition: bool, what: str, how_to_install: str) -> None:
    """Return if ``condition`` holds; otherwise fail the test under CI=true, else skip it.

    ``what`` names the missing thing, ``how_to_install`` says how to get it; both go into the
    one-line reason.
    """
    if condition:
        return
    reason = f"{what} is not installed ({how_to_install})"
    if in_ci():
        pytest.fail(f"CI=true and {reason}: CI must install it, not skip", pytrace=False)
    pytest.skip(reason)


def fsdd_recordings() -> Path:
    """The shared Free Spoken Digit Dataset recordings: ``$JEM_FSDD_ROOT`` when set, else
    ``shared/data/fsdd/recordings`` beside the repository (where CI and the team's machines keep it)."""
    env = os.environ.get("JEM_FSDD_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd" / "recordings"


def require_fsdd() -> Path:
    """The FSDD recordings folder, or a skip (a failure under CI=true) naming where it was looked for."""
    path = fsdd_recordings()
    require_or_skip(path.is_dir(), f"the shared FSDD copy at {path}",
                    "put the repository beside shared/data/fsdd or set JEM_FSDD_ROOT")
    return path
