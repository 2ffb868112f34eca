"""The object layer and its adapter: existing classes checked with no Python code, wrong ones
caught and blamed, bad adapters refused as located ConfigErrors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import yaml

import gradcheck
from conftest import ROOT, TEST_PLUGINS, write_yaml
from gradcheck.errors import ConfigError, LayerError

CLASSES = TEST_PLUGINS / "adapter_classes.py"
ADAPTER = ROOT / "examples" / "adapter"


def object_net(constructor: str, adapter: dict | None, loss: str = "mse", **layer) -> dict:
    """A network of one object layer (input: 4 features) before the loss."""
    entry = {"type": "object", "name": "obj", "constructor": constructor, **layer}
    if adapter is not None:
        entry["adapter"] = adapter
    return {"seed": 0, "input": {"shape": [4], "batch": 3}, "layers": [entry], "loss": loss}


DICT_ADAPTER = {"params": "params", "grads": "grads"}


def statuses(report) -> dict:
    return {(layer.name, check.target): check.status
            for layer in report.layers for check in layer.checks}


def build(net: dict):
    return gradcheck.build_network(gradcheck.load_config(net))


def test_a_class_with_param_and_grad_dicts_checks():
    report = gradcheck.check_network(object_net(f"{CLASSES}:DictDense", DICT_ADAPTER,
                                                kwargs={"n_in": 4, "n_out": 3}))
    assert report.passed
    assert {t for (_, t) in statuses(report)} == {"W", "b", "input"}


@pytest.mark.parametrize("seed", range(10))
def test_a_class_wrong_only_for_b_is_caught_and_blamed(seed):
    net = object_net(f"{CLASSES}:DictDenseWrongDb", DICT_ADAPTER, args=[4, 3])
    net["seed"] = seed
    report = gradcheck.check_network(net)
    assert report.root_causes == ["obj"]
    found = statuses(report)
    assert found[("obj", "b")] == "fail"
    assert found[("obj", "W")] == "pass" and found[("obj", "input")] == "pass"


def test_params_in_a_dict_with_gradients_returned_checks():
    net = object_net(f"{CLASSES}:DictDenseReturning",
                     {"params": "params", "returns": ["dx", "W", "b"]}, args=[4, 3])
    assert gradcheck.check_network(net).passed


def test_a_backward_returning_dx_dw_db_with_a_wrong_dw_is_blamed_on_w():
    net = object_net(f"{CLASSES}:TupleDenseWrongDw",
                     {"params": {"W": "W", "b": "b"}, "returns": ["dx", "W", "b"]}, args=[4])
    report = gradcheck.check_network(net)
    assert report.root_causes == ["obj"]
    assert statuses(report)[("obj", "W")] == "fail" and statuses(report)[("obj", "b")] == "pass"


def test_returns_in_the_wrong_order_is_an_error_naming_the_method():
    net = object_net(f"{ADAPTER / 'tuple_style.py'}:Linear",
                     {"params": {"W": "W", "b": "b"}, "returns": ["dx", "b", "W"]}, args=[4, 3])
    with pytest.raises(LayerError, match=r"gradient of 'W' from .*tuple_style.py:Linear.backward "
                                         r"has shape \(3,\), expected \(4, 3\)"):
        build(net)


def test_accumulated_gradients_are_zeroed_before_each_backward():
    network, batch = build(object_net(f"{CLASSES}:Accumulating", DICT_ADAPTER, args=[4, 3]))
    layer = network.layers[0]
    grad_out = np.ones((3, 3))
    layer.forward(batch.x)
    layer.backward(grad_out)
    once = {name: grad.copy() for name, grad in layer.grads.items()}
    layer.forward(batch.x)
    layer.backward(grad_out)
    for name in once:
        np.testing.assert_array_equal(layer.grads[name], once[name])
        np.testing.assert_array_equal(layer.instance.grads[name], once[name])
    np.testing.assert_allclose(once["W"], batch.x.T @ grad_out)
    assert gradcheck.check_network(object_net(f"{CLASSES}:Accumulating", DICT_ADAPTER,
                                              args=[4, 3])).passed


def test_a_class_that_stores_every_input_needs_its_flush():
    adapter = {"params": "parameters", "grads": "gradients"}
    net = object_net(f"{ADAPTER / 'dict_style.py'}:FullyConnected", adapter, kwargs={"n_out": 2})
    with pytest.raises(LayerError, match="returned a list of 2, expected dx") as info:
        build(net)
    assert "adapter.flush" in info.value.hint
    adapter["flush"] = "flush_gradients"
    assert gradcheck.check_network(net).passed


def test_params_dict_entries_without_gradients_are_buffers_never_perturbed_or_reported():
    network, _ = gradcheck.build_network(gradcheck.load_config(ADAPTER / "dict_net.yaml"))
    bn = network.layers[2]
    assert set(bn.params) == {"scaler", "intercept"}
    assert set(bn.buffers) == {"running_mean", "running_var"}
    snapshot = {name: value.copy() for name, value in bn.buffers.items()}
    report = gradcheck.check_network(ADAPTER / "dict_net.yaml")
    assert {t for (layer, t) in statuses(report) if layer == "bn1"} == {
        "scaler", "intercept", "input"}
    # Every forward starts from the snapshot: eval mode reads the same statistics each time.
    bn.training = False
    x = np.random.default_rng(0).normal(size=(5, 8))
    first, second = bn.forward(x), bn.forward(x)
    np.testing.assert_array_equal(first, second)
    stats = bn.instance.parameters
    np.testing.assert_array_equal(stats["running_mean"], snapshot["running_mean"])
    expected = (bn.params["scaler"] * (x - snapshot["running_mean"])
                / np.sqrt(snapshot["running_var"] + 1e-5) + bn.params["intercept"])
    np.testing.assert_allclose(first, expected)
    assert bn.instance.trainable is False


@pytest.mark.parametrize("constructor, adapter, train, evaluate", [
    (f"{ADAPTER / 'list_style.py'}:Dropout", {"mode": {"attribute": "train_flg"}},
     "masked", lambda x: x),
    (f"{ADAPTER / 'tuple_style.py'}:Dropout", {"mode": {"argument": "train_flg"}},
     "masked", lambda x: x * 0.5),
    (f"{CLASSES}:ModeScale", {"mode": {"attribute": "phase", "train": "fit", "eval": "infer"}},
     lambda x: 2 * x, lambda x: x),
])
def test_train_and_eval_reach_the_object(constructor, adapter, train, evaluate):
    network, batch = build(object_net(constructor, adapter))
    layer = network.layers[0]
    x = np.random.default_rng(0).normal(size=(50, 4))
    trained = layer.forward(x)
    if train == "masked":
        assert np.mean(trained == 0) > 0.2
    else:
        np.testing.assert_allclose(trained, train(x))
    layer.training = False
    np.testing.assert_allclose(layer.forward(x), evaluate(x))
    layer.training = True
    np.testing.assert_array_equal(layer.forward(x), trained)


def test_methods_mode_calls_each_method_when_the_mode_changes():
    network, _ = build(object_net(f"{ADAPTER / 'dict_style.py'}:BatchNorm1D",
                                  {"params": "parameters", "grads": "gradients",
                                   "flush": "flush_gradients",
                                   "mode": {"methods": {"train": "unfreeze", "eval": "freeze"}}}))
    layer = network.layers[0]
    x = np.random.default_rng(0).normal(size=(3, 4))
    layer.forward(x)
    assert layer.instance.trainable is True
    layer.training = False
    layer.forward(x)
    assert layer.instance.trainable is False


def test_float32_networks_put_the_converted_params_back_into_the_object():
    net = object_net(f"{CLASSES}:DictDense", DICT_ADAPTER, args=[4, 3])
    net["dtype"] = "float32"
    network, batch = build(net)
    layer = network.layers[0]
    assert layer.params["W"].dtype == np.float32
    layer.forward(batch.x)
    assert layer.instance.params["W"] is layer.params["W"]
    assert gradcheck.check_network(net).passed


def test_the_engine_perturbs_the_objects_own_arrays():
    network, batch = build(object_net(f"{CLASSES}:DictDense", DICT_ADAPTER, args=[4, 3]))
    layer = network.layers[0]
    clean = layer.forward(batch.x)
    layer.params["b"][0] += 1.0  # what the engine does, in place
    np.testing.assert_allclose(layer.forward(batch.x)[:, 0], clean[:, 0] + 1.0)


def test_global_random_state_is_unchanged_by_checking_classes_that_draw_from_it():
    np.random.seed(5)
    random.seed(5)
    numpy_before, python_before = np.random.get_state(), random.getstate()
    assert gradcheck.check_network(ADAPTER / "tuple_net.yaml").passed
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_before[1])
    assert np.random.get_state()[2] == numpy_before[2] and random.getstate() == python_before


@pytest.mark.parametrize("adapter, message", [
    ({"flsh": "flush_gradients"}, r"unknown key 'flsh'.*did you mean 'flush'"),
    ({"params": 3, "grads": "grads"}, r"'adapter.params' must be an attribute name"),
    ({"params": {"input": "x"}, "returns": ["dx", "input"]}, r"names parameter 'input'"),
    ({"params": "params", "grads": "grads", "returns": ["W", "b"]},
     r"'adapter.returns' must be dx"),
    ({"params": "params", "grads": "grads", "returns": ["dx", "W"]}, r"and 'returns:' both"),
    ({"params": "params"}, r"'adapter.params' is given, but not where their gradients are"),
    ({"grads": "grads"}, r"'adapter.grads' is given without 'params:'"),
    ({"returns": ["dx", "W"]}, r"'adapter.returns' names gradients of W, but 'params:'"),
    ({"params": {"W": "W"}, "returns": ["dx", "W", "b"]}, r"must name each parameter of params"),
    ({"params": "params", "grads": {"W": "dW"}}, r"give both in the same form"),
    ({"params": {"W": "W"}, "grads": "grads", "names": ["W"]}, r"'adapter.names' names the"),
    ({"params": "params", "grads": "grads", "names": ["W", "W"]}, r"list of distinct"),
    ({"mode": {"attribute": "a", "argument": "b"}}, r"exactly one of attribute, argument"),
    ({"mode": {"methods": {"train": "fit"}}}, r"with methods takes only"),
    ({"mode": {"attribute": "phase", "value": 1}}, r"not 'value'"),
    ({"forward": "1call"}, r"'adapter.forward' must be a method name"),
    ([1, 2], r"'adapter' must be a mapping"),
])
def test_bad_adapter_keys_are_located_config_errors(tmp_path, run_cli, adapter, message):
    net = object_net(f"{CLASSES}:DictDense", adapter, args=[4, 3])
    path = write_yaml(tmp_path, yaml.safe_dump(net, sort_keys=False))
    with pytest.raises(ConfigError, match=message) as info:
        gradcheck.check_network(path)
    assert info.value.path == "layers[0]" and info.value.where.startswith(f"{path}:")
    assert run_cli("check", path).exit_code == 2


@pytest.mark.parametrize("change, key, message", [
    ({"adapter": {"forward": "fwd"}}, "adapter.forward", r"has no method 'fwd'"),
    ({"adapter": {"flush": "flush_gradients"}}, "adapter.flush",
     r"has no method 'flush_gradients'"),
    ({"adapter": {"params": "parameters", "grads": "grads"}}, "adapter.params",
     r"has no attribute 'parameters'"),
    ({"adapter": {"params": "params", "grads": "x"}}, "adapter.grads",
     r"must be a dict when params is a dict"),
    ({"constructor": f"{CLASSES}:DictDenseReturning",
      "adapter": {"params": "params", "returns": ["dx", "W", "c"]}}, "adapter.returns",
     r"names 'c', which is not in params \(keys: W, b\)"),
    ({"constructor": f"{CLASSES}:DictDens"}, "constructor", r"did you mean 'DictDense'"),
    ({"constructor": f"{CLASSES}"}, "constructor", r"must name a file or module"),
])
def test_adapter_names_that_do_not_exist_on_the_object_are_errors_at_their_line(
        tmp_path, change, key, message):
    net = object_net(f"{CLASSES}:DictDense", None, args=[4, 3])
    net["layers"][0].update(change)
    text = yaml.safe_dump(net, sort_keys=False, default_flow_style=False)
    path = write_yaml(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        gradcheck.check_network(path)
    assert info.value.path == f"layers[0].{key}"
    last = key.split(".")[-1]
    line = next(i for i, row in enumerate(text.splitlines(), 1)
                if row.strip().startswith(f"{last}:"))
    assert info.value.where.startswith(f"{path}:{line}:")


def test_outputs_of_a_class_that_reuses_its_output_array_are_copies():
    network, batch = build(object_net(f"{CLASSES}:ReusedOutput", DICT_ADAPTER))
    layer = network.layers[0]
    first = layer.forward(batch.x)
    layer.forward(batch.x + 1.0)
    np.testing.assert_array_equal(first, 2 * batch.x.astype(first.dtype))
    assert set(layer.params) == {"scale"} and layer.buffers == {}  # momentum: a setting
    assert gradcheck.check_network(object_net(f"{CLASSES}:ReusedOutput", DICT_ADAPTER)).passed


def test_names_do_not_apply_to_a_params_dict():
    with pytest.raises(ConfigError, match="names a list of params, but params is a dict"):
        build(object_net(f"{CLASSES}:DictDense", {**DICT_ADAPTER, "names": ["W", "b"]},
                         args=[4, 3]))


def test_list_params_need_as_many_names_as_arrays():
    net = object_net(f"{ADAPTER / 'list_style.py'}:make_affine",
                     {"params": "params", "grads": "grads", "names": ["W"]}, args=[4, 3])
    with pytest.raises(ConfigError, match="gives 1 names for the 2 arrays in params"):
        build(net)


def test_list_params_are_named_by_position_by_default():
    net = object_net(f"{ADAPTER / 'list_style.py'}:make_affine",
                     {"params": "params", "grads": "grads"}, args=[4, 3])
    report = gradcheck.check_network(net)
    assert report.passed and {t for (_, t) in statuses(report)} == {"params0", "params1", "input"}


def test_a_constructor_that_returns_no_layer_is_refused_naming_the_method():
    with pytest.raises(ConfigError,
                       match=r"adapter.forward: .*not_a_layer has no method 'forward'"):
        build(object_net(f"{CLASSES}:not_a_layer", None))
