"""``init:`` / ``bias_init:`` on dense and conv2d: each initialiser draws what its name says, and a
bad spec is a located config error."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_yaml
from gradcheck import GradcheckError, build_network, load_config
from gradcheck.layers.init import parse_init
from gradcheck.registry import layer_class

FAN_IN, FAN_OUT = 400, 300


@pytest.mark.parametrize("spec, mean, std", [
    ("he", 0.0, np.sqrt(2 / FAN_IN)),
    ("lecun", 0.0, np.sqrt(1 / FAN_IN)),
    ("glorot", 0.0, np.sqrt(6 / (FAN_IN + FAN_OUT)) / np.sqrt(3)),
    ({"normal": {"std": 0.01}}, 0.0, 0.01),
    ({"normal": {"mean": 2.0, "std": 0.5}}, 2.0, 0.5),
    ({"uniform": {"low": 1.0, "high": 3.0}}, 2.0, 2 / np.sqrt(12)),
])
def test_each_initialiser_draws_its_distribution(spec, mean, std):
    layer = layer_class("dense")(units=FAN_OUT, init=spec)
    layer.build((FAN_IN,), np.random.default_rng(0))
    w = layer.params["W"]
    assert abs(w.mean() - mean) < 0.02 * max(std, 1.0)
    np.testing.assert_allclose(w.std(), std, rtol=0.03)


def test_bias_init_and_constant_initialisers():
    layer = layer_class("conv2d")(filters=4, kernel=3, init="zeros", bias_init="ones")
    layer.build((2, 5, 5), np.random.default_rng(0))
    assert not layer.params["W"].any()
    np.testing.assert_array_equal(layer.params["b"], np.ones(4))


def test_conv2d_fans_count_the_kernel():
    layer = layer_class("conv2d")(filters=64, kernel=[3, 5], init="glorot")
    layer.build((4, 20, 20), np.random.default_rng(0))
    limit = np.sqrt(6 / (4 * 15 + 64 * 15))
    assert np.abs(layer.params["W"]).max() <= limit
    assert np.abs(layer.params["W"]).max() > 0.95 * limit


@pytest.mark.parametrize("spec, needle", [
    ("xavier", "unknown initialiser 'xavier'"),
    ("normal", "needs arguments"),
    ({"normal": {"sd": 1}}, "takes mean and std"),
    ({"normal": {"std": 0}}, "std > 0"),
    ({"uniform": {"low": 1, "high": 1}}, "low < high"),
    ({"he": {"gain": 2}}, "takes no arguments"),
    ({"normal": {"std": "big"}}, "finite number"),
    (3, "initialiser name or a one-key mapping"),
])
def test_a_bad_spec_is_refused_with_the_option_named(spec, needle):
    with pytest.raises(GradcheckError, match="init") as info:
        parse_init(spec, "init", "dense")
    assert needle in info.value.message
    assert info.value.hint and "glorot" in info.value.hint


def test_a_bad_spec_in_yaml_is_located(tmp_path):
    path = write_yaml(tmp_path, "input: {shape: [4], batch: 2}\nlayers:\n"
                                "  - {type: dense, units: 3, init: {normal: {std: -1}}}\nloss: mse\n")
    with pytest.raises(GradcheckError) as info:
        build_network(load_config(path))
    assert "std > 0" in info.value.message and "net.yaml:3" in str(info.value)
