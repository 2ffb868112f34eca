"""Layers that only rearrange values."""

from __future__ import annotations

import math

from gradcheck.contract import Layer
from gradcheck.registry import register_layer


@register_layer("flatten")
class Flatten(Layer):
    """Row-major flattening of each sample.  x: (batch, *shape) -> y: (batch, prod(shape))."""

    def build(self, input_shape, rng):
        return (math.prod(input_shape),)

    def forward(self, x):
        # Remember the full input shape: the batch size may differ from call to call. The explicit
        # width (not -1) keeps an empty batch reshapeable.
        self.input_shape = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def backward(self, grad_out):
        return grad_out.reshape(self.input_shape)
