"""Activation functions: elementwise rectifiers and squashers, plus softmax.

The elementwise layers take any per-sample shape and keep it. The rectifiers (relu, leaky_relu,
prelu, elu) have a kink at 0, so they report the sign mask of their last input as
``branch_state``: a finite difference whose two sides see different masks straddles the kink.
"""

from __future__ import annotations

import math

import numpy as np

from gradcheck.contract import Layer
from gradcheck.errors import LayerError
from gradcheck.layers.changes import elementwise_changes
from gradcheck.registry import register_layer


def _finite_number(name: str, value) -> float:
    # bool is an int subclass, but `slope: true` in YAML is a typo, not a slope of 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LayerError(f"{name} must be a finite number, got {value!r}.")
    return float(value)


class _Rectifier(Layer):
    """A layer with a kink at 0: the sign mask of its last input is the branch state."""

    def _remember(self, x: np.ndarray) -> np.ndarray:
        # Snapshot the mask now: the engine perturbs arrays in place, so a mask computed later
        # from a stored reference to x could describe a different input than the one that ran.
        self.x = x
        self.positive = x > 0
        return self.positive

    def branch_state(self):
        return self.positive

    def _objective_changes(self, x, grad_out, name, flat_indices, values):
        """The optional contract speed-up ``objective_changes``, which each rectifier
        names beside its own forward (a speed-up is only used from the class that defines
        forward): one output element changes per copy, and its sign is the branch."""
        if name != "input":
            return None  # prelu's alpha: forward's copies
        return elementwise_changes(lambda v, i: self._map(v, i, x.shape), x, grad_out,
                                   flat_indices, values, lambda v, i: v > 0)


@register_layer("relu")
class ReLU(_Rectifier):
    """y = max(x, 0).  x, y: (batch, *shape)."""

    def forward(self, x):
        self._remember(x)
        # maximum is ~3x faster than a masked select (the engine runs thousands of stacked copies
        # through here), and lets a NaN through instead of hiding it as 0.
        return np.maximum(x, 0.0)

    def _map(self, values, flat_indices, shape):
        return np.maximum(values, 0.0)

    objective_changes = _Rectifier._objective_changes

    def backward(self, grad_out):
        return np.where(self.positive, grad_out, 0.0)


@register_layer("leaky_relu")
class LeakyReLU(_Rectifier):
    """y = x if x > 0 else slope * x.  x, y: (batch, *shape)."""

    def __init__(self, slope: float = 0.01):
        super().__init__()
        # Any finite slope is differentiable away from 0 (slope 1 is the identity, a negative
        # slope gives an absolute-value-like map), so only non-numbers are rejected.
        self.slope = _finite_number("slope", slope)

    def forward(self, x):
        return np.where(self._remember(x), x, self.slope * x)

    def _map(self, values, flat_indices, shape):
        return np.where(values > 0, values, self.slope * values)

    objective_changes = _Rectifier._objective_changes

    def backward(self, grad_out):
        return np.where(self.positive, grad_out, self.slope * grad_out)


