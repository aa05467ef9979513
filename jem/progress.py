"""Progress for long steps: a tqdm bar on a terminal, a few plain lines in a log file or a pipe.

tqdm redraws its bar with carriage returns (and nested bars with cursor-up escapes), which on a
terminal is what a person wants and in a log (CI, ``make run > run.log``, ``dvc exp run`` captured by
a script) turns into kilobyte-long lines of escape codes. :func:`progress` decides once, from whether
stderr is a terminal: there, a real ``tqdm``; elsewhere a :class:`Lines` reporter that prints
``desc: n/total unit`` at the start, at every quarter and at the end, each as its own short line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm


class Lines:
    """The part of tqdm's interface jem uses (iterate, ``update``, ``set_postfix_str``, ``n``,
    ``close``, context manager), reported as plain lines at 0 %, every ``1 / parts`` and 100 %."""

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", parts: int = 4, file: TextIO | None = None, postfix: str = "") -> None:
        self.iterable, self.desc, self.unit, self.parts = iterable, desc, unit, parts
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n, self.postfix, self.file = total, 0, postfix, file
        self._next_part, self._t0, self._closed = 0, time.monotonic(), False
        self._report()

    def _report(self, force: bool = False) -> None:
        if self.total:
            part = self.n * self.parts // self.total
            if part < self._next_part and not force:
                return
            self._next_part = part + 1
        elif not force and self.n:
            return
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        extra = f" ({self.postfix})" if self.postfix else ""
        print(f"{self.desc}: {done} {self.unit}{extra} [{time.monotonic() - self._t0:.0f} s]",
              file=self.file or sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._report()

    def set_postfix_str(self, s: str) -> None:
        self.postfix = s

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if not self.total or self.n < self.total:  # the last quarter's line already says n/total otherwise
                self._report(force=True)

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, leave: bool = True) -> Any:
    """``tqdm(...)`` on a terminal, :class:`Lines` otherwise; ``disable`` shows nothing."""
    if disable or sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave)
    return Lines(iterable, total=total, desc=desc, unit=unit)


class Steps:
    """A stage's named steps as one progress bar: one tick per step, the running step's name shown
    (as the bar's postfix on a terminal; off a terminal one line as each step starts, so a log says
    what a long step is doing while it runs)."""

    def __init__(self, desc: str, steps: list[str], disable: bool = False) -> None:
        self.steps = steps
        if disable or sys.stderr.isatty():
            self.bar: Any = tqdm(total=len(steps), desc=desc, unit="step", disable=disable)
            self.bar.set_postfix_str(steps[0])
        else:
            self.bar = Lines(total=len(steps), desc=desc, unit="step", parts=len(steps), postfix=steps[0])

    def advance(self) -> None:
        """The current step is done; the next one starts."""
        if self.bar.n + 1 < len(self.steps):
            self.bar.set_postfix_str(self.steps[self.bar.n + 1])
        else:
            self.bar.set_postfix_str("")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
