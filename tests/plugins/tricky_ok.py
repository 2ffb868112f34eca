"""Correct layers that tempt a gradient checker into false alarms: kinks hit exactly, exact
ties, huge and tiny scales, shared parameters, mostly-zero gradients, float32 inside. None of
them exposes ``branch_state``, so kinks must be found generically. Every network built from
them must pass (exit 0; kinks and inconclusive elements allowed)."""

import numpy as np

import gradcheck


def _ok(name):
    return gradcheck.register_layer(f"ok_{name}")


@_ok("zero_mask")
class ZeroMask(gradcheck.Layer):
    """y = x * M with a fixed 0/1 mask M (keep share ``keep``): its output holds exact zeros and
    most of the gradient flowing back through it is exactly zero."""

    def __init__(self, keep: float = 0.5):
        super().__init__()
        self.keep = keep

    def build(self, input_shape, rng):
        self.mask = (rng.random(input_shape) < self.keep).astype(float)
        return tuple(input_shape)

    def forward(self, x):
        return x * self.mask

    def backward(self, grad_out):
        return grad_out * self.mask


@_ok("relu")
class Relu(gradcheck.Layer):
    """max(x, 0), with no branch_state: at an input of exactly 0 the check must not fail."""

    def forward(self, x):
        self.x = x.copy()
        return np.maximum(x, 0.0)

    def backward(self, grad_out):
        return grad_out * (self.x > 0)


@_ok("abs")
class Abs(gradcheck.Layer):
    """|x|, gradient sign(x) (0 at 0)."""

    def forward(self, x):
        self.x = x.copy()
        return np.abs(x)

    def backward(self, grad_out):
        return grad_out * np.sign(self.x)


@_ok("clip01")
class Clip01(gradcheck.Layer):
    """clip(x, 0, 1): flat outside, identity inside."""

    def forward(self, x):
        self.x = x.copy()
        return np.clip(x, 0.0, 1.0)

    def backward(self, grad_out):
        return grad_out * ((self.x > 0.0) & (self.x < 1.0))


