"""Layers of report R1 (stats.stackexchange 169615): a MATLAB CNN regression whose predictions
were identical for every sample. Two hand-written pieces: the init and the sigmoid's backward."""

import numpy as np

import gradcheck

Conv2D = gradcheck.layer_class("conv2d")


@gradcheck.register_layer("matlab_conv")
class MatlabConv(Conv2D):
    """conv2d initialised as in the report: randn(3, 3) * 1/200 - 1/400 (far too small)."""

    def build(self, input_shape, rng):
        out = super().build(input_shape, rng)
        self.params["W"] = rng.normal(size=self.params["W"].shape) / 200 - 1 / 400
        return out


@gradcheck.register_layer("matlab_sigmoid")
class MatlabSigmoid(gradcheck.Layer):
    """y = 1 / (1 + exp(-x)) whose backward applies the derivative to the wrong tensor."""

    def forward(self, x):
        self.x = x
        self.y = 1.0 / (1.0 + np.exp(-x))
        return self.y

    def backward(self, grad_out):
        return grad_out * self.x * (1.0 - self.x)  # BUG: the report's sigm'(x) used x, not y


@gradcheck.register_layer("matlab_sigmoid_fixed")
class MatlabSigmoidFixed(MatlabSigmoid):
    """The same sigmoid with the derivative taken of its output: y * (1 - y)."""

    def backward(self, grad_out):
        return grad_out * self.y * (1.0 - self.y)
