"""The library API for tests: check_network on dicts, check_layer, assert_gradients."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import gradcheck
from conftest import CONFIGS, ROOT
from gradcheck.testing import assert_gradients


class HalfGradDense(gradcheck.Layer):
    """Unregistered dense layer whose weight gradient is half what it should be."""

    def __init__(self, units: int = 3, scale: float = 0.5):
        super().__init__()
        self.units, self.scale = units, scale

    def build(self, input_shape, rng):
        self.params["W"] = rng.normal(size=(input_shape[0], self.units))
        return (self.units,)

    def forward(self, x):
        self.x = x
        return x @ self.params["W"]

    def backward(self, grad_out):
        self.grads["W"] = self.scale * (self.x.T @ grad_out)
        return grad_out @ self.params["W"].T


def test_check_network_takes_a_dict():
    config = {"seed": 1, "input": {"shape": [5], "batch": 3},
              "layers": [{"type": "dense", "units": 4}, "tanh"], "loss": "mse"}
    report = gradcheck.check_network(config)
    assert report.passed and [layer.name for layer in report.layers] == ["dense_1", "tanh_1", "loss"]


def test_check_network_dict_errors_name_the_yaml_path():
    with pytest.raises(gradcheck.ConfigError, match=r"layers\[0\]"):
        gradcheck.check_network({"input": {"shape": [5]}, "layers": [{"type": "dense", "unit": 4}],
                                 "loss": "mse"})


@pytest.mark.parametrize("name, shape, options", [
    ("dense", (4,), {"units": 3}), ("conv2d", (2, 5, 5), {"filters": 2, "kernel": 3}),
    ("tanh", (3, 2), {}), ("layernorm", (6,), {}),
])
def test_check_layer_by_name_passes_builtins(name, shape, options):
    report = gradcheck.check_layer(name, shape, **options)
    assert report.passed
    layer = report.layers[0]
    assert layer.type == name and layer.checks[-1].target == "input"
    assert layer.checks[-1].shape == (3, *shape)  # default batch 3


def test_check_layer_blames_a_wrong_unregistered_class_and_an_instance():
    for subject in (HalfGradDense, HalfGradDense(units=3)):
        report = gradcheck.check_layer(subject, (4,))
        assert not report.passed and report.root_causes == ["HalfGradDense"]
        failing = [c.target for c in report.layers[0].checks if c.status == "fail"]
        assert failing == ["W"]


def test_check_layer_correct_unregistered_class_passes():
    assert gradcheck.check_layer(HalfGradDense, (4,), scale=1.0).passed


def test_check_layer_same_numbers_for_a_registered_name_and_its_class():
    """The unregistered path builds the same network the YAML path does (same seeds)."""
    by_name = gradcheck.check_layer("dense", (4,), units=3, seed=7)
    from gradcheck.layers.dense import Dense

    class Twin(Dense):  # same code, not registered
        pass

    by_class = gradcheck.check_layer(Twin, (4,), units=3, seed=7)
    for a, b in zip(by_name.layers[0].checks, by_class.layers[0].checks):
        assert (a.target, a.analytic, a.numeric) == (b.target, b.analytic, b.numeric)


def test_check_layer_options_override_tolerances():
    report = gradcheck.check_layer("dense", (4,), units=2, rtol=1e-3, eps=1e-5, batch=2, seed=3)
    assert report.settings["rtol"] == 1e-3 and report.settings["eps"] == 1e-5
    assert report.layers[0].checks[-1].shape == (2, 4)


@pytest.mark.parametrize("call, error", [
    (lambda: gradcheck.check_layer("dense", (4,), unitz=3), gradcheck.ConfigError),
    (lambda: gradcheck.check_layer("dnse", (4,), units=3), gradcheck.ConfigError),
    (lambda: gradcheck.check_layer("dense", (0,), units=3), gradcheck.ConfigError),
    (lambda: gradcheck.check_layer(HalfGradDense(), (4,), units=3), gradcheck.ConfigError),
    (lambda: gradcheck.check_layer(int, (4,)), gradcheck.LayerError),
])
def test_check_layer_user_errors_are_typed(call, error):
    with pytest.raises(error):
        call()


def test_assert_gradients_fails_with_the_readable_report():
    with pytest.raises(AssertionError) as info:
        assert_gradients(HalfGradDense, input_shape=(4,))
    message = str(info.value)
    assert "HalfGradDense" in message and "root cause" in message and "dL/dW" in message
    assert "\x1b[" not in message


def test_assert_gradients_passes_and_returns_the_report():
    report = assert_gradients("dense", input_shape=(3,), units=2)
    assert report.passed
    assert assert_gradients(CONFIGS / "mlp.yaml").passed
    with pytest.raises(AssertionError, match="act"):
        assert_gradients(CONFIGS / "broken" / "plugin_buggy.yaml")


def test_readme_pytest_example_runs(tmp_path):
    """The README's five-line pytest example is real code: run it as a test file."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- pytest-example -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README lost its pytest example"
    (tmp_path / "test_example.py").write_text(match.group(1))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(tmp_path / "test_example.py")], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_an_instance_whose_name_cannot_name_a_layer_is_checked_under_its_class_name():
    from gradcheck.layers.dense import Dense

    layer = Dense(3)
    layer.name = "my dense 1"  # a YAML layer name could not hold the space
    report = gradcheck.check_layer(layer, (4,))
    assert report.passed and report.layers[0].name == "Dense"
