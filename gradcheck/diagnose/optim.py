"""The optimizers of the ``train:`` block, on numpy arrays updated in place.

SGD follows PyTorch: d = g + weight_decay * w; v = momentum * v + d; w -= lr * v.
Adam adds weight_decay * w to the gradient too (L2 regularisation, not AdamW) and uses
beta1 = 0.9, beta2 = 0.999, eps = 1e-8 with bias correction.
"""

from __future__ import annotations

import numpy as np

from gradcheck.config import TrainSpec

BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


class Optimizer:
    """Apply ``spec``'s update rule to ``params`` (a list of arrays, updated in place)."""

    def __init__(self, spec: TrainSpec, params: list[np.ndarray]):
        self.spec = spec
        self.params = params
        self.state = [np.zeros_like(p) for p in params]
        self.second = [np.zeros_like(p) for p in params] if spec.optimizer == "adam" else None
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        """One update with ``grads`` (dL_data/dparam, same order as ``params``)."""
        spec = self.spec
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            d = g + spec.weight_decay * p if spec.weight_decay else g
            if spec.optimizer == "sgd":
                self.state[i] = spec.momentum * self.state[i] + d
                p -= (spec.lr * self.state[i]).astype(p.dtype, copy=False)
            else:
                self.state[i] = BETA1 * self.state[i] + (1 - BETA1) * d
                self.second[i] = BETA2 * self.second[i] + (1 - BETA2) * d * d
                m_hat = self.state[i] / (1 - BETA1 ** self.t)
                v_hat = self.second[i] / (1 - BETA2 ** self.t)
                p -= (spec.lr * m_hat / (np.sqrt(v_hat) + ADAM_EPS)).astype(p.dtype, copy=False)


def first_update(spec: TrainSpec, param: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """The update the first step of ``spec`` makes to ``param`` (momentum buffers start at zero).

    SGD: lr * (g + decay * w). Adam's first, bias-corrected step is lr * d / |d| per element.
    With momentum mu, aligned gradients later grow SGD's step towards lr / (1 - mu) times this.
    """
    d = grad + spec.weight_decay * param
    if spec.optimizer == "sgd":
        return spec.lr * d
    return spec.lr * d / (np.abs(d) + ADAM_EPS)
