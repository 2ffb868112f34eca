"""gradcheck diagnose on sequence models: gradients that vanish or explode through time, attention
collapsed at initialisation (read through the optional contract method, from built-ins and
plugins alike) and embedding rows whose ids the data never use. Each rule meets cases that must
fire and cases that must not, at seeds 0-9."""

from __future__ import annotations

import re
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import CONFIGS, TEST_PLUGINS, examples

from gradcheck.diagnose import diagnose_network
from gradcheck.diagnose import thresholds as T
from gradcheck.diagnose.sequence import head_entropy
from gradcheck.errors import LayerError

PLUGIN = str(TEST_PLUGINS / "diagnose_layers.py")
SEEDS = range(10)


def net(layers, seed, shape=(12, 3), **top):
    return {"plugins": [PLUGIN], "seed": seed, "input": {"shape": list(shape), "batch": 8},
            "layers": layers, "loss": "mse", **top}


def recurrent(kind, seed, steps=12, **options):
    return net([{"type": kind, "name": "rnn", "units": 8, **options},
                {"type": "dense", "name": "head", "units": 2}], seed, shape=(steps, 3))


def attention(kind, seed, **options):
    return net([{"type": kind, "name": "att", **options},
                {"type": "dense", "name": "head", "units": 2}], seed, shape=(8, 16))


def found(doc, id_):
    return [f for f in diagnose_network(doc, probe=False).findings if f.id == id_]


@pytest.mark.parametrize("seed", SEEDS)
def test_a_recurrence_drawn_too_small_vanishes_through_time(seed):
    (vanish,) = found(recurrent("diag_faint_rnn", seed), "vanishing-through-time")
    assert vanish.layer == "rnn" and vanish.severity == "warn"
    assert vanish.value < T.TIME_VANISH_STEP / 5 and vanish.spread.count == 3
    assert "the first of 12 time steps" in vanish.cause and "orthogonal" in vanish.fix


@pytest.mark.parametrize("seed", SEEDS)
def test_a_recurrence_with_singular_values_of_two_explodes_through_time(seed):
    (explode,) = found(recurrent("diag_amplifying_rnn", seed, steps=10), "exploding-through-time")
    assert explode.layer == "rnn" and explode.value > T.TIME_EXPLODE
    assert "clip the gradient norm" in explode.fix


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_built_in_recurrent_layers_carry_gradients_through_time(kind, seed):
    doc = recurrent(kind, seed)
    assert found(doc, "vanishing-through-time") == found(doc, "exploding-through-time") == []


def test_layers_that_work_step_by_step_are_not_measured_through_time():
    # A dense on (T, F) and a step-by-step tanh: nothing reaches the first step from the last.
    doc = net([{"type": "dense", "units": 4}, "tanh", {"type": "dense", "units": 2}], 0)
    from gradcheck.diagnose.measure import recording

    with recording() as record:
        diagnose_network(doc, probe=False)
    assert "TIME_VANISH_STEP" not in record and "TIME_EXPLODE" not in record


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind, options", [("diag_dot_attention", {"sharpness": 30.0}),
                                           ("diag_unit_init_attention", {"heads": 2})])
def test_collapsed_attention_is_found_in_plugins_and_built_in_subclasses(kind, options, seed):
    (collapse,) = found(attention(kind, seed, **options), "attention-collapse")
    assert collapse.layer == "att" and collapse.value < T.ATTENTION_ENTROPY
    assert "at initialisation" in collapse.cause and "sqrt(head size)" in collapse.fix


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind, options", [("diag_dot_attention", {"sharpness": 0.25}),
                                           ("attention", {"heads": 2}),
                                           ("attention", {"heads": 4, "causal": True})])
def test_attention_spread_over_its_keys_is_not_collapsed(kind, options, seed):
    assert found(attention(kind, seed, **options), "attention-collapse") == []


def test_the_transformer_block_reports_its_padding_mask_per_head():
    from gradcheck.build import build_network
    from gradcheck.config import load_config

    network, batch = build_network(load_config(CONFIGS / "transformer_block.yaml"))
    network.run(batch)
    layer = next(layer for layer in network.layers if layer.name == "attention")
    weights, allowed = layer.attention_weights()
    assert weights.shape == (3, 2, 8, 8)
    seen = np.broadcast_to(allowed, weights.shape)
    assert np.array_equal(seen[:, 0, 0], batch.x != 0)  # id 0 pads: hidden from every query
    assert np.all(weights[~seen] == 0)


@settings(max_examples=examples(25))
@given(st.integers(1, 3), st.integers(1, 3), st.integers(2, 7), st.integers(2, 9),
       st.integers(0, 2 ** 31 - 1))
