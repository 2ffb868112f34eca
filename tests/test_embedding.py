"""embedding and positional_encoding against loop references and finite differences. Token ids
repeat on purpose: a backward that drops repeated ids is caught only then."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import examples
from fd import assert_layer_gradients
from gradcheck.errors import LayerError
from gradcheck.layers.embedding import Embedding
from gradcheck.registry import layer_class


def reference_lookup(table, ids):
    out = np.empty((*ids.shape, table.shape[1]))
    for position in itertools.product(*map(range, ids.shape)):
        out[position] = table[ids[position]]
    return out


def reference_table_grad(table, ids, grad_out):
    """Every position adds its gradient to the row of its id, one position at a time."""
    grad = np.zeros_like(table)
    for position in itertools.product(*map(range, ids.shape)):
        grad[ids[position]] += grad_out[position]
    return grad


def built(vocab, dim, seed=0):
    layer = layer_class("embedding")(vocab=vocab, dim=dim)
    layer.build((), np.random.default_rng(seed))
    return layer


@pytest.mark.parametrize("sample_shape", [(), (6,), (2, 3)])
@pytest.mark.parametrize("seed", range(10))
def test_lookup_and_accumulated_gradient_match_loops(sample_shape, seed):
    rng = np.random.default_rng(seed)
    layer = layer_class("embedding")(vocab=4, dim=3)
    assert layer.build(sample_shape, rng) == (*sample_shape, 3)
    ids = rng.integers(0, 4, (3, *sample_shape))
    ids.reshape(-1)[:3] = 2  # the same id three times, whatever the draw
    y = layer.forward(ids)
    np.testing.assert_array_equal(y, reference_lookup(layer.params["W"], ids))
    grad_out = rng.normal(size=y.shape)
    assert layer.backward(grad_out) is None  # ids have no gradient
    np.testing.assert_allclose(layer.grads["W"],
                               reference_table_grad(layer.params["W"], ids, grad_out),
                               rtol=1e-12, atol=1e-14)


@settings(max_examples=examples(20))
@given(vocab=st.integers(1, 5), dim=st.integers(1, 3), steps=st.integers(2, 6),
       batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_table_gradient_matches_finite_differences(vocab, dim, steps, batch, seed):
    rng = np.random.default_rng(seed)
    layer = layer_class("embedding")(vocab=vocab, dim=dim)
    layer.build((steps,), rng)
    ids = rng.integers(0, vocab, (batch, steps))
    ids[:, 1] = ids[:, 0]  # a repeat in every sample
    assert_layer_gradients(layer, ids, rng)


class EmbeddingFancyAssign(Embedding):
    """The classic wrong backward: fancy-index += keeps one gradient per distinct id."""

    def backward(self, grad_out):
        grad_w = np.zeros_like(self.params["W"])
        grad_w[self.ids.reshape(-1)] += grad_out.reshape(-1, self.dim)  # BUG: np.add.at
        self.grads["W"] = grad_w


@pytest.mark.parametrize("seed", range(10))
def test_fancy_index_assignment_liar_is_caught_on_repeated_ids(seed):
    rng = np.random.default_rng(seed)
    liar = EmbeddingFancyAssign(vocab=5, dim=2)
    liar.build((4,), rng)
    repeated = np.array([[1, 3, 1, 1], [0, 4, 4, 2]])
    with pytest.raises(AssertionError, match="dL/dW"):
        assert_layer_gradients(liar, repeated, rng)
    # With distinct ids the liar is right: why the ids of every check repeat on purpose.
    assert_layer_gradients(liar, np.array([[1, 3, 0, 2]]), rng)


def test_perturbed_outputs_change_only_positions_holding_that_id():
    layer = built(vocab=3, dim=2)
    ids = np.array([[2, 0, 2], [1, 2, 2]])
    out = layer.perturbed_outputs(ids, "W", np.array([2 * 2 + 1]), np.array([7.0]))
    expected = layer.forward(ids).copy()
    expected[ids == 2, 1] = 7.0
    np.testing.assert_array_equal(out[0], expected)


@pytest.mark.parametrize("bad, value", [(5, "5"), (-1, "-1")])
def test_an_id_outside_the_vocabulary_names_the_id_and_the_layer(bad, value):
    layer = built(vocab=5, dim=2)
    layer.name = "tokens"
    ids = np.array([[0, 1], [bad, 2]])
    with pytest.raises(LayerError, match=rf"layer 'tokens' \(embedding\): token id {value} at "
                                         rf"index \(1, 0\) .* outside \[0, 5\)") as info:
        layer.forward(ids)
    assert "vocab" in info.value.hint
    with pytest.raises(LayerError, match=f"token id {value}"):
        layer.perturbed_outputs(ids, "W", np.array([0]), np.array([1.0]))


def test_ids_may_be_whole_floats_but_not_fractions_or_text():
    layer = built(vocab=4, dim=2)
    np.testing.assert_array_equal(layer.forward(np.array([[1.0, 3.0]])),
                                  layer.forward(np.array([[1, 3]])))
    with pytest.raises(LayerError, match="token id 1.5 .* is not a whole number"):
        layer.forward(np.array([[1.5, 3.0]]))
    with pytest.raises(LayerError, match="token ids must be integers, found dtype <U1"):
        layer.forward(np.array([["a"]]))


def test_float32_table_gives_float32_outputs_and_gradients():
    layer = built(vocab=4, dim=2)
    layer.params["W"] = layer.params["W"].astype(np.float32)
    y = layer.forward(np.array([[1, 1, 3]]))
    assert y.dtype == np.float32
    layer.backward(np.ones_like(y))
    assert layer.grads["W"].dtype == np.float32


@pytest.mark.parametrize("options, message", [
    ({"vocab": 0, "dim": 2}, "vocab must be a positive integer"),
    ({"vocab": 3, "dim": 2.0}, "dim must be a positive integer"),
    ({"vocab": True, "dim": 2}, "vocab must be a positive integer"),
])
def test_bad_options_are_layer_errors(options, message):
    with pytest.raises(LayerError, match=f"embedding: {message}"):
        layer_class("embedding")(**options)


# ---- positional_encoding -------------------------------------------------------------------------

def reference_positions(steps, features):
    table = np.empty((steps, features))
    for t in range(steps):
        for column in range(features):
            i = column // 2
            angle = t / 10000 ** (2 * i / features)
            table[t, column] = math.sin(angle) if column % 2 == 0 else math.cos(angle)
    return table


@pytest.mark.parametrize("steps, features", [(1, 1), (4, 5), (7, 6), (3, 9)])
def test_positional_encoding_adds_the_sinusoid_table(steps, features):
    layer = layer_class("positional_encoding")()
    assert layer.build((steps, features), np.random.default_rng(0)) == (steps, features)
    assert layer.params == {}
    x = np.random.default_rng(1).normal(size=(2, steps, features))
    np.testing.assert_allclose(layer.forward(x) - x, np.broadcast_to(
        reference_positions(steps, features), x.shape), rtol=1e-12, atol=1e-15)
    grad_out = np.random.default_rng(2).normal(size=x.shape)
    np.testing.assert_array_equal(layer.backward(grad_out), grad_out)
    assert_layer_gradients(layer, x, np.random.default_rng(3))


def test_positional_encoding_first_rows_and_float32():
    layer = layer_class("positional_encoding")()
    layer.build((2, 4), np.random.default_rng(0))
    y = layer.forward(np.zeros((1, 2, 4), dtype=np.float32))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[0, 0], [0, 1, 0, 1])
    np.testing.assert_allclose(y[0, 1], [math.sin(1), math.cos(1), math.sin(0.01),
                                         math.cos(0.01)], rtol=1e-6)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_positional_encoding_needs_a_sequence(shape):
    with pytest.raises(LayerError, match="positional_encoding expects a per-sample") as info:
        layer_class("positional_encoding")().build(shape, np.random.default_rng(0))
    assert "embedding" in info.value.hint
