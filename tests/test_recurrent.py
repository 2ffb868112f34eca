"""rnn, lstm and gru against references unrolled over time in plain loops (written from the
equations in the docstrings, per sample and per step, sharing no code with the layers) and
against central finite differences; a BPTT liar is caught."""

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

KINDS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def built(kind: str, steps: int, features: int, seed: int, **options):
    """A layer built for (steps, features) whose parameters are all nonzero and generic (the
    default biases are zeros and ones, which a wrong bias gradient could hide behind)."""
    rng = np.random.default_rng(seed)
    layer = layer_class(kind)(**options)
    layer.build((steps, features), rng)
    for value in layer.params.values():
        value += rng.normal(0.0, 0.3, value.shape)
    return layer, rng.normal(size=(2, steps, features))


# ---- the reference: scalar loops over samples, steps and units -----------------------------------

def reference_forward(kind: str, params: dict, x: np.ndarray, units: int):
    """Per sample, the list of states after every step: [(h, c)] with h_{-1} (and c_{-1})
    first. Each unit of each gate is its own sum over inputs and previous states."""
    wx, wh, b = params["Wx"], params["Wh"], params["b"]
    samples = []
    for n in range(x.shape[0]):
        h = [float(params["h0"][u]) if "h0" in params else 0.0 for u in range(units)]
        c = [float(params["c0"][u]) if "c0" in params else 0.0 for u in range(units)]
        states = [(h, c)]
        for t in range(x.shape[1]):
            def from_x(col, t=t, n=n):
                return b[col] + sum(x[n, t, f] * wx[f, col] for f in range(x.shape[2]))

            def from_h(col, h=h):
                return sum(h[v] * wh[v, col] for v in range(units))

            if kind == "rnn":
                h = [math.tanh(from_x(u) + from_h(u)) for u in range(units)]
            elif kind == "lstm":
                new_h, new_c = [], []
                for u in range(units):
                    i, f, o = (sigmoid(from_x(k * units + u) + from_h(k * units + u))
                               for k in range(3))
                    g = math.tanh(from_x(3 * units + u) + from_h(3 * units + u))
                    new_c.append(f * c[u] + i * g)
                    new_h.append(o * math.tanh(new_c[-1]))
                h, c = new_h, new_c
            else:
                new_h = []
                for u in range(units):
                    r = sigmoid(from_x(u) + from_h(u))
                    z = sigmoid(from_x(units + u) + from_h(units + u))
                    candidate = math.tanh(from_x(2 * units + u) + r * from_h(2 * units + u))
                    new_h.append((1 - z) * candidate + z * h[u])
                h = new_h
            states.append((h, c))
        samples.append(states)
    return samples


def reference_output(kind, params, x, units, return_sequences):
    samples = reference_forward(kind, params, x, units)
    hs = np.array([[s[0] for s in states[1:]] for states in samples])  # (batch, T, units)
    return hs if return_sequences else hs[:, -1]


