"""One-line user errors: every stage and CLI command maps these to ``error: <line>`` and exit 2.

The error types that are not tied to one module live here, so that this module imports nothing
heavy (no numpy, torch or Ray): the data readers, the Ray driver and the stages import from it,
never the other way round. ``ConfigError`` stays beside the params schema (:mod:`jem.sections`).
"""

from __future__ import annotations

import errno
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
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_main(main: Callable[[], None]) -> None:
    """Call ``main``; known user errors become one line on stderr and exit code 2, Ctrl-C exit 130."""
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except user_error_types() as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fail(msg)
    except OSError as exc:  # a disk that filled up after the pre-flight check
        if exc.errno != errno.ENOSPC:
            raise
        fail(f"out of disk space writing {exc.filename or 'a file'}: free some space and re-run")
