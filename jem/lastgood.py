"""A failed or interrupted stage never destroys the previous good outputs (docs/reliability.md, rule 5).

DVC deletes a stage's outputs before it runs it. The metrics, the DVCLive curves and the report
are ``cache: false`` outputs (they live in git, so ``dvc exp show`` and a pull request see them),
so a failing ``pretrain`` used to leave no ``metrics/pretrain.json`` and no curves behind, and
nothing could bring them back (the encoder, a cached output, came back only with
``dvc checkout``). Each stage that writes such outputs runs inside
:func:`keep_last_good`:

- on success, a copy of those outputs goes to ``.jem/last-good/<stage>/`` (replacing the older one;
  hard links where the file system allows, so the copy of an encoder costs no space);
- on failure or interruption (any exception, Ctrl-C, SIGTERM), the copy is put back in place of
  whatever the failed run left, and the failure is recorded in ``failed.json`` there;
- while the stage runs, ``running.json`` names its process; a stage killed outright (SIGKILL,
  the OOM killer) cannot restore anything, and ``jem info`` then finds ``running.json`` of a dead
  process, says so, and ``jem restore`` puts the copy back.

``jem info`` reads :func:`status` to say when what it shows is not from the last run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jem.reaper import owner_alive, owner_token

STORE = Path(".jem") / "last-good"


def store_dir(stage: str, root: Path | None = None) -> Path:
    base = Path(os.environ.get("DVC_ROOT", ".")) if root is None else root
    return base / STORE / stage


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link (no space, instant; jem replaces its outputs by new files, never edits them in
    place), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_or_copy)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(str(src), str(dst))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def save(store: Path, paths: Sequence[Path]) -> None:
    """Copy ``paths`` (files or folders; missing ones are skipped) into ``store`` as one unit: built
    beside it, then swapped in, so a crash midway keeps the older copy."""
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = store.with_name(f".{store.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "files").mkdir(parents=True)
    kept = {}
    for i, path in enumerate(paths):
        if path.exists():
            _copy(path, tmp / "files" / str(i))
            kept[str(path)] = str(i)
    (tmp / "manifest.json").write_text(json.dumps({"saved_at": _now(), "paths": kept}, indent=2) + "\n")
    old = store.with_name(f".{store.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if store.exists():
        store.rename(old)
    tmp.rename(store)
    shutil.rmtree(old, ignore_errors=True)


def restore(store: Path) -> list[str]:
    """Put the saved copies back where they were (replacing what is there); returns the paths."""
    manifest = store / "manifest.json"
    if not manifest.is_file():
        return []
    entries = json.loads(manifest.read_text())["paths"]
    for path, key in entries.items():
        target = Path(path)
        tmp = target.with_name(f".{target.name}.restore")
        _remove(tmp)
        _copy(store / "files" / key, tmp)
        _remove(target)
        tmp.rename(target)
    return list(entries)


def _manifest(store: Path) -> dict[str, Any] | None:
    f = store / "manifest.json"
    return json.loads(f.read_text()) if f.is_file() else None


@contextmanager
def keep_last_good(stage: str, paths: Sequence[Path], root: Path | None = None) -> Iterator[None]:
    """Run a stage body: keep a copy of ``paths`` when it succeeds, put the copy back when it fails."""
    store = store_dir(stage, root)
    store.mkdir(parents=True, exist_ok=True)
    running = store / "running.json"
    running.write_text(json.dumps({"owner": owner_token(), "started_at": _now()}) + "\n")
    try:
        yield
    except BaseException as exc:
        restored = restore(store)
        what = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, KeyboardInterrupt) or (isinstance(exc, SystemExit) and exc.code not in (0, None)):
            what = "interrupted"
        (store / "failed.json").write_text(json.dumps({"failed_at": _now(), "error": what[:300]}) + "\n")
        if restored:
            saved_at = (_manifest(store) or {}).get("saved_at", "?")
            print(f"the {stage} stage did not finish; put back the outputs of its last good run ({saved_at}): "
                  f"{', '.join(restored)}", file=sys.stdout, flush=True)
        raise
    else:
        save(store, paths)
        (store / "failed.json").unlink(missing_ok=True)
    finally:
        running.unlink(missing_ok=True)


def status(stage: str, root: Path) -> str | None:
    """One line when the outputs shown for ``stage`` are not those of its last run, else None."""
    store = root / STORE / stage
    manifest = _manifest(store)
    saved = f"the outputs shown are those of its last good run ({manifest['saved_at']})" if manifest else \
        "no earlier good run was kept"
    running = store / "running.json"
    if running.is_file():
        info = json.loads(running.read_text())
        if not owner_alive(info.get("owner", "")):
            hint = "; `jem restore` puts them back" if manifest else ""
            return (f"the last {stage} run (started {info.get('started_at', '?')}) was killed before it "
                    f"finished; {saved}{hint}")
        return f"a {stage} run is in progress (started {info.get('started_at', '?')})"
    failed = store / "failed.json"
    if failed.is_file():
        info = json.loads(failed.read_text())
        return f"the last {stage} run failed ({info.get('failed_at', '?')}: {info.get('error', '?')}); {saved}"
    return None


def restore_all(root: Path, stages: Sequence[str]) -> dict[str, list[str]]:
    """``jem restore``: put back the last good outputs of ``stages`` (paths relative to ``root``)."""
    out = {}
    cwd = Path.cwd()
    os.chdir(root)
    try:
        for stage in stages:
            out[stage] = restore(STORE / stage)
            running = STORE / stage / "running.json"
            if out[stage] and running.is_file() and not owner_alive(json.loads(running.read_text()).get("owner", "")):
                info = json.loads(running.read_text())  # the killed run stays on record as failed
                (STORE / stage / "failed.json").write_text(json.dumps(
                    {"failed_at": info.get("started_at", "?"), "error": "killed before it finished"}) + "\n")
                running.unlink()
    finally:
        os.chdir(cwd)
    return out
