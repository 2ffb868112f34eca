"""Layers of report R5 (stats.stackexchange 291708): a CNN written from scratch whose kernels "end
up with all NaNs". Its kernel update was sum(sum(eta * delta .* x_out)): the layer's *output*
times the incoming gradient, summed into one number added to every kernel element -- not the
correlation of the *input* with the gradient."""

import numpy as np

import gradcheck

Conv2D = gradcheck.layer_class("conv2d")


@gradcheck.register_layer("scratch_conv")
class ScratchConv(Conv2D):
    """conv2d whose kernel gradient is the report's formula."""

    def forward(self, x):
        self.y = super().forward(x)
        return self.y

    def backward(self, grad_out):
        grad_in = super().backward(grad_out)
        # BUG: sum(delta .* x_out) uses the output, not the input patches, and is one scalar.
        self.grads["W"] = np.full(self.params["W"].shape, np.sum(grad_out * self.y))
        return grad_in


@gradcheck.register_layer("scratch_conv_fixed")
class ScratchConvFixed(Conv2D):
    """The same convolution with the kernel gradient as the correlation of input and delta."""
