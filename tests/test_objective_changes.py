"""The built-ins' ``objective_changes`` speed-up against its definition: for each copy, the
change of sum(G * forward(x)) with one element of the input or a parameter replaced, computed
by forward on the whole batch, one copy at a time; the magnitudes bound each change; the
branches say a kink exactly where forward's branch_state does."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import examples
from gradcheck.engine.base import states_differ
from gradcheck.layers import conv
from gradcheck.registry import layer_class

SPEEDY = settings(max_examples=examples(15), deadline=None)

# (type, options, per-sample shape) of every built-in that offers objective_changes.
CASES = [
    ("relu", {}, (3, 4)), ("leaky_relu", {"slope": 0.2}, (5,)), ("prelu", {}, (2, 3, 3)),
    ("elu", {"alpha": 0.7}, (6,)), ("sigmoid", {}, (2, 5)), ("tanh", {}, (7,)),
    ("flatten", {}, (2, 3, 2)), ("reshape", {"shape": [3, -1]}, (2, 6)),
    ("batchnorm", {}, (3, 2, 3)), ("batchnorm", {"eps": 0.01}, (4,)),
    ("maxpool2d", {}, (2, 4, 4)), ("maxpool2d", {"size": 3, "stride": 1, "padding": 1}, (2, 4, 5)),
    ("maxpool2d", {"size": 3, "stride": 2}, (1, 7, 6)),
    ("avgpool2d", {"size": 3, "stride": 2, "padding": 1}, (2, 5, 5)), ("avgpool2d", {}, (1, 4, 6)),
    ("dense", {"units": 4}, (5,)), ("dense", {"units": 3, "bias": False}, (4, 6)),
    ("conv2d", {"filters": 3, "kernel": 3, "padding": 1}, (2, 5, 5)),
    ("conv2d", {"filters": 2, "kernel": [2, 3], "stride": 2, "dilation": [2, 1], "padding": 2},
     (3, 7, 6)),
    # A stride on one axis only: conv2d skips the division and remainder on the other.
    ("conv2d", {"filters": 2, "kernel": 3, "stride": [1, 2], "padding": 1}, (2, 5, 6)),
    ("conv2d", {"filters": 2, "kernel": [3, 2], "stride": [2, 1]}, (2, 6, 5)),
]


def _layer(kind, options, shape, rng, training=True):
    layer = layer_class(kind)(**options)
    layer.build(shape, rng)
    for value in layer.params.values():
        value[...] = rng.normal(size=value.shape)
    if kind == "batchnorm":
        layer.buffers.update(running_mean=rng.normal(size=shape[0]),
                             running_var=rng.uniform(0.5, 2.0, size=shape[0]))
    layer.training = training
    return layer


def _by_forward(layer, x, g, name, flat_indices, values):
    """Per copy: the objective's change and (for stateful layers) the branch state."""
    clean = layer.forward(x).astype(np.float64)
    array = x if name == "input" else layer.params[name]
    changes, magnitudes, states = [], [], []
    for i, v in zip(flat_indices, values):
        saved = array.reshape(-1)[i]
        array.reshape(-1)[i] = v
        y = layer.forward(x).astype(np.float64)
        changes.append(float(np.sum(g * (y - clean))))
        magnitudes.append(float(np.sum(np.abs(g * y) * (y != clean))))
        states.append(np.array(layer.branch_state(), copy=True))
        array.reshape(-1)[i] = saved
    return np.array(changes), np.array(magnitudes), states


@SPEEDY
@pytest.mark.parametrize("kind, options, shape", CASES, ids=lambda c: str(c))
@given(seed=st.integers(0, 2**16), batch=st.integers(2, 4), training=st.booleans(),
       step=st.sampled_from([1e-6, 1e-3, 0.5]))
