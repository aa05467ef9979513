"""One-line user errors: every stage and CLI command maps these to ``error: <line>`` and exit 2.

The error types that are not tied to one module live here, so that this module imports nothing
heavy (no numpy, torch or Ray): the data readers, the Ray driver and the stages import from it,
never the other way round. ``ConfigError`` stays beside the params schema (:mod:`jem.sections`).
"""

from __future__ import annotations

import errno
import signal
import sys
from collections.abc import Callable
from typing import NoReturn


class DataError(ValueError):
    """Missing, corrupt or truncated data, phrased as one line for the user."""


class RayUnavailable(RuntimeError):
    """The Ray cluster cannot be reached, or can never fit the requested workers."""


class TrainingFailed(RuntimeError):
    """Pretraining raised in a worker; the message is the worker's final error line."""


class NoSpace(OSError):
    """Not enough free disk space for what is about to be written (checked before writing)."""


def user_error_types() -> tuple[type[BaseException], ...]:
    from jem.sections import ConfigError

    return (ConfigError, DataError, FileNotFoundError, RayUnavailable, TrainingFailed, NoSpace)


def fail(message: str) -> NoReturn:
    # on a terminal a progress bar may own the current line (no newline yet): return to its start
    # and clear it, so the error is a line of its own, not glued to the bar
    start = "\r\x1b[K" if sys.stderr.isatty() else ""
    print(f"{start}error: {message}", file=sys.stderr)
    raise SystemExit(2)


STAGE_TIMES = ".jem/stage_times"  # below the repo root (git-ignored): bookkeeping, not a DVC output


def _record_stage_time(started: float, wall_s: float) -> None:
    """``<repo>/.jem/stage_times/<stage>.json`` for a ``stages/<stage>.py`` script that succeeded:
    when it started and finished (UTC) and its wall time; the report's provenance block reads them."""
    import json
    import os
    import time
    from pathlib import Path

    script = Path(sys.argv[0])
    if script.parent.name != "stages" or script.suffix != ".py":
        return
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    record = {"stage": script.stem, "started": time.strftime(stamp, time.gmtime(started)),
              "finished": time.strftime(stamp, time.gmtime(started + wall_s)), "wall_s": round(wall_s, 3)}
    folder = Path(os.environ.get("DVC_ROOT") or ".") / STAGE_TIMES
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{script.stem}.json.tmp"
        tmp.write_text(json.dumps(record) + "\n")
        tmp.replace(folder / f"{script.stem}.json")
    except OSError:  # bookkeeping only: never fail a stage that succeeded
        pass


# the signals (SIGINT, SIGTERM) this process was stopped by, in order (see note_signal)
_SIGNALS: list[int] = []


def note_signal(signum: int) -> None:
    """Record that a stopping signal arrived (``jem.engine.session`` handlers do it), so that
    :func:`run_main` never reports success for an interrupted stage, even when a library caught
    the KeyboardInterrupt on the way."""
    _SIGNALS.append(signum)


def interrupted_by() -> int | None:
    """The first stopping signal recorded, or None."""
    return _SIGNALS[0] if _SIGNALS else None


def run_main(main: Callable[[], None]) -> None:
    """Call ``main``; known user errors become one line on stderr and exit code 2, Ctrl-C exit 130.
    A ``stages/*.py`` script that succeeds records its wall time (see :func:`_record_stage_time`)."""
    import time

    started, t0 = time.time(), time.perf_counter()
    try:
        try:
            main()
        except SystemExit as exc:
            if exc.code not in (0, None) or interrupted_by() is None:
                raise
        if interrupted_by() is not None:  # stopped early although main() returned (or exited 0)
            if interrupted_by() != signal.SIGINT:
                raise SystemExit(128 + (interrupted_by() or 0))
            raise KeyboardInterrupt
        _record_stage_time(started, time.perf_counter() - t0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except user_error_types() as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fail(msg)
    except OSError as exc:  # a disk that filled up after the pre-flight check
        if exc.errno != errno.ENOSPC:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        fail(f"out of disk space{where} ({exc.strerror}): free some space and re-run")
