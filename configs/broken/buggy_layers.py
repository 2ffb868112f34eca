"""A sigmoid whose backward applies the derivative to the input instead of the output:
the bug behind a MATLAB CNN whose predictions were identical for every sample."""

import numpy as np

import gradcheck


@gradcheck.register_layer("my_sigmoid")
class MySigmoid(gradcheck.Layer):
    """y = 1 / (1 + exp(-x)), with a wrong backward."""

    def forward(self, x):
        self.x = x
        self.y = 1.0 / (1.0 + np.exp(-x))
        return self.y

    def backward(self, grad_out):
        return grad_out * self.x * (1.0 - self.x)  # BUG: should be self.y * (1 - self.y)
