"""The finite-difference engine: the loss under element perturbations of a target
(``gradcheck.analytic``). Perturbing a target of unit k only changes what units
k..end compute, so the engine keeps every unit's input from one clean forward pass and re-runs
only the tail. Every perturbation is undone in a ``finally``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck import stacking
from gradcheck.analytic import INPUT, AnalyticPass, Target
from gradcheck.errors import LayerError
from gradcheck.network import Batch, Network
from gradcheck.usercode import invoke


@dataclasses.dataclass
class Perturbed:
    """Losses at +h and -h for a set of elements, the actual step, and kink crossings."""

    plus: np.ndarray
    minus: np.ndarray
    step: np.ndarray
    kinked: np.ndarray

    @property
    def numeric(self) -> np.ndarray:
        """Central-difference estimate of the gradient for each element."""
        return (self.plus - self.minus) / self.step


class Probe:
    """Evaluates the loss with elements of one target perturbed, re-running only the tail.

    ``evaluate`` stacks many perturbed copies along the batch axis (see ``gradcheck.stacking``);
    ``evaluate_serial`` is the plain one-perturbation-at-a-time reference it must agree with, and
    the fallback for a layer that breaks the stacking assumptions. ``max_bytes`` caps the memory
    of one stacked pass.
    """

    def __init__(self, network: Network, batch: Batch, cached: AnalyticPass, target: Target,
                 max_bytes: int | None = None):
        self.network = network
        self.batch = batch
        self.target = target
        self.cached = cached
        self.start = target.unit
        self.start_input = cached.inputs[target.unit]
        if target.name == INPUT:
            # A private copy: the cached input is shared by every other probe.
            self.array = np.array(self.start_input, copy=True)
        else:
            self.array = network.units[target.unit].params[target.name]
        self._tail_has_state = any(stacking.has_branch_state(u)
                                   for u in network.units[self.start:])
        self.rows = self.start_input.shape[0]
        self.max_bytes = max_bytes
        self.levels = stacking.levels_for(network, self.start, self.rows, max_bytes)
        # The first unit from ``start`` on whose output for one sample depends on other samples
        # (the loss, if no layer mixes): until it, a perturbation changes one sample's row only.
        self.first_mixing = next((k for k in range(self.start, len(network.layers))
                                  if stacking.mixes_batch(network.layers[k])), len(network.layers))

    def loss(self) -> tuple[float, list]:
        """The loss with the target array as it is now, and the tail's branch states."""
        net = self.network
        if self.target.name == INPUT and self.start == len(net.layers):
            pred = self.array
        else:
            x = self.array if self.target.name == INPUT else self.start_input
            pred = net.forward(x, start=self.start)
        value = net.loss_value(pred, self.batch.target)
        states = [u.branch_state() for u in net.units[self.start:]] if self._tail_has_state else []
        return value, states

    # -- element perturbations ------------------------------------------------------------------

    def evaluate(self, flat_indices: np.ndarray, eps: float, progress=None) -> Perturbed:
        """Central differences for the elements at ``flat_indices`` with step ``eps``.

        ``progress(n)`` is called with the number of elements finished after each stacked pass.
        """
        idx = np.asarray(flat_indices, dtype=np.intp).reshape(-1)
        if idx.size == 0:
            return Perturbed(np.empty(0), np.empty(0), np.empty(0), np.zeros(0, dtype=bool))
        flat = self.array.reshape(-1)
        hi = (flat[idx] + eps).astype(self.array.dtype)
        lo = (flat[idx] - eps).astype(self.array.dtype)
        # The stored values, not +-eps: in float32 they differ noticeably.
        step = hi.astype(np.float64) - lo.astype(np.float64)
        n_layers = len(self.network.layers)
        try:
            if self.target.name != INPUT and self.start < n_layers:
                plus, minus, kinked = self._param_pairs(idx, hi, lo, progress)
            elif self.target.name == INPUT and self.start < self.first_mixing:
                plus, minus, kinked = self._row_pairs(idx, hi, lo, progress)
            elif self.target.name == INPUT:
                plus, minus, kinked = self._copy_pairs(idx, hi, lo, progress)
            else:
                raise stacking.Unbatchable("parameters of the loss")
        except stacking.Unbatchable:
            return self.evaluate_serial(idx, eps, progress)
        return Perturbed(plus, minus, step, kinked)

    def evaluate_serial(self, flat_indices: np.ndarray, eps: float, progress=None) -> Perturbed:
        """The reference path: perturb one element, re-run the tail, restore; element by element."""
        n = len(flat_indices)
        plus, minus, step = np.empty(n), np.empty(n), np.empty(n)
        kinked = np.zeros(n, dtype=bool)
        flat = self.array.reshape(-1)
        for j, i in enumerate(flat_indices):
            saved = flat[i]
            try:
                flat[i] = saved + eps
                hi = flat[i]
                plus[j], states_plus = self.loss()
                flat[i] = saved - eps
                lo = flat[i]
                minus[j], states_minus = self.loss()
            finally:
                flat[i] = saved
            step[j] = float(hi) - float(lo)
            kinked[j] = _states_differ(states_plus, states_minus)
            if progress is not None and (j + 1) % 64 == 0:
                progress(64)
        if progress is not None and n % 64:
            progress(n % 64)
        return Perturbed(plus, minus, step, kinked)

    def _row_pairs(self, idx, hi, lo, progress):
        """Input of layers that do not mix samples: up to the first unit that does, a
        perturbation changes one sample's row only, so each copy is one row, placed at a position
        congruent to its sample. From that unit on, each copy is the clean batch with that row
        replaced (``_row_copies``)."""
        column = idx // (self.array.size // self.rows)
        rank = _rank_within(column)
        pairs_per_column = self.levels // 2
        chunk_of = rank // pairs_per_column
        plus, minus = np.empty(len(idx)), np.empty(len(idx))
        kinked = np.zeros(len(idx), dtype=bool)
        layer = self.network.layers[self.start]
        direct = (callable(getattr(layer, "perturbed_input_rows", None))
                  and not stacking.has_branch_state(layer))
        for chunk in np.unique(chunk_of):
            sel = np.flatnonzero(chunk_of == chunk)
            level = 2 * (rank[sel] % pairs_per_column)
            if direct:
                plus[sel], minus[sel], kinked[sel] = self._direct_row_chunk(
                    layer, idx[sel], hi[sel], lo[sel], level, column[sel],
                    confirm=chunk == chunk_of.min())
            else:
                stacked = np.repeat(self.start_input[None], int(level.max()) + 2, axis=0)
                flat = stacked.reshape(len(stacked), self.rows, -1)
                offset = idx[sel] % flat.shape[2]
                flat[level, column[sel], offset] = hi[sel]
                flat[level + 1, column[sel], offset] = lo[sel]
                plus[sel], minus[sel], kinked[sel] = self._rows_then_copies(
                    stacked, self.start, level, column[sel])
            if progress is not None:
                progress(len(sel))
        return plus, minus, kinked

    def _direct_row_chunk(self, layer, idx, hi, lo, level, column, confirm):
        """A chunk of ``_row_pairs`` whose first layer offers ``perturbed_input_rows``: its
        output rows come from that method and the row-wise layers run from the next one."""
        got = self._direct_outputs(layer, idx, hi, lo, confirm)
        if self.start + 1 == self.first_mixing:
            # Nothing runs row-wise in between: the rows go straight into the copies.
            return self._replaced_row_pairs(column, lambda part: got[2 * part.start:2 * part.stop])
        return self._rows_then_copies(self._row_layout(got, level, column), self.start + 1,
                                      level, column)

    def _rows_then_copies(self, stacked, first, level, column):
        """Run stacked single rows (levels, B, ...) from unit ``first`` up to the first mixing
        unit, then the copies that rows ``(level, column)`` / ``(level + 1, column)`` make."""
        levels = len(stacked)
        x = stacked.reshape(levels * self.rows, *stacked.shape[2:])
        out, states = stacking.run_tail(self.network, x, first, levels, self.rows,
                                        end=self.first_mixing)
        out = out.reshape(levels, self.rows, *out.shape[1:])
        plus, minus, kinked = self._row_copies(out, level, column)
        kinked |= stacking.pair_kinks(states, levels, (level, column), (level + 1, column))
        return plus, minus, kinked

    def _direct_outputs(self, layer, idx, hi, lo, confirm):
        """Layer ``start``'s output rows for a chunk of input perturbations, +h and -h
        interleaved, from its optional ``perturbed_input_rows`` (for a layer affine in its input:
        the clean row plus one column of its weights). The chunk's first row is checked against
        a real forward when ``confirm``, so the differences still rest on ``forward``."""
        rows = self.rows
        indices = np.repeat(idx, 2)
        values = np.empty(len(indices), dtype=self.array.dtype)
        values[0::2], values[1::2] = hi, lo
        out_shape = tuple(self.network.shapes[self.start + 1])
        got = invoke(layer, "perturbed_input_rows", layer.perturbed_input_rows,
                     self.start_input, indices, values)
        if not isinstance(got, np.ndarray) or got.shape != (len(indices), *out_shape):
            raise LayerError(f"layer {layer.name!r}: perturbed_input_rows returned shape "
                             f"{getattr(got, 'shape', None)}, expected "
                             f"{(len(indices), *out_shape)}.")
        if confirm:
            x = self.start_input.copy()
            x.reshape(-1)[indices[0]] = values[0]
            actual = invoke(layer, "forward", layer.forward, x)[indices[0] // (x.size // rows)]
            _confirm_same(layer, "perturbed_input_rows", f"input[{indices[0]}]", got[0], actual,
                          self.network.dtype)
        return got

    def _row_layout(self, got, level, column):
        """Interleaved output rows placed as stacked rows (levels, B, ...): pair j at
        ``(level[j], column[j])`` and ``(level[j] + 1, column[j])``."""
        levels = int(level.max()) + 2
        if len(got) == levels * self.rows:  # every slot holds a perturbed row
            stacked = np.empty((levels, self.rows, *got.shape[1:]), dtype=got.dtype)
        else:
            stacked = np.repeat(self.cached.inputs[self.start + 1][None], levels, axis=0)
        stacked[level, column] = got[0::2]
        stacked[level + 1, column] = got[1::2]
        return stacked

    def _row_copies(self, out, level, column):
        """Losses of whole batches that are the clean input of the first mixing unit with one
        row replaced by ``out[level, column]`` (+h) and ``out[level + 1, column]`` (-h)."""
        def replacement(part):
            both = np.empty((2 * (part.stop - part.start), *out.shape[2:]), dtype=out.dtype)
            both[0::2] = out[level[part], column[part]]
            both[1::2] = out[level[part] + 1, column[part]]
            return both

        return self._replaced_row_pairs(column, replacement)

    def _copy_pairs(self, idx, hi, lo, progress):
        """Input of a unit that mixes samples (or of the loss): each copy is the whole batch, the
        clean one with the perturbed element's row replaced."""
        per = self.array.size // self.rows
        row_of, offset = idx // per, idx % per
        flat_rows = self.start_input.reshape(self.rows, per)

        def replacement(part):
            j = np.arange(part.stop - part.start)
            both = flat_rows[np.repeat(row_of[part], 2)]  # fancy indexing: a copy
            both[2 * j, offset[part]] = hi[part]
            both[2 * j + 1, offset[part]] = lo[part]
            return both.reshape(2 * len(j), *self.start_input.shape[1:])

        return self._replaced_row_pairs(row_of, replacement, progress)

    def _replaced_row_pairs(self, rows, replacement_for, progress=None):
        """Losses of whole batches: the clean input of unit ``first_mixing`` with row ``rows[j]``
        replaced by the +h and -h rows of pair j, which ``replacement_for(part)`` returns
        interleaved (+, -, +, ...) for the pairs in slice ``part``.

        A mixing layer offering ``forward_replaced_rows`` derives all copies from the clean batch
        in one call (batchnorm: the statistics are the clean ones plus one row's change); without
        it, each copy is built and run whole.
        """
        n = len(rows)
        plus, minus = np.empty(n), np.empty(n)
        kinked = np.zeros(n, dtype=bool)
        unit = self.first_mixing
        clean = self.cached.inputs[unit]
        mixer = self.network.layers[unit] if unit < len(self.network.layers) else None
        derived = (mixer is not None and callable(getattr(mixer, "forward_replaced_rows", None))
                   and not stacking.has_branch_state(mixer))
        # Bounds the (2 * group, B, ...) copies built at once, by the layers from ``unit`` on:
        # often far narrower than the perturbed one (the loss takes a few outputs per sample).
        group = stacking.levels_for(self.network, unit, self.rows, self.max_bytes) // 2
        for lo_j in range(0, n, group):
            part = slice(lo_j, min(n, lo_j + group))
            m = part.stop - part.start
            replacement = replacement_for(part)
            row_pairs = np.repeat(rows[part], 2)
            if derived:
                copies = self._mixer_copies(mixer, clean, row_pairs, replacement, lo_j == 0)
                start = unit + 1
            else:
                copies = np.repeat(clean[None], 2 * m, axis=0)
                copies[np.arange(2 * m), row_pairs] = replacement
                start = unit
            plus[part], minus[part], kinked[part] = self._through_tail(copies, start, [])
            if progress is not None:
                progress(m)
        return plus, minus, kinked

    def _mixer_copies(self, mixer, clean, rows, replacement, confirm):
        """``forward_replaced_rows`` of the first mixing layer, shape-checked, and its first copy
        confirmed against a real forward when ``confirm``."""
        got = invoke(mixer, "forward_replaced_rows", mixer.forward_replaced_rows, clean, rows,
                     replacement)
        expected = (len(rows), self.rows, *self.network.shapes[self.first_mixing + 1])
        if not isinstance(got, np.ndarray) or got.shape != expected:
            raise LayerError(f"layer {mixer.name!r}: forward_replaced_rows returned shape "
                             f"{getattr(got, 'shape', None)}, expected {expected}.")
        if confirm:
            x = clean.copy()
            x[rows[0]] = replacement[0]
            actual = invoke(mixer, "forward", mixer.forward, x)
            _confirm_same(mixer, "forward_replaced_rows", f"row {rows[0]} of its input", got[0],
                          actual, self.network.dtype)
        return got

    def _output_levels(self) -> int:
        """Levels per stacked pass for copies of layer ``start``'s output (a parameter's copies
        never hold its input, often the widest array)."""
        return stacking.levels_for(self.network, self.start + 1, self.rows, self.max_bytes)

    def _param_pairs(self, idx, hi, lo, progress):
        """A parameter of layer k: layer k runs once per copy (its parameter is one array), and
        its outputs, stacked, run through layers k+1..end together."""
        layer = self.network.layers[self.start]
        own_state = stacking.has_branch_state(layer)
        if callable(getattr(layer, "perturbed_outputs", None)) and not own_state:
            return self._param_pairs_direct(layer, idx, hi, lo, progress)
        flat = self.array.reshape(-1)
        plus, minus = np.empty(len(idx)), np.empty(len(idx))
        kinked = np.zeros(len(idx), dtype=bool)
        pairs = self._output_levels() // 2
        out_shape = (self.rows, *self.network.shapes[self.start + 1])
        for lo_j in range(0, len(idx), pairs):
            sel = range(lo_j, min(len(idx), lo_j + pairs))
            # Written in place: np.stack of thousands of small outputs costs a second copy.
            stacked = np.empty((2 * len(sel), *out_shape), dtype=self.network.dtype)
            states = []
            for c, j in enumerate(sel):
                i = idx[j]
                saved = flat[i]
                try:
                    for level, value in ((2 * c, hi[j]), (2 * c + 1, lo[j])):
                        flat[i] = value
                        stacked[level] = invoke(layer, "forward", layer.forward, self.start_input)
                        if own_state:
                            states.append(invoke(layer, "branch_state", layer.branch_state))
                finally:
                    flat[i] = saved
            part = slice(sel.start, sel.stop)
            plus[part], minus[part], kinked[part] = self._through_tail(stacked, self.start + 1,
                                                                       states)
            if progress is not None:
                progress(len(sel))
        return plus, minus, kinked

    def _param_pairs_direct(self, layer, idx, hi, lo, progress):
        """A parameter of a layer offering ``perturbed_outputs``: all copies of a chunk in one
        call (for a layer affine in the parameter, a cheap update of the clean output instead of
        one forward per copy). Its first copy is checked against a real forward, so the
        finite differences still rest on ``forward`` alone."""
        plus, minus = np.empty(len(idx)), np.empty(len(idx))
        kinked = np.zeros(len(idx), dtype=bool)
        out_shape = (self.rows, *self.network.shapes[self.start + 1])
        pairs = self._output_levels() // 2
        for lo_j in range(0, len(idx), pairs):
            part = slice(lo_j, min(len(idx), lo_j + pairs))
            indices = np.repeat(idx[part], 2)
            values = np.empty(len(indices), dtype=self.array.dtype)
            values[0::2], values[1::2] = hi[part], lo[part]
            stacked = invoke(layer, "perturbed_outputs", layer.perturbed_outputs,
                             self.start_input, self.target.name, indices, values)
            if not isinstance(stacked, np.ndarray) or stacked.shape != (len(indices), *out_shape):
                raise LayerError(f"layer {layer.name!r}: perturbed_outputs returned shape "
                                 f"{getattr(stacked, 'shape', None)}, expected "
                                 f"{(len(indices), *out_shape)}.")
            if lo_j == 0:
                self._confirm_direct(layer, indices[0], values[0], stacked[0])
            plus[part], minus[part], kinked[part] = self._through_tail(stacked, self.start + 1, [])
            if progress is not None:
                progress(part.stop - part.start)
        return plus, minus, kinked

    def _confirm_direct(self, layer, index, value, claimed) -> None:
        flat = self.array.reshape(-1)
        saved = flat[index]
        try:
            flat[index] = value
            actual = invoke(layer, "forward", layer.forward, self.start_input)
        finally:
            flat[index] = saved
        _confirm_same(layer, "perturbed_outputs", f"{self.target.name}[{index}]", claimed, actual,
                      self.network.dtype)

    def _through_tail(self, stacked, start, own_states):
        """Run whole-batch copies (2m, B, ...) ordered +h, -h, +h, ... from unit ``start`` on."""
        copies = len(stacked)
        q = np.arange(copies // 2)
        kinked = stacking.copy_state_kinks(own_states, 2 * q, 2 * q + 1)
        if start < len(self.network.layers):
            pred, states = stacking.run_tail(
                self.network, stacked.reshape(copies * self.rows, *stacked.shape[2:]),
                start, copies, self.rows)
            kinked |= stacking.adjacent_pair_kinks(states, copies)
            stacked = pred.reshape(copies, self.rows, *pred.shape[1:])
        values, loss_states = stacking.copy_losses(self.network, stacked, self.batch.target)
        kinked |= stacking.copy_state_kinks(loss_states, 2 * q, 2 * q + 1)
        return values[0::2], values[1::2], kinked

    # -- directions -----------------------------------------------------------------------------

    def evaluate_directions(self, directions: np.ndarray, eps: float,
                            grad: np.ndarray) -> tuple[Perturbed, np.ndarray]:
        """Central differences along whole-array ``directions`` (n, *target shape).

        Returns the losses at x +- eps*v (``step`` = 2*eps) and the analytic directional
        derivative ``grad . (stored(x+eps v) - stored(x-eps v)) / (2 eps)`` for each direction,
        so rounding of the perturbed values (float32) biases neither side.
        """
        base = self.array.astype(np.float64)
        n = len(directions)
        analytic, plus, minus = np.empty(n), np.empty(n), np.empty(n)
        kinked = np.zeros(n, dtype=bool)
        g = np.asarray(grad, dtype=np.float64).reshape(-1)
        pairs = self.levels // 2
        for lo_j in range(0, n, pairs):
            part = slice(lo_j, min(n, lo_j + pairs))
            values = []
            for v in directions[part]:
                hi = (base + eps * v).astype(self.array.dtype)
                lo = (base - eps * v).astype(self.array.dtype)
                values += [hi, lo]
            for j, (hi, lo) in zip(range(part.start, part.stop), zip(values[0::2], values[1::2])):
                delta = hi.astype(np.float64) - lo.astype(np.float64)
                analytic[j] = float(g @ delta.reshape(-1)) / (2 * eps)
            plus[part], minus[part], kinked[part] = self._whole_array_pairs(values)
        step = np.full(n, 2 * eps)
        return Perturbed(plus, minus, step, kinked), analytic

    def _whole_array_pairs(self, values: list[np.ndarray]):
        """Losses with the whole target array replaced by each of ``values`` (+, -, +, -, ...)."""
        n_layers = len(self.network.layers)
        try:
            if self.target.name == INPUT:
                return self._through_tail(np.stack(values), self.start, [])
            if self.start < n_layers:
                layer = self.network.layers[self.start]
                saved = self.array.copy()
                outputs, states = [], []
                try:
                    for value in values:
                        self.array[...] = value
                        outputs.append(invoke(layer, "forward", layer.forward, self.start_input))
                        if stacking.has_branch_state(layer):
                            states.append(invoke(layer, "branch_state", layer.branch_state))
                finally:
                    self.array[...] = saved
                return self._through_tail(np.stack(outputs), self.start + 1, states)
        except stacking.Unbatchable:
            pass
        return self._whole_array_serial(values)

    def _whole_array_serial(self, values: list[np.ndarray]):
        saved = self.array.copy()
        losses, states = [], []
        try:
            for value in values:
                self.array[...] = value
                loss, state = self.loss()
                losses.append(loss)
                states.append(state)
        finally:
            self.array[...] = saved
        kinked = np.array([_states_differ(a, b) for a, b in zip(states[0::2], states[1::2])],
                          dtype=bool)
        return np.array(losses[0::2]), np.array(losses[1::2]), kinked


def _confirm_same(layer, method: str, element: str, claimed, actual, dtype) -> None:
    """Raise unless a speed-up method's output equals ``forward``'s to rounding."""
    scale = float(np.max(np.abs(actual))) if actual.size else 0.0
    allowed = 1e3 * np.finfo(dtype).eps * max(scale, 1.0)
    worst = float(np.max(np.abs(np.asarray(claimed, dtype=np.float64) - actual)))
    if not worst <= allowed:
        raise LayerError(f"layer {layer.name!r}: {method} disagrees with forward for {element} "
                         f"(max difference {worst:.3g}).",
                         hint=f"{method} must equal forward with that element changed; remove it "
                              f"to fall back to forward")


def _rank_within(column: np.ndarray) -> np.ndarray:
    """For each entry, how many earlier entries have the same value (a per-group counter)."""
    order = np.argsort(column, kind="stable")
    sorted_cols = column[order]
    starts = np.flatnonzero(np.r_[True, sorted_cols[1:] != sorted_cols[:-1]])
    counts = np.diff(np.r_[starts, len(column)])
    rank_sorted = np.arange(len(column)) - np.repeat(starts, counts)
    rank = np.empty(len(column), dtype=np.intp)
    rank[order] = rank_sorted
    return rank



def _states_differ(a: list, b: list) -> bool:
    for sa, sb in zip(a, b):
        if sa is None and sb is None:
            continue
        if sa is None or sb is None or np.shape(sa) != np.shape(sb) or not np.array_equal(sa, sb):
            return True
    return False
