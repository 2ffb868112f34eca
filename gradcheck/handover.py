"""How a worker hands the values of a pass to the checking process (``gradcheck.fanout``): written
into memory the two share, not pickled down the worker's pipe.

A pass's values are 25 bytes an element (``plus``, ``minus`` and ``scale`` in float64, ``kinked``
as one byte; ``step`` is recomputed where they arrive). Down a pipe each result is pickled, copied
into the kernel and out again, and unpickled: on bench N3 with 2 jobs the worker spent about
4 ms sending and the caller 4 ms receiving, of a 0.15 s check. Through shared memory the check
took 0.1445 s against 0.1459 s (best of 25 each, alternating in one process).

Each item of the map has its own place: its first element sits at the number of elements of the
items before it, modulo the capacity. The places of the items a worker may compute at once never
overlap when the capacity is at least the window of results that may wait in the caller
(``parallel.Workers.map``'s ``ahead`` times the processes): an item is only claimed once the
items a capacity before it are taken, and the caller copies each item's values out as they
arrive, before it takes them. An item larger than the capacity travels down the pipe.
"""

from __future__ import annotations

import dataclasses
import mmap
import threading

import numpy as np

from gradcheck.engine.base import Perturbed

_FLOATS = ("plus", "minus", "scale")  # float64 each; then ``kinked``, one byte each
BYTES_PER_ELEMENT = 8 * len(_FLOATS) + 1
# Shared memory up to this size is kept for the next map of this process (one map at a time):
# memory written before is written again without a page fault on each page, where fresh memory
# faults on every one (bench N3, 400 pages: 0.1401 s a check instead of 0.1414 s, best of 30,
# alternating). Larger maps take fresh memory, so at most this much is held between checks.
KEPT_BYTES = 4 * 2**20
_kept: list[mmap.mmap] = []  # the kept memory, while no map uses it
_kept_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Placed:
    """What a worker sends for values it wrote into the shared memory: where, and how many."""

    start: int
    count: int


class SharedValues:
    """Shared memory for the values of the items of one map, whose sizes (elements) are
    ``sizes``; at most ``capacity`` elements (see the module's docstring). Make it before the
    fork: the memory is the workers' and this process's alike."""

    def __init__(self, sizes: list[int], capacity: int):
        self.capacity = max(1, min(capacity, int(sum(sizes))))
        self._memory = _borrow(BYTES_PER_ELEMENT * self.capacity)
        self._floats = np.frombuffer(self._memory, dtype=np.float64,
                                     count=len(_FLOATS) * self.capacity).reshape(
                                         len(_FLOATS), self.capacity)
        self._kinked = np.frombuffer(self._memory, dtype=np.bool_, count=self.capacity,
                                     offset=8 * len(_FLOATS) * self.capacity)
        self._starts = np.cumsum([0, *sizes])

    def put(self, index: int, values: Perturbed) -> Perturbed | Placed:
        """In a worker: the values of item ``index`` written into their place, and what to send
        instead of them; the values themselves when they do not fit."""
        count = len(values.plus)
        arrays = [getattr(values, name) for name in _FLOATS]
        if count > self.capacity or not all(
                a.dtype == np.float64 and a.shape == (count,) for a in arrays) or (
                values.kinked.dtype != np.bool_ or values.kinked.shape != (count,)):
            return values
        start = int(self._starts[index]) % self.capacity
        for there, here in self._pieces(start, count):
            for row, array in enumerate(arrays):
                self._floats[row, there] = array[here]
            self._kinked[there] = values.kinked[here]
        return Placed(start, count)

    def take(self, placed: Placed) -> Perturbed:
        """In this process, as the message arrives: the values, copied out of their place
        (which later items are written into once this one is taken). ``step`` is None."""
        floats = np.empty((len(_FLOATS), placed.count))
        kinked = np.empty(placed.count, dtype=np.bool_)
        for there, here in self._pieces(placed.start, placed.count):
            floats[:, here] = self._floats[:, there]
            kinked[here] = self._kinked[there]
        plus, minus, scale = floats
        return Perturbed(plus, minus, None, kinked, scale)

    def release(self) -> None:
        """The map is over (its workers have stopped): the memory may serve the next one."""
        memory, self._memory = self._memory, None
        if memory is not None and len(memory) == KEPT_BYTES:
            with _kept_lock:
                if not _kept:  # one kept, however many maps ran at once
                    _kept.append(memory)

    def _pieces(self, start: int, count: int):
        """(slice of the shared memory, slice of the item's values): one, or two where the
        place runs past the end of the memory and on from its start."""
        first = min(count, self.capacity - start)
        yield slice(start, start + first), slice(0, first)
        if first < count:
            yield slice(0, count - first), slice(first, count)


def _borrow(size: int) -> mmap.mmap:
    """Shared memory (MAP_SHARED, so mapped before a fork the workers share it) of at least
    ``size`` bytes: the kept memory when it is large enough and free, else fresh memory."""
    if size <= KEPT_BYTES:
        with _kept_lock:
            if _kept:
                return _kept.pop()
        return mmap.mmap(-1, KEPT_BYTES)
    return mmap.mmap(-1, size)
