"""The progress bar the CLI draws on stderr while a check runs (the library never prints).

It appears only on a terminal and only once the check has run for ``DELAY`` seconds, so quick
checks and CI logs stay clean; it shows the target being checked and rich's time estimate.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

DELAY = 1.0


class ProgressBar:
    """A ``progress(done, total, what)`` callback for ``run_check``; use it as a context manager."""

    def __init__(self, console: Console | None = None, delay: float = DELAY):
        self.console = console or Console(stderr=True)
        self.delay = delay
        self.started = time.perf_counter()
        self._progress: Progress | None = None
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
            self._progress = Progress(TextColumn("checking {task.description:<24}"), BarColumn(),
                                      TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                                      TextColumn("eta"), TimeRemainingColumn(),
                                      console=self.console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task(what, total=total)
        self._progress.update(self._task, completed=done, total=total, description=what)
