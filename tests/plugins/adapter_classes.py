"""Layer classes for the object-layer tests: deliberately wrong ones and awkward correct ones.

x: (N, D), W: (D, M), b: (M,) throughout.
"""

import numpy as np


class DictDense:
    """Parameters and gradients in dicts; backward overwrites the gradients."""

    def __init__(self, n_in, n_out):
        self.params = {"W": np.random.randn(n_in, n_out), "b": np.random.randn(n_out)}
        self.grads = {}
        self.x = None

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        self.grads["W"] = self.x.T @ dout
        self.grads["b"] = self.db(dout)
        return dout @ self.params["W"].T

    def db(self, dout):
        return dout.sum(axis=0)


class DictDenseReturning(DictDense):
    """Parameters in a dict, gradients returned: backward gives (dx, dW, db)."""

    def backward(self, dout):
        return dout @ self.params["W"].T, self.x.T @ dout, dout.sum(axis=0)


class DictDenseWrongDb(DictDense):
    """Wrong only for b: the bias gradient is averaged over the batch."""

    def db(self, dout):
        return dout.mean(axis=0)


class Accumulating(DictDense):
    """Adds into its gradients (+=) and has no method to clear them."""

    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out)
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}

    def backward(self, dout):
        self.grads["W"] += self.x.T @ dout
        self.grads["b"] += dout.sum(axis=0)
        return dout @ self.params["W"].T


class TupleDenseWrongDw:
    """backward returns (dx, dW, db), with dW transposed in its loop: dW[i, j] from x[:, j]."""

    def __init__(self, n):
        self.W, self.b = np.random.randn(n, n), np.random.randn(n)

    def forward(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout):
        return dout @ self.W.T, (self.x.T @ dout).T, dout.sum(axis=0)


class ModeScale:
    """y = 2x in mode "fit", y = x in mode "infer" (a mode attribute with its own values)."""

    def __init__(self):
        self.phase = "fit"

    def forward(self, x):
        self.factor = 2.0 if self.phase == "fit" else 1.0
        return x * self.factor

    def backward(self, dout):
        return dout * self.factor


def not_a_layer():
    return 42


class ReusedOutput:
    """y = 2x written into one output array reused by every forward (a preallocated buffer),
    with a setting kept among the parameters."""

    def __init__(self):
        self.params = {"scale": np.array([2.0]), "momentum": 0.9}
        self.grads = {"scale": np.zeros(1)}
        self.out = None

    def forward(self, x):
        if self.out is None or self.out.shape != x.shape:
            self.out = np.empty_like(x)
        np.multiply(x, self.params["scale"], out=self.out)
        self.x = x
        return self.out

    def backward(self, dout):
        self.grads["scale"] = np.array([np.sum(dout * self.x)])
        return dout * self.params["scale"]