def test_objective_changes_equal_forwards_differences(kind, options, shape, seed, batch,
                                                      training, step):
    rng = np.random.default_rng(seed)
    layer = _layer(kind, options, shape, rng, training)
    x = rng.normal(size=(batch, *shape))
    g = rng.normal(size=layer.forward(x).shape)
    for name in ["input", *layer.params]:
        array = x if name == "input" else layer.params[name]
        at = rng.choice(array.size, size=min(array.size, 12), replace=False)
        # +h and -h pairs, as the engine asks, and a value far off (a new winner, a new sign).
        idx = np.repeat(at, 2)
        values = array.reshape(-1)[idx] + np.tile([step, -step], len(at))
        got = layer.objective_changes(x, g, name, idx, values)
        if got is None:
            assert name != "input", f"{kind} declines its input"
            continue
        changes, magnitudes, branches = got
        expected, sizes, states = _by_forward(layer, x, g, name, idx, values)
        # forward's own differences carry round-off of the terms they sum.
        round_off = 64 * np.finfo(np.float64).eps * np.sum(np.abs(g * layer.forward(x)))
        np.testing.assert_allclose(changes, expected, rtol=1e-7, atol=round_off)
        if kind == "batchnorm" and training:
            # The channel's clean sum(|G * y|): every output of it moves, each a little -- at
            # the engine's small steps. A value far off moves them a lot (batch 2 at step 0.5:
            # 2.8x), and the magnitude only sizes the round-off of a small step's change.
            if step <= 1e-3:
                assert np.all((magnitudes <= 2 * sizes + 1e-12)
                              & (sizes <= 2 * magnitudes + 1e-12))
        else:
            np.testing.assert_allclose(magnitudes, sizes, rtol=1e-7, atol=1e-9 * sizes.max())
        if layer.branch_state() is not None and name == "input":
            kinked = [states_differ(a, b) for a, b in zip(states[0::2], states[1::2])]
            assert list(branches[0::2] != branches[1::2]) == kinked


def test_magnitudes_count_only_what_changed():
    rng = np.random.default_rng(0)
    layer = _layer("relu", {}, (4,), rng)
    x = np.array([[1.0, -1.0, 2.0, -2.0]])
    g = np.ones_like(x)
    changes, magnitudes, branches = layer.objective_changes(
        x, g, "input", np.array([0, 1]), np.array([1.5, -1.5]))
    np.testing.assert_array_equal(changes, [0.5, 0.0])  # a negative input stays at 0
    np.testing.assert_array_equal(magnitudes, [1.5, 0.0])
    np.testing.assert_array_equal(branches, [1, 0])


@pytest.mark.parametrize("seed", range(10))
def test_conv2d_input_changes_in_blocks_are_those_of_one_block_to_the_bit(seed, monkeypatch):
    """conv2d computes input elements a block at a time (its (taps, elements, filters) arrays
    within COLUMN_BYTES): blocks of 1, 7 and 64 elements give what one block does, bit for bit,
    repeated and unordered elements included."""
    rng = np.random.default_rng(seed)
    layer = _layer("conv2d", {"filters": 3, "kernel": [3, 2], "stride": [1, 2], "padding": 1},
                   (2, 5, 6), rng)
    x = rng.normal(size=(3, 2, 5, 6))
    g = rng.normal(size=layer.forward(x).shape)
    idx = rng.choice(x.size, size=150)
    values = x.reshape(-1)[idx] + rng.normal(size=150)
    whole = layer.objective_changes(x, g, "input", idx, values)
    per_element = conv.BLOCK_ARRAYS * 8 * 3 * 3 * 2  # bytes of one element's arrays
    for elements in (1, 7, 64):
        monkeypatch.setattr(conv, "COLUMN_BYTES", elements * per_element)
        blocks = layer.objective_changes(x, g, "input", idx, values)
        for a, b in zip(whole[:2], blocks[:2]):
            np.testing.assert_array_equal(a, b)


def test_conv2d_input_changes_hold_about_column_bytes_whatever_the_elements(monkeypatch):
    """Every input element of a 16-filter 5x5 conv at once (4,704 elements: 25 taps x 16
    filters each, 15 MB per array if held whole): the blocks' arrays stay within COLUMN_BYTES,
    and forward's columns within it too."""
    monkeypatch.setattr(conv, "COLUMN_BYTES", 2**20)
    rng = np.random.default_rng(0)
    layer = _layer("conv2d", {"filters": 16, "kernel": 5}, (6, 14, 14), rng)
    x = rng.normal(size=(4, 6, 14, 14))
    g = rng.normal(size=layer.forward(x).shape)
    idx = np.arange(x.size)
    values = x.reshape(-1) + 1e-3
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        layer.objective_changes(x, g, "input", idx, values)
        held = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert held <= 2 * conv.COLUMN_BYTES, held / conv.COLUMN_BYTES