@register_layer("prelu")
class PReLU(_Rectifier):
    """y = x if x > 0 else alpha[c] * x, with a learnable slope per channel (He et al. 2015).

    x, y: (batch, C, *spatial) with alpha: (C,) -- one slope per feature for (batch, features)
    input and one per channel for (batch, C, H, W) input. Every slope starts at ``init``.
    """

    def __init__(self, init: float = 0.25):
        super().__init__()
        self.init = _finite_number("init", init)

    def build(self, input_shape, rng):
        if len(input_shape) == 0:
            raise LayerError(
                "prelu needs a channel or feature axis to hold its slopes, got per-sample shape ().")
        self.params["alpha"] = np.full(input_shape[0], self.init)
        return tuple(input_shape)

    def _alpha(self, ndim: int) -> np.ndarray:
        # (C,) -> (C, 1, ..., 1) so it broadcasts over the spatial axes after the channel axis.
        return self.params["alpha"].reshape((-1,) + (1,) * (ndim - 2))

    def forward(self, x):
        return np.where(self._remember(x), x, self._alpha(x.ndim) * x)

    def _map(self, values, flat_indices, shape):
        per_channel = int(np.prod(shape[2:], dtype=np.int64))
        channel = (np.asarray(flat_indices) // per_channel) % shape[1]
        return np.where(values > 0, values, self.params["alpha"][channel] * values)

    objective_changes = _Rectifier._objective_changes

    def backward(self, grad_out):
        positive = self.positive
        # dy/dalpha = x on the negative side; sum over batch and spatial axes, keep channels.
        reduce_axes = (0,) + tuple(range(2, self.x.ndim))
        self.grads["alpha"] = np.where(positive, 0.0, grad_out * self.x).sum(axis=reduce_axes)
        return np.where(positive, grad_out, self._alpha(self.x.ndim) * grad_out)


@register_layer("elu")
class ELU(_Rectifier):
    """y = x if x > 0 else alpha * (exp(x) - 1)  (Clevert et al. 2015).  x, y: (batch, *shape)."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = _finite_number("alpha", alpha)
        if self.alpha <= 0:
            raise LayerError(f"alpha must be positive (the negative saturation value is -alpha), "
                             f"got {alpha!r}.")

    def forward(self, x):
        # np.where evaluates both branches; clipping at 0 keeps exp from overflowing for large x.
        return np.where(self._remember(x), x, self.alpha * np.expm1(np.minimum(x, 0.0)))

    def _map(self, values, flat_indices, shape):
        return np.where(values > 0, values, self.alpha * np.expm1(np.minimum(values, 0.0)))

    objective_changes = _Rectifier._objective_changes

    def backward(self, grad_out):
        return np.where(self.positive, grad_out, self.alpha * np.exp(np.minimum(self.x, 0.0)) * grad_out)


@register_layer("sigmoid")
class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)).  x, y: (batch, *shape)."""

    def forward(self, x):
        # 1 / (1 + e^-x) stays accurate to a few ulps everywhere: for x << 0, e^-x overflows to
        # inf and the result is the correct 0; only the warning about it is silenced. Four passes
        # in place, about twice as fast as a two-branch stable form.
        with np.errstate(over="ignore"):
            y = np.exp(-x)
        y += 1.0
        self.y = np.reciprocal(y, out=y)
        return self.y

    def objective_changes(self, x, grad_out, name, flat_indices, values):
        """The optional contract speed-up: one output element changes per copy."""
        def sigmoid(v, _):
            with np.errstate(over="ignore"):
                return 1.0 / (1.0 + np.exp(-v))
        return elementwise_changes(sigmoid, x, grad_out, flat_indices, values)

    def backward(self, grad_out):
        return grad_out * self.y * (1.0 - self.y)


@register_layer("tanh")
class Tanh(Layer):
    """y = tanh(x).  x, y: (batch, *shape)."""

    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def objective_changes(self, x, grad_out, name, flat_indices, values):
        """The optional contract speed-up: one output element changes per copy."""
        return elementwise_changes(lambda v, _: np.tanh(v), x, grad_out, flat_indices, values)

    def backward(self, grad_out):
        return grad_out * (1.0 - self.y * self.y)


@register_layer("softmax")
class Softmax(Layer):
    """Normalised exponentials over the class axis.

    x, y: (batch, features), softmax over features; or (batch, C, H, W), softmax over channels
    at every pixel (segmentation-style). Each slice along that axis sums to 1.
    """

    def build(self, input_shape, rng):
        # Axis 1 is the class axis for both supported layouts; other ranks are ambiguous
        # (a (batch, T, F) sequence would want the last axis), so they are refused.
        if len(input_shape) not in (1, 3):
            raise LayerError(
                f"softmax expects (features,) or (C, H, W) per sample, got {tuple(input_shape)}.",
                hint="flatten first to take softmax over all values")
        return tuple(input_shape)

    def forward(self, x):
        # Subtracting the max leaves softmax unchanged and keeps every exp <= 1 (no overflow).
        e = np.exp(x - x.max(axis=1, keepdims=True))
        self.y = e / e.sum(axis=1, keepdims=True)
        return self.y

    def backward(self, grad_out):
        # Jacobian diag(y) - y y^T applied without forming it: y * (g - <g, y>).
        return self.y * (grad_out - np.sum(grad_out * self.y, axis=1, keepdims=True))
