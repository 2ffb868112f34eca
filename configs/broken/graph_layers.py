"""Hand-written graph pieces with the classic bugs of a graph network (for the demos and tests).

- ``residual_block``: y = tanh(x W) + x, whose backward forgets the gradient of the identity
  (skip) path: it returns tanh'(x W) g W^T, without the + g.
- ``tied_decoder``: a dense layer meant to take its weights from an encoder (``share: {W:
  encoder.W.T}``), whose backward never fills in W's gradient: the tie's second use is dropped.
"""

import numpy as np

import gradcheck


@gradcheck.register_layer("residual_block")
class ResidualBlock(gradcheck.Layer):
    """y = tanh(x @ W) + x. x, y: (batch, features); W: (features, features)."""

    def build(self, input_shape, rng):
        (features,) = input_shape
        self.params["W"] = rng.normal(0.0, np.sqrt(1.0 / features), (features, features))
        return tuple(input_shape)

    def forward(self, x):
        self.x = x
        self.t = np.tanh(x @ self.params["W"])
        return self.t + x

    def backward(self, grad_out):
        local = grad_out * (1.0 - self.t ** 2)
        self.grads["W"] = self.x.T @ local
        return local @ self.params["W"].T  # BUG: + grad_out, the skip path, is missing


@gradcheck.register_layer("tied_decoder")
class TiedDecoder(gradcheck.Layer):
    """y = x @ W + b, where W is the encoder's W transposed (``share:``)."""

    def __init__(self, units: int):
        super().__init__()
        self.units = units

    def build(self, input_shape, rng):
        (features,) = input_shape
        self.params["W"] = np.zeros((features, self.units))
        self.params["b"] = np.zeros(self.units)
        return (self.units,)

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, grad_out):
        self.grads["W"] = np.zeros_like(self.params["W"])  # BUG: the tied use is dropped
        self.grads["b"] = grad_out.sum(axis=0)
        return grad_out @ self.params["W"].T
