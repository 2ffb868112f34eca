"""Finite differences of one unit's own objective: what full and sample modes compare.

For a layer the objective is S = sum over its outputs of sum(G * y), with G the upstream gradient
the network hands each output (or a random one, when the layer is checked alone); its gradient
is exactly what ``backward(G...)`` returns. For the loss it is the loss itself. Once every unit's
input gradients are verified this way, the network's gradients are right by the chain rule, and
the cost of an element is one evaluation of one unit instead of the whole network after it.

A pass computes the objective's change for many perturbed copies at once: through a verified
shortcut (``gradcheck.engine.shortcuts``) when the unit offers one, else by plain ``forward``,
one copy at a time. Every perturbation is undone in a ``finally``.
"""

from __future__ import annotations

import functools

import numpy as np

from gradcheck.contract import Loss
from gradcheck.engine import shortcuts
from gradcheck.engine.base import (Perturbed, Writable, has_branch_state, pairs_per_chunk,
                                   states_differ)
from gradcheck.engine.verify import Distrusted, Verifier
from gradcheck.usercode import invoke

INPUT = "input"


def input_target(slot: int, count: int) -> str:
    """The target name of a unit's input ``slot`` of ``count``: ``input``, or ``input.j``."""
    return INPUT if count == 1 else f"{INPUT}.{slot}"


def slot_of(name: str) -> int | None:
    """The input slot a target names (``input`` -> 0, ``input.2`` -> 2), None for a parameter."""
    if name == INPUT:
        return 0
    head, _, tail = name.partition(".")
    return int(tail) if head == INPUT and tail.isdigit() else None