def reference_backward(kind, params, x, units, grad_out, return_sequences):
    """Backpropagation through time per sample, with the per-step equations written out."""
    wx, wh = params["Wx"], params["Wh"]
    grads = {name: np.zeros_like(value) for name, value in params.items()}
    grad_x = np.zeros_like(x)
    samples = reference_forward(kind, params, x, units)
    steps = x.shape[1]
    for n, states in enumerate(samples):
        grad_h_next, grad_c_next = np.zeros(units), np.zeros(units)
        for t in reversed(range(steps)):
            h_prev, c_prev = (np.array(s) for s in states[t])
            h, c = (np.array(s) for s in states[t + 1])
            if return_sequences:
                grad_h = grad_out[n, t] + grad_h_next
            else:
                grad_h = (grad_out[n] if t == steps - 1 else 0.0) + grad_h_next
            pre = x[n, t] @ wx + params["b"] + h_prev @ wh  # all gates' pre-activations
            blocks = [pre[k * units:(k + 1) * units] for k in range(GATES[kind])]
            if kind == "rnn":
                grad_pre_x = grad_pre_h = grad_h * (1 - h ** 2)
                grad_h_direct = 0.0
            elif kind == "lstm":
                i, f, o = (1 / (1 + np.exp(-a)) for a in blocks[:3])
                g = np.tanh(blocks[3])
                grad_c = grad_c_next + grad_h * o * (1 - np.tanh(c) ** 2)
                grad_pre_x = grad_pre_h = np.concatenate([
                    grad_c * g * i * (1 - i), grad_c * c_prev * f * (1 - f),
                    grad_h * np.tanh(c) * o * (1 - o), grad_c * i * (1 - g ** 2)])
                grad_c_next = grad_c * f
                grad_h_direct = 0.0
            else:
                x_part = x[n, t] @ wx + params["b"]
                h_part = h_prev @ wh
                r = 1 / (1 + np.exp(-blocks[0]))
                z = 1 / (1 + np.exp(-blocks[1]))
                cand = np.tanh(x_part[2 * units:] + r * h_part[2 * units:])
                grad_cand_pre = grad_h * (1 - z) * (1 - cand ** 2)
                grad_r_pre = grad_cand_pre * h_part[2 * units:] * r * (1 - r)
                grad_z_pre = grad_h * (h_prev - cand) * z * (1 - z)
                grad_pre_x = np.concatenate([grad_r_pre, grad_z_pre, grad_cand_pre])
                grad_pre_h = np.concatenate([grad_r_pre, grad_z_pre, grad_cand_pre * r])
                grad_h_direct = grad_h * z
            grads["Wx"] += np.outer(x[n, t], grad_pre_x)
            grads["Wh"] += np.outer(h_prev, grad_pre_h)
            grads["b"] += grad_pre_x
            grad_x[n, t] = wx @ grad_pre_x
            grad_h_next = wh @ grad_pre_h + grad_h_direct
        if "h0" in grads:
            grads["h0"] += grad_h_next
        if "c0" in grads:
            grads["c0"] += grad_c_next
    return grad_x, grads


CONFIGURATIONS = [(kind, steps, seq, learn) for kind in KINDS for steps in (1, 6)
                  for seq in (True, False) for learn in (True, False)]


@pytest.mark.parametrize("kind, steps, return_sequences, learn", CONFIGURATIONS)
@pytest.mark.parametrize("seed", range(10))
def test_forward_and_backward_match_the_unrolled_reference(kind, steps, return_sequences, learn,
                                                           seed):
    layer, x = built(kind, steps, 2, seed, units=3, return_sequences=return_sequences,
                     learn_initial_state=learn)
    y = layer.forward(x)
    expected = reference_output(kind, layer.params, x, 3, return_sequences)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-13)
    grad_out = np.random.default_rng(seed + 100).normal(size=y.shape)
    grad_x = layer.backward(grad_out)
    ref_x, ref_grads = reference_backward(kind, layer.params, x, 3, grad_out, return_sequences)
    np.testing.assert_allclose(grad_x, ref_x, rtol=1e-10, atol=1e-12, err_msg="dL/dx")
    assert set(layer.grads) == set(ref_grads)
    for name, grad in ref_grads.items():
        np.testing.assert_allclose(layer.grads[name], grad, rtol=1e-10, atol=1e-12,
                                   err_msg=f"dL/d{name}")


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(15))
@given(steps=st.integers(1, 7), features=st.integers(1, 3), units=st.integers(1, 4),
       batch=st.integers(1, 3), return_sequences=st.booleans(), learn=st.booleans(),
       seed=st.integers(0, 2**16))
def test_gradients_match_finite_differences(kind, steps, features, units, batch,
                                            return_sequences, learn, seed):
    rng = np.random.default_rng(seed)
    layer = layer_class(kind)(units=units, return_sequences=return_sequences,
                              learn_initial_state=learn)
    layer.build((steps, features), rng)
    for value in layer.params.values():
        value += rng.normal(0.0, 0.3, value.shape)
    assert_layer_gradients(layer, rng.normal(size=(batch, steps, features)), rng)


# ---- the liar: backward that drops the path through later steps ----------------------------------

def _broken(name: str):
    load_plugin("broken/sequence_layers.py", CONFIGS)
    return layer_class(name)


