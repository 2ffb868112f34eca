"""Shortcuts for a unit's perturbed copies: every way to compute many copies at once that is
faster than one ``forward`` per copy. Each is used only through ``gradcheck.engine.verify``:
its copies are checked against plain ``forward`` (``LocalProbe._verify``), and an exception, a
wrong shape or a wrong dtype makes the engine fall back to plain ``forward`` for that unit.

- ``objective_changes``: an element's change of the unit's objective, straight from the layer
  (no copies at all), for the targets the layer offers it for;
- ``perturbed_outputs``: a parameter's copies from the layer's own update of its clean output;
- ``perturbed_input_rows``: an input element's copies as single output rows, from the layer;
- stacked rows: for a layer that does not mix samples, the perturbed rows stacked into one batch
  and run through ``forward`` once (an optimisation the layer need not know about);
- ``forward_replaced_rows`` / ``forward_groups``: a batch-mixing layer's copies of the batch;
- ``forward_many``: the loss of many copies of the predictions at once.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck.engine.base import mixes_batch, own_method
from gradcheck.engine.verify import STACKING, Distrusted
from gradcheck.errors import GradcheckError
from gradcheck.usercode import invoke

@dataclasses.dataclass
class Copies:
    """Perturbed copies of a unit's outputs: per output, whole outputs (k, B, *out) or single
    rows (k, *out) of samples ``rows``; or, for the loss, its values (k,). ``states``: a branch
    state per copy. A route that computes the objective's change itself gives ``changes`` (k,),
    their round-off ``scales`` (k,) and ``branches`` (k,) codes, or None, instead of ``data``."""

    data: list[np.ndarray] | np.ndarray | None
    rows: np.ndarray | None = None
    states: list = dataclasses.field(default_factory=list)
    changes: np.ndarray | None = None
    scales: np.ndarray | None = None
    branches: np.ndarray | None = None


class Route:
    """One shortcut: ``method`` names it in notes; ``rows`` says it returns single rows."""

    method = ""
    rows = False
    quiet = False  # a stacking fallback is no fault of the layer: said under -v only

    def __init__(self, fn=None):
        self.fn = fn

    def produce(self, probe, pairs: np.ndarray, values: np.ndarray) -> Copies:
        try:
            got = self.compute(probe, pairs, values)
        except GradcheckError as exc:
            raise Distrusted(self.method, f"layer {probe.unit.name!r}: {self.method} failed "
                             f"({exc.message}); using forward instead", self.quiet) from None
        arrays = [got.data] if probe.is_loss else got.data
        dtypes = [None] if probe.is_loss else probe.clean_dtypes
        for data, expected, dtype in zip(arrays, self.expected_shapes(probe, len(pairs)), dtypes):
            if not isinstance(data, np.ndarray) or data.shape != expected or (
                    dtype is not None and data.dtype != dtype):
                found = (f"shape {data.shape}, dtype {data.dtype}" if isinstance(data, np.ndarray)
                         else type(data).__name__)
                raise Distrusted(self.method, f"layer {probe.unit.name!r}: {self.method} "
                                 f"returned {found}, expected shape {expected}; using forward "
                                 "instead", self.quiet)
        return got

    def compute(self, probe, pairs, values) -> Copies:
        raise NotImplementedError

    def expected_shapes(self, probe, k: int) -> list[tuple[int, ...]]:
        if probe.is_loss:
            return [(k,)]
        return [(k, *y.shape[1:]) if self.rows else (k, *y.shape) for y in probe.clean]

    def disagreement(self, probe, index: int, sign: str, got: float, expected: float) -> str:
        where = [int(i) for i in np.unravel_index(index, probe.array.shape)]
        return (f"layer {probe.unit.name!r}: {self.method} disagrees with forward at "
                f"{probe.name}{where} ({sign}): the objective changes by {got:.6g} through it "
                f"and by {expected:.6g} through forward; not used for the rest of the check")


def _rows_with(probe, pairs, values):
    """Rows of the perturbed input holding each perturbation: (k, *row shape), and which sample
    each is."""
    batch = probe.x.shape[0]
    per_row = probe.x.size // batch
    rows, offset = np.divmod(pairs, per_row)
    copies = probe.x.reshape(batch, per_row)[rows]  # fancy indexing: a copy
    copies[np.arange(len(pairs)), offset] = values
    return copies.reshape(len(pairs), *probe.x.shape[1:]), rows


def _batches_with(probe, pairs, values):
    """Whole copies of the input (k, B, ...), each with one element perturbed."""
    copies = np.repeat(probe.x[None], len(pairs), axis=0)
    copies.reshape(len(pairs), -1)[np.arange(len(pairs)), pairs] = values
    return copies


class Declined(Exception):
    """The layer offers no shortcut for this target (its method returned None): use the next
    route, with no note: nothing was wrong."""


class Objective(Route):
    method = "objective_changes"

    def produce(self, probe, pairs, values) -> Copies:
        try:
            got = invoke(probe.unit, self.method, self.fn, probe.x, probe.upstream[0],
                         probe.name, pairs, values)
        except GradcheckError as exc:
            raise Distrusted(self.method, f"layer {probe.unit.name!r}: {self.method} failed "
                             f"({exc.message}); using forward instead") from None
        if got is None:
            raise Declined
        k = len(pairs)
        parts = got if isinstance(got, tuple) and len(got) == 3 else None
        shaped = parts is not None and all(
            isinstance(a, np.ndarray) and a.shape == (k,) for a in parts[:2]) and (
            parts[2] is None or (isinstance(parts[2], np.ndarray) and parts[2].shape == (k,)))
        if not shaped or (probe.stateful and parts[2] is None):
            needed = " (not None: the layer has a branch state)" if probe.stateful else ""
            raise Distrusted(self.method, f"layer {probe.unit.name!r}: {self.method} returned "
                             f"{_described(got)}, expected (changes, magnitudes, branches), the "
                             f"first two of shape ({k},), branches None or ({k},){needed}; using "
                             "forward instead")
        changes, scales, branches = parts
        return Copies(None, changes=changes.astype(np.float64),
                      scales=np.abs(scales.astype(np.float64)), branches=branches)


def _described(value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_described(v) for v in value) + ")"
    return f"shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__


class PerturbedOutputs(Route):
    method = "perturbed_outputs"

    def compute(self, probe, pairs, values):
        # A layer with several inputs gets the others after the contract's four arguments.
        return Copies([invoke(probe.unit, "perturbed_outputs", self.fn, probe.args[0], probe.name,
                              pairs, values, *probe.args[1:])])


class PerturbedInputRows(Route):
    method = "perturbed_input_rows"
    rows = True

    def compute(self, probe, pairs, values):
        rows = pairs // (probe.x.size // probe.x.shape[0])
        return Copies([invoke(probe.unit, "perturbed_input_rows", self.fn, probe.x, pairs,
                              values)], rows)


class StackedRows(Route):
    method = STACKING
    rows = True
    quiet = True

    def disagreement(self, probe, index, sign, got, expected) -> str:
        return (f"layer {probe.unit.name!r}: its rows, stacked into one batch, differ from "
                f"forward on the real batch ({probe.name} element {index}, {sign}: "
                f"{got:.6g} vs {expected:.6g}); its copies run one at a time")

    def compute(self, probe, pairs, values):
        stacked, rows = _rows_with(probe, pairs, values)
        # The unit's other inputs, the same samples' rows: each stacked row is one sample.
        args = [stacked if j == (probe.slot or 0) else a[rows] for j, a in enumerate(probe.args)]
        unit = probe.unit
        out = invoke(unit, "forward", unit.forward, *args)
        outs = list(out) if isinstance(out, tuple) else [out]
        states = []
        if probe.stateful:
            state = invoke(unit, "branch_state", unit.branch_state)
            if state is not None:
                state = np.asarray(state)
                if state.ndim == 0 or state.shape[0] != len(pairs):
                    raise Distrusted(self.method, f"layer {unit.name!r}: its branch state has no "
                                     "row per stacked copy; using forward per copy", True)
                states = list(state)
        return Copies(outs, rows, states)


class ReplacedRows(Route):
    method = "forward_replaced_rows"

    def compute(self, probe, pairs, values):
        new_rows, rows = _rows_with(probe, pairs, values)
        return Copies([invoke(probe.unit, "forward_replaced_rows", self.fn, probe.x, rows,
                              new_rows)])


class Groups(Route):
    method = "forward_groups"

    def compute(self, probe, pairs, values):
        copies = _batches_with(probe, pairs, values)
        batch = probe.x.shape[0]
        got = invoke(probe.unit, "forward_groups", self.fn,
                     copies.reshape(len(pairs) * batch, *probe.x.shape[1:]), batch)
        if not isinstance(got, np.ndarray) or got.shape[:1] != (len(pairs) * batch,):
            return Copies([got])
        return Copies([got.reshape(len(pairs), batch, *got.shape[1:])])


class ForwardMany(Route):
    method = "forward_many"

    def compute(self, probe, pairs, values):
        got = invoke(probe.unit, "forward_many", self.fn, _batches_with(probe, pairs, values),
                     probe.upstream)
        return Copies(np.asarray(got, dtype=np.float64) if isinstance(got, (np.ndarray, list))
                      else got)


def route_for(probe) -> Route | None:
    """The fastest shortcut still trusted for this probe, or None for plain ``forward``. The
    contract's methods describe a layer with one input and one output (``perturbed_outputs``
    also takes a layer's other inputs); stacked rows suit any layer that does not mix samples."""
    unit, verifier = probe.unit, probe.verifier
    simple = probe.is_loss or (len(probe.args) == 1 and len(probe.clean) == 1)
    if probe.is_loss:
        candidates = [(ForwardMany, "forward_many")] if probe.slot == 0 else []
    elif probe.slot is None:
        candidates = [(PerturbedOutputs, "perturbed_outputs")] if len(probe.clean) == 1 else []
    elif mixes_batch(unit):
        candidates = ([(ReplacedRows, "forward_replaced_rows"), (Groups, "forward_groups")]
                      if simple else [])
    else:
        candidates = [(PerturbedInputRows, "perturbed_input_rows")] if simple else []
        candidates.append((StackedRows, None))
    if simple and not probe.is_loss:
        candidates.insert(0, (Objective, "objective_changes"))
    for route, method in candidates:
        if probe.stateful and route not in (StackedRows, Objective):
            continue  # a shortcut that cannot report each copy's branch state
        if method in probe.declined:
            continue
        fn = own_method(unit, method) if method else None
        if (method is None or fn is not None) and verifier.usable(unit, route.method):
            return route(fn)
    return None
