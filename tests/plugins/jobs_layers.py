"""A layer for the --jobs tests: its forward raises once a late element is perturbed, an error
met in a worker process."""

import os

import numpy as np

import gradcheck


@gradcheck.register_layer("raises_late")
class RaisesLate(gradcheck.Layer):
    """y = x @ W; forward raises once any W element from flat index ``after`` on is perturbed
    (so only a later pass of a full check meets it)."""

    def __init__(self, units: int = 200, after: int = 300):
        super().__init__()
        self.units = units
        self.after = after

    def build(self, input_shape, rng):
        self.params["W"] = rng.normal(size=(input_shape[0], self.units))
        self.initial = self.params["W"].copy()
        return (self.units,)

    def forward(self, x):
        late = self.params["W"].reshape(-1)[self.after:]
        if np.any(late != self.initial.reshape(-1)[self.after:]):
            raise ValueError(f"W element past {self.after} perturbed")
        self.x = x
        return x @ self.params["W"]

    def backward(self, grad_out):
        self.grads["W"] = self.x.T @ grad_out
        return grad_out @ self.params["W"].T


@gradcheck.register_layer("dies_in_worker")
class DiesInWorker(gradcheck.Layer):
    """y = x @ W, computed right in the process that built it; any other process (a --jobs
    worker) running its forward exits at once with status 7, as a crashing extension would."""

    def __init__(self, units: int = 200):
        super().__init__()
        self.units = units

    def build(self, input_shape, rng):
        self.params["W"] = rng.normal(size=(input_shape[0], self.units))
        self.home = os.getpid()
        return (self.units,)

    def forward(self, x):
        if os.getpid() != self.home:
            os._exit(7)
        self.x = x
        return x @ self.params["W"]

    def backward(self, grad_out):
        self.grads["W"] = self.x.T @ grad_out
        return grad_out @ self.params["W"].T
