"""Activation layers: textbook forward values, finite-difference backward, kinks and stability."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import examples
from cases_activations import KINK_MARGIN, any_shape, away_from_zero, feature_or_image
from fd import assert_layer_gradients
from gradcheck.errors import LayerError
from gradcheck.layers.activations import ELU, LeakyReLU, PReLU, ReLU, Sigmoid, Softmax, Tanh
from gradcheck.registry import layer_class

# Tiny shapes and few examples: each finite-difference check runs a full forward per element.
few = settings(max_examples=examples(25), deadline=None)
seeds = st.integers(0, 2**32 - 1)
batches = st.integers(1, 3)
slopes = st.floats(-2.0, 2.0, allow_nan=False)
elu_alphas = st.floats(0.1, 3.0)


def built(layer, input_shape, seed=0):
    layer.build(tuple(input_shape), np.random.default_rng(seed))
    return layer


# The textbook definitions, written as plainly as possible and independently of the layers.
def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_softmax(x, axis):
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


ELEMENTWISE = {
    "relu": (ReLU, lambda x: np.maximum(x, 0.0)),
    "sigmoid": (Sigmoid, np_sigmoid),
    "tanh": (Tanh, np.tanh),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@few
@given(shape=any_shape, batch=batches, seed=seeds)
def test_parameter_free_elementwise_match_formula_and_fd(name, shape, batch, seed):
    cls, formula = ELEMENTWISE[name]
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng, (batch, *shape))
    layer = built(cls(), shape)
    np.testing.assert_allclose(layer.forward(x), formula(x), rtol=1e-12, atol=1e-15)
    assert layer.build(shape, rng) == shape
    assert_layer_gradients(layer, x, rng)


@few
@given(shape=any_shape, batch=batches, slope=slopes, seed=seeds)
def test_leaky_relu_matches_formula_and_fd(shape, batch, slope, seed):
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng, (batch, *shape))
    layer = built(LeakyReLU(slope=slope), shape)
    np.testing.assert_allclose(layer.forward(x), np.where(x > 0, x, slope * x), rtol=1e-15)
    assert_layer_gradients(layer, x, rng)


@few
@given(shape=any_shape, batch=batches, alpha=elu_alphas, seed=seeds)
def test_elu_matches_formula_and_fd(shape, batch, alpha, seed):
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng, (batch, *shape))
    layer = built(ELU(alpha=alpha), shape)
    expected = np.where(x > 0, x, alpha * (np.exp(np.minimum(x, 0.0)) - 1.0))
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12)
    assert_layer_gradients(layer, x, rng)


@few
@given(shape=feature_or_image, batch=batches, seed=seeds)
def test_prelu_matches_formula_and_fd_for_input_and_slopes(shape, batch, seed):
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng, (batch, *shape))
    layer = built(PReLU(), shape)
    # Distinct slopes per channel, so a gradient summed over the wrong axis cannot pass.
    layer.params["alpha"] = rng.uniform(-1.0, 1.0, size=shape[0])
    alpha = layer.params["alpha"].reshape((-1,) + (1,) * (len(shape) - 1))
    np.testing.assert_allclose(layer.forward(x), np.where(x > 0, x, alpha * x), rtol=1e-15)
    assert_layer_gradients(layer, x, rng)


@pytest.mark.parametrize("input_shape, alpha_shape", [((5,), (5,)), ((3, 4, 4), (3,))])
def test_prelu_has_one_slope_per_feature_or_channel_initialised_to_a_quarter(input_shape, alpha_shape):
    layer = built(PReLU(), input_shape)
    assert set(layer.params) == {"alpha"}
    assert layer.params["alpha"].shape == alpha_shape
    np.testing.assert_array_equal(layer.params["alpha"], 0.25)
    assert built(PReLU(init=0.1), input_shape).params["alpha"][0] == 0.1


@few
@given(shape=feature_or_image, batch=batches, seed=seeds, scale=st.sampled_from([1.0, 30.0]))
def test_softmax_matches_formula_sums_to_one_and_fd(shape, batch, seed, scale):
    rng = np.random.default_rng(seed)
    x = scale * rng.normal(size=(batch, *shape))
    layer = built(Softmax(), shape)
    y = layer.forward(x)
    # Class axis: the features of (batch, F), the channels of (batch, C, H, W).
    np.testing.assert_allclose(y, np_softmax(x, axis=1), rtol=1e-10)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-12)
    assert_layer_gradients(layer, x, rng)


@pytest.mark.parametrize("layout", [(4,), (3, 2, 2)])
def test_softmax_is_stable_and_exact_at_huge_inputs(layout):
    layer = built(Softmax(), layout)
    x = np.zeros((2, *layout))
    x[:, 0] = 1e300          # a naive exp() would overflow to inf and give NaN
    x[:, 1] = -1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = layer.forward(x)
        grad = layer.backward(np.ones_like(y))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(y[:, 0], 1.0)
    np.testing.assert_allclose(y.sum(axis=1), 1.0)
    # Softmax is unchanged by adding a constant along the class axis, however large.
    ramp = np.arange(layout[0], dtype=float).reshape((-1,) + (1,) * (len(layout) - 1))
    base = np.broadcast_to(ramp, (2, *layout))
    np.testing.assert_allclose(layer.forward(base + 1e4), layer.forward(base), rtol=1e-12)


def test_sigmoid_is_stable_for_large_magnitudes():
    layer = built(Sigmoid(), (4,))
    x = np.array([[-1e4, -745.0, 745.0, 1e4]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # overflow in exp would be a RuntimeWarning
        y = layer.forward(x)
        grad = layer.backward(np.ones_like(y))
    np.testing.assert_allclose(y, [[0.0, 0.0, 1.0, 1.0]], atol=1e-300)
    assert np.all(y >= 0) and np.all(y <= 1) and np.all(np.isfinite(grad))
    # Where the textbook formula is fine, both branches of the stable form agree with it.
    moderate = np.linspace(-30, 30, 61).reshape(1, -1)
    np.testing.assert_allclose(built(Sigmoid(), (61,)).forward(moderate), np_sigmoid(moderate),
                               rtol=1e-14)


def test_elu_does_not_overflow_for_large_positive_inputs():
    layer = built(ELU(), (2,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = layer.forward(np.array([[1e3, -1e3]]))
        grad = layer.backward(np.ones((1, 2)))
    np.testing.assert_allclose(y, [[1e3, -1.0]])
    np.testing.assert_allclose(grad, [[1.0, 0.0]], atol=1e-300)


RECTIFIERS = [ReLU, LeakyReLU, PReLU, ELU]


@pytest.mark.parametrize("cls", RECTIFIERS, ids=lambda c: c.registered_name)
@few
@given(shape=feature_or_image, batch=batches, seed=seeds)
def test_rectifier_branch_state_is_the_sign_mask_of_the_last_forward(cls, shape, batch, seed):
    rng = np.random.default_rng(seed)
    layer = built(cls(), shape)
    for _ in range(2):  # the state follows each new forward, not the first one
        x = away_from_zero(rng, (batch, *shape))
        layer.forward(x)
        state = layer.branch_state()
        assert state.dtype == bool and state.shape == x.shape
        np.testing.assert_array_equal(state, x > 0)


@pytest.mark.parametrize("cls", RECTIFIERS, ids=lambda c: c.registered_name)
def test_rectifier_branch_state_changes_exactly_when_a_step_crosses_zero(cls):
    layer = built(cls(), (3,))
    layer.forward(np.array([[1e-9, 0.5, -0.5]]))
    before = layer.branch_state()
    layer.forward(np.array([[-1e-9, 0.5, -0.5]]))
    assert not np.array_equal(before, layer.branch_state())
    x = np.array([[2e-9, 0.5, -0.5]])
    layer.forward(x)
    assert np.array_equal(before, layer.branch_state())
    # The state belongs to the forward that ran, even if the caller then perturbs x in place.
    x[0, 0] = -1.0
    assert np.array_equal(before, layer.branch_state())


@pytest.mark.parametrize("cls", [Sigmoid, Tanh, Softmax], ids=lambda c: c.registered_name)
def test_smooth_activations_report_no_branch_state(cls):
    layer = built(cls(), (3,))
    layer.forward(np.ones((1, 3)))
    assert layer.branch_state() is None


@pytest.mark.parametrize("cls", [ReLU, LeakyReLU, PReLU, ELU, Sigmoid, Tanh, Softmax],
                         ids=lambda c: c.registered_name)
def test_float32_stays_float32(cls):
    # The engine checks float32 networks too; silently promoting would hide float32 rounding.
    layer = built(cls(), (3, 2, 2))
    layer.params = {k: v.astype(np.float32) for k, v in layer.params.items()}
    x = away_from_zero(np.random.default_rng(0), (2, 3, 2, 2)).astype(np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32
    assert layer.backward(np.ones_like(y)).dtype == np.float32


@pytest.mark.parametrize("name, cls", [("relu", ReLU), ("leaky_relu", LeakyReLU), ("prelu", PReLU),
                                       ("elu", ELU), ("sigmoid", Sigmoid), ("tanh", Tanh),
                                       ("softmax", Softmax)])
def test_registered_under_their_yaml_names(name, cls):
    assert layer_class(name) is cls


@pytest.mark.parametrize("make, word", [
    (lambda: LeakyReLU(slope="0.1"), "slope"),
    (lambda: LeakyReLU(slope=None), "slope"),
    (lambda: LeakyReLU(slope=True), "slope"),
    (lambda: LeakyReLU(slope=math.nan), "slope"),
    (lambda: LeakyReLU(slope=math.inf), "slope"),
    (lambda: PReLU(init=[0.25]), "init"),
    (lambda: ELU(alpha=0.0), "alpha"),
    (lambda: ELU(alpha=-1.0), "alpha"),
    (lambda: ELU(alpha="one"), "alpha"),
])
def test_bad_hyperparameters_raise_layer_error_naming_the_option(make, word):
    with pytest.raises(LayerError, match=word):
        make()


def test_any_finite_leaky_slope_is_accepted():
    assert LeakyReLU(slope=0).slope == 0.0
    assert LeakyReLU(slope=-0.5).slope == -0.5
    assert LeakyReLU(slope=1).slope == 1.0


@pytest.mark.parametrize("bad_shape", [(4, 4), (1, 2, 3, 4), ()])
def test_softmax_refuses_layouts_without_a_clear_class_axis(bad_shape):
    with pytest.raises(LayerError, match=r"softmax expects .*got") as info:
        built(Softmax(), bad_shape)
    assert "flatten" in info.value.hint


def test_prelu_refuses_scalar_samples():
    with pytest.raises(LayerError, match="channel or feature axis"):
        built(PReLU(), ())


def test_rectifier_margin_is_far_from_the_fd_step():
    # The strategies rely on this: |x| >= margin can never be crossed by a step of ~1e-6.
    x = away_from_zero(np.random.default_rng(0), (1000,))
    assert np.abs(x).min() >= KINK_MARGIN > 1e3 * 1e-6
