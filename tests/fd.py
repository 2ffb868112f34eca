"""Independent central finite differences for one layer, used by the layer tests.

Deliberately naive (one element at a time, whole forward each time) so that it shares no code
with the engine it helps to test.
"""

from __future__ import annotations

import numpy as np

from gradcheck.usercode import rewind


def _forward(layer, x):
    """``layer.forward`` on ``x`` (one array or a list of inputs), its rng rewound as the engine
    rewinds it before every call (a layer random on purpose draws the same mask each time)."""
    rewind(layer)
    return layer.forward(*as_list(x))


def _integer(x) -> bool:
    return np.asarray(x).dtype.kind in "iu"


def as_list(arrays) -> list[np.ndarray]:
    """One array, or the list/tuple of a layer with several inputs or outputs, as a list."""
    return list(arrays) if isinstance(arrays, (list, tuple)) else [arrays]


def layer_objective(layer, x, upstream) -> float:
    """The scalar sum(upstream * layer(x)): its gradient is what backward(upstream) returns.

    ``x`` is an array, or a list with one per input for a layer with several; ``upstream`` an
    array, or a list with one per output (S then sums over the outputs).
    """
    outputs = as_list(_forward(layer, x))
    return float(sum(np.sum(g * y) for g, y in zip(as_list(upstream), outputs, strict=True)))


def numeric_layer_grads(layer, x, upstream, eps: float = 1e-6):
    """Return (dS/dx, {param: dS/dparam}) for S = sum(upstream * layer(x)) by central differences.

    dS/dx is a list (one per input) when ``x`` is a list. An integer input (token ids) is not
    perturbed: its dS/dx is None.
    """
    inputs = [a if _integer(a) else np.array(a, dtype=np.float64, copy=True) for a in as_list(x)]
    several = isinstance(x, (list, tuple))

    def numeric(array: np.ndarray) -> np.ndarray:
        grad = np.zeros_like(array)
        flat, flat_grad = array.reshape(-1), grad.reshape(-1)
        for i in range(flat.size):
            saved = flat[i]
            try:
                flat[i] = saved + eps
                plus = layer_objective(layer, inputs, upstream)
                flat[i] = saved - eps
                minus = layer_objective(layer, inputs, upstream)
            finally:
                flat[i] = saved
            flat_grad[i] = (plus - minus) / (2 * eps)
        return grad

    grad_x = [None if _integer(a) else numeric(a) for a in inputs]
    grad_params = {name: numeric(p) for name, p in layer.params.items()}
    return (grad_x if several else grad_x[0]), grad_params


def analytic_layer_grads(layer, x, upstream):
    """Return (dS/dx, {param: dS/dparam}) from the layer's own backward (dS/dx as it returns it:
    a tuple for a layer with several inputs)."""
    _forward(layer, x)
    grad_x = layer.backward(*as_list(upstream))
    return grad_x, {name: np.array(g, copy=True) for name, g in layer.grads.items()}


def assert_layer_gradients(layer, x, rng: np.random.Generator,
                           rtol: float = 1e-5, atol: float = 1e-7, eps: float = 1e-6) -> None:
    """Assert the layer's backward agrees with central differences at ``x`` (an array, or a list
    with one per input), for a random upstream gradient on every output."""
    outputs = _forward(layer, x)
    upstream = [rng.normal(size=y.shape) for y in as_list(outputs)]
    upstream = upstream if isinstance(outputs, tuple) else upstream[0]
    analytic_x, analytic_p = analytic_layer_grads(layer, x, upstream)
    numeric_x, numeric_p = numeric_layer_grads(layer, x, upstream, eps)
    if isinstance(x, (list, tuple)):
        assert isinstance(analytic_x, tuple) and len(analytic_x) == len(x), \
            "backward must return a tuple with one gradient per input"
    pairs = zip(as_list(analytic_x), as_list(numeric_x), strict=True)
    for i, (analytic, numeric) in enumerate(pairs):
        if numeric is None:
            assert analytic is None, "an integer input has no gradient: backward returns None"
            continue
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol,
                                   err_msg=f"dL/dx (input {i + 1})")
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
