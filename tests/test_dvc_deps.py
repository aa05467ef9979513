"""Every DVC stage declares every project module it can import, so DVC never serves a stale result.

A stage's code is its entry script plus every ``jem`` module reachable from it through ``import``
statements *anywhere* in a file (the stages import the heavy library inside ``main``, so importing
the entry point alone and reading ``sys.modules`` would miss almost all of it), plus the package
``__init__`` files Python runs on the way, plus every module of a package the code imports by
computed name (``importlib.import_module(f"jem.methods.{name}")``, or ``f"{__name__}.{name}"`` in
a package's ``__init__``: the method registry discovers its modules that way). A package's lazy attribute
(``jem.load_encoder``, imported inside a module-level ``__getattr__``) counts only where some file
imports that attribute. Each of those files must be a
declared dep of the stage or lie under a declared dep folder.

The checker is tested too: removing one dep from a stage must make it report the files that dep
covered.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "jem"
DVC_FILES = [ROOT / "dvc.yaml", *sorted((ROOT / "pipelines").glob("*/dvc.yaml"))]


def module_file(name: str) -> Path | None:
    """``jem.a.b`` -> its file in the repo (module or package ``__init__``), None if not project code."""
    if name.split(".")[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _lazy_attribute_imports(tree: ast.Module) -> tuple[set[int], dict[str, set[str]]]:
    """A package's module-level ``__getattr__`` (``jem.load_encoder``) imports only when that
    attribute is used: returns the ids of those import nodes and attribute -> module names."""
    skip: set[int] = set()
    lazy: dict[str, set[str]] = {}
    for fn in tree.body:
        if isinstance(fn, ast.FunctionDef) and fn.name == "__getattr__":
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.module:
                    skip.add(id(node))
                    for a in node.names:
                        lazy.setdefault(a.asname or a.name, set()).add(node.module)
    return skip, lazy


def _computed_package(arg: ast.JoinedStr, module: str) -> str | None:
    """``f"jem.methods.{name}"`` -> ``jem.methods``; ``f"{__name__}.{name}"`` in package ``module`` -> ``module``."""
    head = arg.values[0]
    if isinstance(head, ast.Constant) and str(head.value).endswith("."):
        return str(head.value)[:-1]
    if (isinstance(head, ast.FormattedValue) and isinstance(head.value, ast.Name) and head.value.id == "__name__"
            and len(arg.values) > 1 and isinstance(arg.values[1], ast.Constant) and arg.values[1].value == "."):
        return module
    return None


@cache
def _package_lazy_attributes(init: Path) -> dict[str, set[str]]:
    """The lazy attributes of the package whose ``__init__.py`` is ``init`` (parsed once)."""
    return _lazy_attribute_imports(ast.parse(init.read_text()))[1]


def _imported_names(tree: ast.Module, module: str = "") -> set[str]:
    """Module names a file may import: plain and from-imports (``from a import b`` may mean the
    module ``a.b``, or a lazy attribute of package ``a``), and the package of an
    ``import_module(f"pkg.{x}")`` with a computed name (returned as ``pkg.*``)."""
    skip, _ = _lazy_attribute_imports(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
            pkg = module_file(node.module)
            if pkg is not None and pkg.name == "__init__.py":
                lazy = _package_lazy_attributes(pkg)
                names.update(m for a in node.names for m in lazy.get(a.name, ()))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name)
              and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.JoinedStr)):
            pkg_name = _computed_package(node.args[0], module)
            if pkg_name:
                names.add(pkg_name + ".*")
    return names


def code_closure(script: Path) -> set[Path]:
    """The entry script and every project file reachable from it (see the module docstring)."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        rel = path.relative_to(ROOT).with_suffix("") if ROOT in path.parents else Path(path.stem)
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        for name in _imported_names(ast.parse(path.read_text(), filename=str(path)), module):
            if name.endswith(".*"):
                pkg = module_file(name[:-2])
                found = sorted(pkg.parent.glob("*.py")) if pkg is not None and pkg.name == "__init__.py" else []
            else:
                parts = name.split(".")  # importing a.b.c runs a/__init__, a/b/__init__ too
                found = [f for i in range(1, len(parts) + 1) if (f := module_file(".".join(parts[:i]))) is not None]
            todo.extend(f for f in found if f not in seen)
    return seen


