"""One contract test over every registered built-in layer and loss (the registry has no privileged
members: plugins are held to the same contract by the engine)."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import examples
from fd import as_list, assert_layer_gradients, numeric_loss_grad
from gradcheck import registry
from layer_cases import is_integer

CASE_MODULES = sorted(p.stem for p in Path(__file__).parent.glob("cases_*.py"))
LAYER_CASES: dict = {}
LOSS_CASES: dict = {}
for _module in CASE_MODULES:
    _mod = importlib.import_module(_module)
    LAYER_CASES.update(getattr(_mod, "LAYER_CASES", {}))
    LOSS_CASES.update(getattr(_mod, "LOSS_CASES", {}))


def _builtin(names, lookup):
    return [n for n in names if lookup(n).__module__.startswith("gradcheck.layers")]


BUILTIN_LAYERS = _builtin(registry.layer_names(), registry.layer_class)
BUILTIN_LOSSES = _builtin(registry.loss_names(), registry.loss_class)


def test_every_builtin_has_a_contract_case():
    assert set(BUILTIN_LAYERS) <= set(LAYER_CASES), set(BUILTIN_LAYERS) - set(LAYER_CASES)
    assert set(BUILTIN_LOSSES) <= set(LOSS_CASES), set(BUILTIN_LOSSES) - set(LOSS_CASES)


def test_the_issue_list_of_builtins_is_registered():
    expected_layers = {"dense", "conv2d", "maxpool2d", "avgpool2d", "global_avgpool", "flatten",
                       "relu", "leaky_relu", "prelu", "elu", "sigmoid", "tanh", "softmax",
                       "batchnorm", "layernorm", "dropout", "lrn"}
    assert expected_layers <= set(BUILTIN_LAYERS)
    assert {"mse", "cross_entropy", "bce", "l2"} <= set(BUILTIN_LOSSES)


@pytest.mark.parametrize("name", BUILTIN_LAYERS)
@settings(max_examples=examples(10))
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_layer_contract(name, data, seed):
    case = data.draw(LAYER_CASES[name])
    layer = registry.layer_class(name)(**case.options)
    rng = np.random.default_rng(seed)
    out_shape = layer.build(case.input_shape, rng)
    # Several outputs (split): a list of shapes from build, a tuple from forward, and one
    # upstream gradient per output. Several inputs (a list of shapes in the case): a tuple of
    # gradients from backward, one per input.
    out_shapes = out_shape if isinstance(out_shape, list) else [out_shape]
    assert all(isinstance(s, tuple) and all(isinstance(d, int) for d in s) for s in out_shapes)
    x = case.draw_input(rng)
    params_before = {k: v.copy() for k, v in layer.params.items()}
    xs_before = [a.copy() for a in as_list(x)]

    y = layer.forward(*as_list(x))
    assert isinstance(y, tuple) == isinstance(out_shape, list)
    assert [a.shape for a in as_list(y)] == [(case.batch, *s) for s in out_shapes], \
        "forward must produce the shapes build declared"
    grad_x = layer.backward(*[np.ones_like(a) for a in as_list(y)])
    assert isinstance(grad_x, tuple) == isinstance(x, list)
    for g, a in zip(as_list(grad_x), xs_before, strict=True):
        if is_integer(a):
            assert g is None, "an integer input (token ids) has no gradient"
        else:
            assert g.shape == a.shape
    assert set(layer.grads) == set(layer.params)
    for k, v in layer.params.items():
        assert layer.grads[k].shape == v.shape
        np.testing.assert_array_equal(v, params_before[k], err_msg="forward/backward changed params")
    for a, before in zip(as_list(x), xs_before, strict=True):
        np.testing.assert_array_equal(a, before, err_msg="forward/backward changed its input")
    assert_layer_gradients(layer, x, rng)


@pytest.mark.parametrize("name", BUILTIN_LAYERS)
@settings(max_examples=examples(3))
@given(data=st.data())
def test_layer_keeps_float32(name, data):
    case = data.draw(LAYER_CASES[name])
    layer = registry.layer_class(name)(**case.options)
    rng = np.random.default_rng(0)
    layer.build(case.input_shape, rng)
    for k in layer.params:
        layer.params[k] = layer.params[k].astype(np.float32)
    xs = [a if is_integer(a) else a.astype(np.float32) for a in as_list(case.draw_input(rng))]
    ys = as_list(layer.forward(*xs))
    assert all(y.dtype == np.float32 for y in ys)
    grads = as_list(layer.backward(*[np.ones_like(y) for y in ys]))
    assert all(g is None if is_integer(a) else g.dtype == np.float32 for g, a in zip(grads, xs))
    assert all(g.dtype == np.float32 for g in layer.grads.values())


@pytest.mark.parametrize("name", BUILTIN_LOSSES)
@settings(max_examples=examples(10))
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_loss_contract(name, data, seed):
    case = data.draw(LOSS_CASES[name])
    cls = registry.loss_class(name)
    loss = cls(**case.options)
    loss.build(case.input_shape)
    rng = np.random.default_rng(seed)
    pred = case.draw_pred(rng)
    if cls.target_kind == "labels":
        label_shape, classes = loss.label_shape(case.input_shape)
        target = rng.integers(0, classes, (case.batch, *label_shape))
    else:
        target = rng.uniform(0.05, 0.95, pred.shape)
    value = loss.forward(pred, target)
    assert isinstance(value, float) and np.isfinite(value)
    grad = loss.backward()
    assert grad.shape == pred.shape
    np.testing.assert_allclose(grad, numeric_loss_grad(loss, pred, target), rtol=1e-5, atol=1e-7)
