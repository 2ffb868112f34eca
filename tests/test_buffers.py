"""Buffers (issue 16, item 3): non-trainable state is never perturbed, never reported as a
parameter, and left as it was when a check ends."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gradcheck
from conftest import TEST_PLUGINS, write_yaml
from gradcheck.check import run_check
from gradcheck.config import load_config
from gradcheck.errors import GradcheckError
from gradcheck.settings import settings_for
from gradcheck.layers.norm import BatchNorm

BUFFERED = str(TEST_PLUGINS / "buffered.py")
SEEDS = range(10)


def _net(layer: dict, seed=0, dtype="float64") -> dict:
    return {"seed": seed, "plugins": [BUFFERED], "dtype": dtype,
            "input": {"shape": [5], "batch": 4}, "layers": [layer], "loss": "mse"}


def _targets(report, name):
    return [c.target for c in next(x for x in report.layers if x.name == name).checks]


def test_batchnorm_keeps_running_statistics_as_buffers_not_params():
    layer = BatchNorm()
    layer.build((3, 2, 2), np.random.default_rng(0))
    assert set(layer.params) == {"gamma", "beta"}
    assert set(layer.buffers) == {"running_mean", "running_var"}
    np.testing.assert_array_equal(layer.buffers["running_var"], np.ones(3))


def _checked(spec: dict, prepare=None):
    """Build ``spec``, let ``prepare(network)`` set its state, check it in full mode; return
    the network, the report and the buffers as they were just before the check."""
    config = load_config(spec)
    network, batch = gradcheck.build_network(config)
    if prepare:
        prepare(network)
    before = network.buffer_state()
    return network, run_check(network, batch, settings_for(config, mode="full")), before


def _set_running_stats(network):
    rng = np.random.default_rng(1)
    network.units[0].buffers.update(running_mean=rng.normal(size=5),
                                    running_var=rng.uniform(0.5, 2, 5))


def test_batchnorm_buffers_are_never_targets_and_unchanged_by_a_check():
    network, report, before = _checked(_net({"type": "batchnorm", "name": "bn"}),
                                       _set_running_stats)
    assert report.passed and _targets(report, "bn") == ["gamma", "beta", "input"]
    assert network.restore_buffers(before) == []
    assert not any("restored" in e for e in report.events)


def test_a_buffer_never_appears_in_the_json_report(tmp_path):
    report = gradcheck.check_network(_net({"type": "fixed_shift", "name": "shift"}), mode="full")
    assert report.passed and _targets(report, "shift") == ["s", "input"]
    assert "shift\"" not in json.dumps([c.target for layer in report.layers
                                        for c in layer.checks])


@pytest.mark.parametrize("seed", SEEDS)
def test_a_forward_that_updates_its_running_statistics_is_checked_and_put_back(seed):
    network, report, before = _checked(_net({"type": "tracked_scale", "name": "tracked"}, seed))
    assert report.passed and _targets(report, "tracked") == ["s", "input"]
    assert network.restore_buffers(before) == []
    assert any("tracked.running_mean" in e and "restored" in e for e in report.events)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_forward_whose_output_drifts_with_a_buffer_is_never_a_pass(seed):
    report = gradcheck.check_network(_net({"type": "drifting_scale", "name": "drift"}, seed),
                                     mode="full")
    assert not report.passed
    drift = next(x for x in report.layers if x.name == "drift")
    (problem,) = drift.problems
    assert problem["id"] == "nondeterministic-forward"
    assert "changes the buffers scale" in problem["message"]
    assert [c.status for c in drift.checks] == ["skipped", "skipped"]


def test_float_buffers_take_the_network_dtype():
    network, _ = gradcheck.build_network(load_config(_net({"type": "fixed_shift"},
                                                          dtype="float32")))
    assert network.units[0].buffers["shift"].dtype == np.float32


def test_a_buffer_that_is_not_an_array_is_a_clear_error(tmp_path, run_cli):
    path = write_yaml(tmp_path, f"""
plugins: [{BUFFERED}]
input: {{shape: [3], batch: 2}}
layers:
  - type: scalar_buffer
loss: mse
""")
    with pytest.raises(GradcheckError, match=r"buffers\['steps'\] must be a numpy array"):
        gradcheck.check_network(path)
    result = run_cli("check", path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "buffers['steps']" in result.output
