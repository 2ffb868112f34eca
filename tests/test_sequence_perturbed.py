"""perturbed_outputs of the sequence layers equals forward with the element changed: for every
element of every parameter at +h and -h on small layers, and for random elements of larger ones.
The engine trusts these copies for every finite difference after confirming only the first."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck.registry import layer_class

PAD = 0


def _layer(kind, options, input_shape, seed):
    """A built layer with generic parameters, its float input and, with pad_id, its ids."""
    rng = np.random.default_rng(seed)
    layer = layer_class(kind)(**options)
    ids = None
    if kind == "embedding":
        layer.build(input_shape, rng)
        x = rng.integers(0, options["vocab"], (3, *input_shape))
        x.reshape(-1)[1] = x.reshape(-1)[0]
        return layer, x, ids
    if options.get("pad_id") is not None:
        layer.build([input_shape, input_shape[:1]], rng)
        ids = rng.integers(0, 3, (3, input_shape[0]))
        ids[1] = PAD  # a sample whose queries see no key
    else:
        layer.build(input_shape, rng)
    for value in layer.params.values():
        value += rng.normal(0.0, 0.3, value.shape)
    return layer, rng.normal(size=(3, *input_shape)), ids


def _forward(layer, x, ids):
    return layer.forward(x) if ids is None else layer.forward(x, ids)


def _perturbed(layer, x, ids, name, indices, values):
    if ids is None:
        return layer.perturbed_outputs(x, name, indices, values)
    return layer.perturbed_outputs(x, name, indices, values, ids=ids)


def _expected(layer, x, ids, name, indices, values):
    flat = layer.params[name].reshape(-1)
    outputs = []
    for i, v in zip(indices, values):
        saved = flat[i]
        flat[i] = v
        outputs.append(_forward(layer, x, ids))
        flat[i] = saved
    return np.stack(outputs)


def _assert_copies_equal_forward(layer, x, ids, name, indices, steps):
    """+h and -h of each index, interleaved as the engine sends them, for each step size."""
    param = layer.params[name]
    before, x_before = param.copy(), x.copy()
    for step in steps:
        pairs = np.repeat(indices, 2)
        values = param.reshape(-1)[pairs] + np.tile([step, -step], len(indices))
        got = _perturbed(layer, x, ids, name, pairs, values)
        expected = _expected(layer, x, ids, name, pairs, values)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12,
                                   err_msg=f"{name} at step {step}")
    np.testing.assert_array_equal(param, before, err_msg="perturbed_outputs changed a parameter")
    np.testing.assert_array_equal(x, x_before, err_msg="perturbed_outputs changed its input")


RECURRENT = [(kind, {"units": 3, "return_sequences": seq, "learn_initial_state": learn})
             for kind in ("rnn", "lstm", "gru") for seq in (True, False) for learn in (True, False)]
SMALL = ([(kind, options, (4, 2)) for kind, options in RECURRENT]
         + [("attention", {"heads": 2, "causal": causal, "pad_id": pad}, (4, 4))
            for causal in (False, True) for pad in (None, PAD)]
         + [("embedding", {"vocab": 4, "dim": 3}, (5,)), ("embedding", {"vocab": 3, "dim": 2}, ())])


@pytest.mark.parametrize("kind, options, input_shape", SMALL)
def test_every_element_of_every_parameter_at_plus_and_minus_h(kind, options, input_shape):
    layer, x, ids = _layer(kind, options, input_shape, seed=0)
    for name, param in layer.params.items():
        _assert_copies_equal_forward(layer, x, ids, name, np.arange(param.size),
                                     steps=(1e-6, 1e-2))


LARGE = [("rnn", {"units": 12}, (10, 6)), ("lstm", {"units": 10, "learn_initial_state": True},
                                           (9, 7)),
         ("gru", {"units": 11, "return_sequences": False}, (12, 5)),
         ("attention", {"heads": 3, "causal": True, "pad_id": PAD}, (8, 12)),
         ("attention", {"heads": 4}, (7, 8)), ("embedding", {"vocab": 30, "dim": 8}, (12,))]


@pytest.mark.parametrize("kind, options, input_shape", LARGE)
@pytest.mark.parametrize("seed", range(10))
def test_random_elements_of_larger_layers(kind, options, input_shape, seed):
    layer, x, ids = _layer(kind, options, input_shape, seed)
    rng = np.random.default_rng(seed + 1000)
    for name, param in layer.params.items():
        indices = rng.choice(param.size, size=min(param.size, 12), replace=False)
        _assert_copies_equal_forward(layer, x, ids, name, indices, steps=(1e-6,))


@pytest.mark.parametrize("kind, options, input_shape", SMALL[::3])
def test_float32_copies_stay_float32_and_close_to_forward(kind, options, input_shape):
    layer, x, ids = _layer(kind, options, input_shape, seed=1)
    for name in layer.params:
        layer.params[name] = layer.params[name].astype(np.float32)
    x = x if x.dtype.kind in "iu" else x.astype(np.float32)
    for name, param in layer.params.items():
        indices = np.arange(param.size)
        values = (param.reshape(-1) + np.float32(1e-2)).astype(np.float32)
        got = _perturbed(layer, x, ids, name, indices, values)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, _expected(layer, x, ids, name, indices, values),
                                   rtol=1e-5, atol=1e-5)
