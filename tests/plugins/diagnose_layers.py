"""Plugin layers for the diagnose tests: each behaves like a known failure, under a name the
diagnosis cannot recognise, so only behavioural probes can find them."""

import numpy as np

import gradcheck


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
