"""Finite differences of the network's loss through everything after the perturbed arrays: what
directional checks, their bisection, replay and the end-to-end safety net compare.

Each evaluation re-runs, on the real batch, the units that depend on what was perturbed, in the
order they run, reading every other tensor from the clean pass: no unit is ever asked to treat
stacked copies as a batch, so this path is the plain reference. It is used for a few
evaluations per target, never per element of a full check.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from gradcheck.engine import base
from gradcheck.engine.base import Perturbed, Writable, has_branch_state, states_differ
from gradcheck.engine.local import slot_of


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
    every evaluation) and private copies of tensors, which ``overrides[(unit, slot)]`` feed to
    the units reading them. ``units``: the layers to re-run. With ``projection`` (a chain span:
    the last unit re-run and the gradient its output receives) the objective is
    sum(projection * that output) instead of the loss."""

    def __init__(self, network, clean, target: np.ndarray, arrays: list[np.ndarray],
                 units: list[int], overrides: dict | None = None,
                 projection: np.ndarray | None = None):
        self.network = network
        self.clean = clean
        self.target = target
        self.arrays = arrays
        self.units = [k for k in units if k < len(network.layers)]
        self.overrides = overrides or {}
        self.projection = projection
        self.stateful = [network.units[k] for k in units if has_branch_state(network.units[k])]

    @classmethod
    def for_target(cls, network, clean, target, unit: int, name: str) -> TailProbe:
        """The probe of one target: parameter ``name`` of unit ``unit``, or an input slot of it
        (perturbed for that unit alone, as its own input gradient describes)."""
        units = network.descendants(unit)
        slot = slot_of(name)
        if slot is None:
            return cls(network, clean, target, [network.units[unit].params[name]], units)
        x = np.array(clean.args[unit][slot], copy=True, order="C")
        return cls(network, clean, target, [x], units, {(unit, slot): x})

    def loss(self) -> tuple[float, list]:
        """The objective with the arrays as they are now, and the branch states of the units
        re-run."""
        net = self.network
        tensors = net.run_units(self.clean.tensors, self.units, self.overrides)
        if self.projection is not None:
            out = tensors[net.outputs[self.units[-1]][0]]
            value = float(np.sum(np.asarray(out, dtype=np.float64) * self.projection))
        else:
            n = len(net.layers)
            pred = self.overrides.get((n, 0), tensors[net.sources[n][0]])
            value = net.loss_value(pred, self.target)
        return value, [u.branch_state() for u in self.stateful]

    def evaluate(self, indices: np.ndarray, steps) -> Perturbed:
        """Central differences of the objective for elements of the first array, one at a
        time."""
        target = Writable(self.arrays[0])
        idx = np.asarray(indices, dtype=np.intp).reshape(-1)
        steps = np.broadcast_to(np.asarray(steps, dtype=np.float64), idx.shape)
        n = len(idx)
        plus, minus, step = np.empty(n), np.empty(n), np.empty(n)
        kinked = np.zeros(n, dtype=bool)
        for j, (i, h) in enumerate(zip(idx, steps)):
            saved = target.get(i)
            try:
                target.set(i, saved + h)
                hi = target.get(i)
                plus[j], states_plus = self.loss()
                target.set(i, saved - h)
                lo = target.get(i)
                minus[j], states_minus = self.loss()
            finally:
                target.set(i, saved)
            step[j] = float(hi) - float(lo)
            kinked[j] = any(states_differ(a, b) for a, b in zip(states_plus, states_minus))
        return Perturbed(plus, minus, step, kinked, np.maximum(np.abs(plus), np.abs(minus)))

    def evaluate_displaced(self, moves: list[Move]) -> Perturbed:
        """The objective with the arrays moved by +d and -d, for each ``Move`` in ``moves``
        (``step`` 2). Only the positions a move names are written, a run at a time (``runs``),
        so no array-sized displacement is ever held; every array is restored from its saved
        copy."""
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
        """Write the kept values moved by ``sign`` * d at the move's positions (0: restore),
        through ``Writable``: an array may be a transposed view (a shared parameter)."""
        for a, positions in enumerate(move.positions):
            target, kept = Writable(self.arrays[a]), saved[a].reshape(-1)
            for run in runs(positions):
                at = np.arange(run.start, run.stop)
                if sign == 0.0:
                    target.set(at, kept[run])
                    continue
                keep = kept[run].astype(np.float64)
                target.set(at, displaced(keep, move.amount(a, run, keep), sign,
                                         self.arrays[a].dtype))
