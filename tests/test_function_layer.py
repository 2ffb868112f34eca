"""The function layer and loss: course-style pairs checked as they are, wrong ones caught and
blamed, misbehaving ones refused with messages that name the function."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import yaml
from hypothesis import given, settings, strategies as st

import gradcheck
from conftest import TEST_PLUGINS, examples, write_yaml
from gradcheck.errors import ConfigError, LayerError
from gradcheck.layers.function import Function, FunctionLoss, default_fans
from gradcheck.render.json import render_json

PAIRS = TEST_PLUGINS / "function_pairs.py"


def affine_net(backward: str = "affine_backward", forward: str = "affine_forward",
               loss: dict | None = None, **layer) -> dict:
    """A one-layer network running PAIRS' affine pair (x: 5 features, 3 outputs)."""
    return {"seed": 0, "input": {"shape": [5], "batch": 4},
            "layers": [{"type": "function", "name": "fc", "forward": f"{PAIRS}:{forward}",
                        "backward": f"{PAIRS}:{backward}",
                        "params": {"w": {"shape": [5, 3]}, "b": {"shape": [3]}}, **layer}],
            "loss": loss or {"type": "mse"}}


def statuses(report) -> dict:
    return {(layer.name, check.target): check.status
            for layer in report.layers for check in layer.checks}


def test_correct_pair_passes_in_every_mode():
    for mode in ("full", "sample", "directional"):
        report = gradcheck.check_network(affine_net(), mode=mode)
        assert report.passed, mode
        assert {t for (layer, t) in statuses(report) if layer == "fc"} == {"w", "b", "input"}


@pytest.mark.parametrize("seed", range(10))
def test_backward_wrong_only_for_the_second_parameter_is_blamed_on_it(seed):
    net = affine_net("affine_backward_wrong_db")
    net["seed"] = seed
    report = gradcheck.check_network(net)
    assert not report.passed and report.root_causes == ["fc"]
    found = statuses(report)
    assert found[("fc", "b")] == "fail"
    assert found[("fc", "w")] == "pass" and found[("fc", "input")] == "pass"


def test_gradients_returned_in_another_order_than_forward_takes_the_params_are_refused():
    with pytest.raises(LayerError, match=r"dw from backward .*affine_backward_swapped has shape "
                                         r"\(3,\), expected \(5, 3\)"):
        gradcheck.check_network(affine_net("affine_backward_swapped"))


@pytest.mark.parametrize("backward, message", [
    ("affine_backward_two_grads",
     r"returned a tuple of 2; expected 3 gradient\(s\) \(dx, dw, db\)"),
    ("affine_backward_db_shape", r"db from backward .* has shape \(1, 3\), expected \(3,\)"),
])
def test_wrong_gradient_count_or_shape_exits_2_naming_the_function(tmp_path, run_cli, backward,
                                                                   message):
    path = write_yaml(tmp_path, yaml.safe_dump(affine_net(backward), sort_keys=False))
    result = run_cli("check", path)
    assert result.exit_code == 2
    assert f"{PAIRS}:{backward}" in result.stderr
    assert "layer 'fc' (function)" in result.stderr
    assert re.search(message, result.stderr), result.stderr


def test_forward_without_a_cache_is_refused_naming_the_function():
    with pytest.raises(LayerError, match=r"forward .*affine_forward_no_cache returned an array "
                                         r"of shape \(3, 3\); expected a pair \(out, cache\)"):
        gradcheck.check_network(affine_net(forward="affine_forward_no_cache"))


def test_a_forward_that_writes_into_x_gets_a_copy_and_checks_right():
    # Were x the engine's own cached input, the shift would move every later evaluation.
    assert gradcheck.check_network(affine_net(forward="shifted_forward")).passed


def test_outputs_of_a_function_that_reuses_its_output_array_are_copies():
    layer = Function(f"{PAIRS}:reused_forward", f"{PAIRS}:reused_backward")
    layer.build((3,), np.random.default_rng(0))
    x = np.ones((2, 3))
    first = layer.forward(x)
    layer.forward(x + 1.0)
    np.testing.assert_array_equal(first, 3 * x)


def noisy_net(seed: int = 0) -> dict:
    return {"seed": seed, "input": {"shape": [6], "batch": 3},
            "layers": [{"type": "function", "name": "noisy",
                        "forward": f"{PAIRS}:noisy_scale_forward",
                        "backward": f"{PAIRS}:noisy_scale_backward"}],
            "loss": "mse"}


def test_global_random_state_is_unchanged_by_a_check_and_does_not_change_its_result():
    reports = []
    for global_seed in (1, 2):
        np.random.seed(global_seed)
        random.seed(global_seed)
        numpy_before, python_before = np.random.get_state(), random.getstate()
        report = gradcheck.check_network(noisy_net())
        numpy_after = np.random.get_state()
        assert numpy_after[0] == numpy_before[0]
        np.testing.assert_array_equal(numpy_after[1], numpy_before[1])
        assert numpy_after[2:] == numpy_before[2:]
        assert random.getstate() == python_before
        assert report.passed
        reports.append(render_json(report))
    assert reports[0] == reports[1]


