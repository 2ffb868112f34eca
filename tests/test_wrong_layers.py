"""The checker must be able to fail: each deliberately wrong layer gives exit 1 and is blamed."""

from __future__ import annotations

import json

import pytest

from conftest import TEST_PLUGINS, write_yaml

PLUGIN = TEST_PLUGINS / "wrong_layers.py"

# (buggy layer entry, loss): the buggy layer is always named "culprit".
CASES = {
    "transposed weight gradient": ("{type: dense_transposed_grad, name: culprit, units: 6}", "mse"),
    "bias not summed over batch": ("{type: dense_no_batch_sum, name: culprit, units: 6}", "mse"),
    "wrong dL/dx": ("{type: dense_wrong_dx, name: culprit, units: 6}", "mse"),
    "sigmoid derivative on input": ("{type: sigmoid_wrong_derivative, name: culprit}", "mse"),
    "tanh gradient halved": ("{type: tanh_half_grad, name: culprit}", "cross_entropy"),
}


def _network(layer: str, loss: str) -> str:
    return f"""
plugins: [{PLUGIN}]
seed: 3
input: {{shape: [6], batch: 4}}
layers:
  - {{type: dense, name: first, units: 6}}
  - {layer}
  - {{type: dense, name: last, units: 3}}
loss: {loss}
"""


@pytest.mark.parametrize("case", sorted(CASES))
def test_wrong_layer_is_caught_and_blamed(case, tmp_path, run_cli):
    layer, loss = CASES[case]
    result = run_cli("check", write_yaml(tmp_path, _network(layer, loss)), "--format", "json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["passed"] is False
    assert report["root_causes"] == ["culprit"]
    culprit = next(layer for layer in report["layers"] if layer["name"] == "culprit")
    assert culprit["status"] == "fail"
    # Layers after the culprit see correct upstream gradients and must pass.
    last = next(layer for layer in report["layers"] if layer["name"] == "last")
    assert last["status"] == "pass"


def test_wrong_loss_backward_is_blamed_on_the_loss(tmp_path, run_cli):
    text = _network("relu", "mse_wrong_scale")
    result = run_cli("check", write_yaml(tmp_path, text), "--format", "json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["root_causes"] == ["loss"]
    inherited = {layer["name"]: layer["inherited_from"] for layer in report["layers"]}
    assert inherited["last"] == "loss" and inherited["first"] == "loss"


def test_wrong_layer_found_in_sample_mode_too(tmp_path, run_cli):
    layer, loss = CASES["transposed weight gradient"]
    result = run_cli("check", write_yaml(tmp_path, _network(layer, loss)), "--format", "json",
                     "--mode", "sample", "--samples", "8")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["root_causes"] == ["culprit"]
