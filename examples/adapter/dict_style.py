"""Layers that keep parameters and gradients in dicts, in the style of numpy-ml.

Written for gradcheck's examples, with no gradcheck import. Like numpy-ml: parameters are
created lazily on the first forward (from numpy's global generator), every forward appends its
input to `self.X`, backward accumulates (`+=`) into `gradients` over every stored input, and
`flush_gradients` clears both. BatchNorm1D keeps its running statistics in `parameters` with no
entry in `gradients`, and `freeze`/`unfreeze` switch it between eval and train mode.
"""

import numpy as np


class LayerBase:
    """Dict storage shared by the layers: parameters, gradients, stored inputs."""

    def __init__(self):
        self.X = []
        self.parameters = {}
        self.gradients = {}
        self.trainable = True

    def flush_gradients(self):
        """Forget stored inputs and zero the gradients (numpy-ml calls this after an update)."""
        self.X = []
        self.gradients = {name: np.zeros_like(grad) for name, grad in self.gradients.items()}

    def freeze(self):
        self.trainable = False

    def unfreeze(self):
        self.trainable = True


class FullyConnected(LayerBase):
    """Y = X @ W + b.  X: (N, n_in), W: (n_in, n_out), b: (1, n_out), Y: (N, n_out)."""

    def __init__(self, n_out):
        super().__init__()
        self.n_out = n_out

    def _init_params(self, n_in):
        self.parameters = {"W": np.random.randn(n_in, self.n_out) * np.sqrt(2.0 / n_in),
                           "b": np.zeros((1, self.n_out))}
        self.gradients = {name: np.zeros_like(p) for name, p in self.parameters.items()}

    def forward(self, X, retain_derived=True):
        if not self.parameters:
            self._init_params(X.shape[1])
        if retain_derived:
            self.X.append(X)
        return X @ self.parameters["W"] + self.parameters["b"]

    def backward(self, dLdY, retain_grads=True):
        """dLdY: (N, n_out) -> dLdX: (N, n_in); dL/dW and dL/db are added to `gradients`."""
        dX = []
        for X in self.X:
            dX.append(dLdY @ self.parameters["W"].T)
            if retain_grads:
                self.gradients["W"] += X.T @ dLdY
                self.gradients["b"] += dLdY.sum(axis=0, keepdims=True)
        return dX[0] if len(self.X) == 1 else dX


class BatchNorm1D(LayerBase):
    """Y = scaler * (X - mean) / sqrt(var + epsilon) + intercept over the batch axis.

    X, Y: (N, n_in); scaler, intercept, running_mean, running_var: (n_in,). Trainable (train
    mode): batch statistics, and the running ones move towards them; frozen: running ones.
    """

    def __init__(self, momentum=0.9, epsilon=1e-5):
        super().__init__()
        self.momentum, self.epsilon = momentum, epsilon

    def _init_params(self, n_in):
        self.parameters = {"scaler": np.random.rand(n_in) + 0.5,
                           "intercept": np.zeros(n_in),
                           "running_mean": np.zeros(n_in),
                           "running_var": np.ones(n_in)}
        self.gradients = {"scaler": np.zeros(n_in), "intercept": np.zeros(n_in)}

    def forward(self, X, retain_derived=True):
        if not self.parameters:
            self._init_params(X.shape[1])
        p = self.parameters
        if self.trainable:
            mean, var = X.mean(axis=0), X.var(axis=0)
            p["running_mean"] = self.momentum * p["running_mean"] + (1 - self.momentum) * mean
            p["running_var"] = self.momentum * p["running_var"] + (1 - self.momentum) * var
        else:
            mean, var = p["running_mean"], p["running_var"]
        if retain_derived:
            self.X.append(X)
        return p["scaler"] * (X - mean) / np.sqrt(var + self.epsilon) + p["intercept"]

    def backward(self, dLdY, retain_grads=True):
        """Train mode.  dLdY: (N, n_in) -> dLdX: (N, n_in)."""
        dX = []
        for X in self.X:
            n = X.shape[0]
            inv_std = 1.0 / np.sqrt(X.var(axis=0) + self.epsilon)
            X_hat = (X - X.mean(axis=0)) * inv_std
            d_intercept = dLdY.sum(axis=0)
            d_scaler = (dLdY * X_hat).sum(axis=0)
            dX.append(self.parameters["scaler"] * inv_std / n
                      * (n * dLdY - d_intercept - X_hat * d_scaler))
            if retain_grads:
                self.gradients["scaler"] += d_scaler
                self.gradients["intercept"] += d_intercept
        return dX[0] if len(self.X) == 1 else dX