@pytest.mark.parametrize("seed", range(10))
def test_rnn_without_bptt_carry_is_caught_and_its_twin_passes(seed):
    x = np.random.default_rng(seed).normal(size=(2, 5, 3))
    for name, wrong in (("scratch_rnn", False), ("rnn_no_bptt", True)):
        layer = _broken(name)(units=4)
        layer.build((5, 3), np.random.default_rng(seed))
        if wrong:
            with pytest.raises(AssertionError, match="dL/dx"):
                assert_layer_gradients(layer, x, np.random.default_rng(seed))
        else:
            assert_layer_gradients(layer, x, np.random.default_rng(seed))


def test_rnn_without_bptt_carry_looks_right_for_one_step():
    """Why the reference checks use T >= 5 as well: with a single step there is no later step
    whose path could be dropped, so the liar is indistinguishable from a correct RNN."""
    layer = _broken("rnn_no_bptt")(units=4)
    layer.build((1, 3), np.random.default_rng(0))
    assert_layer_gradients(layer, np.random.default_rng(1).normal(size=(2, 1, 3)),
                           np.random.default_rng(2))


# ---- shapes, options, initialisation -------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_parameters_and_output_shapes(kind):
    rng = np.random.default_rng(0)
    gates = GATES[kind]
    layer = layer_class(kind)(units=5, learn_initial_state=True)
    assert layer.build((7, 3), rng) == (7, 5)
    expected = {"Wx": (3, gates * 5), "Wh": (5, gates * 5), "b": (gates * 5,), "h0": (5,)}
    if kind == "lstm":
        expected["c0"] = (5,)
    assert {k: v.shape for k, v in layer.params.items()} == expected
    last = layer_class(kind)(units=5, return_sequences=False)
    assert last.build((7, 3), rng) == (5,)
    assert set(last.params) == {"Wx", "Wh", "b"}


@pytest.mark.parametrize("kind", KINDS)
def test_initialisation_is_the_documented_one(kind):
    gates = GATES[kind]
    layer = layer_class(kind)(units=6, learn_initial_state=True)
    layer.build((4, 50), np.random.default_rng(0))
    for block in np.split(layer.params["Wh"], gates, axis=1):
        np.testing.assert_allclose(block.T @ block, np.eye(6), atol=1e-12)  # orthogonal
    assert 0.5 < layer.params["Wx"].std() * np.sqrt(50) < 1.5  # LeCun: std 1/sqrt(F)
    expected_bias = np.zeros(gates * 6)
    if kind == "lstm":
        expected_bias[6:12] = 1.0  # forget gate
    np.testing.assert_array_equal(layer.params["b"], expected_bias)
    assert np.all(layer.params["h0"] != 0) and np.abs(layer.params["h0"]).max() < 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_a_learned_initial_state_is_used_and_the_default_one_is_zero(kind):
    layer, x = built(kind, 3, 2, 0, units=3, learn_initial_state=True)
    y = layer.forward(x)
    for name in [n for n in layer.params if n.endswith("0")]:
        layer.params[name] += 1.0
        assert not np.allclose(layer.forward(x), y), f"{name} does not change the output"
        layer.params[name] -= 1.0
    plain, x = built(kind, 3, 2, 0, units=3)
    np.testing.assert_allclose(plain.forward(x),
                               reference_output(kind, plain.params, x, 3, True), rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_any_batch_size_after_build(kind):
    layer, x = built(kind, 4, 2, 3, units=3)
    wide = np.concatenate([x, x[::-1], x])
    np.testing.assert_allclose(layer.forward(wide)[:2], layer.forward(x), rtol=1e-13)
    np.testing.assert_array_equal(layer.forward(x[:1]), layer.forward(x[:1]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("options, message", [
    ({"units": 0}, "units must be a positive integer"),
    ({"units": True}, "units must be a positive integer"),
    ({"units": 2, "return_sequences": "yes"}, "return_sequences must be true or false"),
    ({"units": 2, "learn_initial_state": 1}, "learn_initial_state must be true or false"),
])
def test_bad_options_are_layer_errors(kind, options, message):
    with pytest.raises(LayerError, match=f"{kind}: {message}"):
        layer_class(kind)(**options)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_a_non_sequence_input_is_a_layer_error_with_a_hint(kind, shape):
    with pytest.raises(LayerError, match=r"per-sample sequence \(time, features\)") as info:
        layer_class(kind)(units=2).build(shape, np.random.default_rng(0))
    assert "embedding" in info.value.hint
