"""Layers whose backward returns the gradients, `dx, dW, db = layer.backward(dout)`.

Written for gradcheck's examples, with no gradcheck import: parameters are plain attributes drawn
from numpy's global generator in the constructor, and Dropout draws a fresh mask from it on
every training-mode forward and takes the mode as a keyword argument, `forward(x, train_flg)`,
as "Deep Learning from Scratch" does.
"""

import numpy as np


class Linear:
    """y = x @ W + b.  x: (N, n_in), W: (n_in, n_out), b: (n_out,), y: (N, n_out)."""

    def __init__(self, n_in, n_out, weight_scale=0.1):
        self.W = weight_scale * np.random.randn(n_in, n_out)
        self.b = weight_scale * np.random.randn(n_out)
        self.x = None

    def forward(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout):
        """dout: (N, n_out) -> (dx: (N, n_in), dW: (n_in, n_out), db: (n_out,))."""
        return dout @ self.W.T, self.x.T @ dout, dout.sum(axis=0)


class Dropout:
    """Training: y = x * mask, each unit kept with probability 1 - ratio; eval: y = x * (1 -
    ratio), so the expected output is the same. x, y: any shape."""

    def __init__(self, dropout_ratio=0.5):
        self.dropout_ratio = dropout_ratio
        self.mask = None

    def forward(self, x, train_flg=True):
        if train_flg:
            self.mask = np.random.rand(*x.shape) > self.dropout_ratio
            return x * self.mask
        self.mask = None
        return x * (1.0 - self.dropout_ratio)

    def backward(self, dout):
        return dout * self.mask
