"""The time loop of the recurrent layers (gradcheck.layers.recurrent): forward, backpropagation
through time and ``perturbed_outputs``, written once for every cell.

A cell only says how one step maps (input projection, recurrent projection, state) to the next
state, and back. Steps work on any leading axes, so the same code runs the batch (N, ...) in
``forward`` and k perturbed copies of it (k, N, ...) in ``perturbed_outputs``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from gradcheck.contract import Layer
from gradcheck.errors import LayerError

# Std of a learned initial state's entries: nonzero, so that a check exercises the recurrent
# weights at t = 0, and small, so that the first step starts near the zero state it replaces.
INITIAL_STATE_STD = 0.1


def sigmoid(a: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-a)), in place. For a << 0 exp overflows to inf and the result is the exact
    0; only the warning is silenced (as the sigmoid layer does)."""
    with np.errstate(over="ignore"):
        np.exp(np.negative(a, out=a), out=a)
    a += 1.0
    return np.reciprocal(a, out=a)


def _orthogonal_blocks(rng: np.random.Generator, units: int, gates: int) -> np.ndarray:
    """(units, gates * units): one random orthogonal (units, units) block per gate."""
    blocks = []
    for _ in range(gates):
        q, r = np.linalg.qr(rng.normal(size=(units, units)))
        blocks.append(q * np.sign(np.diag(r)))  # the sign fix makes q uniform (Haar) distributed
    return np.concatenate(blocks, axis=1)


