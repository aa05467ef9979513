"""System packages some tests need (Fashion-MNIST, headless Chromium): a skip on a developer's
machine, a failure in CI.

CI (``.ci/run``, which exports ``CI=true``) runs as root and ``make datasets`` installs both with
apt-get, so a missing one there means the install broke: skipping would hide that the tests which
need it never ran. Everywhere else the test skips with the reason and how to install it.
"""

from __future__ import annotations

import os

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
