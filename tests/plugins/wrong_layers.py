"""Deliberately wrong layers: each must be caught (exit 1) and blamed by name in root_causes."""

import numpy as np

import gradcheck


class _DenseBase(gradcheck.Layer):
    def __init__(self, units: int):
        super().__init__()
        self.units = units

    def build(self, input_shape, rng):
        (fan_in,) = input_shape
        self.params["W"] = rng.normal(0.0, 1.0 / np.sqrt(fan_in), (fan_in, self.units))
        self.params["b"] = rng.normal(0.0, 0.1, self.units)
        return (self.units,)

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]


@gradcheck.register_layer("dense_transposed_grad")
class DenseTransposedGrad(_DenseBase):
    """Weight gradient computed as (grad_out.T @ x).T with rows and columns swapped: the grad of a
    square W transposed."""

    def backward(self, grad_out):
        self.grads["W"] = (self.x.T @ grad_out).T
        self.grads["b"] = grad_out.sum(axis=0)
        return grad_out @ self.params["W"].T


@gradcheck.register_layer("dense_no_batch_sum")
class DenseNoBatchSum(_DenseBase):
    """Bias gradient taken from the first sample only instead of summed over the batch."""

    def backward(self, grad_out):
        self.grads["W"] = self.x.T @ grad_out
        self.grads["b"] = grad_out[0].copy()
        return grad_out @ self.params["W"].T


@gradcheck.register_layer("dense_wrong_dx")
class DenseWrongDx(_DenseBase):
    """dL/dx forgets the weights: returns grad_out summed instead of grad_out @ W.T."""

    def backward(self, grad_out):
        self.grads["W"] = self.x.T @ grad_out
        self.grads["b"] = grad_out.sum(axis=0)
        return np.repeat(grad_out.sum(axis=1, keepdims=True), self.x.shape[1], axis=1)


@gradcheck.register_layer("sigmoid_wrong_derivative")
class SigmoidWrongDerivative(gradcheck.Layer):
    """Sigmoid whose derivative is taken on the input x instead of the output y."""

    def forward(self, x):
        self.x = x
        self.y = 1.0 / (1.0 + np.exp(-x))
        return self.y

    def backward(self, grad_out):
        return grad_out * self.x * (1.0 - self.x)


@gradcheck.register_layer("tanh_half_grad")
class TanhHalfGrad(gradcheck.Layer):
    """tanh with its gradient scaled by 0.5 (a stray 1/2)."""

    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, grad_out):
        return 0.5 * grad_out * (1.0 - self.y ** 2)


@gradcheck.register_loss("mse_wrong_scale")
class MseWrongScale(gradcheck.Loss):
    """0.5 * mean-over-batch squared error whose backward forgets to divide by the batch size."""

    def forward(self, pred, target):
        self.diff = pred - target
        return 0.5 * float(np.sum(self.diff ** 2)) / pred.shape[0]

    def backward(self):
        return self.diff.copy()
