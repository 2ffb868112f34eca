"""Progress and deadlines: counting the work a check does, and stopping it cleanly at
``--max-seconds`` (the engine's ``finally`` blocks restore every perturbed value on the way)."""

from __future__ import annotations

import time


class TimeUp(Exception):
    """Raised between passes when a check's deadline has passed."""


class Ticker:
    """Counts work done for a ``progress(done, total, what)`` callback (None: counts nothing),
    and enforces the deadline (a ``time.monotonic()`` value, or None)."""

    def __init__(self, progress, total: int, deadline: float | None = None):
        self.progress = progress
        self.total = max(1, int(total))
        self.done = 0
        self.what = ""
        self.deadline = deadline

    def __call__(self, advance: int) -> None:
        self.done = min(self.total, self.done + int(advance))
        if self.progress is not None:
            self.progress(self.done, self.total, self.what)

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def check_deadline(self) -> None:
        if self.out_of_time():
            raise TimeUp
