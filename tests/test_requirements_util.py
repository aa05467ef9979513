"""require_or_skip: a missing dataset or browser skips locally and fails under CI=true."""

import pytest
from _pytest.outcomes import Failed, Skipped
from requirements_util import in_ci, require_or_skip


@pytest.mark.parametrize("ci", [None, "", "false", "1", "True", "true"])
def test_present_requirement_passes_whatever_ci_says(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    assert require_or_skip(True, "chromium", "apt-get install -y chromium") is None


@pytest.mark.parametrize("ci", [None, "", "false", "1"])
def test_missing_requirement_skips_outside_ci(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    assert not in_ci()
    with pytest.raises(Skipped) as info:
        require_or_skip(False, "chromium", "Debian: `apt-get install -y chromium`")
    assert str(info.value.msg) == "chromium is not installed (Debian: `apt-get install -y chromium`)"


def test_missing_requirement_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert in_ci()
    with pytest.raises(Failed) as info:
        require_or_skip(False, "dataset-fashion-mnist", "apt-get install -y dataset-fashion-mnist")
    msg = str(info.value.msg)
    assert msg.startswith("CI=true and dataset-fashion-mnist is not installed (apt-get install -y dataset-fashion-mnist)")
    assert "\n" not in msg
    assert not isinstance(info.value, Skipped)  # a failure, not a skip in disguise