def test_head_entropy_is_one_when_spread_evenly_and_zero_on_one_key(batch, heads, queries, keys,
                                                                   seed):
    rng = np.random.default_rng(seed)
    allowed = rng.random((batch, heads, queries, keys)) < 0.7
    allowed[..., 0] = allowed[..., 1] = True  # every query sees two keys or more
    even = allowed / allowed.sum(axis=-1, keepdims=True)
    assert np.allclose(head_entropy(even, allowed), 1.0)
    one = np.zeros(even.shape)
    one[..., 0] = 1.0
    assert np.allclose(head_entropy(one, allowed), 0.0)
    # Against an explicit formula, per head: mean over queries of H / ln(keys seen).
    weights = np.where(allowed, rng.random(even.shape) + 0.01, 0.0)
    weights /= weights.sum(axis=-1, keepdims=True)
    expected = np.zeros(heads)
    for h in range(heads):
        shares = []
        for b in range(batch):
            for q in range(queries):
                p = weights[b, h, q][allowed[b, h, q]]
                shares.append(-np.sum(p * np.log(p)) / np.log(len(p)))
        expected[h] = np.mean(shares)
    assert np.allclose(head_entropy(weights, allowed), expected)


@pytest.mark.parametrize("value, problem", [
    (np.ones((8, 4, 4)), "expected an array (batch=8, heads, queries, keys)"),
    ((np.ones((8, 1, 4, 4)) / 4, np.ones((3, 3), bool)), "does not broadcast"),
    (-np.ones((8, 1, 4, 4)), "negative or not finite")])
def test_attention_weights_that_break_the_contract_are_refused(value, problem):
    from gradcheck.diagnose.sequence import _attention

    with pytest.raises(LayerError, match=re.escape(problem)) as info:
        _attention(types.SimpleNamespace(name="att"), value, 8)
    assert "layer 'att'" in info.value.message


def _ids_net(tmp_path, ids, vocab=12, seed=0, **extra):
    np.save(tmp_path / "ids.npy", ids)
    return {"seed": seed, "input": {"file": str(tmp_path / "ids.npy"), "dtype": "int",
                                    "vocab": vocab},
            "layers": [{"type": "embedding", "name": "embed", "vocab": vocab, "dim": 4},
                       {"type": "dense", "name": "logits", "units": vocab, **extra}],
            "loss": "sequence_cross_entropy", "target": {"dtype": "int", "vocab": vocab}}


@pytest.mark.parametrize("seed", SEEDS)
def test_ids_the_data_never_use_leave_their_embedding_rows_untrained(tmp_path, seed):
    rng = np.random.default_rng(seed)
    used = np.setdiff1d(np.arange(12), [3, 7, 11])
    ids = rng.choice(used, size=(6, 10))
    ids[0, :used.size] = used  # every other id occurs
    (unused,) = found(_ids_net(tmp_path, ids, seed=seed), "unused-ids")
    assert unused.severity == "warn" and unused.layer == "embed" and unused.value == 3
    assert "(3, 7, 11)" in unused.cause and "embed.W" in unused.cause
    assert unused.spread is None  # the data decide it, not the seed
    full = np.concatenate([np.arange(12)[None].repeat(6, axis=0)[:, :10],
                           np.arange(12)[None, 2:].repeat(6, axis=0)], axis=1)
    assert found(_ids_net(tmp_path, full, seed=seed), "unused-ids") == []


def test_a_tied_output_layer_trains_every_row(tmp_path):
    # The logits layer shares the table (transposed): every row gets a gradient through it.
    ids = np.tile(np.arange(9), (4, 2))
    doc = _ids_net(tmp_path, ids, share={"W": "embed.W.T"})
    doc["layers"].insert(1, {"type": "dense", "name": "hidden", "units": 4})
    assert found(doc, "unused-ids") == []
    del doc["layers"][2]["share"]
    assert found(doc, "unused-ids")[0].value == 3


def test_drawn_ids_that_leave_some_out_say_so_as_info():
    (unused,) = found(net([{"type": "embedding", "name": "embed", "vocab": 50, "dim": 4},
                           {"type": "dense", "units": 2}], 0, shape=(5,),
                          input={"shape": [5], "batch": 2, "dtype": "int", "vocab": 50}),
                      "unused-ids")
    assert unused.severity == "info" and "ids drawn for the input" in unused.cause
    assert "input: {file: ids.npy}" in unused.fix


def test_without_a_vocab_the_table_says_how_many_ids_there_are(tmp_path):
    # Ids 0-7 from a file that does not say its vocabulary, into an embedding of 12 rows.
    doc = _ids_net(tmp_path, np.tile(np.arange(8), (4, 2)))
    del doc["input"]["vocab"]
    (unused,) = found(doc, "unused-ids")
    assert unused.value == 4 and "(8, 9, 10, 11)" in unused.cause
    assert "of the 12 ids" in unused.cause
