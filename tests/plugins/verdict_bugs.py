"""Bugs that test the verdict rules (tests/test_no_false_alarm.py, tests/test_sensitivity.py,
bench/detection.py): bugs of a chosen relative size ``rel``, for how small an error gradcheck
still catches; weight decay inside backward with the wrong sign; a forward that ignores its
input. Each differs from a correct layer only in the lines marked BUG."""

import numpy as np

import gradcheck


class _DenseTanh(gradcheck.Layer):
    """y = tanh(x @ W + b): x (N, fan_in) -> y (N, units); W (fan_in, units), b (units,)."""

    def __init__(self, units: int = 6, rel: float = 0.0):
        super().__init__()
        self.units, self.rel = units, rel

    def build(self, input_shape, rng):
        (fan_in,) = input_shape
        self.params["W"] = rng.normal(0.0, 1.0 / np.sqrt(fan_in), (fan_in, self.units))
        self.params["b"] = rng.normal(0.0, 0.1, self.units)
        return (self.units,)

    def forward(self, x):
        self.x = x
        self.y = np.tanh(x @ self.params["W"] + self.params["b"])
        return self.y

    def _correct(self, grad_out):
        local = grad_out * (1.0 - self.y ** 2)
        self.grads["W"] = self.x.T @ local
        self.grads["b"] = local.sum(axis=0)
        return local @ self.params["W"].T


@gradcheck.register_layer("graded_factor")
class GradedFactor(_DenseTanh):
    """Every gradient (W, b and the input's) off by the factor 1 + rel: a constant slightly off,
    an approximate derivative."""

    def backward(self, grad_out):
        dx = self._correct(grad_out)
        self.grads["W"] = self.grads["W"] * (1.0 + self.rel)  # BUG
        self.grads["b"] = self.grads["b"] * (1.0 + self.rel)  # BUG
        return dx * (1.0 + self.rel)  # BUG


@gradcheck.register_layer("graded_few")
class GradedFew(_DenseTanh):
    """Three elements of dL/dW off by rel * |their gradient|, the rest right: an index slip
    that touches a corner of the tensor only. Which three is drawn at build, from the seed."""

    def build(self, input_shape, rng):
        shape = super().build(input_shape, rng)
        self.wrong = rng.choice(self.params["W"].size, size=3, replace=False)
        return shape

    def backward(self, grad_out):
        dx = self._correct(grad_out)
        flat = self.grads["W"].reshape(-1)
        flat[self.wrong] += self.rel * np.abs(flat[self.wrong])  # BUG
        return dx


@gradcheck.register_layer("graded_decay_wrong_sign")
class GradedDecayWrongSign(gradcheck.Layer):
    """y = x @ W + b whose backward subtracts the L2 term ``decay`` * W from dL/dW: weight decay
    inside backward (the optimiser adds it), and with the wrong sign. The weights are drawn with
    |W| in [0.5, 1.5] / sqrt(fan_in), so the error decay * |W| is of one size in every element."""

    def __init__(self, units: int = 32, decay: float = 1e-3):
        super().__init__()
        self.units, self.decay = units, decay

    def build(self, input_shape, rng):
        (fan_in,) = input_shape
        size = rng.uniform(0.5, 1.5, (fan_in, self.units)) / np.sqrt(fan_in)
        self.params["W"] = size * rng.choice([-1.0, 1.0], size.shape)
        self.params["b"] = rng.normal(0.0, 0.1, self.units)
        return (self.units,)

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, grad_out):
        self.grads["W"] = self.x.T @ grad_out - self.decay * self.params["W"]  # BUG
        self.grads["b"] = grad_out.sum(axis=0)
        return grad_out @ self.params["W"].T


@gradcheck.register_layer("stale_tanh")
class StaleTanh(gradcheck.Layer):
    """tanh that keeps its first output and returns it for every later input (a memoised
    forward): the objective does not move at all when the input does, while backward returns
    the derivative of tanh."""

    def __init__(self):
        super().__init__()
        self.kept = None

    def forward(self, x):
        if self.kept is None or self.kept.shape != x.shape:
            self.kept = np.tanh(x)
        self.y = self.kept  # BUG: a stale output for any input after the first
        return self.y.copy()

    def backward(self, grad_out):
        return grad_out * (1.0 - self.y ** 2)