@_ok("upsample2")
class Upsample2(gradcheck.Layer):
    """Nearest-neighbour 2x upsampling: every value copied into a 2x2 block (exact ties)."""

    def build(self, input_shape, rng):
        c, h, w = input_shape
        return (c, 2 * h, 2 * w)

    def forward(self, x):
        return x.repeat(2, axis=2).repeat(2, axis=3)

    def backward(self, grad_out):
        n, c, h, w = grad_out.shape
        return grad_out.reshape(n, c, h // 2, 2, w // 2, 2).sum(axis=(3, 5))


@_ok("maxpool2")
class MaxPool2(gradcheck.Layer):
    """2x2 max-pool, stride 2; a tie goes to the first maximum (np.argmax)."""

    def build(self, input_shape, rng):
        c, h, w = input_shape
        return (c, h // 2, w // 2)

    def forward(self, x):
        n, c, h, w = x.shape
        windows = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
            n, c, h // 2, w // 2, 4)
        self.arg = windows.argmax(axis=-1)
        return windows.max(axis=-1)

    def backward(self, grad_out):
        n, c, h2, w2 = grad_out.shape
        routed = np.zeros((n, c, h2, w2, 4))
        np.put_along_axis(routed, self.arg[..., None], grad_out[..., None], axis=-1)
        return routed.reshape(n, c, h2, w2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
            n, c, 2 * h2, 2 * w2)


@_ok("feature_max")
class FeatureMax(gradcheck.Layer):
    """y = max over features of x, kept as one feature: ties after a duplicating layer."""

    def build(self, input_shape, rng):
        (self.width,) = input_shape
        return (1,)

    def forward(self, x):
        self.arg = x.argmax(axis=1)
        return x.max(axis=1, keepdims=True)

    def backward(self, grad_out):
        dx = np.zeros((len(grad_out), self.width))
        dx[np.arange(len(grad_out)), self.arg] = grad_out[:, 0]
        return dx


@_ok("duplicate")
class Duplicate(gradcheck.Layer):
    """y = [x, x]: every feature twice (exact ties for a following max)."""

    def build(self, input_shape, rng):
        (n,) = input_shape
        return (2 * n,)

    def forward(self, x):
        return np.concatenate([x, x], axis=1)

    def backward(self, grad_out):
        half = grad_out.shape[1] // 2
        return grad_out[:, :half] + grad_out[:, half:]


@_ok("scaled_dense")
class ScaledDense(gradcheck.Layer):
    """y = x @ W + b with weights of size ``scale`` (1e3: huge, 1e-6: tiny)."""

    def __init__(self, units: int = 5, scale: float = 1.0):
        super().__init__()
        self.units, self.scale = units, scale

    def build(self, input_shape, rng):
        (fan_in,) = input_shape
        self.params["W"] = self.scale * rng.normal(0.0, 1.0, (fan_in, self.units))
        self.params["b"] = self.scale * rng.normal(0.0, 1.0, self.units)
        return (self.units,)

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, grad_out):
        self.grads["W"] = self.x.T @ grad_out
        self.grads["b"] = grad_out.sum(axis=0)
        return grad_out @ self.params["W"].T


@_ok("shared_square")
class SharedSquare(gradcheck.Layer):
    """y = x @ W + x @ W.T: one parameter used twice, so its gradient is the sum of both uses."""

    def build(self, input_shape, rng):
        (n,) = input_shape
        self.params["W"] = rng.normal(0.0, 0.5, (n, n))
        return (n,)

    def forward(self, x):
        self.x = x
        W = self.params["W"]
        return x @ W + x @ W.T

    def backward(self, grad_out):
        outer = self.x.T @ grad_out
        self.grads["W"] = outer + outer.T
        W = self.params["W"]
        return grad_out @ W.T + grad_out @ W


@_ok("tanh_float32")
class TanhFloat32(gradcheck.Layer):
    """tanh computed in float32 inside a float64 network (a cast people forget)."""

    def forward(self, x):
        self.y = np.tanh(x.astype(np.float32))
        return self.y.astype(x.dtype)

    def backward(self, grad_out):
        return (grad_out * (1.0 - self.y.astype(np.float64) ** 2)).astype(grad_out.dtype)


@_ok("softplus")
class Softplus(gradcheck.Layer):
    """log(1 + exp(x)), computed stably; exact for large |x| too."""

    def forward(self, x):
        self.x = x
        return np.logaddexp(0.0, x)

    def backward(self, grad_out):
        return grad_out * 0.5 * (1.0 + np.tanh(0.5 * self.x))  # the logistic, without overflow


@_ok("tanh_returns_float32")
class TanhReturnsFloat32(gradcheck.Layer):
    """tanh whose float32 result leaks out into a float64 network (a cast left in place)."""

    def forward(self, x):
        self.y = np.tanh(x).astype(np.float32)
        return self.y

    def backward(self, grad_out):
        return grad_out * (1.0 - self.y.astype(np.float64) ** 2)


@_ok("scale_tanh")
class ScaleTanh(gradcheck.Layer):
    """y = tanh(a * x) with a learned per-feature scale a initialised around ``scale`` (within a
    factor 2): with ``scale`` 1e-4 on inputs around 1e4, a*x is of order 1, so an absolute step of
    1e-6 would be 1% of a."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def build(self, input_shape, rng):
        self.params["a"] = self.scale * rng.uniform(0.5, 2.0, input_shape)
        return tuple(input_shape)

    def forward(self, x):
        self.x = x
        self.y = np.tanh(self.params["a"] * x)
        return self.y

    def backward(self, grad_out):
        local = grad_out * (1.0 - self.y ** 2)
        self.grads["a"] = np.sum(local * self.x, axis=0)
        return local * self.params["a"]


@_ok("rounded_tanh")
class RoundedTanh(gradcheck.Layer):
    """tanh whose float64 result keeps only ``bits`` significant bits (52: float64 itself, 23:
    float32's precision, in between: a library working in extended or reduced precision). Its
    output carries round-off of exactly that size and no other error."""

    def __init__(self, bits: int = 52):
        super().__init__()
        self.bits = bits

    def forward(self, x):
        mantissa, exponent = np.frexp(np.tanh(x))
        self.y = np.ldexp(np.round(mantissa * 2.0 ** self.bits) / 2.0 ** self.bits, exponent)
        return self.y

    def backward(self, grad_out):
        return grad_out * (1.0 - self.y ** 2)


@_ok("naive_layernorm")
class NaiveLayerNorm(gradcheck.Layer):
    """Layer normalisation over features with the variance computed as E[x^2] - E[x]^2: right in
    exact arithmetic, but on inputs far from 0 (mean 1e4, spread 1) the subtraction cancels most
    digits, so the forward is only as precise as float32 or worse, in a float64 network."""

    def forward(self, x):
        mean = x.mean(axis=1, keepdims=True)
        variance = (x ** 2).mean(axis=1, keepdims=True) - mean ** 2
        self.inv_std = 1.0 / np.sqrt(variance + 1e-5)
        self.xhat = (x - mean) * self.inv_std
        return self.xhat

    def backward(self, grad_out):
        n = grad_out.shape[1]
        return self.inv_std / n * (n * grad_out - grad_out.sum(axis=1, keepdims=True)
                                   - self.xhat * (grad_out * self.xhat).sum(axis=1, keepdims=True))
