"""dense on a sequence, per sample (T, F) -> (T, units): the same W and b at every time step."""

from __future__ import annotations

import numpy as np
import pytest

from fd import assert_layer_gradients
from gradcheck.errors import LayerError
from gradcheck.registry import layer_class


def reference_dense(x, w, b):
    """y[n, t, j] = sum_i x[n, t, i] w[i, j] + b[j], one output element at a time."""
    batch, steps, fan_in = x.shape
    y = np.empty((batch, steps, w.shape[1]))
    for n in range(batch):
        for t in range(steps):
            for j in range(w.shape[1]):
                y[n, t, j] = sum(x[n, t, i] * w[i, j] for i in range(fan_in)) + b[j]
    return y


def reference_dense_backward(x, w, grad_out):
    """(dx, dW, db): every (sample, step) adds its outer product to dW and its row to db."""
    grad_w, grad_b = np.zeros_like(w), np.zeros(w.shape[1])
    grad_x = np.empty_like(x)
    for n in range(x.shape[0]):
        for t in range(x.shape[1]):
            grad_w += np.outer(x[n, t], grad_out[n, t])
            grad_b += grad_out[n, t]
            grad_x[n, t] = w @ grad_out[n, t]
    return grad_x, grad_w, grad_b


@pytest.mark.parametrize("seed", range(10))
def test_dense_on_a_sequence_matches_loops(seed):
    rng = np.random.default_rng(seed)
    layer = layer_class("dense")(units=3, bias_init={"normal": {"std": 1.0}})
    assert layer.build((5, 4), rng) == (5, 3)
    x = rng.normal(size=(2, 5, 4))
    y = layer.forward(x)
    np.testing.assert_allclose(y, reference_dense(x, layer.params["W"], layer.params["b"]),
                               rtol=1e-12, atol=1e-13)
    grad_out = rng.normal(size=y.shape)
    grad_x = layer.backward(grad_out)
    ref_x, ref_w, ref_b = reference_dense_backward(x, layer.params["W"], grad_out)
    np.testing.assert_allclose(grad_x, ref_x, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(layer.grads["W"], ref_w, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(layer.grads["b"], ref_b, rtol=1e-12, atol=1e-13)
    assert_layer_gradients(layer, x, rng)


def test_a_sequence_of_one_step_equals_the_flat_layer():
    layer = layer_class("dense")(units=2)
    layer.build((1, 3), np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(4, 1, 3))
    np.testing.assert_allclose(layer.forward(x)[:, 0], layer.forward(x[:, 0]), rtol=1e-15)


def test_images_still_need_flatten():
    with pytest.raises(LayerError, match=r"per-sample shape \(2, 4, 4\)") as info:
        layer_class("dense")(units=2).build((2, 4, 4), np.random.default_rng(0))
    assert info.value.hint == "insert a 'flatten' layer before it"
