"""Finite differences of one unit's own objective: what full and sample modes compare.

For a layer the objective is S = sum(G * layer(x)), with G the upstream gradient dL/dy the
network's backward hands it (or a random one, when the layer is checked alone); its gradient is
exactly what ``backward(G)`` returns. For the loss it is the loss itself. Once every unit's
input gradient is verified this way, the network's gradients are right by the chain rule, and the
cost of an element is one evaluation of one unit instead of the whole network after it.

A pass computes the objective's change for many perturbed copies at once: through a verified
shortcut (``gradcheck.engine.shortcuts``) when the unit offers one, else by plain ``forward``,
one copy at a time. Every perturbation is undone in a ``finally``.
"""

from __future__ import annotations

import numpy as np

from gradcheck.contract import Loss
from gradcheck.engine import shortcuts
from gradcheck.engine.base import Perturbed, has_branch_state, pairs_per_chunk, states_differ
from gradcheck.engine.verify import Distrusted, Verifier
from gradcheck.usercode import invoke

INPUT = "input"


class LocalProbe:
    """The objective of ``unit`` at input ``x`` under perturbations of ``name`` (a parameter, or
    ``"input"``): ``upstream`` is G for a layer, the target for the loss."""

    def __init__(self, unit, x: np.ndarray, upstream: np.ndarray, name: str, dtype,
                 verifier: Verifier, label: str):
        self.unit = unit
        self.name = name
        self.upstream = upstream
        self.dtype = np.dtype(dtype)
        self.verifier = verifier
        self.label = label  # "layer.target", for notes
        self.is_loss = isinstance(unit, Loss)
        # A private, C-ordered copy of the input (the cached one is shared by every other probe,
        # and a flat view of a transposed copy would be a copy): perturbations land in it.
        self.x = np.array(x, copy=True, order="C") if name == INPUT else x
        self.array = self.x if name == INPUT else unit.params[name]
        self.stateful = has_branch_state(unit)
        clean = self.plain_output()
        self.clean_dtype = getattr(clean, "dtype", None)
        # A copy: a layer may return a view of its input (flatten), which perturbations change.
        self.clean = clean if self.is_loss else np.array(clean, dtype=np.float64, copy=True)

    # -- the plain path: forward on the real batch, one copy at a time -------------------------

    def plain_output(self):
        """The unit's output (the loss's value) at the current state of the arrays."""
        if self.is_loss:
            return float(invoke(self.unit, "forward", self.unit.forward, self.x, self.upstream))
        return np.asarray(invoke(self.unit, "forward", self.unit.forward, self.x))

    def plain_copies(self, idx: np.ndarray, values: np.ndarray):
        """Outputs (and branch states) with element ``idx[c]`` set to ``values[c]``, each copy
        computed by ``forward`` on the real batch."""
        flat = self.array.reshape(-1)
        outputs, states = [], []
        for i, value in zip(idx, values):
            saved = flat[i]
            try:
                flat[i] = value
                # A copy for the same reason as ``clean``.
                outputs.append(np.array(self.plain_output(), copy=True))
                if self.stateful:
                    states.append(invoke(self.unit, "branch_state", self.unit.branch_state))
            finally:
                flat[i] = saved
        if self.is_loss:
            return shortcuts.Copies(np.asarray(outputs, dtype=np.float64), states=states)
        return shortcuts.Copies(np.stack(outputs), states=states)

    # -- projection ------------------------------------------------------------------------------

    def change(self, copies: shortcuts.Copies) -> tuple[np.ndarray, np.ndarray]:
        """Each copy's objective minus the clean one, and the size of the terms it sums."""
        if self.is_loss:
            values = np.asarray(copies.data, dtype=np.float64)
            return values - self.clean, np.maximum(np.abs(values), abs(self.clean))
        data = np.asarray(copies.data, dtype=np.float64)
        if copies.rows is None:
            clean, weight = self.clean, self.upstream
        else:
            clean, weight = self.clean[copies.rows], self.upstream[copies.rows]
        axes = tuple(range(1, data.ndim))
        difference = data - clean
        weighted = weight * difference
        scale = np.sum(np.abs(weight * data) * (difference != 0), axis=axes)
        return np.sum(weighted, axis=axes), scale

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, indices: np.ndarray, steps) -> Perturbed:
        """Central differences for the elements at flat ``indices`` with per-element ``steps``
        (h; the stored values are x +- h in the unit's dtype)."""
        idx = np.asarray(indices, dtype=np.intp).reshape(-1)
        steps = np.broadcast_to(np.asarray(steps, dtype=np.float64), idx.shape)
        flat = self.array.reshape(-1)
        base = flat[idx].astype(np.float64)
        hi = (base + steps).astype(self.array.dtype)
        lo = (base - steps).astype(self.array.dtype)
        values = np.empty(2 * len(idx), dtype=self.array.dtype)
        values[0::2], values[1::2] = hi, lo
        pairs = np.repeat(idx, 2)
        route = shortcuts.route_for(self)
        try:
            change, scale, kinked = self._passes(route, pairs, values)
        except Distrusted as failure:
            self.verifier.refuse(self.unit, failure)
            change, scale, kinked = self._passes(None, pairs, values)
        step = hi.astype(np.float64) - lo.astype(np.float64)
        return Perturbed(change[0::2], change[1::2], step, kinked, np.maximum(scale[0::2],
                                                                             scale[1::2]))

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
            if route is not None:
                self._verify(route, pairs[part], values[part], change[part])
            if copies.states:
                kinked[lo // 2:part.stop // 2] = [states_differ(a, b) for a, b in
                                                  zip(copies.states[0::2], copies.states[1::2])]
        return change, scale, kinked

    def _copy_bytes(self, route) -> int:
        if self.is_loss:
            return self.x.nbytes
        rows = route is not None and route.rows
        out = self.clean[0] if rows else self.clean
        return max(out.size * 8, self.x[0].nbytes if rows else self.x.nbytes)

    def _verify(self, route, pairs: np.ndarray, values: np.ndarray, change: np.ndarray) -> None:
        """Compare the shortcut's changes with plain ``forward`` at a spread sample of the pass's
        elements, both signs of each."""
        chosen = self.verifier.positions(len(pairs) // 2)
        at = np.sort(np.concatenate([2 * chosen, 2 * chosen + 1]))
        # Whole-batch copies, as many at once as a pass of plain copies holds: verifying the
        # rows of a large activation must not stack 16 copies of the whole batch.
        group = 2 * pairs_per_chunk(self._copy_bytes(None))
        expected, scale = (np.concatenate(parts) for parts in zip(*(
            self.change(self.plain_copies(pairs[at[lo:lo + group]], values[at[lo:lo + group]]))
            for lo in range(0, len(at), group))))
        ok = self.verifier.agree(change[at], expected, scale)
        if not ok.all():
            bad = at[int(np.argmin(ok))]
            sign = "+h" if bad % 2 == 0 else "-h"
            raise Distrusted(route.method, route.disagreement(self, int(pairs[bad]), sign,
                                                              float(change[bad]),
                                                              float(expected[int(np.argmin(ok))])),
                             quiet=route.quiet)
