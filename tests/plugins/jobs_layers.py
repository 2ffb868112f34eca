"""Layers for the --jobs tests, each y = x @ W with a right backward, whose forward fails only
where a worker process meets it: one raises once a late element is perturbed, one exits any
process but the one that built it."""

import os

import numpy as np

import gradcheck


class _Dense(gradcheck.Layer):
    """y = x @ W, W (inputs, units); ``forward`` is ``_product`` behind each layer's trap."""

    def __init__(self, units: int = 200):
        super().__init__()
        self.units = units

    def build(self, input_shape, rng):
        self.params["W"] = rng.normal(size=(input_shape[0], self.units))
        return (self.units,)

    def _product(self, x):
        self.x = x
        return x @ self.params["W"]

    def backward(self, grad_out):
        self.grads["W"] = self.x.T @ grad_out
        return grad_out @ self.params["W"].T


@gradcheck.register_layer("raises_late")
class RaisesLate(_Dense):
    """Forward raises once any W element from flat index ``after`` on is perturbed (so only a
    later pass of a full check meets it)."""

    def __init__(self, units: int = 200, after: int = 300):
        super().__init__(units)
        self.after = after

    def build(self, input_shape, rng):
        shape = super().build(input_shape, rng)
        self.initial = self.params["W"].copy()
        return shape

    def forward(self, x):
        late = self.params["W"].reshape(-1)[self.after:]
        if np.any(late != self.initial.reshape(-1)[self.after:]):
            raise ValueError(f"W element past {self.after} perturbed")
        return self._product(x)


@gradcheck.register_layer("dies_in_worker")
class DiesInWorker(_Dense):
    """Forward runs only in the process that built the layer; any other process (a --jobs
    worker) running it exits at once with status 7, as a crashing extension would."""

    def build(self, input_shape, rng):
        self.home = os.getpid()
        return super().build(input_shape, rng)

    def forward(self, x):
        if os.getpid() != self.home:
            os._exit(7)
        return self._product(x)
