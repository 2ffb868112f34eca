"""conv2d, maxpool2d, avgpool2d and global_avgpool against naive loop references and finite
differences, plus option and shape validation.

The references below are deliberately slow: one Python loop per index, bounds checked by hand
instead of padding arrays, so that they share no window arithmetic with the layers.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import examples
import gradcheck.layers  # noqa: F401  (registers the built-in layers)
from cases_conv import LAYER_CASES, distinct_values
from fd import assert_layer_gradients
from gradcheck.errors import LayerError
from gradcheck.registry import layer_class

SMALL = settings(max_examples=examples(25), deadline=None)


def make_layer(kind: str, input_shape, seed: int = 0, **options):
    layer = layer_class(kind)(**options)
    output_shape = layer.build(tuple(input_shape), np.random.default_rng(seed))
    return layer, output_shape


def pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


# ---------------------------------------------------------------- naive references

def ref_conv(x, weight, bias, stride, padding, dilation, grad_out=None):
    """Return y, and (dx, dW, db) too when grad_out is given."""
    batch, channels, height, width = x.shape
    filters, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((batch, filters, out_h, out_w))
    dx, dW, db = np.zeros(x.shape), np.zeros(weight.shape), np.zeros(filters)
    for n, f, i, j in itertools.product(range(batch), range(filters), range(out_h), range(out_w)):
        total = 0.0 if bias is None else bias[f]
        for c, u, v in itertools.product(range(channels), range(kh), range(kw)):
            r, s = i * sh - ph + u * dh, j * sw - pw + v * dw
            if 0 <= r < height and 0 <= s < width:
                total += weight[f, c, u, v] * x[n, c, r, s]
                if grad_out is not None:
                    dx[n, c, r, s] += weight[f, c, u, v] * grad_out[n, f, i, j]
                    dW[f, c, u, v] += x[n, c, r, s] * grad_out[n, f, i, j]
        y[n, f, i, j] = total
        if grad_out is not None:
            db[f] += grad_out[n, f, i, j]
    return y if grad_out is None else (y, dx, dW, db)


def ref_pool(x, mode, size, stride, padding, grad_out):
    """Max or average pool: return (y, dx, argmax index within each window)."""
    batch, channels, height, width = x.shape
    (kh, kw), (ph, pw) = pair(size), pair(padding)
    sh, sw = pair(size if stride is None else stride)
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    y = np.zeros((batch, channels, out_h, out_w))
    argmax = np.zeros(y.shape, dtype=int)
    dx = np.zeros(x.shape)
    for n, c, i, j in itertools.product(range(batch), range(channels), range(out_h), range(out_w)):
        best, best_at, total = -np.inf, None, 0.0
        for u, v in itertools.product(range(kh), range(kw)):
            r, s = i * sh - ph + u, j * sw - pw + v
            if not (0 <= r < height and 0 <= s < width):
                continue  # max: padding is -inf and never wins; avg: padding adds zero
            total += x[n, c, r, s]
            if x[n, c, r, s] > best:  # strict: the first of tied maxima keeps the win
                best, best_at, argmax[n, c, i, j] = x[n, c, r, s], (r, s), u * kw + v
        if mode == "max":
            y[n, c, i, j] = best
            dx[(n, c, *best_at)] += grad_out[n, c, i, j]
        else:
            y[n, c, i, j] = total / (kh * kw)
            for u, v in itertools.product(range(kh), range(kw)):
                r, s = i * sh - ph + u, j * sw - pw + v
                if 0 <= r < height and 0 <= s < width:
                    dx[n, c, r, s] += grad_out[n, c, i, j] / (kh * kw)
    return y, dx, argmax


def check_conv_against_reference(options, x, seed=0):
    layer, output_shape = make_layer("conv2d", x.shape[1:], seed=seed, **options)
    rng = np.random.default_rng(seed + 1)
    if options.get("bias", True):
        layer.params["b"] = rng.normal(size=layer.params["b"].shape)  # zeros would hide bugs
    y = layer.forward(x)
    assert y.shape == (x.shape[0], *output_shape)
    grad_out = rng.normal(size=y.shape)
    dx = layer.backward(grad_out)
    ref_y, ref_dx, ref_dW, ref_db = ref_conv(
        x, layer.params["W"], layer.params.get("b"), options.get("stride", 1),
        options.get("padding", 0), options.get("dilation", 1), grad_out)
    np.testing.assert_allclose(y, ref_y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["W"], ref_dW, rtol=1e-10, atol=1e-12)
    if options.get("bias", True):
        np.testing.assert_allclose(layer.grads["b"], ref_db, rtol=1e-10, atol=1e-12)
    else:
        assert "b" not in layer.params and "b" not in layer.grads


def check_pool_against_reference(kind, options, x, seed=0):
    layer, output_shape = make_layer(kind, x.shape[1:], **options)
    y = layer.forward(x)
    assert y.shape == (x.shape[0], *output_shape)
    grad_out = np.random.default_rng(seed).normal(size=y.shape)
    dx = layer.backward(grad_out)
    ref_y, ref_dx, ref_argmax = ref_pool(
        x, "max" if kind == "maxpool2d" else "avg", options.get("size", 2), options.get("stride"),
        options.get("padding", 0), grad_out)
    np.testing.assert_allclose(y, ref_y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=1e-14)
    if kind == "maxpool2d":
        state = layer.branch_state()
        assert np.issubdtype(state.dtype, np.integer)
        np.testing.assert_array_equal(state, ref_argmax)
    else:
        assert layer.branch_state() is None


# ---------------------------------------------------------------- conv2d

CONV_OPTIONS = {
    "plain": {"filters": 2, "kernel": 3},
    "stride": {"filters": 2, "kernel": 3, "stride": 2},
    "padding": {"filters": 3, "kernel": 3, "padding": 1},
    "dilation": {"filters": 2, "kernel": 2, "dilation": 2},
    "rectangular": {"filters": 2, "kernel": [1, 3], "stride": [2, 1], "padding": [0, 2]},
    "no_bias": {"filters": 2, "kernel": 2, "bias": False},
    "everything": {"filters": 3, "kernel": [3, 2], "stride": [1, 2], "padding": [2, 1],
                   "dilation": [2, 1]},
}


@pytest.mark.parametrize("options", CONV_OPTIONS.values(), ids=CONV_OPTIONS.keys())
def test_conv2d_matches_loop_reference(options):
    x = np.random.default_rng(7).normal(size=(2, 3, 6, 7))
    check_conv_against_reference(options, x)


@pytest.mark.parametrize("options", CONV_OPTIONS.values(), ids=CONV_OPTIONS.keys())
def test_conv2d_gradients_match_finite_differences(options):
    rng = np.random.default_rng(3)
    layer, _ = make_layer("conv2d", (2, 5, 6), **options)
    if "b" in layer.params:
        layer.params["b"] = rng.normal(size=layer.params["b"].shape)
    assert_layer_gradients(layer, rng.normal(size=(2, 2, 5, 6)), rng)


def test_conv2d_init_is_he_normal_with_fan_in_c_kh_kw():
    layer, _ = make_layer("conv2d", (4, 20, 20), filters=256, kernel=[3, 5])
    assert layer.params["W"].shape == (256, 4, 3, 5)
    assert layer.params["b"].shape == (256,) and not layer.params["b"].any()
    np.testing.assert_allclose(layer.params["W"].std(), np.sqrt(2 / (4 * 3 * 5)), rtol=0.05)


def test_conv2d_accepts_any_batch_size_after_build():
    # The engine may stack perturbed copies, so forward must not remember the first batch size.
    layer, _ = make_layer("conv2d", (2, 5, 5), filters=2, kernel=3, padding=1)
    x = np.random.default_rng(0).normal(size=(7, 2, 5, 5))
    single = np.concatenate([layer.forward(x[i:i + 1]) for i in range(7)])
    np.testing.assert_allclose(layer.forward(x), single, rtol=1e-12)
    assert layer.backward(np.ones(single.shape)).shape == x.shape


def test_conv2d_keeps_float32():
    layer, _ = make_layer("conv2d", (2, 5, 5), filters=3, kernel=3, padding=1, stride=2)
    x = np.random.default_rng(0).normal(size=(2, 2, 5, 5))
    y64 = layer.forward(x)
    y32 = layer.forward(x.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-5)
    dx = layer.backward(np.ones(y32.shape, dtype=np.float32))
    assert dx.dtype == np.float32
    assert layer.grads["W"].shape == layer.params["W"].shape


def test_conv2d_reads_parameters_afresh_each_forward():
    # The engine perturbs W in place between calls; nothing derived from W may be cached.
    layer, _ = make_layer("conv2d", (1, 3, 3), filters=1, kernel=3)
    x = np.ones((1, 1, 3, 3))
    before = layer.forward(x).item()
    layer.params["W"][0, 0, 1, 1] += 0.5
    assert layer.forward(x).item() == pytest.approx(before + 0.5)


@SMALL
@given(case=LAYER_CASES["conv2d"], seed=st.integers(0, 2**16))
def test_conv2d_property_matches_reference_and_finite_differences(case, seed):
    rng = np.random.default_rng(seed)
    x = case.draw_input(rng)
    check_conv_against_reference(case.options, x, seed=seed)
    layer, _ = make_layer("conv2d", case.input_shape, seed=seed, **case.options)
    assert_layer_gradients(layer, x, rng)


# ---------------------------------------------------------------- pooling

POOL_OPTIONS = {
    "default": {},
    "overlapping": {"size": 3, "stride": 1},
    "overlapping_stride2": {"size": 3, "stride": 2, "padding": 1},
    "padding": {"size": 2, "padding": 1},
    "rectangular": {"size": [2, 3], "stride": [1, 2], "padding": [1, 0]},
    "bigger_stride": {"size": 2, "stride": 3},
}


@pytest.mark.parametrize("kind", ["maxpool2d", "avgpool2d"])
@pytest.mark.parametrize("options", POOL_OPTIONS.values(), ids=POOL_OPTIONS.keys())
def test_pooling_matches_loop_reference(kind, options):
    x = np.random.default_rng(11).normal(size=(2, 3, 6, 7))
    check_pool_against_reference(kind, options, x)


@pytest.mark.parametrize("kind", ["maxpool2d", "avgpool2d"])
@pytest.mark.parametrize("options", POOL_OPTIONS.values(), ids=POOL_OPTIONS.keys())
def test_pooling_gradients_match_finite_differences(kind, options):
    rng = np.random.default_rng(5)
    layer, _ = make_layer(kind, (2, 6, 5), **options)
    # Distinct, well-spaced values keep max-pool away from ties, where it has no gradient.
    assert_layer_gradients(layer, distinct_values(rng, (2, 2, 6, 5)), rng)


@pytest.mark.parametrize("options", POOL_OPTIONS.values(), ids=POOL_OPTIONS.keys())
def test_maxpool_ties_route_gradient_to_first_maximum(options):
    # Few distinct values on a grid make ties the rule, including across overlapping windows.
    x = np.random.default_rng(2).integers(0, 3, size=(2, 2, 6, 7)).astype(float)
    check_pool_against_reference("maxpool2d", options, x)


@pytest.mark.parametrize("options", [{"size": 2}, {"size": 3, "stride": 1, "padding": 1}],
                         ids=["odd_swaps", "even_swaps_padded"])
def test_maxpool_blocks_of_rows_match_reference(monkeypatch, options):
    # Tiny blocks (of 9 rows, then 2, for size 2; of 1 row for size 3): each block's running
    # maximum swaps with a spare once per tap after the first, and must land in the output
    # whether it ends in the spare (3 swaps) or back in place (8 swaps).
    monkeypatch.setattr("gradcheck.layers.pooling.POOL_BLOCK_BYTES", 576)
    x = np.random.default_rng(3).integers(0, 3, size=(11, 2, 4, 5)).astype(float)
    check_pool_against_reference("maxpool2d", options, x)
    layer, _ = make_layer("maxpool2d", (2, 4, 5), **options)
    layer.forward(x)
    assert layer.branch_state().dtype == np.int8  # window indices up to 127 fit in int8


def test_maxpool_constant_input_gives_each_window_exactly_one_winner():
    layer, _ = make_layer("maxpool2d", (1, 4, 4))
    x = np.zeros((1, 1, 4, 4))
    layer.forward(x)
    dx = layer.backward(np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(layer.branch_state(), np.zeros((1, 1, 2, 2), dtype=int))
    expected = np.zeros((4, 4))
    expected[::2, ::2] = 1.0  # the top-left cell of each 2x2 window
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_maxpool_padding_never_wins_on_negative_input():
    layer, _ = make_layer("maxpool2d", (1, 3, 3), size=2, stride=1, padding=1)
    x = -1.0 - np.random.default_rng(0).random((1, 1, 3, 3))
    y = layer.forward(x)
    assert np.isfinite(y).all() and (y < -1.0).all()
    assert np.isfinite(layer.backward(np.ones(y.shape))).all()


def test_maxpool_branch_state_tracks_the_winner_per_sample():
    layer, _ = make_layer("maxpool2d", (1, 2, 2))
    x = np.array([[[[0.0, 1.0], [0.5, 0.2]]], [[[3.0, 1.0], [0.5, 0.2]]]])
    layer.forward(x)
    state = layer.branch_state()
    assert state.shape == (2, 1, 1, 1)
    np.testing.assert_array_equal(state.reshape(-1), [1, 0])


@pytest.mark.parametrize("kind", ["maxpool2d", "avgpool2d", "global_avgpool"])
def test_pooling_keeps_float32_and_any_batch_size(kind):
    layer, output_shape = make_layer(kind, (2, 5, 4))
    x = np.random.default_rng(0).normal(size=(5, 2, 5, 4)).astype(np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32 and y.shape == (5, *output_shape)
    dx = layer.backward(np.ones(y.shape, dtype=np.float32))
    assert dx.dtype == np.float32 and dx.shape == x.shape


def test_global_avgpool_matches_reference_and_finite_differences():
    rng = np.random.default_rng(4)
    layer, output_shape = make_layer("global_avgpool", (3, 4, 5))
    assert output_shape == (3,)
    x = rng.normal(size=(2, 3, 4, 5))
    grad_out = rng.normal(size=(2, 3))
    y, dx = layer.forward(x), layer.backward(grad_out)
    ref_y, ref_dx = np.zeros((2, 3)), np.zeros(x.shape)
    for n, c in itertools.product(range(2), range(3)):
        for r, s in itertools.product(range(4), range(5)):
            ref_y[n, c] += x[n, c, r, s] / 20
            ref_dx[n, c, r, s] = grad_out[n, c] / 20
    np.testing.assert_allclose(y, ref_y, rtol=1e-12)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12)
    assert dx.flags.writeable
    assert_layer_gradients(layer, x, rng)


@SMALL
@given(kind=st.sampled_from(["maxpool2d", "avgpool2d"]), data=st.data(),
       seed=st.integers(0, 2**16))
def test_pooling_property_matches_reference_and_finite_differences(kind, data, seed):
    case = data.draw(LAYER_CASES[kind])
    rng = np.random.default_rng(seed)
    x = case.draw_input(rng)
    check_pool_against_reference(kind, case.options, x, seed=seed)
    layer, _ = make_layer(kind, case.input_shape, **case.options)
    assert_layer_gradients(layer, x, rng)


@SMALL
@given(case=LAYER_CASES["global_avgpool"], seed=st.integers(0, 2**16))
def test_global_avgpool_property_finite_differences(case, seed):
    rng = np.random.default_rng(seed)
    layer, _ = make_layer("global_avgpool", case.input_shape)
    assert_layer_gradients(layer, case.draw_input(rng), rng)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("options, expected", [
    ({"filters": 0, "kernel": 3}, "'filters' must be a positive integer, got 0"),
    ({"filters": 2.5, "kernel": 3}, "'filters' must be a positive integer, got 2.5"),
    ({"filters": True, "kernel": 3}, "'filters' must be a positive integer, got True"),
    ({"filters": 2, "kernel": [3]}, "'kernel' must be a positive integer or a list [height, "
                                    "width] of such integers, got [3]"),
    ({"filters": 2, "kernel": "3"}, "'kernel' must be a positive integer"),
    ({"filters": 2, "kernel": [3, 0]}, "got [3, 0]"),
    ({"filters": 2, "kernel": 3, "stride": 0}, "'stride' must be a positive integer"),
    ({"filters": 2, "kernel": 3, "dilation": [1, -1]}, "'dilation' must be a positive integer"),
    ({"filters": 2, "kernel": 3, "padding": -1}, "'padding' must be an integer >= 0"),
    ({"filters": 2, "kernel": 3, "bias": "yes"}, "'bias' must be true or false, got 'yes'"),
])
def test_conv2d_rejects_bad_options(options, expected):
    with pytest.raises(LayerError) as info:
        layer_class("conv2d")(**options)
    assert expected in str(info.value) and "conv2d" in str(info.value)


@pytest.mark.parametrize("kind", ["maxpool2d", "avgpool2d"])
@pytest.mark.parametrize("options, expected", [
    ({"size": 0}, "'size' must be a positive integer"),
    ({"size": [2, 2, 2]}, "got [2, 2, 2]"),
    ({"stride": 0}, "'stride' must be a positive integer"),
    ({"padding": -1}, "'padding' must be an integer >= 0"),
    ({"size": [2, 4], "padding": [1, 3]}, "padding along width must be at most half the window "
                                          "(4 // 2 = 2), got 3"),
])
def test_pooling_rejects_bad_options(kind, options, expected):
    with pytest.raises(LayerError) as info:
        layer_class(kind)(**options)
    assert expected in str(info.value) and kind in str(info.value)


@pytest.mark.parametrize("kind, options", [
    ("conv2d", {"filters": 1, "kernel": 3}), ("maxpool2d", {}), ("avgpool2d", {}),
    ("global_avgpool", {}),
])
@pytest.mark.parametrize("input_shape", [(8,), (2, 8), (1, 2, 8, 8)])
def test_spatial_layers_reject_non_image_inputs(kind, options, input_shape):
    with pytest.raises(LayerError, match=r"expects a per-sample input \(channels, height, width\)"):
        make_layer(kind, input_shape, **options)


def test_conv2d_kernel_larger_than_padded_input_names_the_numbers():
    # Width: the dilated kernel spans 2*(3-1)+1 = 5 columns, more than 2 + 2 padding.
    with pytest.raises(LayerError) as info:
        make_layer("conv2d", (1, 6, 2), filters=1, kernel=3, dilation=[1, 2], padding=[0, 1])
    message = str(info.value)
    assert "conv2d window spans 5 along width but the input is only 2 (+2 padding = 4)" in message
    assert "Hint:" in message and "add padding" in message


def test_conv2d_kernel_that_just_fits_gives_a_single_output():
    _, output_shape = make_layer("conv2d", (1, 6, 3), filters=1, kernel=3, dilation=[1, 2],
                                 padding=[0, 1])
    assert output_shape == (1, 4, 1)


def test_pool_window_larger_than_input_is_rejected_at_build():
    with pytest.raises(LayerError, match=r"maxpool2d window spans 3 along height but the input is "
                                         r"only 2 \(\+0 padding = 2\)"):
        make_layer("maxpool2d", (1, 2, 5), size=3)


def test_stride_defaults_to_size_and_output_uses_floor():
    layer, output_shape = make_layer("avgpool2d", (1, 7, 6), size=[3, 2])
    assert layer.stride == (3, 2)
    assert output_shape == (1, 2, 3)
