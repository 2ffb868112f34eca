"""Self-attention against the textbook formula written out per head with loops, with and without
the causal and padding masks (a fully masked query row included), and against central finite
differences; an attention whose backward forgets 1/sqrt(d) is caught."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import CONFIGS, examples
from fd import assert_layer_gradients
from gradcheck.errors import LayerError
from gradcheck.plugins import load_plugin
from gradcheck.registry import layer_class

PAD = 0


def reference_attention(params, x, heads, causal=False, ids=None):
    """For each sample, head and query: the visible keys, their scaled dot products, a softmax
    over them (no key visible: no weights, a zero head output), then the output projection."""
    batch, steps, features = x.shape
    size = features // heads
    q, k, v = (x @ params[f"W{n}"] + params[f"b{n}"] for n in "qkv")
    y = np.zeros_like(x)
    for n in range(batch):
        for t in range(steps):
            heads_out = []
            for h in range(heads):
                cols = range(h * size, (h + 1) * size)
                visible = [s for s in range(steps) if (not causal or s <= t)
                           and (ids is None or ids[n, s] != PAD)]
                scores = [sum(q[n, t, j] * k[n, s, j] for j in cols) / math.sqrt(size)
                          for s in visible]
                top = max(scores, default=0.0)
                exps = [math.exp(score - top) for score in scores]
                weights = [e / sum(exps) for e in exps]
                heads_out += [sum(w * v[n, s, j] for w, s in zip(weights, visible)) for j in cols]
            y[n, t] = np.array(heads_out) @ params["Wo"] + params["bo"]
    return y


class WithIds:
    """An attention layer with its token ids fixed, so that the finite-difference helper sees a
    layer of one float input; backward checks the ids' slot is None."""

    def __init__(self, layer, ids):
        self.layer, self.ids, self.params = layer, ids, layer.params

    @property
    def grads(self):
        return self.layer.grads

    def forward(self, x):
        return self.layer.forward(x, self.ids)

    def backward(self, grad_out):
        grad_x, grad_ids = self.layer.backward(grad_out)
        assert grad_ids is None
        return grad_x


def built(options, steps, features, seed, with_ids=False):
    """A layer with generic parameters (nonzero biases), its input, and ids when asked: every
    sample keeps its first token and pads some others; sample 1 pads everything but the last, so
    with ``causal`` its queries before the last see no key at all."""
    rng = np.random.default_rng(seed)
    layer = layer_class("attention")(**options)
    layer.build([(steps, features), (steps,)] if with_ids else (steps, features), rng)
    for value in layer.params.values():
        value += rng.normal(0.0, 0.2, value.shape)
    x = rng.normal(size=(3, steps, features))
    ids = None
    if with_ids:
        ids = rng.integers(1, 5, (3, steps))
        ids[0, 1::2] = PAD
        ids[1, :-1] = PAD
        ids[2, -1] = PAD
    return layer, x, ids


MASKS = [(causal, with_ids) for causal in (False, True) for with_ids in (False, True)]


