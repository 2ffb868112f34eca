"""Tolerances never widen silently (issue item 2): float32 arithmetic is named only from
measured round-off, every target says the rtol it was judged at, nothing judged above 1e-4 in
float64 passes, a wrong decay term is flagged in every element, and a small bug beside a layer
computing in float32 is still caught."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_yaml
from gradcheck import build_network, check_network, load_config
from zoo_cases import BUGGY, TRICKY, TRICKY_OK, VERDICT_BUGS, graded_case

SEEDS = range(10)
FLOAT32_CASES = ("float32_inside_float64", "float32_network", "tanh_rounded_to_float32")


def _rounded(bits: int, seed: int) -> dict:
    """dense -> tanh kept to ``bits`` significant bits (every layer returns float64) -> dense."""
    return {"seed": seed, "plugins": [TRICKY], "input": {"shape": [6], "batch": 4},
            "layers": [{"type": "dense", "units": 6},
                       {"type": "ok_rounded_tanh", "bits": bits, "name": "rounded"},
                       {"type": "dense", "units": 3}], "loss": "mse"}


def _checks(report):
    return [c for layer in report.layers for c in [*layer.checks, *layer.isolated_checks]]


def _said_float32(report) -> bool:
    return any(c.float32_inside for c in _checks(report)) or \
        any("float32" in note for c in _checks(report) for note in c.notes) or \
        any("float32" in warning for warning in report.warnings)


def _no_wide_pass(report) -> None:
    for check in _checks(report):
        assert not (check.status == "pass" and check.rtol > 1e-4), check


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("bits", [24, 28, 34, 52])
def test_float32_is_named_only_when_the_measured_round_off_is_at_its_level(bits, seed):
    """A tanh rounded to ``bits`` bits in a float64 network whose every layer returns float64:
    at 24 bits (float32's precision) the layer is said to compute in float32, with the round-off
    measured; at 28 bits and more (16 times less round-off and below) it never is. Either way
    the network passes, and nothing judged above 1e-4 passes."""
    report = check_network(_rounded(bits, seed))
    assert report.exit_code == 0, [(c.target, c.status, c.max_rel_error) for c in _checks(report)]
    rounded = next(layer for layer in report.layers if layer.name == "rounded")
    if bits == 24:
        assert any(c.float32_inside for c in rounded.checks)
        assert any("computes in float32 inside" in n for c in rounded.checks for n in c.notes)
    else:
        assert not _said_float32(report)
    assert not any("float32" in warning for warning in report.warnings)
    _no_wide_pass(report)


@pytest.mark.parametrize("seed", range(3))
def test_float64_networks_are_never_said_to_compute_in_float32(seed):
    cases = [config for name, config in TRICKY_OK.items() if name not in FLOAT32_CASES]
    cases += [config for config, _ in BUGGY.values()]
    for config in cases:
        report = check_network({**config, "seed": seed})
        assert not _said_float32(report), config
        _no_wide_pass(report)


@pytest.mark.parametrize("seed", range(3))
def test_a_forward_that_ignores_its_input_fails_and_is_not_said_to_compute_in_float32(seed):
    """Its objective does not move at all: zero measured round-off, which once read as float32's
    level (0 >= 0) and softened every check through it."""
    report = check_network({"seed": seed, "plugins": [VERDICT_BUGS],
                            "input": {"shape": [5], "batch": 3},
                            "layers": [{"type": "dense", "units": 4},
                                       {"type": "stale_tanh", "name": "stale"},
                                       {"type": "dense", "units": 2}], "loss": "mse"})
    assert report.exit_code == 1 and report.root_causes == ["stale"]
    assert not _said_float32(report)


def test_the_json_gives_the_rtol_every_target_was_judged_at(tmp_path, run_cli):
    path = write_yaml(tmp_path, json.dumps(_rounded(28, 0)))
    doc = json.loads(run_cli("check", path, "--format", "json").stdout)
    assert doc["passed"]
    checks = [c for layer in doc["layers"] for c in [*layer["checks"], *layer["isolated_checks"]]]
    assert all(isinstance(c["rtol"], float) for c in checks)
    widened = [c for c in checks if c["rtol"] > doc["settings"]["rtol"]]
    assert widened, "the rounded tanh's elements are judged at a widened rtol"
    for check in widened:
        assert check["rtol"] <= 1e-4
        assert any(f"judged at rtol {check['rtol']:.1e}" in note for note in check["notes"])
    assert doc["end_to_end"]["rtol"] <= 1e-4


@pytest.mark.parametrize("seed", SEEDS)
def test_a_weight_decay_term_with_the_wrong_sign_is_flagged_in_every_element(seed):
    """dL/dW - decay * W from a backward that adds weight decay itself, with the wrong sign
    (the old engine flagged 573 of 1,536). The weights are drawn so the error, decay * |W|,
    is at least twice the tolerance in every element: wrong everywhere by construction."""
    decay = 1e-3
    config = {"seed": seed, "plugins": [VERDICT_BUGS], "input": {"shape": [48], "batch": 4},
              "layers": [{"type": "graded_decay_wrong_sign", "name": "culprit", "decay": decay},
                         {"type": "dense", "units": 3}],
              "loss": "mse", "train": {"weight_decay": decay}}
    report = check_network(config)
    layer = next(x for x in report.layers if x.name == "culprit")
    data = next(c for c in layer.checks if c.target == "W" and c.term == "data")
    network, batch = build_network(load_config(config))
    network.set_training(True)
    weights = network.layers[0].params["W"]
    returned = network.run(batch).grads[(0, "W")]
    right = returned + decay * weights  # the data gradient the backward should return
    rtol, atol = report.settings["rtol"], report.settings["atol"]
    size = np.maximum(np.abs(right), np.abs(returned))
    assert weights.size == 1536
    assert np.all(np.abs(returned - right) > 2.0 * (rtol * size + atol))
    assert data.status == "fail" and data.checked == 1536 and data.failed == 1536
    assert report.root_causes == ["culprit"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("where", ["before", "after"])
def test_a_bug_of_2e_3_beside_a_layer_computing_in_float32_is_caught(where, seed):
    """Checks through a float32-inside layer can be no tighter than float32's rtol 1e-2, but
    the buggy layer's own check is: it fails, alone too, and is the root cause."""
    config, culprit = graded_case("graded_factor", 2e-3)
    layers = list(config["layers"])
    layers.insert(1 if where == "before" else 2, {"type": "ok_tanh_float32", "name": "f32"})
    report = check_network({**config, "plugins": [*config["plugins"], TRICKY],
                            "layers": layers, "seed": seed})
    assert report.exit_code == 1 and report.root_causes == [culprit]
    bug = next(layer for layer in report.layers if layer.name == culprit)
    assert bug.isolated == "fail"
    assert all(c.status == "fail" for c in bug.checks)
    assert next(layer for layer in report.layers if layer.name == "f32").status != "fail"