class Recurrent(Layer):
    """The time loop shared by the recurrent layers; see ``rnn``, ``lstm`` and ``gru``.

    x: (batch, T, F) -> y: (batch, T, units), or (batch, units) = the last state without
    ``return_sequences``.  Wx: (F, gates * units), Wh: (units, gates * units),
    b: (gates * units,), the gate blocks side by side in the order the cell names.
    """

    gates: ClassVar[int] = 1
    # Fused gates side by side: a range of "gate unit" columns names the gate that is wrong.
    axis_names = {"input": ("time", "feature"), "Wx": ("feature", "gate unit"),
                  "Wh": ("previous unit", "gate unit"), "b": ("gate unit",), "h0": ("unit",),
                  "c0": ("unit",)}
    # Names of the state arrays carried through time; the first is h, the layer's output.
    states: ClassVar[tuple[str, ...]] = ("h",)
    # Whether ``step`` uses ax and ah only through ax + ah: a changed Wx or b element can then be
    # added to the per-copy ah instead of copying ax for every copy (~15% faster).
    sums_projections: ClassVar[bool] = True

    def __init__(self, units: int, return_sequences: bool = True,
                 learn_initial_state: bool = False):
        super().__init__()
        kind = self.kind
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise LayerError(f"{kind}: units must be a positive integer, got {units!r}.")
        for option, value in (("return_sequences", return_sequences),
                              ("learn_initial_state", learn_initial_state)):
            if not isinstance(value, bool):
                raise LayerError(f"{kind}: {option} must be true or false, got {value!r}.")
        self.units = units
        self.return_sequences = return_sequences
        self.learn_initial_state = learn_initial_state

    def build(self, input_shape, rng):
        if len(input_shape) != 2:
            raise LayerError(
                f"{self.kind} expects a per-sample sequence (time, features), got "
                f"shape {tuple(input_shape)}.",
                hint="batch-first sequences are (batch, time, features); token ids go through an "
                     "'embedding' layer first")
        steps, features = input_shape
        width = self.gates * self.units
        # Wx: LeCun normal keeps the pre-activations of unit-variance inputs near unit variance,
        # where tanh and sigmoid are far from saturation (a saturated gate has ~0 gradient and
        # hides a wrong backward). Wh: orthogonal per gate (Saxe et al. 2014; Keras's default)
        # keeps the state's scale over time, so late losses still reach early steps.
        self.params["Wx"] = rng.normal(0.0, np.sqrt(1.0 / features), (features, width))
        self.params["Wh"] = _orthogonal_blocks(rng, self.units, self.gates)
        self.params["b"] = self.initial_bias()
        if self.learn_initial_state:
            for state in self.states:
                self.params[f"{state}0"] = rng.normal(0.0, INITIAL_STATE_STD, self.units)
        return (steps, self.units) if self.return_sequences else (self.units,)

    @property
    def kind(self) -> str:
        """The registered type name, for messages."""
        return getattr(type(self), "registered_name", type(self).__name__)

    def initial_bias(self) -> np.ndarray:
        """b: zeros (the cell may override)."""
        return np.zeros(self.gates * self.units)

    # -- the cell: one step on any leading axes --------------------------------------------------

    def step(self, ax: np.ndarray, ah: np.ndarray, state: tuple) -> tuple[tuple, tuple]:
        """(next state, cache) from ax = x_t Wx + b, ah = h_{t-1} Wh (may be overwritten) and the
        previous state; every array is (..., width) or (..., units)."""
        raise NotImplementedError

    def step_backward(self, cache: tuple, grad_state: tuple) -> tuple:
        """(dL/dax, dL/dah, dL/dstate_prev through paths other than ah, an entry None if there
        is none) from dL/d(next state)."""
        raise NotImplementedError

    # -- forward, backward ---------------------------------------------------------------------

    def _initial_state(self, batch: int, dtype, copies: tuple[int, ...] = ()) -> list:
        shape = (*copies, batch, self.units)
        if not self.learn_initial_state:
            return [np.zeros(shape, dtype=dtype) for _ in self.states]
        return [np.broadcast_to(self.params[f"{s}0"], shape).astype(dtype) for s in self.states]

    def forward(self, x):
        batch, steps, _ = x.shape
        self.x = x
        ax = x @ self.params["Wx"] + self.params["b"]
        state = self._initial_state(batch, ax.dtype)
        self.h_init = state[0]
        self.hs = np.empty((batch, steps, self.units), dtype=ax.dtype)
        self.caches = []
        for t in range(steps):
            state, cache = self.step(ax[:, t], state[0] @ self.params["Wh"], state)
            self.caches.append(cache)
            self.hs[:, t] = state[0]
        return self.hs.copy() if self.return_sequences else self.hs[:, -1].copy()

    def backward(self, grad_out):
        batch, steps, _ = self.x.shape
        wh = self.params["Wh"]
        width = self.gates * self.units
        dax = np.empty((batch, steps, width), dtype=grad_out.dtype)
        dah = np.empty_like(dax)
        # dL/d(state after step t), carried back from step t + 1 (the path BPTT must not drop).
        carried = [np.zeros((batch, self.units), dtype=grad_out.dtype) for _ in self.states]
        if not self.return_sequences:
            carried[0] = carried[0] + grad_out
        for t in reversed(range(steps)):
            if self.return_sequences:
                carried[0] = carried[0] + grad_out[:, t]
            dax[:, t], dah[:, t], direct = self.step_backward(self.caches[t], tuple(carried))
            dh_prev = dah[:, t] @ wh.T
            if direct[0] is not None:
                dh_prev += direct[0]
            carried = [dh_prev, *direct[1:]]
        features = self.x.shape[2]
        self.grads["Wx"] = self.x.reshape(-1, features).T @ dax.reshape(-1, width)
        h_prev = np.concatenate([self.h_init[:, None], self.hs[:, :-1]], axis=1)
        self.grads["Wh"] = h_prev.reshape(-1, self.units).T @ dah.reshape(-1, width)
        self.grads["b"] = dax.sum(axis=(0, 1))
        if self.learn_initial_state:
            for name, grad in zip(self.states, carried):
                self.grads[f"{name}0"] = grad.sum(axis=0)
        return dax @ self.params["Wx"].T

    def perturbed_outputs(self, x, name, flat_indices, values):
        """forward(x) with ``params[name].flat[flat_indices[k]] = values[k]``, per copy k:
        (k, batch, T, units), or (k, batch, units) without ``return_sequences``.

        The copies run through time together, each carrying its own (k, batch, units) state, in
        one matrix product per step. A changed element (i, j) of Wx, b or Wh changes column j of
        one projection by (value - old) times x_t[:, i], 1 or h_{t-1}[:, i]: a rank-one update
        per copy, never a copy of the weights. A changed h0 / c0 element starts its copy there.
        """
        copies = np.arange(len(flat_indices))
        batch, steps, _ = x.shape
        param = self.params[name]
        delta = (values - param.reshape(-1)[flat_indices]).astype(x.dtype)
        rows, cols = np.divmod(flat_indices, param.shape[1]) if param.ndim == 2 else (
            None, flat_indices)
        ax = x @ self.params["Wx"] + self.params["b"]
        state = self._initial_state(batch, ax.dtype, (len(copies),))
        initial = [f"{s}0" for s in self.states]
        if name in initial:
            state[initial.index(name)][copies, :, cols] = values[:, None]
        out = np.empty((len(copies), batch, steps, self.units), dtype=ax.dtype) if (
            self.return_sequences) else None
        for t in range(steps):
            ah = state[0] @ self.params["Wh"]
            if name == "Wh":
                ah[copies, :, cols] += delta[:, None] * state[0][copies, :, rows]
            ax_t = ax[:, t]
            if name in ("Wx", "b"):
                change = delta[:, None] * x[:, t, rows].T if name == "Wx" else delta[:, None]
                if not self.sums_projections:
                    ax_t = np.repeat(ax_t[None], len(copies), axis=0)
                (ah if self.sums_projections else ax_t)[copies, :, cols] += change
            state, _ = self.step(ax_t, ah, state)
            if out is not None:
                out[:, :, t] = state[0]
        return out if out is not None else state[0]