def test_repeated_calls_draw_alike_and_the_config_seed_changes_the_draws():
    def mask(seed):
        network, batch = gradcheck.build_network(gradcheck.load_config(noisy_net(seed)))
        layer = network.layers[0]
        first, second = layer.forward(batch.x), layer.forward(batch.x)
        np.testing.assert_array_equal(first, second)
        return first / batch.x

    assert not np.allclose(mask(0), mask(1))


def test_a_course_dropout_that_reseeds_the_global_generator_leaves_it_alone():
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    layer = Function(f"{TEST_PLUGINS.parent.parent / 'examples/course/layers.py'}:dropout_forward",
                     f"{TEST_PLUGINS.parent.parent / 'examples/course/layers.py'}:dropout_backward",
                     args=[{"rate": 0.5, "mode": "train", "seed": 7}])
    layer.build((4,), np.random.default_rng(0))
    layer.forward(np.ones((2, 4)))
    np.testing.assert_array_equal(np.random.rand(3), expected)


def test_arguments_are_copied_for_every_call():
    course = TEST_PLUGINS.parent.parent / "examples" / "course" / "layers.py"
    bn_param = {"mode": "train", "momentum": 0.5}
    layer = Function(f"{course}:batchnorm_forward", f"{course}:batchnorm_backward",
                     params={"gamma": {"shape": [3], "init": "ones"},
                             "beta": {"shape": [3], "init": "zeros"}}, args=[bn_param])
    layer.build((3,), np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(4, 3))
    layer.forward(x)
    assert bn_param == {"mode": "train", "momentum": 0.5}  # batchnorm_forward wrote into a copy
    assert layer.args == [bn_param]


def test_mixes_batch_false_is_verified_at_build():
    course = TEST_PLUGINS.parent.parent / "examples" / "course" / "layers.py"
    for name, args in (("batchnorm", [{"mode": "train"}]),
                       ("dropout", [{"rate": 0.5, "mode": "train", "seed": 0}])):
        params = ({"gamma": {"shape": [4]}, "beta": {"shape": [4]}} if name == "batchnorm"
                  else None)
        layer = Function(f"{course}:{name}_forward", f"{course}:{name}_backward", params=params,
                         args=args, mixes_batch=False)
        with pytest.raises(LayerError, match="mixes_batch is false, but sample 1|mixes_batch is "
                                             "false, but sample 0"):
            layer.build((4,), np.random.default_rng(0))
        Function(f"{course}:{name}_forward", f"{course}:{name}_backward", params=params,
                 args=args).build((4,), np.random.default_rng(0))


@pytest.mark.parametrize("shape, fans", [((7,), (7, 7)), ((5, 3), (5, 3)),
                                         ((4, 3, 2, 5), (30, 40)), ((6, 2, 3), (6, 18))])
def test_default_fans_follow_the_course_layouts(shape, fans):
    assert default_fans(shape) == fans


@pytest.mark.parametrize("seed", range(10))
def test_init_draws_he_from_the_fans_and_an_explicit_fan_in_overrides(seed):
    layer = Function(f"{PAIRS}:affine_forward", f"{PAIRS}:affine_backward",
                     params={"w": {"shape": [400, 300]},
                             "b": {"shape": [300], "init": "he", "fan_in": 10000}})
    layer.build((400,), np.random.default_rng(seed))
    w, b = layer.params["w"], layer.params["b"]
    assert list(layer.params) == ["w", "b"]
    assert abs(w.std() - np.sqrt(2 / 400)) < 0.02 * np.sqrt(2 / 400)
    assert abs(b.std() - np.sqrt(2 / 10000)) < 0.2 * np.sqrt(2 / 10000)


def test_params_args_and_kwargs_reach_forward_in_order():
    received = []

    def forward(x, b, w, conv_param, pad):
        received.append((b.shape, w.shape, conv_param, pad))
        return x, None

    layer = Function(forward, lambda dout, cache: (dout, np.zeros((2, 3)), np.zeros(4)),
                     params={"b": {"shape": [2, 3]}, "w": {"shape": [4]}},
                     args=[{"stride": 2}], kwargs={"pad": 1})
    layer.build((5,), np.random.default_rng(0))
    assert received[0] == ((2, 3), (4,), {"stride": 2}, 1)
    assert list(layer.params) == ["b", "w"]


