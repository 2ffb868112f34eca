"""The statistic behind each threshold, recorded on request: ``bench/diagnose_margins.py`` measures
how far healthy networks stay from every threshold (the README's margins) with this.

A check calls ``measured(NAME, value)`` with the number it is about to compare with the threshold
``thresholds.NAME``, whether or not the finding fires; the diagnosis tags each value with the probe
seed it was measured at (``tagged``), so that the bench can tell what a finding needs to be called
(every seed). Outside ``recording()`` that is a no-op, so the library keeps no state between
diagnoses.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

Record = dict[str, list[tuple[int | None, float]]]
_RECORD: contextvars.ContextVar[Record | None] = contextvars.ContextVar(
    "gradcheck_diagnose_record", default=None)
_TAG: contextvars.ContextVar[int | None] = contextvars.ContextVar("gradcheck_diagnose_tag",
                                                                  default=None)


def measured(threshold: str, value: float) -> None:
    """Record ``value``, the statistic compared with ``thresholds.<threshold>``."""
    record = _RECORD.get()
    if record is not None:
        record.setdefault(threshold, []).append((_TAG.get(), float(value)))


@contextlib.contextmanager
def tagged(seed: int) -> Iterator[None]:
    """Tag the values measured inside the block with the probe seed they belong to."""
    token = _TAG.set(seed)
    try:
        yield
    finally:
        _TAG.reset(token)


@contextlib.contextmanager
def recording() -> Iterator[Record]:
    """Collect every ``measured`` value made inside the block:
    ``{threshold name: [(probe seed or None, value)]}``."""
    record: Record = {}
    token = _RECORD.set(record)
    try:
        yield record
    finally:
        _RECORD.reset(token)
