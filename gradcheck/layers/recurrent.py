"""Recurrent layers over batch-first sequences: ``rnn`` (tanh), ``lstm`` and ``gru``.

Each is a cell of the shared time loop (gradcheck.layers.timeloop.Recurrent): one step forward
and back, on any leading axes.
"""

from __future__ import annotations

import numpy as np

from gradcheck.layers.timeloop import Recurrent, sigmoid
from gradcheck.registry import register_layer


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
