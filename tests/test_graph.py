"""Graph networks: named inputs, merges, several network inputs, shared parameters; the errors a
wiring mistake gives; the check per node; and chains reported exactly as before graphs."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gradcheck
from conftest import CONFIGS, TEST_PLUGINS, write_yaml
from gradcheck import GradcheckError, build_network, check_network, load_config

GRAPH_LAYERS = str(TEST_PLUGINS / "graph_layers.py")


def _error(tmp_path, text: str) -> GradcheckError:
    with pytest.raises(GradcheckError) as info:
        build_network(load_config(write_yaml(tmp_path, text)))
    return info.value


RESIDUAL = """\
input: {shape: [4, 6, 6], batch: 2}
layers:
  - {type: conv2d, name: conv1, filters: 4, kernel: 3, padding: 1}
  - {type: tanh, name: act}
  - {type: add, name: sum, inputs: [act, input]}
  - flatten
  - {type: dense, units: 3}
loss: cross_entropy
"""


@pytest.mark.parametrize("text, message, where", [
    (RESIDUAL.replace("[act, input]", "[act, inptu]"), "unknown tensor 'inptu'", "net.yaml:5"),
    (RESIDUAL.replace("name: conv1, filters", "name: conv1, inputs: [act], filters"),
     "layers act -> conv1 -> act form a cycle", "net.yaml:3"),
    (RESIDUAL.replace("[act, input]", "[act]"), "add takes at least 2 inputs, got 1", "net.yaml:5"),
    (RESIDUAL.replace("{type: tanh, name: act}", "{type: tanh, name: act, inputs: [conv1, input]}"),
     "tanh) takes 1 input(s), but 2 are wired to it", "net.yaml:4"),
    (RESIDUAL.replace("filters: 4", "filters: 8"),
     "add: inputs 'act' (8, 6, 6) and 'input' (4, 6, 6) differ on axis 0", "net.yaml:5"),
    (RESIDUAL.replace("loss: cross_entropy", "loss: {type: cross_entropy, input: nothing}"),
     "unknown tensor 'nothing'", "net.yaml:8"),
    (RESIDUAL.replace("name: act}", "name: input}").replace("[act, input]", "[input, conv1]"),
     "layer name 'input' is also the name of a network input", None),
    (RESIDUAL.replace("[act, input]", "[act, conv1.1]"), "'conv1.1': layer 'conv1' has 1",
     "net.yaml:5"),
])
def test_a_wiring_mistake_is_a_located_error(tmp_path, text, message, where):
    error = _error(tmp_path, text)
    assert message in error.message, error.message
    if where:
        assert where in str(error), str(error)
    assert error.hint


def test_the_merge_error_suggests_the_projection_shortcut(tmp_path):
    error = _error(tmp_path, RESIDUAL.replace("filters: 4", "filters: 8"))
    assert error.hint == "add a 1x1 conv2d on the input path"  # the path of the second input


def test_several_inputs_need_the_first_layer_to_say_which_it_reads(tmp_path):
    text = ("inputs: {a: {shape: [3]}, b: {shape: [3]}}\n"
            "layers: [{type: dense, units: 2}]\nloss: mse\n")
    assert "which it reads" in _error(tmp_path, text).hint
    different = text.replace("b: {shape: [3]}", "b: {shape: [3], batch: 5}")
    assert "different batch sizes" in _error(tmp_path, different).message
    both = "input: {shape: [3]}\n" + text
    assert "cannot both be given" in _error(tmp_path, both).message


def test_an_output_nobody_reads_is_a_warning(tmp_path):
    text = RESIDUAL.replace("  - flatten\n", "  - {type: dense, name: unused, inputs: [act], "
                            "units: 2}\n  - {type: flatten, inputs: [sum]}\n")
    path = write_yaml(tmp_path, text.replace("input: {shape: [4, 6, 6]", "input: {shape: [4, 6, 6]"))
    with pytest.raises(GradcheckError):
        # dense cannot read the (4, 6, 6) image: shows the input shape in the hint
        check_network(path)
    text = RESIDUAL.replace("  - flatten\n", "  - {type: tanh, name: unused, inputs: [act]}\n"
                            "  - {type: flatten, inputs: [sum]}\n")
    report = check_network(write_yaml(tmp_path, text), mode="full")
    assert report.passed
    assert any("'unused'" in w and "never read" in w for w in report.warnings)


SPLIT = """\
input: {shape: [6], batch: 3}
layers:
  - {type: dense, name: fc, units: 8}
  - {type: split, name: halves, sizes: [5, 3]}
  - {type: tanh, name: left, inputs: [halves.0]}
  - {type: sigmoid, name: right, inputs: [halves.1]}
  - {type: concat, name: joined, inputs: [left, right]}
  - {type: dense, units: 2}