def stages() -> list[tuple[str, Path, dict]]:
    """(id, folder the stage runs in, stage dict) of every stage with a ``python <script>`` command."""
    out = []
    for dvc_file in DVC_FILES:
        for name, stage in yaml.safe_load(dvc_file.read_text())["stages"].items():
            if stage.get("cmd", "").split()[:1] == ["python"]:
                out.append((f"{dvc_file.relative_to(ROOT)}:{name}", dvc_file.parent, stage))
    return out


def undeclared(wdir: Path, stage: dict) -> list[str]:
    """Project files the stage can import that no declared dep covers (repo-relative, sorted)."""
    if stage.get("always_changed"):
        return []  # runs every time: nothing can go stale
    script = (wdir / stage["cmd"].split()[1]).resolve()
    deps = [(wdir / d).resolve() for d in stage.get("deps", [])]
    return sorted(str(f.relative_to(ROOT)) for f in code_closure(script)
                  if not any(f == d or d in f.parents for d in deps))


@pytest.mark.parametrize("sid,wdir,stage", stages(), ids=[s[0] for s in stages()])
def test_stage_declares_every_module_it_imports(sid, wdir, stage):
    missing = undeclared(wdir, stage)
    assert not missing, f"{sid} imports project code its deps do not list: {missing}"


def test_the_pipelines_have_the_expected_stages():
    ids = {s[0] for s in stages()}
    assert {"dvc.yaml:prepare", "dvc.yaml:augment", "dvc.yaml:baselines", "dvc.yaml:pretrain",
            "dvc.yaml:evaluate", "dvc.yaml:report", "pipelines/sweep/dvc.yaml:sweep"} <= ids


def test_baselines_stage_reaches_no_method_code_and_depends_on_no_method_param():
    """A method switch or a method edit must not re-run the baselines: its code reaches nothing under
    jem/methods, jem/losses or jem/engine, and it reads no `method*` param."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["baselines"]
    files = _rel(code_closure(ROOT / "stages" / "baselines.py"))
    assert "jem/baselines.py" in files and "jem/models/backbones.py" in files
    assert not [f for f in files if f.startswith(("jem/methods/", "jem/losses/", "jem/engine/", "jem/config.py"))]
    assert not [p for p in stage["params"] if str(p).startswith("method")]
    assert not [d for d in stage["deps"] if d.startswith(("jem/methods", "jem/losses", "jem/engine", "models/"))]


def _rel(files: set[Path]) -> set[str]:
    return {str(f.relative_to(ROOT)) for f in files}


def test_closure_follows_lazy_and_computed_imports(tmp_path):
    files = _rel(code_closure(ROOT / "stages" / "pretrain.py"))
    assert "jem/__init__.py" in files and "jem/config.py" in files  # top-level import + its package
    assert "jem/losses/vicreg.py" in files  # only reachable through the method registry's import_module
    assert all(f.endswith(".py") for f in files)
    # a package's lazy attribute pulls its module in only where it is imported
    plain, lazy = tmp_path / "plain.py", tmp_path / "lazy.py"
    plain.write_text("import jem\n")
    lazy.write_text("def main():\n    from jem import load_encoder\n")
    assert _rel(code_closure(plain) - {plain}) == {"jem/__init__.py"}
    assert len(code_closure(lazy) - {lazy}) > 1


@pytest.mark.parametrize("drop", ["jem/losses", "jem/config.py"])
def test_removing_a_dep_is_reported(drop):
    stage = dict(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["pretrain"])
    assert not undeclared(ROOT, stage)
    stage["deps"] = [d for d in stage["deps"] if d != drop]
    missing = undeclared(ROOT, stage)
    assert missing and all(m == drop or m.startswith(drop + "/") for m in missing), missing
