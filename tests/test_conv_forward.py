"""conv2d's chunked im2col forward equals the textbook sum over windows, for every option.

The forward gathers columns over a zero-padded chunk buffer that is reused between chunks and, at
stride 1, computes garbage positions past each row's end that it must drop: these tests make many
chunks (a tiny ``COLUMN_BYTES``) with a short last one, so a stale row, a dropped bias or a
garbage column shows up as a mismatch.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import examples
from numpy.lib.stride_tricks import sliding_window_view

import gradcheck.layers.conv as conv
from gradcheck.layers.conv import Conv2D


def reference_forward(x, weight, bias, stride, padding, dilation):
    """y[n, f, r, s] = sum_{c, i, j} W[f, c, i, j] * x_padded[n, c, r*sh + i*dh, s*sw + j*dw] + b[f]."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    kh, kw = weight.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    windows = sliding_window_view(padded, span, axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    y = np.einsum("ncrsij,fcij->nfrs", windows, weight)
    return y if bias is None else y + bias[:, None, None]


pairs = st.tuples(st.integers(1, 3), st.integers(1, 3))


@settings(max_examples=examples(25), deadline=None)
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 7), channels=st.integers(1, 3),
       filters=st.integers(1, 4), kernel=pairs, stride=pairs, dilation=pairs,
       padding=st.tuples(st.integers(0, 2), st.integers(0, 2)), bias=st.booleans(),
       chunk_bytes=st.sampled_from([1, 600, 4 * 2**20]))
def test_forward_equals_reference(seed, batch, channels, filters, kernel, stride, dilation,
                                  padding, bias, chunk_bytes):
    rng = np.random.default_rng(seed)
    size = (dilation[0] * (kernel[0] - 1) + 1 + rng.integers(0, 5),
            dilation[1] * (kernel[1] - 1) + 1 + rng.integers(0, 5))
    layer = Conv2D(filters, list(kernel), list(stride), list(padding), list(dilation), bias)
    layer.build((channels, *size), rng)
    if bias:
        layer.params["b"][:] = rng.normal(size=filters)
    x = rng.normal(size=(batch, channels, *size))
    expected = reference_forward(x, layer.params["W"], layer.params.get("b"), stride, padding,
                                 dilation)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conv, "COLUMN_BYTES", chunk_bytes)  # 1 byte: one row per chunk
        got = layer.forward(x)
    assert got.shape == expected.shape and got.flags.c_contiguous
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_float32_stays_float32_across_chunks(monkeypatch):
    monkeypatch.setattr(conv, "COLUMN_BYTES", 5000)
    rng = np.random.default_rng(3)
    layer = Conv2D(3, 3, padding=1)
    layer.build((2, 6, 5), rng)
    layer.params["b"][:] = rng.normal(size=3)
    x = rng.normal(size=(11, 2, 6, 5)).astype(np.float32)
    got = layer.forward(x)
    assert got.dtype == np.float32
    expected = reference_forward(x.astype(np.float64), layer.params["W"], layer.params["b"],
                                 (1, 1), (1, 1), (1, 1))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_backward_after_chunked_forward_pads_the_latest_input(monkeypatch, stride):
    # forward no longer pads its whole input; backward must pad the input of the latest forward.
    monkeypatch.setattr(conv, "COLUMN_BYTES", 1)
    rng = np.random.default_rng(5)
    layer = Conv2D(2, 3, stride=stride, padding=1)
    layer.build((2, 5, 5), rng)
    first, second = rng.normal(size=(2, 3, 2, 5, 5))
    layer.forward(first)
    y = layer.forward(second)
    grad_out = rng.normal(size=y.shape)
    grad_in = layer.backward(grad_out)
    # the loss sum(grad_out * y) is linear in x, so its gradient is exactly reproduced by
    # differentiating the reference forward along a random direction.
    direction = rng.normal(size=second.shape)
    along = (reference_forward(second + direction, layer.params["W"], layer.params["b"],
                               (stride, stride), (1, 1), (1, 1))
             - reference_forward(second, layer.params["W"], layer.params["b"],
                                 (stride, stride), (1, 1), (1, 1)))
    np.testing.assert_allclose(np.sum(grad_in * direction), np.sum(grad_out * along), rtol=1e-10)
    weight_grad = np.einsum("ncrsij,nfrs->fcij",
                            sliding_window_view(np.pad(second, ((0, 0), (0, 0), (1, 1), (1, 1))),
                                                (3, 3), axis=(2, 3))[:, :, ::stride, ::stride],
                            grad_out)
    np.testing.assert_allclose(layer.grads["W"], weight_grad, rtol=1e-10, atol=1e-12)