loss: mse
"""


def test_split_outputs_are_addressed_by_number(tmp_path):
    report = check_network(write_yaml(tmp_path, SPLIT), mode="full")
    assert report.passed, report.warnings
    halves = next(layer for layer in report.layers if layer.name == "halves")
    assert halves.inputs == ["fc"] and [c.target for c in halves.checks] == ["input"]
    joined = next(layer for layer in report.layers if layer.name == "joined")
    assert [c.target for c in joined.checks] == ["input.0", "input.1"]
    error = _error(tmp_path, SPLIT.replace("[halves.0]", "[halves]"))
    assert "layer 'halves' has 2 outputs" in error.message and "halves.0" in error.hint


def test_a_fan_out_gets_the_sum_of_its_readers_gradients():
    config = {"input": {"shape": [5], "batch": 3},
              "layers": [{"type": "dense", "name": "a", "units": 4},
                         {"type": "tanh", "name": "left", "inputs": ["a"]},
                         {"type": "sigmoid", "name": "right", "inputs": ["a"]},
                         {"type": "multiply", "name": "both", "inputs": ["left", "right"]}],
              "loss": "mse"}
    network, batch = build_network(load_config(config))
    clean = network.run(batch)
    # The gradient the dense layer receives is the sum of what tanh and sigmoid hand back.
    readers = network.readers("a")
    assert [network.units[k].name for k, _ in readers] == ["left", "right"]
    total = sum(clean.arg_grads[k][j] for k, j in readers)
    np.testing.assert_allclose(clean.upstream[0][0], total, rtol=1e-12)
    assert not np.allclose(clean.upstream[0][0], clean.arg_grads[readers[0][0]][0])
    assert check_network(config, mode="full").passed


@pytest.mark.parametrize("seed", range(10))
def test_a_two_input_layer_wrong_only_for_its_second_input_is_blamed(seed):
    config = {"seed": seed, "plugins": [GRAPH_LAYERS], "input": {"shape": [6], "batch": 3},
              "layers": [{"type": "dense", "name": "fc", "units": 6},
                         {"type": "graph_gate_wrong_skip", "name": "gate", "inputs": ["fc", "input"]},
                         {"type": "dense", "units": 2}], "loss": "mse"}
    report = check_network(config, mode="full")
    assert report.root_causes == ["gate"]
    gate = next(layer for layer in report.layers if layer.name == "gate")
    status = {c.target: c.status for c in gate.checks}
    assert status == {"input.0": "pass", "input.1": "fail"}
    assert gate.inputs == ["fc", "input"]


def test_variadic_and_two_input_plugins_and_their_right_versions_pass():
    config = {"plugins": [GRAPH_LAYERS], "input": {"shape": [6], "batch": 3},
              "layers": [{"type": "dense", "name": "fc", "units": 6},
                         {"type": "graph_gate", "name": "gate", "inputs": ["fc", "input"]},
                         {"type": "graph_sum_all", "name": "total",
                          "inputs": ["gate", "fc", "input"]},
                         {"type": "dense", "units": 2}], "loss": "mse"}
    report = check_network(config, mode="full")
    assert report.passed
    total = next(layer for layer in report.layers if layer.name == "total")
    assert [c.target for c in total.checks] == ["input.0", "input.1", "input.2"]


def test_a_split_whose_backward_ignores_one_output_is_blamed(tmp_path):
    text = SPLIT.replace("{type: split, name: halves, sizes: [5, 3]}",
                         "{type: graph_split_first_only, name: halves, sizes: [5, 3]}")
    report = check_network(write_yaml(tmp_path, f"plugins: [{GRAPH_LAYERS}]\n" + text),
                           mode="full")
    assert report.root_causes == ["halves"]


def test_shared_parameters_are_one_array_and_their_total_gradient_is_checked():
    network, batch = build_network(load_config(CONFIGS / "tied_autoencoder.yaml"))
    encoder, decoder = network.layers[0], network.layers[2]
    assert np.shares_memory(encoder.params["W"], decoder.params["W"])
    np.testing.assert_array_equal(decoder.params["W"], encoder.params["W"].T)
    report = check_network(CONFIGS / "tied_autoencoder.yaml", mode="full")
    assert report.passed and report.end_to_end["directions"] > 0
    decoder_w = next(c for c in report.layers[2].checks if c.target == "W")
    assert any("shared: this is encoder.W.T" in n for n in decoder_w.notes)


@pytest.mark.parametrize("share, message", [
    ("{W: nowhere.W}", "not another layer"),
    ("{W: encoder.V}", "has no parameter 'V'"),
    ("{W: encoder.W}", "has shape (5, 12) but encoder.W has (12, 5)"),
    ("{Q: encoder.W.T}", "has no parameter 'Q' to share"),
    ("{W: encoder}", "does not name a parameter"),
])
def test_a_bad_share_is_a_located_error(tmp_path, share, message):
    text = (CONFIGS / "tied_autoencoder.yaml").read_text().replace("{W: encoder.W.T}", share)
    error = _error(tmp_path, text)
    assert message in error.message and "net.yaml:" in str(error)


@pytest.mark.parametrize("config, culprit, target, pattern", [
    ("residual_plugin.yaml", "block", "input", "identity_path"),
    ("tied_autoencoder_dropped.yaml", "decoder", "W", "shared_use_dropped"),
])
def test_the_broken_graph_examples_are_blamed_with_the_mistake_named(config, culprit, target,
                                                                     pattern):
    report = check_network(CONFIGS / "broken" / config, mode="full")
    assert report.root_causes == [culprit]
    check = next(c for layer in report.layers if layer.name == culprit for c in layer.checks
                 if c.target == target)
    assert check.status == "fail" and check.pattern == pattern, check.explanation


def test_the_text_report_shows_what_a_node_reads(run_cli):
    out = run_cli("check", CONFIGS / "resnet_block.yaml", "--mode", "full").stdout
    assert "add <- bn2, bn_shortcut" in " ".join(out.split())
    doc = json.loads(run_cli("check", CONFIGS / "resnet_block.yaml", "--mode", "full",
                             "--format", "json").stdout)
    residual = next(layer for layer in doc["layers"] if layer["name"] == "residual")
    assert residual["inputs"] == ["bn2", "bn_shortcut"]


@pytest.mark.parametrize("config", ["mlp", "lenet"])
def test_a_chain_report_is_byte_identical_to_before_graphs_apart_from_new_keys(run_cli, golden,
                                                                                config):
    doc = json.loads(run_cli("check", CONFIGS / f"{config}.yaml", "--format", "json").stdout)
    for layer in doc["layers"]:
        assert layer.pop("inputs")
    assert doc.pop("not_differentiable") == []
    golden(f"chain_{config}.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")


def test_a_perturbation_reruns_only_the_descendants_of_its_node():
    network, batch = build_network(load_config(CONFIGS / "resnet_block.yaml"))
    names = [layer.name for layer in network.layers]
    shortcut = names.index("shortcut")
    after = [network.units[k].name for k in network.descendants(shortcut)]
    assert after == ["shortcut", "bn_shortcut", "residual", "relu2", "pool", "fc", "loss"]
    assert "conv1" not in after and "bn2" not in after


def test_several_network_inputs_each_get_their_gradient_checked():
    report = check_network(CONFIGS / "siamese.yaml", mode="full")
    assert report.passed
    reads = {layer.name: layer.inputs for layer in report.layers}
    assert reads["left_fc"] == ["left"] and reads["right_fc"] == ["right"]
    assert gradcheck.load_config(CONFIGS / "siamese.yaml").inputs[1].name == "right"