@pytest.mark.parametrize("option, value, message", [
    ("params", [1, 2], "option 'params' must map each parameter's name"),
    ("params", {"w": {"shape": [5, 0]}}, r"'params.w.shape' must be a list of positive"),
    ("params", {"w": {"shape": [5, 3], "std": 1}}, r"'params.w': unknown key 'std'"),
    ("params", {"w": [5, 3]}, r"'params.w' must be a mapping with 'shape:'"),
    ("params", {"input": {"shape": [3]}}, "parameter name 'input'"),
    ("params", {"w": {"shape": [5, 3], "init": "kaiming"}}, "unknown initialiser 'kaiming'"),
    ("params", {"w": {"shape": [5, 3], "fan_in": 0}}, "'params.w.fan_in' must be a positive"),
    ("args", {"stride": 1}, "option 'args' must be a list"),
    ("kwargs", [1], "option 'kwargs' must map argument names"),
    ("mixes_batch", "no", "option 'mixes_batch' must be true or false"),
])
def test_bad_options_are_located_config_errors(tmp_path, option, value, message):
    net = affine_net()
    net["layers"][0][option] = value
    path = write_yaml(tmp_path, yaml.safe_dump(net, sort_keys=False))
    with pytest.raises((ConfigError, LayerError), match=message) as info:
        gradcheck.check_network(path)
    assert info.value.where.startswith(f"{path}:") and info.value.path == "layers[0]"


@pytest.mark.parametrize("key, ref, message", [
    ("forward", "missing.py:affine_forward", r"file '.*missing.py' does not exist"),
    ("backward", f"{PAIRS}:affine_backwards", r"has no attribute 'affine_backwards'"),
    ("forward", f"{PAIRS}:CALLS", r"is list \[.*\], not a function or class"),
    ("forward", "affine_forward", "must name a file or module and an attribute"),
    ("backward", "no_such_module_here:f", "no module named 'no_such_module_here'"),
    ("forward", f"{PAIRS}:counted_forward",
     r"counted_forward\(x\) cannot be called as \(x, w, b\)"),
])
def test_bad_references_are_config_errors_at_their_line(tmp_path, run_cli, key, ref, message):
    net = affine_net()
    net["layers"][0][key] = ref
    text = yaml.safe_dump(net, sort_keys=False, width=1000)
    path = write_yaml(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        gradcheck.check_network(path)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.strip().startswith(key))
    assert info.value.path == f"layers[0].{key}"
    assert info.value.where.startswith(f"{path}:{line}:")
    result = run_cli("check", path)
    assert result.exit_code == 2 and f"{path}:{line}:" in result.stderr


def test_function_loss_with_labels_checks_and_a_wrong_one_is_blamed():
    net = affine_net(loss={"type": "function", "fn": f"{PAIRS}:softmax_loss_no_mean"})
    report = gradcheck.check_network(net)
    assert report.root_causes == ["loss"]
    assert statuses(report)[("loss", "input")] == "fail"
    course = TEST_PLUGINS.parent.parent / "examples" / "course" / "layers.py"
    net["loss"]["fn"] = f"{course}:softmax_loss"
    assert gradcheck.check_network(net).passed


def test_function_loss_with_values():
    net = affine_net(loss={"type": "function", "fn": f"{PAIRS}:half_square_loss",
                           "target_kind": "values"})
    network, batch = gradcheck.build_network(gradcheck.load_config(net))
    assert network.loss.target_kind == "values" and batch.target.shape == (4, 3)
    assert gradcheck.check_network(net).passed


@pytest.mark.parametrize("loss, message", [
    ({"type": "function", "fn": f"{PAIRS}:loss_without_gradient"},
     r"loss_without_gradient returned a float; expected a pair \(loss, dscores\)"),
    ({"type": "function", "fn": f"{PAIRS}:half_square_loss", "target_kind": "value"},
     "'target_kind' must be labels or values"),
    ({"type": "function", "fn": f"{PAIRS}:half_square_los"}, "did you mean 'half_square_loss'"),
])
def test_function_loss_errors(loss, message):
    with pytest.raises((ConfigError, LayerError), match=message) as info:
        gradcheck.check_network(affine_net(loss=loss))
    assert info.value.path.startswith("loss")


@settings(max_examples=examples(10))
@given(batch=st.integers(1, 5), fan_in=st.integers(1, 6), units=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_function_layer_matches_the_dense_formula_and_central_differences(batch, fan_in, units,
                                                                          seed):
    from fd import assert_layer_gradients

    layer = Function(f"{PAIRS}:affine_forward", f"{PAIRS}:affine_backward",
                     params={"w": {"shape": [fan_in, units]},
                             "b": {"shape": [units], "init": {"normal": {"std": 1.0}}}},
                     mixes_batch=False)
    rng = np.random.default_rng(seed)
    assert layer.build((fan_in,), rng) == (units,)
    x = rng.normal(size=(batch, fan_in))
    expected = np.array([[sum(x[n, i] * layer.params["w"][i, j] for i in range(fan_in))
                          + layer.params["b"][j] for j in range(units)] for n in range(batch)])
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)
    assert_layer_gradients(layer, x, rng)


def test_function_loss_forward_many_matches_forward():
    course = TEST_PLUGINS.parent.parent / "examples" / "course" / "layers.py"
    loss = FunctionLoss(f"{course}:softmax_loss")
    loss.build((4,))
    rng = np.random.default_rng(0)
    preds, target = rng.normal(size=(5, 3, 4)), rng.integers(0, 4, 3)
    np.testing.assert_allclose(loss.forward_many(preds, target),
                               [loss.forward(p, target) for p in preds], rtol=0, atol=0)
