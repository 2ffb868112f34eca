"""Nearest-neighbour upsampling of images, NCHW (the decoder half of a U-Net)."""

from __future__ import annotations

import numpy as np

from gradcheck.contract import Layer
from gradcheck.errors import LayerError
from gradcheck.layers.conv import IMAGE_AXES
from gradcheck.layers.inputs import describe_inputs, is_int
from gradcheck.registry import register_layer


@register_layer("upsample2d")
class Upsample2D(Layer):
    """y[n, c, i, j] = x[n, c, i // factor, j // factor]: nearest-neighbour, factor x factor blocks.

    x: (batch, C, H, W) -> y: (batch, C, H * factor, W * factor). backward sums dL/dy over each
    block, so dL/dx[n, c, i, j] is the sum of the factor**2 gradients that pixel fed.
    """

    axis_names = {"input": IMAGE_AXES}

    def __init__(self, factor: int = 2):
        super().__init__()
        if not is_int(factor) or factor < 1:
            raise LayerError(
                f"upsample2d option 'factor' must be an integer >= 1, got {factor!r}.",
                hint="factor: 2 doubles the height and width; 1 leaves them as they are")
        self.factor = int(factor)

    def build(self, input_shape, rng):
        if len(input_shape) != 3:
            raise LayerError(
                f"upsample2d: {describe_inputs(self, [tuple(input_shape)])} is not an image: "
                f"upsample2d needs (channels, height, width) per sample.",
                hint="images are NCHW; reshape flat data first, e.g. a reshape layer with "
                     "shape: [channels, height, width]")
        channels, height, width = input_shape
        return (channels, height * self.factor, width * self.factor)

    def forward(self, x):
        batch, channels, height, width = x.shape
        f = self.factor
        blocks = np.broadcast_to(x[:, :, :, None, :, None], (batch, channels, height, f, width, f))
        return blocks.reshape(batch, channels, height * f, width * f)

    def backward(self, grad_out):
        batch, channels, out_h, out_w = grad_out.shape
        f = self.factor
        return grad_out.reshape(batch, channels, out_h // f, f, out_w // f, f).sum(axis=(3, 5))