class LocalProbe:
    """The objective of ``unit`` at its inputs ``args`` under perturbations of ``name`` (a
    parameter, or an input: ``input``/``input.j``): ``upstream`` is the list of G, one per
    output, for a layer (a single array for one output), the target for the loss."""

    def __init__(self, unit, args, upstream, name: str, dtype, verifier: Verifier, label: str):
        self.unit = unit
        self.name = name
        self.is_loss = isinstance(unit, Loss)
        self.upstream = upstream if self.is_loss or isinstance(upstream, list) else [upstream]
        self.dtype = np.dtype(dtype)
        self.verifier = verifier
        self.label = label  # "layer.target", for notes
        self.args = list(args) if isinstance(args, (list, tuple)) else [args]
        self.slot = slot_of(name)
        if self.slot is not None:
            # A private, C-ordered copy (the cached input is shared by every other probe, and a
            # flat view of a transposed copy would be a copy): perturbations land in it.
            self.args[self.slot] = np.array(self.args[self.slot], copy=True, order="C")
            self.array = self.args[self.slot]
        else:
            self.array = unit.params[name]  # may be a transposed view of a shared parameter
        self.stateful = has_branch_state(unit)
        self.declined: set[str] = set()  # optional methods that offer nothing for this target
        # Shortcuts this probe has computed with (``--jobs``: a worker's pass is redone when a
        # pass before it refused one of them).
        self.tried: set[str] = set()

    @functools.cached_property
    def _clean_pass(self):
        """The unit's outputs (float64 copies) at the clean point and their dtypes: computed at
        the first evaluation, so a probe only reporting on passes evaluated elsewhere (by a
        ``--jobs`` worker) costs no forward."""
        clean = self.plain_output()
        if self.is_loss:
            return clean, []
        # Copies: a layer may return a view of its input (flatten), which perturbations change.
        return [np.array(y, dtype=np.float64, copy=True) for y in clean], [y.dtype for y in clean]

    @property
    def clean(self):
        return self._clean_pass[0]

    @property
    def clean_dtypes(self) -> list:
        return self._clean_pass[1]

    @property
    def x(self) -> np.ndarray:
        """The input a row shortcut perturbs: the target's slot, else the first."""
        return self.args[self.slot or 0]

    # -- the plain path: forward on the real batch, one copy at a time -------------------------

    def plain_output(self):
        """The unit's outputs as a list (the loss's value) at the current state of the arrays."""
        if self.is_loss:
            return float(invoke(self.unit, "forward", self.unit.forward, *self.args,
                                self.upstream))
        out = invoke(self.unit, "forward", self.unit.forward, *self.args)
        return [np.asarray(y) for y in (out if isinstance(out, tuple) else (out,))]

    def plain_copies(self, idx: np.ndarray, values: np.ndarray) -> shortcuts.Copies:
        """Outputs (and branch states) with element ``idx[c]`` set to ``values[c]``, each copy
        computed by ``forward`` on the real batch."""
        target = Writable(self.array)
        outputs, states = [], []
        for i, value in zip(idx, values):
            saved = target.get(i)
            try:
                target.set(i, value)
                out = self.plain_output()
                # Copies for the same reason as ``clean``.
                outputs.append(out if self.is_loss else [np.array(y, copy=True) for y in out])
                if self.stateful:
                    states.append(invoke(self.unit, "branch_state", self.unit.branch_state))
            finally:
                target.set(i, saved)
        if self.is_loss:
            return shortcuts.Copies(np.asarray(outputs, dtype=np.float64), states=states)
        return shortcuts.Copies([np.stack(ys) for ys in zip(*outputs)], states=states)

    def forward_changes(self, idx: np.ndarray, values: np.ndarray) -> shortcuts.Copies:
        """What ``_verify`` compares a shortcut with: per copy (element ``idx[c]`` set to
        ``values[c]``), the objective's change through ``forward`` on the real batch, the size of
        the terms it sums, and the branch state. Each copy is reduced as soon as it is computed,
        over the outputs that changed (the others add exactly 0): no whole-batch copy is kept."""
        target = Writable(self.array)
        changes, scales, states = np.empty(len(idx)), np.empty(len(idx)), []
        for c, (i, value) in enumerate(zip(idx, values)):
            saved = target.get(i)
            try:
                target.set(i, value)
                changes[c], scales[c] = self._changed_terms(self.plain_output())
                if self.stateful:
                    states.append(invoke(self.unit, "branch_state", self.unit.branch_state))
            finally:
                target.set(i, saved)
        return shortcuts.Copies(None, states=states, changes=changes, scales=scales)

    def _changed_terms(self, out) -> tuple[float, float]:
        """One copy's objective minus the clean one, and the size of the terms it sums: ``change``
        for a single copy, summed over the outputs it moved only."""
        if self.is_loss:
            return out - self.clean, max(abs(out), abs(self.clean))
        total, scale = 0.0, 0.0
        for y, clean, weight in zip(out, self.clean, self.upstream):
            # y - clean is 0 exactly where y == clean (IEEE subtraction, gradual underflow).
            moved = np.flatnonzero(np.asarray(y) != clean)
            y = np.asarray(y).reshape(-1)[moved].astype(np.float64)
            weight = weight.reshape(-1)[moved]
            total += float(np.add.reduce(weight * (y - clean.reshape(-1)[moved])))
            scale += float(np.add.reduce(np.abs(weight * y)))
        return total, scale

    # -- projection ------------------------------------------------------------------------------

    def change(self, copies: shortcuts.Copies) -> tuple[np.ndarray, np.ndarray]:
        """Each copy's objective minus the clean one, and the size of the terms it sums."""
        if copies.changes is not None:
            return copies.changes, copies.scales
        if self.is_loss:
            values = np.asarray(copies.data, dtype=np.float64)
            return values - self.clean, np.maximum(np.abs(values), abs(self.clean))
        total, scale = 0.0, 0.0
        for data, clean, weight in zip(copies.data, self.clean, self.upstream):
            data = np.asarray(data, dtype=np.float64)
            if copies.rows is not None:
                clean, weight = clean[copies.rows], weight[copies.rows]
            # Summed with numpy's pairwise sums, never BLAS: the same bits on every machine and
            # thread count, so reports are byte-stable.
            axes = tuple(range(1, data.ndim))
            difference = data - clean
            total = total + np.sum(weight * difference, axis=axes)
            # The terms the change sums, counted where the output changed: |G * y|.
            scale = scale + np.sum(np.abs(weight * data) * (difference != 0), axis=axes)
        return total, scale

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, indices: np.ndarray, steps) -> Perturbed:
        """Central differences for the elements at flat ``indices`` with per-element ``steps``
        (h; the stored values are x +- h in the unit's dtype)."""
        idx, steps = _flat(indices, steps)
        _ = self.clean  # computed (once) before any element moves
        hi, lo = self._stored(idx, steps)
        values = np.empty(2 * len(idx), dtype=self.array.dtype)
        values[0::2], values[1::2] = hi, lo
        pairs = np.repeat(idx, 2)
        route = shortcuts.route_for(self)
        # Which elements the verifier compares with forward: a spread sample of this call's,
        # each verified in the pass that computes it (so several passes are sampled).
        self._to_verify = np.zeros(len(idx), dtype=bool)
        first = int(idx[0]) if len(idx) else 0
        self._to_verify[self.verifier.positions(len(idx), self.label, first)] = True
        while True:
            if route is not None:
                self.tried.add(route.method)
            try:
                change, scale, kinked = self._passes(route, pairs, values)
                break
            except shortcuts.Declined:
                # The layer offers no shortcut for this target: the next route, no note.
                self.declined.add(route.method)
                route = shortcuts.route_for(self)
            except Distrusted as failure:
                self.verifier.refuse(self.unit, failure)
                route = None
        return Perturbed(change[0::2], change[1::2], _distance(hi, lo), kinked,
                         np.maximum(scale[0::2], scale[1::2]))

    def stored_step(self, indices: np.ndarray, steps) -> np.ndarray:
        """``Perturbed.step`` of ``evaluate(indices, steps)``, without evaluating."""
        return _distance(*self._stored(*_flat(indices, steps)))

    def _stored(self, idx: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x + h and x - h at flat ``idx``, as the unit's dtype stores them."""
        base = Writable(self.array).get(idx).astype(np.float64)
        return (base + steps).astype(self.array.dtype), (base - steps).astype(self.array.dtype)

    def _passes(self, route, pairs: np.ndarray, values: np.ndarray):
        n = len(pairs)
        change, scale = np.empty(n), np.empty(n)
        kinked = np.zeros(n // 2, dtype=bool)
        per_pass = 2 * pairs_per_chunk(self._copy_bytes(route))
        for lo in range(0, n, per_pass):
            part = slice(lo, min(n, lo + per_pass))
            copies = (route.produce(self, pairs[part], values[part]) if route is not None
                      else self.plain_copies(pairs[part], values[part]))
            change[part], scale[part] = self.change(copies)
            elements = slice(lo // 2, part.stop // 2)
            kinked[elements] = _kinked(copies)
            chosen = np.flatnonzero(self._to_verify[elements])
            if route is not None and len(chosen):
                self._verify(route, chosen, pairs[part], values[part], change[part],
                             kinked[elements])
        return change, scale, kinked

    def _copy_bytes(self, route) -> int:
        if isinstance(route, shortcuts.Objective):
            # What a copy costs the layer: about one output row for an input element, the
            # whole batch's outputs for a parameter (every sample sees it).
            whole = sum(y.size for y in self.clean) * 8
            return whole if self.slot is None else whole // self.x.shape[0]
        inputs = sum(a.nbytes for a in self.args)
        if self.is_loss:
            return inputs
        rows = route is not None and route.rows
        out = sum((y[0] if rows else y).size for y in self.clean) * 8
        return max(out, inputs // self.x.shape[0] if rows else inputs)

    def _verify(self, route, chosen: np.ndarray, pairs: np.ndarray, values: np.ndarray,
                change: np.ndarray, kinked: np.ndarray) -> None:
        """Compare the shortcut's changes, and whether it saw a kink, with plain ``forward``
        (and ``branch_state``) at the ``chosen`` elements of this pass, both signs of each."""
        at = np.sort(np.concatenate([2 * chosen, 2 * chosen + 1]))
        plain = self.forward_changes(pairs[at], values[at])
        expected, scale = plain.changes, plain.scales
        seen = np.broadcast_to(_kinked(plain), (len(chosen),))
        wrong = np.flatnonzero(seen != kinked[chosen])
        if len(wrong):
            first = wrong[0]
            raise Distrusted(route.method, f"layer {self.unit.name!r}: {route.method} "
                             f"{'misses' if seen[first] else 'claims'} a kink at {self.name} "
                             f"element {int(pairs[2 * chosen[first]])} where forward's "
                             f"branch_state {'shows one' if seen[first] else 'shows none'}; not "
                             "used for the rest of the check", quiet=route.quiet)
        ok = self.verifier.agree(change[at], expected, scale)
        if not ok.all():
            bad = at[int(np.argmin(ok))]
            sign = "+h" if bad % 2 == 0 else "-h"
            raise Distrusted(route.method, route.disagreement(self, int(pairs[bad]), sign,
                                                              float(change[bad]),
                                                              float(expected[int(np.argmin(ok))])),
                             quiet=route.quiet)


def _kinked(copies: shortcuts.Copies) -> np.ndarray | bool:
    """Per +h/-h pair of ``copies``: whether the two sides took different branches."""
    if copies.branches is not None:
        return copies.branches[0::2] != copies.branches[1::2]
    if copies.states:
        return np.array([states_differ(a, b) for a, b in
                         zip(copies.states[0::2], copies.states[1::2])], dtype=bool)
    return False


def _distance(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The distance between two stored perturbed values, in float64."""
    return hi.astype(np.float64) - lo.astype(np.float64)


def _flat(indices, steps) -> tuple[np.ndarray, np.ndarray]:
    """Flat element indices, and a step (h) for each."""
    idx = np.asarray(indices, dtype=np.intp).reshape(-1)
    return idx, np.broadcast_to(np.asarray(steps, dtype=np.float64), idx.shape)
