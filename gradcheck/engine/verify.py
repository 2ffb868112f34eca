"""The one place a speed-up is trusted.

A numeric gradient may come from a shortcut — an optional contract method (``perturbed_outputs``,
``perturbed_input_rows``, ``forward_replaced_rows``, ``forward_groups``, ``forward_many``) or a
unit called on stacked copies of its input — only after this verifier has compared the shortcut
with the unit's own ``forward`` on the real batch. Every pass a shortcut serves is checked at a
seeded sample of its elements spread over the pass (at least ``VERIFY_ELEMENTS``, never only the
first), at both +h and -h, comparing what the gradient is computed from: the change of the
unit's objective. A disagreement never crashes and never passes: the engine stops using that
shortcut for that unit for the rest of the run, recomputes with plain ``forward``, and the report
says which method of which layer disagreed (a stacking fallback is said under ``-v`` only: the
layer did nothing wrong, it just does not treat stacked rows as independent samples).
"""

from __future__ import annotations

import zlib

import numpy as np

VERIFY_ELEMENTS = 8
# Two computations of the same objective may differ by round-off of the terms it sums: this
# many ulps of their size. Beyond that, or beyond a tenth of the tolerance of the change itself,
# the shortcut computes something else.
ROUND_OFF_ULPS = 1e3
TOLERANCE_SHARE = 0.1
STACKING = "stacked copies"


class Distrusted(Exception):
    """A shortcut disagreed with ``forward`` (or failed): recompute without it."""

    def __init__(self, method: str, message: str, quiet: bool = False):
        super().__init__(message)
        self.method = method
        self.message = message
        self.quiet = quiet


class Verifier:
    """Which shortcuts may still be used in this run, and what was said about the others."""

    def __init__(self, dtype, rtol: float, seed: int):
        self.dtype = np.dtype(dtype)
        self.rtol = rtol
        self.seed = seed
        self._refused: set[tuple[int, str]] = set()
        self.notes: list[str] = []   # for the report (text and JSON)
        self.events: list[str] = []  # for -v
        self.refusals: list[Distrusted] = []  # in the order they were made

    def scratch(self) -> Verifier:
        """A copy that knows this verifier's refusals and records its own apart: for a pass
        evaluated ahead of its turn (``--jobs``), whose refusals are made here in turn."""
        copy = Verifier(self.dtype, self.rtol, self.seed)
        copy._refused = set(self._refused)
        return copy

    def usable(self, unit, method: str) -> bool:
        return (id(unit), method) not in self._refused

    def refuse(self, unit, failure: Distrusted) -> None:
        """Stop using ``failure.method`` for ``unit``, and say so once."""
        key = (id(unit), failure.method)
        if key in self._refused:
            return
        self._refused.add(key)
        self.refusals.append(failure)
        (self.events if failure.quiet else self.notes).append(failure.message)

    def positions(self, n: int, label: str, first: int) -> np.ndarray:
        """Which of ``n`` elements of a pass to verify: one drawn in each of up to
        ``VERIFY_ELEMENTS`` equal strata, so they spread over the whole pass. The draw is a
        function of the pass alone (the target's ``label``, its ``first`` element and ``n``),
        not of the passes before it: a pass verifies the same elements whichever process runs
        it, and in whatever order (``--jobs``)."""
        k = min(n, VERIFY_ELEMENTS)
        if k == 0:
            return np.arange(0)
        # crc32, not hash(): Python salts string hashes per process.
        key = (9, zlib.crc32(label.encode()), int(first), int(n))
        # The sequence's own words, not a Generator built on it: building one would cost more
        # than the draw (a pass may be a handful of elements). A 64-bit word modulo a stratum's
        # width is uniform to within 2**-40 for any pass a check holds.
        words = np.random.SeedSequence(self.seed, spawn_key=key).generate_state(k, np.uint64)
        edges = np.linspace(0, n, k + 1).astype(np.int64)
        widths = (edges[1:] - edges[:-1]).astype(np.uint64)
        return edges[:-1] + (words % widths).astype(np.int64)

    def agree(self, got: np.ndarray, expected: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Per element: whether a shortcut's objective change ``got`` equals the one ``forward``
        gives (``expected``, with round-off scale ``scale``) to rounding."""
        allowed = np.maximum(TOLERANCE_SHARE * self.rtol * np.abs(expected),
                             ROUND_OFF_ULPS * np.finfo(self.dtype).eps * np.abs(scale))
        return np.abs(np.asarray(got, float) - np.asarray(expected, float)) <= allowed