@pytest.mark.parametrize("causal, with_ids", MASKS)
@pytest.mark.parametrize("heads, size", [(1, 3), (2, 2), (3, 1)])
@pytest.mark.parametrize("seed", range(10))
def test_forward_matches_the_textbook_formula(causal, with_ids, heads, size, seed):
    options = {"heads": heads, "causal": causal, "pad_id": PAD if with_ids else None}
    layer, x, ids = built(options, 5, heads * size, seed, with_ids)
    y = layer.forward(x, ids) if with_ids else layer.forward(x)
    np.testing.assert_allclose(y, reference_attention(layer.params, x, heads, causal, ids),
                               rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("causal, with_ids", MASKS)
@pytest.mark.parametrize("seed", range(10))
def test_gradients_match_finite_differences_with_every_mask(causal, with_ids, seed):
    options = {"heads": 2, "causal": causal, "pad_id": PAD if with_ids else None}
    layer, x, ids = built(options, 4, 4, seed, with_ids)
    subject = WithIds(layer, ids) if with_ids else layer
    assert_layer_gradients(subject, x, np.random.default_rng(seed))


@settings(max_examples=examples(15))
@given(heads=st.integers(1, 3), size=st.integers(1, 3), steps=st.integers(1, 5),
       batch=st.integers(1, 3), causal=st.booleans(), seed=st.integers(0, 2**16))
def test_gradients_match_finite_differences_over_shapes(heads, size, steps, batch, causal, seed):
    rng = np.random.default_rng(seed)
    layer = layer_class("attention")(heads=heads, causal=causal)
    layer.build((steps, heads * size), rng)
    for value in layer.params.values():
        value += rng.normal(0.0, 0.2, value.shape)
    assert_layer_gradients(layer, rng.normal(size=(batch, steps, heads * size)), rng)


def test_a_query_that_sees_no_key_outputs_bo_and_stays_finite():
    layer, x, ids = built({"heads": 2, "pad_id": PAD}, 4, 4, 0, with_ids=True)
    ids[1] = PAD  # every key of sample 1 is padding
    y = layer.forward(x, ids)
    np.testing.assert_array_equal(y[1], np.broadcast_to(layer.params["bo"], y[1].shape))
    grad_out = np.random.default_rng(1).normal(size=y.shape)
    grad_x, grad_ids = layer.backward(grad_out)
    assert grad_ids is None and np.isfinite(grad_x).all()
    assert all(np.isfinite(g).all() for g in layer.grads.values())
    np.testing.assert_array_equal(grad_x[1], 0.0)  # nothing of sample 1 reaches its output
    assert_layer_gradients(WithIds(layer, ids), x, np.random.default_rng(2))


def test_causal_outputs_ignore_later_tokens_and_padding_ignores_padded_tokens():
    layer, x, _ = built({"heads": 2, "causal": True}, 5, 4, 3)
    later = x.copy()
    later[:, 3:] += 1.0
    np.testing.assert_array_equal(layer.forward(later)[:, :3], layer.forward(x)[:, :3])
    layer, x, ids = built({"heads": 2, "pad_id": PAD}, 5, 4, 3, with_ids=True)
    padded = x.copy()
    padded[ids == PAD] += 1.0
    changed = np.abs(layer.forward(padded, ids) - layer.forward(x, ids)).max(axis=2) > 0
    # Nobody reads a padded token as a key, but it still queries: its own row changes (unless,
    # as in sample 1, it sees a single key, whose weight is 1 whatever the query).
    assert not changed[ids != PAD].any()
    np.testing.assert_array_equal(changed[[0, 2]], ids[[0, 2]] == PAD)


# ---- the liar: backward without 1/sqrt(d) --------------------------------------------------------

def _broken(name: str):
    load_plugin("broken/sequence_layers.py", CONFIGS)
    return layer_class(name)


@pytest.mark.parametrize("seed", range(10))
def test_attention_unscaled_in_backward_is_caught_and_its_twin_passes(seed):
    x = np.random.default_rng(seed).normal(size=(2, 4, 6))
    for name, wrong in (("scratch_attention", False), ("attention_unscaled_backward", True)):
        layer = _broken(name)(heads=2)  # d = 3
        layer.build((4, 6), np.random.default_rng(seed))
        if wrong:
            with pytest.raises(AssertionError, match="dL/dx"):
                assert_layer_gradients(layer, x, np.random.default_rng(seed))
        else:
            assert_layer_gradients(layer, x, np.random.default_rng(seed))


def test_attention_unscaled_in_backward_is_invisible_at_head_size_one():
    """1/sqrt(1) = 1: with d = 1 the liar computes the right numbers, so tests need d >= 2."""
    layer = _broken("attention_unscaled_backward")(heads=3)
    layer.build((4, 3), np.random.default_rng(0))
    assert_layer_gradients(layer, np.random.default_rng(1).normal(size=(2, 4, 3)),
                           np.random.default_rng(2))


# ---- shapes, inputs and errors -------------------------------------------------------------------

def test_parameters_initialisation_and_shapes():
    layer = layer_class("attention")(heads=2)
    assert layer.build((5, 8), np.random.default_rng(0)) == (5, 8)
    assert {k: v.shape for k, v in layer.params.items()} == {
        **{f"W{n}": (8, 8) for n in "qkvo"}, **{f"b{n}": (8,) for n in "qkvo"}}
    for n in "qkvo":
        np.testing.assert_array_equal(layer.params[f"b{n}"], 0.0)
    weights = np.concatenate([layer.params[f"W{n}"].ravel() for n in "qkvo"])
    assert 0.7 < weights.std() * np.sqrt(8) < 1.3  # LeCun: std 1/sqrt(F)


def test_heads_must_divide_the_features():
    with pytest.raises(LayerError, match="the 10 features of input 1 do not split into 4 heads"):
        layer_class("attention")(heads=4).build((3, 10), np.random.default_rng(0))


def test_input_errors_name_the_inputs():
    rng = np.random.default_rng(0)
    layer = layer_class("attention")(heads=1, pad_id=0)
    layer.input_names = ["embedded", "tokens"]
    with pytest.raises(LayerError, match=r"ids 'tokens' have per-sample shape \(4,\).*'embedded'"):
        layer.build([(3, 2), (4,)], rng)
    with pytest.raises(LayerError, match="has pad_id 0 and 1 input") as info:
        layer.build((3, 2), rng)
    assert "second input" in info.value.hint
    with pytest.raises(LayerError, match="has pad_id None and 2 input"):
        layer_class("attention")(heads=1).build([(3, 2), (3,)], rng)


def test_forward_needs_ids_exactly_when_pad_id_is_set():
    layer, x, ids = built({"heads": 1, "pad_id": PAD}, 3, 2, 0, with_ids=True)
    with pytest.raises(LayerError, match="called without the token ids"):
        layer.forward(x)
    plain, x, _ = built({"heads": 1}, 3, 2, 0)
    with pytest.raises(LayerError, match="got token ids but has no pad_id"):
        plain.forward(x, ids)
    assert isinstance(plain.backward(np.ones_like(plain.forward(x))), np.ndarray)


@pytest.mark.parametrize("options, message", [
    ({"heads": 0}, "heads must be a positive integer"),
    ({"heads": 2, "causal": "yes"}, "causal must be true or false"),
    ({"heads": 2, "pad_id": 1.5}, "pad_id must be an integer token id"),
    ({"heads": 2, "pad_id": True}, "pad_id must be an integer token id"),
])
def test_bad_options_are_layer_errors(options, message):
    with pytest.raises(LayerError, match=message):
        layer_class("attention")(**options)
