"""The optional speed-up methods of the contract (``perturbed_outputs``, ``perturbed_input_rows``,
``forward_replaced_rows``): built-ins agree with ``forward`` exactly where the engine uses them.
The engine's side (a speed-up that disagrees is dropped) is in test_integrity.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import examples
from gradcheck.registry import layer_class


def _expected(layer, x, name, indices, values):
    flat = layer.params[name].reshape(-1)
    outputs = []
    for i, v in zip(indices, values):
        saved = flat[i]
        flat[i] = v
        outputs.append(layer.forward(x))
        flat[i] = saved
    return np.stack(outputs)


CASES = [
    ("dense", {"units": 3}, (4,)),
    ("dense", {"units": 2, "bias": False}, (5,)),
    ("dense", {"units": 3}, (4, 5)),  # a sequence: the same weights at each of 4 time steps
    ("dense", {"units": 2, "bias": False}, (1, 3)),
    ("conv2d", {"filters": 2, "kernel": 3, "padding": 1}, (2, 5, 5)),
    ("conv2d", {"filters": 3, "kernel": [2, 3], "stride": 2, "dilation": [1, 2]}, (2, 7, 8)),
]


@pytest.mark.parametrize("kind, options, shape", CASES)
@settings(max_examples=examples(10))
@given(seed=st.integers(0, 2**16))
def test_builtin_perturbed_outputs_equal_forward(kind, options, shape, seed):
    rng = np.random.default_rng(seed)
    layer = layer_class(kind)(**options)
    layer.build(shape, rng)
    x = rng.normal(size=(3, *shape))
    for name, param in layer.params.items():
        indices = rng.integers(0, param.size, 6)
        values = param.reshape(-1)[indices] + rng.normal(size=6)
        before = param.copy()
        got = layer.perturbed_outputs(x, name, indices, values)
        np.testing.assert_allclose(got, _expected(layer, x, name, indices, values),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(param, before)


def _expected_rows(layer, x, indices, values):
    per = x.size // x.shape[0]
    outputs = []
    for i, v in zip(indices, values):
        changed = x.copy()
        changed.reshape(-1)[i] = v
        outputs.append(layer.forward(changed)[i // per])
    return np.stack(outputs)


INPUT_ROW_CASES = [case for case in CASES if hasattr(layer_class(case[0]), "perturbed_input_rows")]


def test_dense_and_conv_offer_perturbed_input_rows():
    assert {case[0] for case in INPUT_ROW_CASES} == {"dense", "conv2d"}


@pytest.mark.parametrize("kind, options, shape", INPUT_ROW_CASES)
@settings(max_examples=examples(10))
@given(seed=st.integers(0, 2**16))
def test_builtin_perturbed_input_rows_equal_forward(kind, options, shape, seed):
    rng = np.random.default_rng(seed)
    layer = layer_class(kind)(**options)
    layer.build(shape, rng)
    x = rng.normal(size=(3, *shape))
    before = x.copy()
    # Every element of a row at once, and repeats: the engine sends +h and -h of one element.
    indices = np.concatenate([np.arange(x[0].size), rng.integers(0, x.size, 6).repeat(2)])
    values = x.reshape(-1)[indices] + rng.normal(size=len(indices))
    got = layer.perturbed_input_rows(x, indices, values)
    np.testing.assert_allclose(got, _expected_rows(layer, x, indices, values),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(x, before)
