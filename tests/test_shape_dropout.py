"""Flatten and dropout: shapes, finite-difference backward, and dropout's deterministic mask."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import examples
from cases_activations import any_shape
from fd import assert_layer_gradients
from gradcheck.errors import LayerError
from gradcheck.layers.dropout import Dropout
from gradcheck.layers.shape import Flatten
from gradcheck.registry import layer_class
from gradcheck.usercode import invoke, seed_rng

few = settings(max_examples=examples(25), deadline=None)
seeds = st.integers(0, 2**32 - 1)
batches = st.integers(1, 3)
rates = st.floats(0.0, 0.9)


def built(layer, input_shape, seed=0):
    out_shape = layer.build(tuple(input_shape), np.random.default_rng(seed))
    return layer, out_shape


def test_registered_under_their_yaml_names():
    assert layer_class("flatten") is Flatten
    assert layer_class("dropout") is Dropout


# --- flatten -------------------------------------------------------------------------------------

@few
@given(shape=any_shape, batch=batches, seed=seeds)
def test_flatten_is_a_row_major_reshape_with_fd_backward(shape, batch, seed):
    rng = np.random.default_rng(seed)
    layer, out_shape = built(Flatten(), shape)
    assert out_shape == (math.prod(shape),)
    x = rng.normal(size=(batch, *shape))
    y = layer.forward(x)
    assert y.shape == (batch, *out_shape)
    np.testing.assert_array_equal(y, x.reshape(batch, -1))
    np.testing.assert_array_equal(layer.backward(y), x)
    assert_layer_gradients(layer, x, rng)


def test_flatten_follows_the_batch_size_of_each_forward():
    layer, _ = built(Flatten(), (2, 3))
    layer.forward(np.zeros((4, 2, 3)))
    assert layer.forward(np.zeros((1, 2, 3))).shape == (1, 6)
    assert layer.backward(np.zeros((1, 6))).shape == (1, 2, 3)
    assert layer.forward(np.zeros((0, 2, 3))).shape == (0, 6)


# --- dropout -------------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [-0.1, 1, 1.5, math.nan, "0.5", None, True])
def test_dropout_rate_must_be_a_number_in_0_1(rate):
    with pytest.raises(LayerError, match=r"rate must be a number in \[0, 1\)"):
        Dropout(rate=rate)


def test_dropout_default_rate_is_a_half_and_zero_is_allowed():
    assert Dropout().rate == 0.5
    assert Dropout(rate=0).rate == 0.0


def seeded(layer, seed):
    """``layer`` with its rng seeded as a network built with ``seed`` would seed it."""
    seed_rng(layer, np.random.SeedSequence(seed))
    return layer


def test_dropout_outside_a_network_still_has_a_seeded_generator():
    layer = Dropout()
    x = np.ones((2, 30))
    np.testing.assert_array_equal(invoke(layer, "forward", layer.forward, x),
                                  invoke(Dropout(), "forward", Dropout().forward, x))


@few
@given(shape=any_shape, batch=batches, rate=rates, seed=seeds)
def test_dropout_is_deterministic_per_call_and_its_backward_matches_fd(shape, batch, rate, seed):
    rng = np.random.default_rng(seed)
    layer, out_shape = built(seeded(Dropout(rate=rate), seed), shape, seed)
    assert out_shape == shape
    x = rng.normal(size=(batch, *shape))
    first = invoke(layer, "forward", layer.forward, x)
    # The engine rewinds the generator before every call: the same draws every time.
    np.testing.assert_array_equal(invoke(layer, "forward", layer.forward, x), first)
    # A second layer seeded from the same config seed drops the same units.
    twin = seeded(Dropout(rate=rate), seed)
    np.testing.assert_array_equal(invoke(twin, "forward", twin.forward, x), first)
    # Kept units are scaled by 1/(1 - rate), dropped ones are exactly 0.
    kept = first != 0
    np.testing.assert_allclose(first[kept], x[kept] / (1.0 - rate), rtol=1e-14)
    assert_layer_gradients(layer, x, rng)


def test_dropout_is_random_on_purpose_between_unrewound_calls():
    layer = seeded(Dropout(rate=0.5), 3)
    x = np.ones((4, 50))
    assert not np.array_equal(layer.forward(x), layer.forward(x))


def test_dropout_different_seeds_drop_different_units():
    x = np.ones((1, 200))
    masks = [invoke(layer, "forward", layer.forward, x) != 0
             for layer in (seeded(Dropout(), 1), seeded(Dropout(), 2))]
    assert not np.array_equal(*masks)


@few
@given(shape=any_shape, batch=batches, rate=rates, seed=seeds)
def test_dropout_is_the_identity_in_eval_mode(shape, batch, rate, seed):
    rng = np.random.default_rng(seed)
    layer, _ = built(Dropout(rate=rate), shape, seed)
    layer.training = False
    x = rng.normal(size=(batch, *shape))
    grad_out = rng.normal(size=x.shape)
    np.testing.assert_array_equal(layer.forward(x), x)
    np.testing.assert_array_equal(layer.backward(grad_out), grad_out)
    assert_layer_gradients(layer, x, rng)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.5, 0.9])
def test_dropout_keeps_the_expected_fraction_and_preserves_the_mean(rate):
    n = 40_000
    layer, _ = built(seeded(Dropout(rate=rate), 7), (n,))
    y = layer.forward(np.ones((1, n)))
    kept = np.mean(y != 0)
    # Binomial keep count: 5 standard deviations is a bound a correct layer essentially never hits.
    sigma = math.sqrt(rate * (1 - rate) / n)
    assert abs(kept - (1 - rate)) <= 5 * sigma + 1e-12
    # Inverted dropout: E[y] = x, so the mean of y over many units is close to 1.
    assert abs(y.mean() - 1.0) <= 5 * sigma / (1 - rate) + 1e-12


def test_dropout_keeps_float32():
    layer, _ = built(Dropout(rate=0.3), (4,))
    y = layer.forward(np.ones((2, 4), dtype=np.float32))
    assert y.dtype == np.float32
    assert layer.backward(np.ones_like(y)).dtype == np.float32
