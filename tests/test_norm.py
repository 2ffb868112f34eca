"""Normalisation layers against textbook formulas and central finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import examples
from cases_norm import LAYER_CASES, spread_over_batch, spread_per_sample
from fd import assert_layer_gradients
from gradcheck.errors import LayerError
from gradcheck.layers.norm import BatchNorm, LayerNorm, LocalResponseNorm
from gradcheck.registry import layer_class

# Finite differences over every element are slow-ish; few, tiny examples keep the file fast.
FEW = settings(max_examples=examples(20), deadline=None)


def built(cls, options: dict, input_shape: tuple[int, ...], seed: int = 0):
    """An instance built for ``input_shape`` with non-trivial gamma and beta where it has them, so
    that tests do not pass merely because gamma = 1 and beta = 0."""
    rng = np.random.default_rng(seed)
    layer = cls(**options)
    layer.build(input_shape, rng)
    for name, value in layer.params.items():
        value[...] = rng.normal(size=value.shape)
    return layer


def textbook_batchnorm(x, gamma, beta, eps, mean=None, var=None):
    """Per channel, statistics as explicit sums over the batch (and spatial) values."""
    y = np.empty_like(x)
    for c in range(x.shape[1]):
        values = x[:, c].ravel()
        mu = sum(values) / len(values) if mean is None else mean[c]
        sigma2 = sum((v - mu) ** 2 for v in values) / len(values) if var is None else var[c]
        y[:, c] = gamma[c] * (x[:, c] - mu) / np.sqrt(sigma2 + eps) + beta[c]
    return y


def textbook_layernorm(x, gamma, beta, eps):
    y = np.empty_like(x)
    for n in range(x.shape[0]):
        values = x[n].ravel()
        mu = sum(values) / len(values)
        sigma2 = sum((v - mu) ** 2 for v in values) / len(values)
        y[n] = gamma * (x[n] - mu) / np.sqrt(sigma2 + eps) + beta
    return y


def textbook_lrn(x, size, alpha, beta, k):
    """Krizhevsky et al. 2012, eq. in section 3.3, one output element at a time."""
    batch, channels, height, width = x.shape
    y = np.empty_like(x)
    for n in range(batch):
        for c in range(channels):
            for i in range(height):
                for j in range(width):
                    window = range(max(0, c - size // 2), min(channels - 1, c + size // 2) + 1)
                    total = sum(x[n, cc, i, j] ** 2 for cc in window)
                    y[n, c, i, j] = x[n, c, i, j] / (k + alpha * total) ** beta
    return y


def test_registered_names():
    assert layer_class("batchnorm") is BatchNorm
    assert layer_class("layernorm") is LayerNorm
    assert layer_class("lrn") is LocalResponseNorm
    assert BatchNorm.mixes_batch and not LayerNorm.mixes_batch and not LocalResponseNorm.mixes_batch


@pytest.mark.parametrize("name", sorted(LAYER_CASES))
@FEW
@given(data=st.data())
def test_contract_cases_pass_finite_differences(name, data):
    """The strategies the registry-wide contract test draws from must be valid and checkable."""
    case = data.draw(LAYER_CASES[name])
    seed = data.draw(st.integers(0, 2**32 - 1))
    layer = built(layer_class(name), case.options, case.input_shape, seed)
    rng = np.random.default_rng(seed)
    assert_layer_gradients(layer, case.draw_input(rng), rng)


# ---- batchnorm ----------------------------------------------------------------------------------

_BN_SHAPES = st.one_of(st.tuples(st.integers(1, 3)),
                       st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)))


@FEW
@given(input_shape=_BN_SHAPES, batch=st.integers(2, 4), eps=st.sampled_from([1e-5, 1e-2, 1.0]),
       seed=st.integers(0, 1000))
def test_batchnorm_training_forward_matches_textbook(input_shape, batch, eps, seed):
    layer = built(BatchNorm, {"eps": eps}, input_shape, seed)
    x = np.random.default_rng(seed).normal(size=(batch, *input_shape))
    expected = textbook_batchnorm(x, layer.params["gamma"], layer.params["beta"], eps)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-10, atol=1e-12)


@FEW
@given(input_shape=_BN_SHAPES, batch=st.integers(2, 4), training=st.booleans(),
       eps=st.sampled_from([1e-5, 1e-2]), seed=st.integers(0, 1000))
def test_batchnorm_gradients(input_shape, batch, training, eps, seed):
    layer = built(BatchNorm, {"eps": eps}, input_shape, seed)
    rng = np.random.default_rng(seed)
    layer.buffers["running_mean"] = rng.normal(size=input_shape[0])
    layer.buffers["running_var"] = rng.uniform(0.5, 2.0, size=input_shape[0])
    layer.training = training
    assert_layer_gradients(layer, spread_over_batch(rng, (batch, *input_shape)), rng)


def test_batchnorm_eval_uses_running_stats_per_sample():
    layer = built(BatchNorm, {"eps": 1e-3}, (3, 2, 2))
    rng = np.random.default_rng(1)
    layer.buffers["running_mean"] = rng.normal(size=3)
    layer.buffers["running_var"] = rng.uniform(0.5, 2.0, size=3)
    layer.training = False
    x = rng.normal(size=(4, 3, 2, 2))
    expected = textbook_batchnorm(x, layer.params["gamma"], layer.params["beta"], 1e-3,
                                  mean=layer.buffers["running_mean"],
                                  var=layer.buffers["running_var"])
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12)
    # Each sample alone (even a batch of one) gets the same output as inside the batch.
    for n in range(4):
        np.testing.assert_allclose(layer.forward(x[n:n + 1]), expected[n:n + 1], rtol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_keeps_float32_in_both_modes(training):
    layer = built(BatchNorm, {}, (2,))
    layer.params = {k: v.astype(np.float32) for k, v in layer.params.items()}
    layer.training = training
    y = layer.forward(np.random.default_rng(7).normal(size=(3, 2)).astype(np.float32))
    assert y.dtype == np.float32 and layer.backward(np.ones_like(y)).dtype == np.float32


def test_batchnorm_training_differs_from_eval_and_mixes_samples():
    layer = built(BatchNorm, {}, (2,))
    x = np.array([[1.0, -2.0], [3.0, 5.0], [0.5, 0.0]])
    train_y = layer.forward(x)
    layer.training = False
    assert not np.allclose(layer.forward(x), train_y)
    layer.training = True
    changed = x.copy()
    changed[2] += 10.0
    # Sample 0 is untouched, yet its output moves: the batch statistics changed.
    assert not np.allclose(layer.forward(changed)[0], train_y[0])


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_forward_is_deterministic_and_leaves_running_stats_alone(training):
    layer = built(BatchNorm, {"momentum": 0.5}, (2,))
    layer.training = training
    x = np.random.default_rng(2).normal(size=(3, 2))
    first = layer.forward(x)
    np.testing.assert_array_equal(layer.forward(x), first)
    np.testing.assert_array_equal(layer.buffers["running_mean"], np.zeros(2))
    np.testing.assert_array_equal(layer.buffers["running_var"], np.ones(2))


def test_batchnorm_update_running_stats_is_a_moving_average():
    layer = built(BatchNorm, {"momentum": 0.25}, (2, 1, 3))
    x = np.random.default_rng(3).normal(size=(4, 2, 1, 3))
    layer.update_running_stats(x)
    per_channel = x.transpose(1, 0, 2, 3).reshape(2, -1)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.25 * per_channel.mean(axis=1))
    np.testing.assert_allclose(layer.buffers["running_var"],
                               0.75 + 0.25 * per_channel.var(axis=1, ddof=1))


@pytest.mark.parametrize("shape", [(1, 4), (1, 3, 1, 1)])
def test_batchnorm_rejects_statistics_over_one_value(shape):
    layer = built(BatchNorm, {}, shape[1:])
    with pytest.raises(LayerError, match="single value") as info:
        layer.forward(np.ones(shape))
    assert "variance is 0" in str(info.value) and "batch of at least 2" in str(info.value)
    layer.training = False  # eval mode uses fixed statistics, so one sample is fine
    assert layer.forward(np.ones(shape)).shape == shape


def test_batchnorm_accepts_one_image_with_several_pixels():
    layer = built(BatchNorm, {}, (2, 2, 2))
    assert layer.forward(np.random.default_rng(4).normal(size=(1, 2, 2, 2))).shape == (1, 2, 2, 2)


@pytest.mark.parametrize("options, message", [
    ({"eps": 0.0}, "eps must be positive"),
    ({"eps": -1e-5}, "eps must be positive"),
    ({"eps": True}, "eps must be a finite number"),
    ({"eps": float("nan")}, "eps must be a finite number"),
    ({"eps": "1e-5"}, "1.0e-5"),
    ({"momentum": 1.5}, r"momentum must lie in \[0, 1\]"),
    ({"momentum": -0.1}, r"momentum must lie in \[0, 1\]"),
])
def test_batchnorm_rejects_bad_options(options, message):
    with pytest.raises(LayerError, match=message):
        BatchNorm(**options)


@pytest.mark.parametrize("shape", [(), (3, 4), (2, 3, 4, 5)])
def test_batchnorm_rejects_other_ranks(shape):
    with pytest.raises(LayerError, match="batchnorm expects per-sample shape") as info:
        BatchNorm().build(shape, np.random.default_rng(0))
    assert "layernorm" in info.value.hint


# ---- layernorm ----------------------------------------------------------------------------------

_LN_SHAPES = st.tuples(st.integers(2, 4)).flatmap(
    lambda head: st.lists(st.integers(1, 3), max_size=2).map(lambda tail: head + tuple(tail)))


@FEW
@given(input_shape=_LN_SHAPES, batch=st.integers(1, 3), eps=st.sampled_from([1e-5, 1e-2, 1.0]),
       seed=st.integers(0, 1000))
def test_layernorm_forward_matches_textbook(input_shape, batch, eps, seed):
    layer = built(LayerNorm, {"eps": eps}, input_shape, seed)
    x = np.random.default_rng(seed).normal(size=(batch, *input_shape))
    expected = textbook_layernorm(x, layer.params["gamma"], layer.params["beta"], eps)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-10, atol=1e-12)


@FEW
@given(input_shape=_LN_SHAPES, batch=st.integers(1, 3), eps=st.sampled_from([1e-5, 1e-2]),
       seed=st.integers(0, 1000))
def test_layernorm_gradients(input_shape, batch, eps, seed):
    layer = built(LayerNorm, {"eps": eps}, input_shape, seed)
    rng = np.random.default_rng(seed)
    assert_layer_gradients(layer, spread_per_sample(rng, (batch, *input_shape)), rng)


def test_layernorm_params_and_modes():
    layer = LayerNorm()
    assert layer.build((3, 2), np.random.default_rng(0)) == (3, 2)
    np.testing.assert_array_equal(layer.params["gamma"], np.ones((3, 2)))
    np.testing.assert_array_equal(layer.params["beta"], np.zeros((3, 2)))
    x = np.random.default_rng(5).normal(size=(3, 3, 2))
    train_y = layer.forward(x)
    layer.training = False
    np.testing.assert_array_equal(layer.forward(x), train_y)
    np.testing.assert_allclose(layer.forward(x[1:2]), train_y[1:2])


@pytest.mark.parametrize("shape", [(1,), (1, 1, 1), ()])
def test_layernorm_rejects_single_element_samples(shape):
    with pytest.raises(LayerError, match="variance is 0"):
        LayerNorm().build(shape, np.random.default_rng(0))


def test_layernorm_rejects_bad_eps():
    with pytest.raises(LayerError, match="eps must be positive"):
        LayerNorm(eps=0)


def textbook_token_layernorm(x, gamma, beta, eps):
    """(batch, T, F): every time step of every sample standardised over its F features."""
    y = np.empty_like(x)
    for n in range(x.shape[0]):
        for t in range(x.shape[1]):
            values = list(x[n, t])
            mu = sum(values) / len(values)
            sigma2 = sum((v - mu) ** 2 for v in values) / len(values)
            y[n, t] = gamma * (x[n, t] - mu) / np.sqrt(sigma2 + eps) + beta
    return y


_SEQUENCES = st.tuples(st.integers(1, 5), st.integers(2, 5))


@FEW
@given(input_shape=_SEQUENCES, batch=st.integers(1, 3), eps=st.sampled_from([1e-5, 1e-2, 1.0]),
       seed=st.integers(0, 1000))
def test_layernorm_over_the_last_axis_of_sequences_matches_textbook(input_shape, batch, eps,
                                                                     seed):
    layer = built(LayerNorm, {"eps": eps, "axes": "last"}, input_shape, seed)
    assert layer.params["gamma"].shape == layer.params["beta"].shape == (input_shape[1],)
    x = np.random.default_rng(seed).normal(size=(batch, *input_shape))
    expected = textbook_token_layernorm(x, layer.params["gamma"], layer.params["beta"], eps)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_layernorm_over_the_last_axis_gradients(seed):
    layer = built(LayerNorm, {"axes": "last"}, (4, 3), seed)
    rng = np.random.default_rng(seed)
    # Each time step's features spread out: its variance is bounded away from 0.
    x = np.stack([spread_per_sample(rng, (4, 3)) for _ in range(2)])
    assert_layer_gradients(layer, x, rng)


@pytest.mark.parametrize("seed", range(10))
def test_layernorm_over_all_axes_of_sequences_matches_textbook(seed):
    layer = built(LayerNorm, {}, (4, 3), seed)
    x = np.random.default_rng(seed).normal(size=(2, 4, 3))
    expected = textbook_layernorm(x, layer.params["gamma"], layer.params["beta"], 1e-5)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-10, atol=1e-12)
    last = built(LayerNorm, {"axes": "last"}, (4, 3), seed)
    assert not np.allclose(last.forward(x), textbook_layernorm(
        x, last.params["gamma"], last.params["beta"], 1e-5))


def test_layernorm_axes_option_errors():
    with pytest.raises(LayerError, match="axes must be 'all' or 'last', got 'first'"):
        LayerNorm(axes="first")
    with pytest.raises(LayerError, match=r"over 1 element\(s\).*axes last"):
        LayerNorm(axes="last").build((5, 1), np.random.default_rng(0))


# ---- lrn ----------------------------------------------------------------------------------------

_LRN_OPTIONS = st.fixed_dictionaries({
    "size": st.sampled_from([1, 3, 5, 7]),
    "alpha": st.floats(0.0, 1.0),
    "beta": st.floats(0.25, 1.5),
    "k": st.floats(0.5, 3.0),
})
_LRN_SHAPES = st.tuples(st.integers(1, 6), st.integers(1, 2), st.integers(1, 2))


@FEW
@given(options=_LRN_OPTIONS, input_shape=_LRN_SHAPES, batch=st.integers(1, 2),
       seed=st.integers(0, 1000))
def test_lrn_forward_matches_explicit_loops(options, input_shape, batch, seed):
    layer = built(LocalResponseNorm, options, input_shape)
    x = np.random.default_rng(seed).normal(size=(batch, *input_shape))
    np.testing.assert_allclose(layer.forward(x), textbook_lrn(x, **options), rtol=1e-12)


@FEW
@given(options=_LRN_OPTIONS, input_shape=_LRN_SHAPES, batch=st.integers(1, 2),
       seed=st.integers(0, 1000))
def test_lrn_gradients(options, input_shape, batch, seed):
    layer = built(LocalResponseNorm, options, input_shape)
    rng = np.random.default_rng(seed)
    assert_layer_gradients(layer, rng.normal(size=(batch, *input_shape)), rng)


def test_lrn_defaults_are_krizhevsky_and_alpha_is_not_divided_by_size():
    layer = LocalResponseNorm()
    assert (layer.size, layer.alpha, layer.beta, layer.k) == (5, 1e-4, 0.75, 2.0)
    layer = built(LocalResponseNorm, {"size": 5, "alpha": 1.0, "beta": 1.0, "k": 2.0}, (1, 1, 1))
    # One channel holding 2: 2 / (2 + 1 * 2**2) = 1/3; with alpha / size it would be 2 / 2.8.
    np.testing.assert_allclose(layer.forward(np.full((1, 1, 1, 1), 2.0)), 1.0 / 3.0)
    assert layer.params == {}


@pytest.mark.parametrize("options, message", [
    ({"size": 4}, "positive odd integer"),
    ({"size": 0}, "positive odd integer"),
    ({"size": True}, "positive odd integer"),
    ({"size": 5.0}, "positive odd integer"),
    ({"alpha": -1e-4}, "alpha must be non-negative"),
    ({"beta": 0}, "beta must be positive"),
    ({"k": 0.0}, "k must be positive"),
    ({"k": float("inf")}, "k must be a finite number"),
])
def test_lrn_rejects_bad_options(options, message):
    with pytest.raises(LayerError, match=message):
        LocalResponseNorm(**options)


@pytest.mark.parametrize("shape", [(4,), (4, 3), (1, 2, 3, 4)])
def test_lrn_rejects_non_image_input(shape):
    with pytest.raises(LayerError, match=r"\(channels, height, width\)"):
        LocalResponseNorm().build(shape, np.random.default_rng(0))


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4, 4)])
def test_batchnorm_forward_groups_equals_one_forward_per_group(shape):
    rng = np.random.default_rng(0)
    layer = BatchNorm()
    layer.build(shape[1:], rng)
    layer.params["gamma"] = rng.normal(size=layer.params["gamma"].shape)
    layer.params["beta"] = rng.normal(size=layer.params["beta"].shape)
    groups = [rng.normal(size=shape) for _ in range(3)]
    stacked = layer.forward_groups(np.concatenate(groups), shape[0])
    expected = np.concatenate([layer.forward(g) for g in groups])
    np.testing.assert_allclose(stacked, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batchnorm_forward_groups_in_blocks_keeps_dtype_and_matches_forward(monkeypatch, dtype):
    # 200-byte blocks hold one (2, 3, 2, 2) group in float64 and two in float32: many blocks and,
    # with 5 groups, a short last one in float32.
    monkeypatch.setattr("gradcheck.layers.norm.NORM_BLOCK_BYTES", 200)
    rng = np.random.default_rng(1)
    layer = BatchNorm()
    layer.build((3, 2, 2), rng)
    layer.params["gamma"] = rng.normal(size=3).astype(dtype)
    layer.params["beta"] = rng.normal(size=3).astype(dtype)
    groups = [(rng.normal(size=(2, 3, 2, 2)) * 3 + 2).astype(dtype) for _ in range(5)]
    stacked = layer.forward_groups(np.concatenate(groups), 2)
    assert stacked.dtype == dtype
    expected = np.concatenate([layer.forward(g) for g in groups])
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(stacked, expected, rtol=tolerance, atol=tolerance)


# (4, 2, 4, 5) has 20 positions per channel: the matrix-product path (MATMUL_POSITIONS).
@pytest.mark.parametrize("shape", [(3, 4), (4, 2, 3, 3), (4, 2, 4, 5)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batchnorm_forward_replaced_rows_equals_forward_on_each_copy(shape, training, dtype):
    rng = np.random.default_rng(2)
    layer = BatchNorm()
    layer.build(shape[1:], rng)
    layer.params["gamma"] = rng.normal(size=shape[1]).astype(dtype)
    layer.params["beta"] = rng.normal(size=shape[1]).astype(dtype)
    layer.buffers.update(running_mean=rng.normal(size=shape[1]),
                         running_var=rng.uniform(0.5, 2, shape[1]))
    layer.training = training
    x = (rng.normal(size=shape) * 2 + 1).astype(dtype)
    # Small changes, as the engine makes, and whole new rows, repeated rows included.
    rows = np.array([0, 0, shape[0] - 1, 1])
    new_rows = x[rows] + np.array([1e-6, -1e-6, 0.5, 3.0]).reshape(-1, *[1] * (len(shape) - 1))
    got = layer.forward_replaced_rows(x, rows, new_rows.astype(dtype))
    assert got.dtype == dtype and got.shape == (4, *shape)
    expected = []
    for row, new in zip(rows, new_rows.astype(dtype)):
        copy = x.copy()
        copy[row] = new
        expected.append(layer.forward(copy))
    tolerance = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(got, np.stack(expected), rtol=tolerance, atol=tolerance)
