"""Layers that keep parameters and gradients in parallel lists, in the style of "Deep Learning
from Scratch 2": `params = [W, b]`, `grads = [dW, db]`, paired by position.

Written for gradcheck's examples, with no gradcheck import. Backward writes the gradients into
the arrays of `grads` in place (`self.grads[0][...] = dW`), so an optimizer holding them sees
the new values, and Dropout switches mode through its attribute `train_flg`.
"""

import numpy as np


class Affine:
    """out = x @ W + b.  x: (N, D), W: (D, H), b: (H,), out: (N, H)."""

    def __init__(self, W, b):
        self.params = [np.array(W, dtype=float), np.array(b, dtype=float)]
        self.grads = [np.zeros_like(self.params[0]), np.zeros_like(self.params[1])]
        self.x = None

    def forward(self, x):
        W, b = self.params
        self.x = x
        return x @ W + b

    def backward(self, dout):
        W, _ = self.params
        self.grads[0][...] = self.x.T @ dout
        self.grads[1][...] = dout.sum(axis=0)
        return dout @ W.T


def make_affine(n_in, n_out):
    """An Affine with weights N(0, 1/n_in) from numpy's global generator."""
    return Affine(np.random.randn(n_in, n_out) / np.sqrt(n_in), np.random.randn(n_out) * 0.1)


class Sigmoid:
    """out = 1 / (1 + exp(-x)), elementwise."""

    def __init__(self):
        self.params, self.grads = [], []
        self.out = None

    def forward(self, x):
        self.out = 1 / (1 + np.exp(-x))
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


class Dropout:
    """Training (train_flg true): x * mask / (1 - ratio) with a fresh mask; eval: x."""

    def __init__(self, dropout_ratio=0.5):
        self.params, self.grads = [], []
        self.dropout_ratio = dropout_ratio
        self.train_flg = True
        self.mask = None

    def forward(self, x):
        if self.train_flg:
            scale = 1 / (1.0 - self.dropout_ratio)
            self.mask = (np.random.rand(*x.shape) > self.dropout_ratio).astype(float) * scale
            return x * self.mask
        return x

    def backward(self, dout):
        return dout * self.mask
