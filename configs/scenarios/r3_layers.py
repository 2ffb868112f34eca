"""Layers of report R3 (stackoverflow 35452790): a hand-written C++ convolution. Its filters start
uniform in [0, 1] (all positive) and its kernel gradient reads the input patch of the mirrored
kernel element -- an indexing bug -- so one step sends the filters to about -5e4 and the ReLU
after it goes black."""

import numpy as np

import gradcheck

Conv2D = gradcheck.layer_class("conv2d")


@gradcheck.register_layer("cpp_conv")
class CppConv(Conv2D):
    """conv2d with uniform(0, 1) filters and a mirrored index in the kernel gradient."""

    def build(self, input_shape, rng):
        out = super().build(input_shape, rng)
        self.params["W"] = rng.uniform(0.0, 1.0, self.params["W"].shape)
        return out

    def backward(self, grad_out):
        grad_in = super().backward(grad_out)
        # BUG: the loop wrote dW[f, c, i, j] from the patch of element (kh-1-i, kw-1-j).
        self.grads["W"] = self.grads["W"][:, :, ::-1, ::-1].copy()
        return grad_in


@gradcheck.register_layer("cpp_conv_fixed")
class CppConvFixed(Conv2D):
    """The same convolution, He-initialised, with the kernel gradient indexed correctly."""
