"""What every strategy of the engine shares: the result of a perturbation pass, which optional
methods of a unit may be used at all, and how large a pass may be."""

from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck.contract import Layer, Loss

# One pass of perturbed copies holds at most about this many bytes of copies: a few MiB per
# array stays within the cache, and memory stays bounded whatever the network's size.
CHUNK_BYTES = 16 * 2**20
# Arrays alive per copy while a chunk runs: its input or output, the difference from the clean
# output, and the projected product.
LIVE_COPIES = 3
# Elements that work over a whole array (a displacement, a comparison, a norm) handles at once:
# its float64 temporaries stay within a chunk whatever the array's size.
RUN_ELEMENTS = CHUNK_BYTES // 16


@dataclasses.dataclass
class Perturbed:
    """An objective at +h and -h for a set of elements.

    ``plus``/``minus``: the objective's change from the clean point (a unit's own objective) or
    its value (the network's loss); ``step``: the distance between the stored perturbed values
    (2h, after rounding to the dtype); ``kinked``: the unit's branch state differed between the
    two sides; ``scale``: the size of the terms the objective sums, for its round-off."""

    plus: np.ndarray
    minus: np.ndarray
    step: np.ndarray
    kinked: np.ndarray
    scale: np.ndarray

    @property
    def numeric(self) -> np.ndarray:
        """Central-difference estimate of the gradient for each element."""
        return (self.plus - self.minus) / self.step

    def arrays(self) -> tuple:
        """The fields in order (``dataclasses.astuple`` would deep-copy every array)."""
        return self.plus, self.minus, self.step, self.kinked, self.scale

    @staticmethod
    def join(parts: list[Perturbed]) -> Perturbed:
        if not parts:
            empty = np.empty(0)
            return Perturbed(empty, empty, empty, np.zeros(0, dtype=bool), empty)
        return Perturbed(*(np.concatenate(arrays) for arrays in
                           zip(*(p.arrays() for p in parts))))


class Writable:
    """Element access by flat (C-order) index that writes through to the array, also when it is
    a view a flat reshape would copy (a transposed shared parameter)."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.flat = array.reshape(-1) if array.flags.c_contiguous else None

    def get(self, i):
        if self.flat is not None:
            return self.flat[i]
        return self.array[np.unravel_index(i, self.array.shape)]

    def set(self, i, value) -> None:
        if self.flat is not None:
            self.flat[i] = value
        else:
            self.array[np.unravel_index(i, self.array.shape)] = value


def own_method(unit, name: str):
    """``unit.name`` when the class that defines it also defines ``forward`` or derives from the
    class that does; else None. A speed-up written for another forward (inherited by a subclass
    that overrides only ``forward``) no longer describes the unit, so it is never used; nor are
    the contract's own defaults."""
    mro = type(unit).__mro__
    forward_owner = next((k for k in mro if "forward" in vars(k)), None)
    owner = next((k for k in mro if name in vars(k)), None)
    if owner is None or owner in (Layer, Loss) or forward_owner is None:
        return None
    if not issubclass(owner, forward_owner):
        return None
    method = getattr(unit, name)
    return method if callable(method) else None


def has_branch_state(unit) -> bool:
    """Whether the unit overrides the contract's default (stateless) ``branch_state``."""
    default = Loss.branch_state if isinstance(unit, Loss) else Layer.branch_state
    return type(unit).branch_state is not default


def mixes_batch(unit) -> bool:
    """Whether one sample's output of ``unit`` depends on other samples."""
    return bool(getattr(unit, "mixes_batch", False))


def states_differ(a, b) -> bool:
    """Whether two branch states (arrays, or None for a smooth unit) differ."""
    if a is None and b is None:
        return False
    return a is None or b is None or np.shape(a) != np.shape(b) or not np.array_equal(a, b)


def runs(size: int, start: int = 0):
    """Slices cutting positions ``start`` to ``size`` into runs of at most RUN_ELEMENTS."""
    for lo in range(start, size, RUN_ELEMENTS):
        yield slice(lo, min(size, lo + RUN_ELEMENTS))


def pairs_per_chunk(bytes_per_copy: int) -> int:
    """How many +h/-h pairs of copies of ``bytes_per_copy`` one pass may hold (at least one)."""
    return max(1, int(CHUNK_BYTES // max(1, 2 * LIVE_COPIES * bytes_per_copy)))
