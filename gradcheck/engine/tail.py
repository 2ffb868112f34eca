"""Finite differences of the network's loss through everything after the perturbed arrays: what
directional checks, their bisection, replay and the end-to-end safety net compare.

Each copy runs the real batch through the units from the perturbed one to the loss, one copy at
a time, so no unit is ever asked to treat stacked copies as a batch: this path is the plain
reference. It is used for a few evaluations per target, never per element of a full check.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from gradcheck.engine import base
from gradcheck.engine.base import Perturbed, has_branch_state, states_differ

INPUT = "input"


@dataclasses.dataclass
class Move:
    """One displacement of a ``TailProbe``'s arrays: ``positions[a]``, the contiguous flat
    positions of array ``a`` it moves (arrays beyond the list stay put), and ``amount(a, run,
    keep)``, the float64 move d of the positions ``run`` given their kept values ``keep``."""

    positions: list[slice]
    amount: Callable[[int, slice, np.ndarray], np.ndarray]


def runs(positions: slice):
    """``positions`` cut into runs of at most ``base.RUN_ELEMENTS``."""
    return base.runs(positions.stop, positions.start)


def displaced(keep: np.ndarray, d: np.ndarray, sign: float, dtype) -> np.ndarray:
    """The values stored for kept values ``keep`` (float64) moved by ``sign`` * ``d``."""
    return (keep + sign * d).astype(dtype)


class TailProbe:
    """The network's loss with ``arrays`` perturbed: parameters (live arrays, restored after
    every evaluation) and/or private copies of the input of unit ``start``."""

    def __init__(self, network, inputs: list[np.ndarray], target: np.ndarray, start: int,
                 arrays: list[np.ndarray], x: np.ndarray | None = None,
                 stop: int | None = None, upstream: np.ndarray | None = None):
        self.network = network
        self.target = target
        self.start = start
        self.arrays = arrays
        # The input of unit ``start``: a private copy when it is among the perturbed arrays.
        self.x = inputs[start] if x is None else x
        # A span of layers start..stop-1 ends in sum(upstream * output) instead of the loss.
        self.stop = stop
        self.upstream = upstream
        end = len(network.units) if stop is None else stop
        self.stateful = [u for u in network.units[start:end] if has_branch_state(u)]

    @classmethod
    def for_target(cls, network, inputs, target, unit: int, name: str) -> TailProbe:
        """The probe of one target: parameter ``name`` of unit ``unit``, or its input."""
        if name == INPUT:
            x = np.array(inputs[unit], copy=True, order="C")
            return cls(network, inputs, target, unit, [x], x)
        return cls(network, inputs, target, unit, [network.units[unit].params[name]])

    def loss(self) -> tuple[float, list]:
        """The loss (or a span's projected output) with the arrays as they are now, and the
        branch states of the units run."""
        net = self.network
        if self.stop is not None:
            out = net.forward(self.x, start=self.start, stop=self.stop)
            value = float(np.sum(np.asarray(out, dtype=np.float64) * self.upstream))
        else:
            pred = (net.forward(self.x, start=self.start) if self.start < len(net.layers)
                    else self.x)
            value = net.loss_value(pred, self.target)
        return value, [u.branch_state() for u in self.stateful]

    def evaluate(self, indices: np.ndarray, steps) -> Perturbed:
        """Central differences of the loss for elements of the first array, one at a time."""
        array = self.arrays[0]
        idx = np.asarray(indices, dtype=np.intp).reshape(-1)
        steps = np.broadcast_to(np.asarray(steps, dtype=np.float64), idx.shape)
        flat = array.reshape(-1)
        n = len(idx)
        plus, minus, step = np.empty(n), np.empty(n), np.empty(n)
        kinked = np.zeros(n, dtype=bool)
        for j, (i, h) in enumerate(zip(idx, steps)):
            saved = flat[i]
            try:
                flat[i] = saved + h
                hi = flat[i]
                plus[j], states_plus = self.loss()
                flat[i] = saved - h
                lo = flat[i]
                minus[j], states_minus = self.loss()
            finally:
                flat[i] = saved
            step[j] = float(hi) - float(lo)
            kinked[j] = any(states_differ(a, b) for a, b in zip(states_plus, states_minus))
        return Perturbed(plus, minus, step, kinked, np.maximum(np.abs(plus), np.abs(minus)))

    def evaluate_displaced(self, moves: list[Move]) -> Perturbed:
        """The loss with the arrays moved by +d and -d, for each ``Move`` in ``moves`` (``step``
        2). Only the positions a move names are written, a run at a time (``runs``), so no
        array-sized displacement is ever held; every array is restored from its saved copy."""
        n = len(moves)
        plus, minus = np.empty(n), np.empty(n)
        kinked = np.zeros(n, dtype=bool)
        saved = [a.copy() for a in self.arrays]
        try:
            for j, move in enumerate(moves):
                for sign, out in ((1.0, plus), (-1.0, minus)):
                    self._place(move, saved, sign)
                    out[j], states = self.loss()
                    if sign > 0:
                        states_plus = states
                self._place(move, saved, 0.0)
                kinked[j] = any(states_differ(a, b) for a, b in zip(states_plus, states))
        finally:
            for array, keep in zip(self.arrays, saved):
                array[...] = keep
        return Perturbed(plus, minus, np.full(n, 2.0), kinked, np.maximum(np.abs(plus),
                                                                         np.abs(minus)))

    def _place(self, move: Move, saved: list[np.ndarray], sign: float) -> None:
        """Write the kept values moved by ``sign`` * d at the move's positions (0: restore)."""
        for a, positions in enumerate(move.positions):
            flat, kept = self.arrays[a].reshape(-1), saved[a].reshape(-1)
            for run in runs(positions):
                if sign == 0.0:
                    flat[run] = kept[run]
                    continue
                keep = kept[run].astype(np.float64)
                flat[run] = displaced(keep, move.amount(a, run, keep), sign, flat.dtype)
