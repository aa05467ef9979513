"""The README names every registered method (as `name`) and states their number: it had drifted
to 9 names while `jem methods` listed 17."""

import re
from pathlib import Path

from jem.methods import registry

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_names_every_method_jem_methods_lists():
    names = sorted(registry())
    missing = [n for n in names if f"(`{n}`" not in README]
    assert not missing, f"README.md does not name: {missing}"
    counts = {int(n) for n in re.findall(r"(\d+) self-supervised methods", README)}
    assert counts == {len(names)}, (counts, len(names))
    in_table = re.findall(r"\(`([a-z0-9_]+)`", README.split("## The two commands")[0])
    assert sorted(in_table) == names  # and nothing that is not registered
