"""Bad configs give a located ConfigError (file:line:col, YAML path, hint), never a traceback."""

from __future__ import annotations

import pytest

from conftest import write_yaml
from gradcheck import ConfigError, GradcheckError, build_network, load_config

GOOD = """\
input: {shape: [4], batch: 2}
layers:
  - {type: dense, units: 3}
loss: mse
"""


def _error(tmp_path, text) -> GradcheckError:
    path = write_yaml(tmp_path, text)
    with pytest.raises(GradcheckError) as info:
        build_network(load_config(path))
    return info.value


@pytest.mark.parametrize("text, needle, location", [
    ("input: [", "not valid YAML", "net.yaml:1"),
    ("", "empty", None),
    ("- 1\n- 2\n", "must be a mapping", None),
    (GOOD + "sed: 1\n", "did you mean 'seed'", "net.yaml:5:1"),
    (GOOD.replace("units: 3", "unit: 3"), "did you mean 'units'", "net.yaml:3:19"),
    (GOOD.replace("dense", "dnse"), "did you mean 'dense'", "net.yaml:3"),
    (GOOD.replace("loss: mse", "loss: mes"), "did you mean 'mse'", "net.yaml:4"),
    (GOOD.replace("shape: [4], ", ""), "missing 'shape:'", "net.yaml:1"),
    (GOOD.replace("batch: 2", "batch: two"), "expected an integer", "net.yaml:1"),
    (GOOD.replace("batch: 2", "batch: 0"), ">= 1", None),
    (GOOD.replace("units: 3", "units: -3"), "positive integer", "net.yaml:3"),
    (GOOD + "check: {eps: 1e-6}\n", "expected a number", None),
    (GOOD + "train: {momentum: 1.5}\n", "momentum", None),
    (GOOD.replace("loss: mse", ""), "missing required key 'loss'", None),
    ("input: {shape: [1, 4, 4]}\nlayers: [{type: dense, units: 3}]\nloss: mse\n", "flatten", None),
    (GOOD + "dtype: float16\n", "float64", None),
    (GOOD + "plugins: [nowhere.py]\n", "does not exist", None),
    (GOOD.replace("{type: dense, units: 3}", "{type: dense, name: a, units: 3}\n  - "
                  "{type: dense, name: a, units: 3}"), "used twice", None),
    # Names other layers could not refer to (a fuzzed config crashed in the wiring on these).
    (GOOD.replace("{type: dense, units: 3}", "'0'\n  - {type: dense, units: 3}"),
     "unknown layer type '0'", "net.yaml:3"),
    (GOOD.replace("{type: dense, units: 3}", "{type: dense, name: my fc, units: 3}"),
     "layer name 'my fc' is not a name", "net.yaml:3"),
    (GOOD.replace("{type: dense, units: 3}", "{type: dense, name: fc.1, units: 3}"),
     "layer name 'fc.1' is not a name", "net.yaml:3"),
])
def test_bad_config_is_located_and_explained(tmp_path, text, needle, location):
    message = str(_error(tmp_path, text))
    assert needle in message
    if location:
        assert location in message


def test_kernel_larger_than_input_names_the_layer(tmp_path):
    text = "input: {shape: [1, 4, 4]}\nlayers:\n  - {type: conv2d, name: c, filters: 2, kernel: 7}\n" \
           "  - flatten\nloss: mse\n"
    message = str(_error(tmp_path, text))
    assert "layers[0]" in message and "net.yaml:3" in message


def test_config_from_dict_works_and_validates():
    spec = load_config({"input": {"shape": [4], "batch": 2}, "layers": ["relu"], "loss": "mse"})
    assert spec.layers[0].name == "relu_1"
    with pytest.raises(ConfigError, match="did you mean 'layers'"):
        load_config({"input": {"shape": [4]}, "layer": ["relu"], "loss": "mse"})


def test_default_names_are_stable_and_numbered():
    spec = load_config({"input": {"shape": [4]}, "layers": ["relu", {"type": "dense", "units": 2},
                                                           "relu"], "loss": "mse"})
    assert [layer.name for layer in spec.layers] == ["relu_1", "dense_1", "relu_2"]


def test_python_file_given_as_network_is_explained(tmp_path):
    path = tmp_path / "layers.py"
    path.write_text("import gradcheck\n")
    with pytest.raises(ConfigError, match="Python file.*plugins:"):
        load_config(path)


def test_a_layer_type_or_name_in_any_script_is_wired_like_any_other(tmp_path):
    # A default name made from an unknown non-ASCII type reached the wiring and crashed there.
    message = str(_error(tmp_path, GOOD.replace("{type: dense, units: 3}", "'À'\n  - relu")))
    assert "unknown layer type 'À'" in message
    text = GOOD.replace("{type: dense, units: 3}", "{type: dense, name: couche_é, units: 3}\n"
                        "  - {type: dense, units: 2, inputs: [couche_é]}")
    network, _ = build_network(load_config(write_yaml(tmp_path, text)))
    assert [unit.name for unit in network.units][:2] == ["couche_é", "dense_2"]
