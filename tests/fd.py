"""Independent central finite differences for one layer, used by the layer tests.

Deliberately naive (one element at a time, whole forward each time) so that it shares no code
with the engine it helps to test.
"""

from __future__ import annotations

import numpy as np


def layer_objective(layer, x: np.ndarray, upstream: np.ndarray) -> float:
    """The scalar sum(upstream * layer(x)): its gradient is what backward(upstream) returns."""
    return float(np.sum(upstream * layer.forward(x)))


def numeric_layer_grads(layer, x: np.ndarray, upstream: np.ndarray, eps: float = 1e-6):
    """Return (dS/dx, {param: dS/dparam}) for S = sum(upstream * layer(x)) by central differences.

    An integer ``x`` (token ids) is not perturbed: its dS/dx is None."""

    def numeric(array: np.ndarray) -> np.ndarray:
        grad = np.zeros_like(array)
        flat, flat_grad = array.reshape(-1), grad.reshape(-1)
        for i in range(flat.size):
            saved = flat[i]
            try:
                flat[i] = saved + eps
                plus = layer_objective(layer, x, upstream)
                flat[i] = saved - eps
                minus = layer_objective(layer, x, upstream)
            finally:
                flat[i] = saved
            flat_grad[i] = (plus - minus) / (2 * eps)
        return grad

    if np.asarray(x).dtype.kind in "iu":
        grad_x = None
    else:
        x = np.array(x, dtype=np.float64, copy=True)
        grad_x = numeric(x)
    grad_params = {name: numeric(p) for name, p in layer.params.items()}
    return grad_x, grad_params


def analytic_layer_grads(layer, x: np.ndarray, upstream: np.ndarray):
    """Return (dS/dx, {param: dS/dparam}) from the layer's own backward."""
    layer.forward(x)
    grad_x = layer.backward(upstream)
    return grad_x, {name: np.array(g, copy=True) for name, g in layer.grads.items()}


def assert_layer_gradients(layer, x: np.ndarray, rng: np.random.Generator,
                           rtol: float = 1e-5, atol: float = 1e-7, eps: float = 1e-6) -> None:
    """Assert the layer's backward agrees with central differences at ``x``."""
    upstream = rng.normal(size=layer.forward(x).shape)
    analytic_x, analytic_p = analytic_layer_grads(layer, x, upstream)
    numeric_x, numeric_p = numeric_layer_grads(layer, x, upstream, eps)
    if numeric_x is None:
        assert analytic_x is None, "an integer input has no gradient: backward must return None"
    else:
        np.testing.assert_allclose(analytic_x, numeric_x, rtol=rtol, atol=atol, err_msg="dL/dx")
    assert set(analytic_p) == set(numeric_p), "grads must have exactly the params' names"
    for name in numeric_p:
        np.testing.assert_allclose(analytic_p[name], numeric_p[name], rtol=rtol, atol=atol,
                                   err_msg=f"dL/d{name}")


def numeric_loss_grad(loss, pred: np.ndarray, target: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """dL/dpred by central differences, one element at a time (shares no code with the losses)."""
    pred = np.array(pred, dtype=np.float64, copy=True)
    grad = np.zeros_like(pred)
    flat, flat_grad = pred.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        plus = loss.forward(pred, target)
        flat[i] = saved - eps
        minus = loss.forward(pred, target)
        flat[i] = saved
        flat_grad[i] = (plus - minus) / (2 * eps)
    return grad
