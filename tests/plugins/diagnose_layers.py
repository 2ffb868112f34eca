"""Plugin layers for the diagnose tests: each behaves like a known failure, under a name the
diagnosis cannot recognise, so only behavioural probes can find them."""

import numpy as np

import gradcheck
from gradcheck.layers.attention import SelfAttention


@gradcheck.register_layer("diag_normalise")
class Normalise(gradcheck.Layer):
    """A hand-written softmax over the feature axis (correct, but named nothing like softmax)."""

    def forward(self, x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        self.y = e / e.sum(axis=1, keepdims=True)
        return self.y

    def backward(self, grad_out):
        return self.y * (grad_out - np.sum(grad_out * self.y, axis=1, keepdims=True))


class _Dense(gradcheck.Layer):
    """y = x @ W with a correct backward; the diagnose layers below each change one thing."""

    def __init__(self, units: int):
        super().__init__()
        self.units = units

    def build(self, input_shape, rng):
        self.params["W"] = rng.normal(0.0, np.sqrt(2.0 / input_shape[0]), (input_shape[0], self.units))
        return (self.units,)

    def forward(self, x):
        self.x = x
        return x @ self.params["W"]

    def backward(self, grad_out):
        self.grads["W"] = self.x.T @ grad_out
        return grad_out @ self.params["W"].T


@gradcheck.register_layer("diag_leaky_batch_dense")
class LeakyBatchDense(_Dense):
    """A dense layer whose backward rolls the batch axis: sample n gets sample n+1's gradient."""

    def backward(self, grad_out):
        self.grads["W"] = self.x.T @ grad_out
        return np.roll(grad_out, 1, axis=0) @ self.params["W"].T  # BUG: wrong batch index


@gradcheck.register_layer("diag_constant_dense")
class ConstantDense(_Dense):
    """A dense layer whose weights all start at 0.1."""

    def build(self, input_shape, rng):
        self.params["W"] = np.full((input_shape[0], self.units), 0.1)
        return (self.units,)


@gradcheck.register_layer("diag_overflow")
class Overflow(gradcheck.Layer):
    """exp(1000 x): overflows to Inf on ordinary inputs."""

    def forward(self, x):
        self.y = np.exp(1000.0 * x)
        return self.y

    def backward(self, grad_out):
        return 1000.0 * self.y * grad_out


@gradcheck.register_layer("diag_gain")
class Gain(gradcheck.Layer):
    """y = x * g per feature, g starting at 1: a learned scale, not a bias (named neither)."""

    def build(self, input_shape, rng):
        self.params["g"] = np.ones(input_shape)
        return tuple(input_shape)

    def forward(self, x):
        self.x = x
        return x * self.params["g"]

    def backward(self, grad_out):
        self.grads["g"] = np.sum(grad_out * self.x, axis=0)
        return grad_out * self.params["g"]


@gradcheck.register_layer("diag_channel_shift")
class ChannelShift(gradcheck.Layer):
    """y = x + s per channel of a (C, H, W) input, s stored as (C, 1, 1) and starting at 0.1: a
    bias by behaviour, whatever its shape."""

    def build(self, input_shape, rng):
        self.params["s"] = np.full((input_shape[0], 1, 1), 0.1)
        return tuple(input_shape)

    def forward(self, x):
        return x + self.params["s"]

    def backward(self, grad_out):
        self.grads["s"] = grad_out.sum(axis=(0, 2, 3))[:, None, None]
        return grad_out


@gradcheck.register_layer("diag_positive_dense")
class PositiveDense(_Dense):
    """A dense layer whose dL/dx uses |W|: right while every weight is positive, as they all
    start (|N(0, 1/fan_in)|), wrong once training moves one below zero."""

    def build(self, input_shape, rng):
        self.params["W"] = np.abs(rng.normal(0.0, np.sqrt(1.0 / input_shape[0]),
                                             (input_shape[0], self.units)))
        return (self.units,)

    def backward(self, grad_out):
        self.grads["W"] = self.x.T @ grad_out
        return grad_out @ np.abs(self.params["W"]).T  # BUG: |W| instead of W


@gradcheck.register_layer("diag_flatline")
class Flatline(gradcheck.Layer):
    """Outputs ones whatever the input, and passes back zeros: a zero Jacobian that normalises
    nothing."""

    def forward(self, x):
        return np.ones_like(x)

    def backward(self, grad_out):
        return np.zeros_like(grad_out)


@gradcheck.register_layer("diag_inf_backward")
class InfBackward(gradcheck.Layer):
    """The identity whose backward divides by zero."""

    def forward(self, x):
        return x

    def backward(self, grad_out):
        with np.errstate(divide="ignore"):
            return grad_out / np.zeros_like(grad_out)


class _Recurrent(gradcheck.Layer):
    """h_t = f(x_t Wx + h_{t-1} Wh), h_{-1} = 0: (batch, T, F) -> (batch, T, units), every h_t.
    The activation f and how Wh is drawn are the subclass's; the backward carries dL/dh back
    through every step (correct BPTT)."""

    def __init__(self, units: int):
        super().__init__()
        self.units = units

    def build(self, input_shape, rng):
        steps, features = input_shape
        self.params["Wx"] = rng.normal(0.0, 1.0 / np.sqrt(features), (features, self.units))
        self.params["Wh"] = self.recurrent_weights(rng)
        return (steps, self.units)

    def forward(self, x):
        self.x = x
        self.hs = [np.zeros((x.shape[0], self.units), dtype=x.dtype)]
        for t in range(x.shape[1]):
            self.hs.append(self.f(x[:, t] @ self.params["Wx"] + self.hs[-1] @ self.params["Wh"]))
        return np.stack(self.hs[1:], axis=1)

    def backward(self, grad_out):
        grad_x = np.zeros_like(self.x)
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        carried = np.zeros_like(self.hs[0])
        for t in reversed(range(self.x.shape[1])):
            grad_pre = (grad_out[:, t] + carried) * self.slope(self.hs[t + 1])
            self.grads["Wx"] += self.x[:, t].T @ grad_pre
            self.grads["Wh"] += self.hs[t].T @ grad_pre
            grad_x[:, t] = grad_pre @ self.params["Wx"].T
            carried = grad_pre @ self.params["Wh"].T
        return grad_x


@gradcheck.register_layer("diag_faint_rnn")
class FaintRNN(_Recurrent):
    """A tanh RNN whose recurrent weights are drawn N(0, 0.01^2), the scale of a careless
    "small random init": each step back multiplies the gradient by about 0.01 x sqrt(units)."""

    def recurrent_weights(self, rng):
        return rng.normal(0.0, 0.01, (self.units, self.units))

    def f(self, a):
        return np.tanh(a)

    def slope(self, h):
        return 1.0 - h * h


@gradcheck.register_layer("diag_amplifying_rnn")
class AmplifyingRNN(_Recurrent):
    """A linear RNN whose recurrent matrix is twice an orthogonal one: every singular value is 2,
    so the gradient doubles at each step back (Pascanu et al. 2013: explosion needs a spectral
    radius above 1 / max|f'| = 1)."""

    def recurrent_weights(self, rng):
        q, _ = np.linalg.qr(rng.normal(size=(self.units, self.units)))
        return 2.0 * q

    def f(self, a):
        return a

    def slope(self, h):
        return np.ones_like(h)


@gradcheck.register_layer("diag_dot_attention")
class DotAttention(gradcheck.Layer):
    """Single-head self-attention without projections, written from scratch: y = A x with
    A = softmax(sharpness x x^T / sqrt(F)) over the keys. x: (batch, T, F) -> (batch, T, F).
    It tells the diagnosis its weights through the optional contract method
    ``attention_weights``; ``sharpness`` scales the scores (a temperature's inverse): a large
    one saturates the softmax."""

    def __init__(self, sharpness: float = 1.0):
        super().__init__()
        self.sharpness = sharpness

    def forward(self, x):
        self.x = x
        self.c = self.sharpness / np.sqrt(x.shape[2])
        scores = self.c * (x @ x.transpose(0, 2, 1))
        e = np.exp(scores - scores.max(axis=-1, keepdims=True))
        self.a = e / e.sum(axis=-1, keepdims=True)
        return self.a @ x

    def backward(self, grad_out):
        grad_a = grad_out @ self.x.transpose(0, 2, 1)
        grad_s = self.a * (grad_a - np.sum(grad_a * self.a, axis=-1, keepdims=True))
        return self.a.transpose(0, 2, 1) @ grad_out + self.c * (
            (grad_s + grad_s.transpose(0, 2, 1)) @ self.x)

    def attention_weights(self):
        return self.a[:, None]  # one head


@gradcheck.register_layer("diag_unit_init_attention")
class UnitInitAttention(SelfAttention):
    """The built-in attention with its projections drawn N(0, 1) instead of N(0, 1/features): on
    16 features its scores come out about 16 x too large and the softmax saturates."""

    def build(self, input_shape, rng):
        out = super().build(input_shape, rng)
        for name in ("Wq", "Wk", "Wv", "Wo"):
            self.params[name] = rng.normal(0.0, 1.0, self.params[name].shape)
        return out
