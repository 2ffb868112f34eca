"""What the CLI shows on stderr while a check runs (the library never prints).

On a terminal, a rich progress bar with the target being checked and a time estimate; it
appears only once the check has run for ``DELAY`` seconds, so quick checks stay clean. Off a
terminal (a CI log, a pipe), ``-v`` prints a plain line every ``PERIOD`` seconds instead: elements
compared of the total, time elapsed and an estimate of the time left. Otherwise nothing.
"""

from __future__ import annotations

import contextlib
import sys
import time

DELAY = 1.0
PERIOD = 5.0


def progress_for(verbose: int, label: str = "", stream=None):
    """A context manager giving a ``progress(done, total, what)`` callback for ``run_check``,
    or None when nothing is to be shown. ``label`` (a file name) starts each plain line."""
    stream = stream or sys.stderr
    if hasattr(stream, "isatty") and stream.isatty():
        return ProgressBar()
    if verbose:
        return ProgressLines(stream, label, PERIOD)
    return contextlib.nullcontext()


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``: whole seconds, as a person reads a time estimate."""
    whole = max(0, round(seconds))
    return f"{whole} s" if whole < 60 else f"{whole // 60} min {whole % 60:02d} s"


def progress_line(done: int, total: int, elapsed: float, what: str = "") -> str:
    """``1,234 of 14,818 elements (8%), 5 s elapsed, about 55 s left (fc1.W)``. The time left
    assumes the remaining elements cost what the compared ones did on average."""
    share = done / total if total else 1.0
    left = (f"about {duration(elapsed * (total - done) / done)} left" if done
            else "time left unknown")
    where = f" ({what})" if what else ""
    return (f"{done:,} of {total:,} elements ({share:.0%}), {duration(elapsed)} elapsed, "
            f"{left}{where}")


class ProgressLines:
    """Plain progress lines on ``stream``, at most one per ``period`` seconds; ``clock`` is
    ``time.monotonic`` (a test passes its own)."""

    def __init__(self, stream, label: str = "", period: float = PERIOD, clock=time.monotonic):
        self.stream = stream
        self.prefix = f"gradcheck: {label}: " if label else "gradcheck: "
        self.period = period
        self.clock = clock
        self.started = self.last = clock()

    def __enter__(self) -> ProgressLines:
        self.started = self.last = self.clock()
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def __call__(self, done: int, total: int, what: str) -> None:
        now = self.clock()
        if now - self.last < self.period:
            return
        self.last = now
        self.stream.write(self.prefix + progress_line(done, total, now - self.started, what) + "\n")
        self.stream.flush()


class ProgressBar:
    """A ``progress(done, total, what)`` callback drawing a rich bar on the terminal's stderr;
    use it as a context manager."""

    def __init__(self, console=None, delay: float = DELAY):
        from rich.console import Console  # only a terminal session draws a bar

        self.console = console or Console(stderr=True)
        self.delay = delay
        self.started = time.perf_counter()
        self._progress = None
        self._task = None

    def __enter__(self) -> ProgressBar:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __call__(self, done: int, total: int, what: str) -> None:
        if self._progress is None:
            if not self.console.is_terminal or time.perf_counter() - self.started < self.delay:
                return
            from rich.progress import (BarColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._progress = Progress(TextColumn("checking {task.description:<24}"), BarColumn(),
                                      TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                                      TextColumn("eta"), TimeRemainingColumn(),
                                      console=self.console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task(what, total=total)
        self._progress.update(self._task, completed=done, total=total, description=what)
