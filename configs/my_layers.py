"""An example plugin: the swish activation x * sigmoid(beta * x), written by hand."""

import numpy as np

import gradcheck


@gradcheck.register_layer("swish")
class Swish(gradcheck.Layer):
    """y = x * sigmoid(beta * x), elementwise; any input shape."""

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = float(beta)

    def forward(self, x):
        self.x = x
        self.s = 1.0 / (1.0 + np.exp(-self.beta * x))
        return x * self.s

    def backward(self, grad_out):
        # d/dx [x s(bx)] = s + b x s (1 - s)
        return grad_out * (self.s + self.beta * self.x * self.s * (1.0 - self.s))
