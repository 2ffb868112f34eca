"""Recurrent layers over batch-first sequences: ``rnn`` (tanh), ``lstm`` and ``gru``.

All three share one time loop, one backpropagation through time and one ``perturbed_outputs``;
a cell only says how one step maps (input projection, recurrent projection, state) to the next
state, and back. Steps work on any leading axes, so the same code runs the batch (N, ...) in
``forward`` and k perturbed copies of it (k, N, ...) in ``perturbed_outputs``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from gradcheck.contract import Layer
from gradcheck.errors import LayerError
from gradcheck.registry import register_layer

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
        if name[:-1] in self.states and name.endswith("0"):
            state[self.states.index(name[:-1])][copies, :, cols] = values[:, None]
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


@register_layer("rnn")
class RNN(Recurrent):
    """Elman RNN: h_t = tanh(x_t Wx + h_{t-1} Wh + b), h_{-1} = 0 or the learned h0.

    x: (batch, T, F) -> y: (batch, T, units) (every h_t), or (batch, units) (h_{T-1}) without
    ``return_sequences``.  Wx: (F, units), Wh: (units, units), b: (units,); with
    ``learn_initial_state`` also h0: (units,), shared by every sample.

    Init, chosen so that a check reaches every path: Wx LeCun normal (pre-activations near unit
    variance, off the flat tails of tanh where a wrong backward hides), Wh orthogonal (Saxe et
    al. 2014: the state keeps its scale over time, so late losses still reach early steps),
    b zeros, h0 N(0, 0.1^2) (nonzero, so that Wh is exercised at t = 0).
    """

    def step(self, ax, ah, state):
        ah += ax
        h = np.tanh(ah, out=ah)
        return (h,), (h,)

    def step_backward(self, cache, grad_state):
        (h,) = cache
        grad_pre = grad_state[0] * (1.0 - h * h)
        return grad_pre, grad_pre, (None,)


@register_layer("lstm")
class LSTM(Recurrent):
    """Long short-term memory (Hochreiter & Schmidhuber 1997), gate blocks i, f, o, g as in cs231n.

    a = x_t Wx + h_{t-1} Wh + b, split into four (batch, units) blocks a_i, a_f, a_o, a_g;
    i, f, o = sigmoid(a_i, a_f, a_o), g = tanh(a_g); c_t = f * c_{t-1} + i * g;
    h_t = o * tanh(c_t).  h_{-1}, c_{-1} = 0, or the learned h0, c0.
    x: (batch, T, F) -> y: (batch, T, units) (every h_t), or (batch, units) without
    ``return_sequences``.  Wx: (F, 4 units), Wh: (units, 4 units), b: (4 units,); with
    ``learn_initial_state`` also h0, c0: (units,).

    Init, chosen so that a check reaches every path: Wx LeCun normal (pre-activations near unit
    variance, off the flat tails of tanh and sigmoid where a wrong backward hides), Wh
    orthogonal per gate (Saxe et al. 2014: the state keeps its scale over time), b zeros except
    the forget block, 1 (Jozefowicz et al. 2015: the cell remembers from the start, so late
    losses reach early steps through c), h0 and c0 N(0, 0.1^2) (nonzero, so that Wh and f * c
    are exercised at t = 0).
    """

    gates = 4
    states = ("h", "c")

    def initial_bias(self):
        bias = np.zeros(4 * self.units)
        bias[self.units:2 * self.units] = 1.0
        return bias

    def step(self, ax, ah, state):
        units = self.units
        c_prev = state[1]
        ah += ax
        sigmoid(ah[..., :3 * units])
        np.tanh(ah[..., 3 * units:], out=ah[..., 3 * units:])
        i, f, o, g = (ah[..., k * units:(k + 1) * units] for k in range(4))
        c = f * c_prev
        c += i * g
        tanh_c = np.tanh(c)
        return (o * tanh_c, c), (i, f, o, g, c_prev, tanh_c)

    def step_backward(self, cache, grad_state):
        i, f, o, g, c_prev, tanh_c = cache
        grad_h, grad_c = grad_state
        units = self.units
        grad_c = grad_c + grad_h * o * (1.0 - tanh_c * tanh_c)
        grad_pre = np.empty((*i.shape[:-1], 4 * units), dtype=i.dtype)
        grad_pre[..., :units] = grad_c * g * i * (1.0 - i)
        grad_pre[..., units:2 * units] = grad_c * c_prev * f * (1.0 - f)
        grad_pre[..., 2 * units:3 * units] = grad_h * tanh_c * o * (1.0 - o)
        grad_pre[..., 3 * units:] = grad_c * i * (1.0 - g * g)
        return grad_pre, grad_pre, (None, grad_c * f)


@register_layer("gru")
class GRU(Recurrent):
    """Gated recurrent unit (Cho et al. 2014), reset applied after the recurrent product (cuDNN).

    Gate blocks r, z, n, as in PyTorch's GRU with its recurrent bias b_hn = 0:
    r = sigmoid(x_t Wx_r + h_{t-1} Wh_r + b_r), z = sigmoid(x_t Wx_z + h_{t-1} Wh_z + b_z),
    n = tanh(x_t Wx_n + b_n + r * (h_{t-1} Wh_n)), h_t = (1 - z) * n + z * h_{t-1},
    where Wx_r is the first units columns of Wx, and so on.  h_{-1} = 0, or the learned h0.
    x: (batch, T, F) -> y: (batch, T, units) (every h_t), or (batch, units) without
    ``return_sequences``.  Wx: (F, 3 units), Wh: (units, 3 units), b: (3 units,); with
    ``learn_initial_state`` also h0: (units,).

    Init, chosen so that a check reaches every path: Wx LeCun normal (pre-activations near unit
    variance, off the flat tails of tanh and sigmoid where a wrong backward hides), Wh
    orthogonal per gate (Saxe et al. 2014: the state keeps its scale over time, so late losses
    still reach early steps), b zeros, h0 N(0, 0.1^2) (nonzero, so that Wh and z * h are
    exercised at t = 0).
    """

    gates = 3
    sums_projections = False  # n adds r * (h Wh_n) to x Wx_n + b_n

    def step(self, ax, ah, state):
        units = self.units
        h_prev = state[0]
        gates = ah[..., :2 * units]
        gates += ax[..., :2 * units]
        sigmoid(gates)
        r, z = gates[..., :units], gates[..., units:]
        ah_n = ah[..., 2 * units:]
        n = r * ah_n
        n += ax[..., 2 * units:]
        np.tanh(n, out=n)
        h = h_prev - n
        h *= z
        h += n
        return (h,), (r, z, n, ah_n, h_prev)

    def step_backward(self, cache, grad_state):
        r, z, n, ah_n, h_prev = cache
        (grad_h,) = grad_state
        units = self.units
        grad_n = grad_h * (1.0 - z) * (1.0 - n * n)  # dL/d(n's pre-activation)
        grad_ax = np.empty((*r.shape[:-1], 3 * units), dtype=r.dtype)
        grad_ax[..., :units] = grad_n * ah_n * r * (1.0 - r)
        grad_ax[..., units:2 * units] = grad_h * (h_prev - n) * z * (1.0 - z)
        grad_ax[..., 2 * units:] = grad_n
        grad_ah = grad_ax.copy()
        grad_ah[..., 2 * units:] = grad_n * r
        return grad_ax, grad_ah, (grad_h * z,)
