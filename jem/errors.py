"""One-line user errors: every stage and CLI command maps these to ``error: <line>`` and exit 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn


def user_error_types() -> tuple[type[BaseException], ...]:
    from jem.config import ConfigError
    from jem.data import DataError

    types: list[type[BaseException]] = [ConfigError, DataError, FileNotFoundError]
    try:
        from jem.engine.run import RayUnavailable, TrainingFailed

        types += [RayUnavailable, TrainingFailed]
    except ImportError:  # pragma: no cover - ray missing
        pass
    return tuple(types)


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
