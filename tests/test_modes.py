"""The batched engine agrees with the one-perturbation-at-a-time path; the check modes select what
they promise; directional mode localises an injected bug; stacking respects its memory cap."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import CONFIGS

from gradcheck import modes, stacking, tolerance
from gradcheck.check import check_network, run_check, settings_for
from gradcheck.config import load_config
from gradcheck.analytic import INPUT, Target, analytic_pass, target_array, targets
from gradcheck.engine import Probe
from gradcheck.contract import Layer
from gradcheck.layers.dense import Dense
from gradcheck.build import build_network
from gradcheck.render.markdown import render_markdown
from gradcheck.registry import loss_class

CNN = {"seed": 3, "input": {"shape": [2, 6, 6], "batch": 3}, "layers": [
    {"type": "conv2d", "filters": 3, "kernel": 3, "padding": 1}, "batchnorm", "relu",
    {"type": "dropout", "rate": 0.3}, "maxpool2d", "flatten", {"type": "dense", "units": 5},
    "tanh", {"type": "dense", "units": 4}], "loss": "cross_entropy"}
# Without batchnorm, inputs are evaluated one row per copy (the tail never mixes samples).
CNN_ROWS = {**CNN, "layers": [layer for layer in CNN["layers"] if layer != "batchnorm"]}
# Batchnorm after several row-wise layers: inputs run one row per copy up to it, whole batches after.
CNN_LATE_MIX = {**CNN, "layers": [layer for layer in CNN_ROWS["layers"][:3]] + ["batchnorm"]
                + CNN_ROWS["layers"][3:]}
MLP = {"seed": 1, "input": {"shape": [6], "batch": 4}, "layers": [
    {"type": "dense", "units": 5}, {"type": "dropout", "rate": 0.5}, "sigmoid",
    {"type": "dense", "units": 3}], "loss": "mse"}


def _built(config):
    network, batch = build_network(load_config(config))
    network.set_training(True)
    return network, batch, analytic_pass(network, batch)


def _assert_same(a, b):
    np.testing.assert_allclose(a.plus, b.plus, rtol=1e-13, atol=0)
    np.testing.assert_allclose(a.minus, b.minus, rtol=1e-13, atol=0)
    np.testing.assert_array_equal(a.step, b.step)
    np.testing.assert_array_equal(a.kinked, b.kinked)


@pytest.mark.parametrize("config", [CNN, CNN_ROWS, CNN_LATE_MIX, MLP],
                         ids=["batchnorm", "rows", "rows-then-batchnorm", "mlp"])
@pytest.mark.parametrize("max_bytes", [None, 1], ids=["default-cap", "one-pair-per-pass"])
def test_batched_engine_equals_the_serial_path(config, max_bytes):
    network, batch, cached = _built(config)
    kinks = 0
    for target in targets(network):
        probe = Probe(network, batch, cached, target, max_bytes=max_bytes)
        indices = np.arange(target_array(network, cached, target).size)
        batched = probe.evaluate(indices, 1e-6)
        _assert_same(batched, probe.evaluate_serial(indices, 1e-6))
        kinks += int(batched.kinked.sum())
    # The relu/maxpool tail must really produce kinks, or the kink comparison was not exercised.
    assert kinks > 0 or config is MLP


def test_a_subset_of_elements_in_any_order_matches_too():
    network, batch, cached = _built(CNN_ROWS)
    target = Target(1, INPUT)
    probe = Probe(network, batch, cached, target, max_bytes=10_000)
    indices = np.random.default_rng(0).permutation(target_array(network, cached, target).size)[:40]
    _assert_same(probe.evaluate(indices, 1e-6), probe.evaluate_serial(indices, 1e-6))


class _Recorder(Layer):
    """Identity that records the batch sizes it is run with."""

    def __init__(self):
        super().__init__()
        self.seen: list[int] = []

    def forward(self, x):
        self.seen.append(x.shape[0])
        return x

    def backward(self, grad_out):
        return grad_out


def test_memory_cap_bounds_the_stacked_batch():
    network, batch, cached = _built(MLP)
    recorder = _Recorder()
    network.layers.insert(2, recorder)
    network.shapes.insert(2, network.shapes[2])
    cached = analytic_pass(network, batch)
    rows = batch.x.shape[0]
    per_level = rows * max(int(np.prod(s)) for s in network.shapes) * 8 * stacking.LIVE_COPIES
    for levels in (2, 6):
        recorder.seen.clear()
        probe = Probe(network, batch, cached, Target(0, "W"), max_bytes=levels * per_level)
        assert probe.levels == levels
        probe.evaluate(np.arange(probe.array.size), 1e-6)
        assert max(recorder.seen) == levels * rows
    assert stacking.levels_for(network, 0, rows, 0) == 2  # a +h/-h pair always fits


class _StatefulNoBatchAxis(Layer):
    """A layer whose branch state has no batch axis: stacking cannot split it per copy."""

    def forward(self, x):
        self.sign = np.sign(x.sum())
        return x

    def backward(self, grad_out):
        return grad_out

    def branch_state(self):
        return np.asarray(self.sign)


def test_a_layer_breaking_the_stacking_assumptions_falls_back_to_the_serial_path():
    network, batch, cached = _built(MLP)
    network.layers.insert(1, _StatefulNoBatchAxis())
    network.shapes.insert(1, network.shapes[1])
    cached = analytic_pass(network, batch)
    probe = Probe(network, batch, cached, Target(0, "W"))
    indices = np.arange(probe.array.size)
    _assert_same(probe.evaluate(indices, 1e-6), probe.evaluate_serial(indices, 1e-6))


@pytest.mark.parametrize("name", ["mse", "l2", "cross_entropy", "projection", "bce"])
def test_forward_many_equals_one_forward_per_copy(name):
    loss = loss_class(name)()
    rng = np.random.default_rng(0)
    preds = rng.uniform(0.1, 0.9, (5, 4, 3))
    target = rng.integers(0, 3, 4) if name == "cross_entropy" else rng.uniform(0, 1, (4, 3))
    expected = [loss.forward(p, target) for p in preds]
    np.testing.assert_allclose(loss.forward_many(preds, target), expected, rtol=1e-14)


def test_sample_mode_takes_the_largest_gradients_and_every_row():
    rng = np.random.default_rng(0)
    grad = rng.normal(size=(16, 50))
    grad[7, 3] = 100.0
    picked = modes.select_elements(grad, "sample", 32, rng)
    assert len(picked) == 32 and len(np.unique(picked)) == 32
    assert 7 * 50 + 3 in picked
    rows = np.unique(picked // 50)
    assert len(rows) == 16  # 24 stratified draws over 16 rows: none is skipped
    assert len(modes.select_elements(grad, "full", 32, rng)) == grad.size
    assert len(modes.select_elements(grad, "directional", 32, rng)) == 0


class _DenseOneWrongElement(Dense):
    """Dense whose weight gradient is wrong in exactly one element."""

    bad = (4, 2)

    def backward(self, grad_out):
        grad_in = super().backward(grad_out)
        self.grads["W"] = self.grads["W"].copy()
        self.grads["W"][self.bad] += 0.5
        return grad_in


def _net_with_bug(units=7, fan_in=40):
    network, batch, _ = _built({"seed": 2, "input": {"shape": [fan_in], "batch": 5}, "layers": [
        {"type": "dense", "units": units}, "tanh", {"type": "dense", "units": 3}],
        "loss": "cross_entropy"})
    wrong = _DenseOneWrongElement(units)
    wrong.params = network.layers[0].params
    wrong.name = "fc_bug"
    network.layers[0] = wrong
    return network, batch, analytic_pass(network, batch)


def test_directional_mode_localises_an_injected_bug():
    network, batch, cached = _net_with_bug()
    target = Target(0, "W")
    probe = Probe(network, batch, cached, target)
    tol = tolerance.resolve("float64")
    found = modes.directional_check(probe, cached.grads[target], tol, network.dtype, 4,
                                    np.random.default_rng(0))
    assert found.failed == found.directions == 4
    flat_bad = np.ravel_multi_index(_DenseOneWrongElement.bad, probe.array.shape)
    assert list(found.located_failing) == [flat_bad]
    # Bisection, not a full recheck: far fewer evaluations than 2 per element.
    assert found.evaluations < 2 * probe.array.size / 2
    healthy = Target(2, "W")
    passed = modes.directional_check(Probe(network, batch, cached, healthy), cached.grads[healthy],
                                     tol, network.dtype, 4, np.random.default_rng(0))
    assert passed.failed == 0 and passed.status == "pass"


def test_directional_report_fails_and_names_the_element():
    network, batch, _ = _net_with_bug()
    spec = load_config({"input": {"shape": [40], "batch": 5}, "layers": ["relu"],
                        "loss": "mse"})
    report = run_check(network, batch, settings_for(spec, mode="directional"))
    check = next(c for c in report.layers[0].checks if c.target == "W")
    assert check.status == "fail" and check.worst_index == list(_DenseOneWrongElement.bad)
    assert check.coverage["localised"] == [list(_DenseOneWrongElement.bad)]
    assert check.coverage["directions"] == 4 and check.coverage["of"] == 280
    assert report.settings["mode"] == "directional" and not report.passed


def test_auto_is_full_within_budget_and_falls_back_and_says_so_beyond_it():
    spec = load_config(MLP)
    network, batch = build_network(spec)
    report = run_check(network, batch, settings_for(spec))
    assert report.settings["mode"] == "full" and report.settings["requested_mode"] == "auto"
    assert not any("auto mode" in w for w in report.warnings)
    network, batch = build_network(spec)
    # A budget no full check fits (set on the settings directly: an explicit --max-seconds would
    # also be a hard stop, tested in test_robustness).
    settings = dataclasses.replace(settings_for(spec, samples=4), max_seconds=1e-9)
    report = run_check(network, batch, settings)
    assert report.settings["mode"] == "sample+directional"
    assert report.settings["samples"] == 4 and report.settings["directions"] == 4
    assert any("auto mode" in w and "compared one by one" in w for w in report.warnings)
    first = report.layers[0].checks[0]
    assert first.checked == 4 and first.coverage["directions"] == 4 and report.passed


def test_progress_reaches_its_total():
    spec = load_config(CNN)
    network, batch = build_network(spec)
    calls = []
    run_check(network, batch, settings_for(spec, mode="full"),
              progress=lambda done, total, what: calls.append((done, total, what)))
    assert calls and all(done <= total for done, total, _ in calls)
    assert calls[-1][0] == calls[-1][1] > 0 and calls[-1][2]


def test_cli_modes_and_coverage_keys(run_cli):
    result = run_cli("check", CONFIGS / "lenet.yaml", "--mode", "directional", "--directions",
                     "2", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["settings"]["mode"] == "directional" and doc["settings"]["directions"] == 2
    check = doc["layers"][0]["checks"][0]
    assert check["coverage"]["directions"] == 2 and check["coverage"]["elements"] == 0
    bad = run_cli("check", CONFIGS / "lenet.yaml", "--max-seconds", "0")
    assert bad.exit_code == 2


def test_directional_table_rows_show_their_directions_and_their_error():
    report = check_network(CONFIGS / "mlp.yaml", mode="directional")
    text = render_markdown(report)
    rows = [line for line in text.splitlines() if "| dL/d" in line]
    assert rows and all("| 0 + 4 dir |" in row for row in rows)
    # The error column carries the directional error, not the 0 of "no element compared".
    errors = [float(row.split("|")[7]) for row in rows]
    assert all(0 < e < 1e-5 for e in errors)


def test_verdict_line_counts_directions_and_skipped_targets(run_cli):
    # A directional pass compares no single element: the verdict must not read "0 elements match".
    directional = run_cli("check", CONFIGS / "mlp.yaml", "--mode", "directional", "-q")
    assert directional.exit_code == 0
    assert "0 elements and " in directional.stdout and " directions in " in directional.stdout
    full = run_cli("check", CONFIGS / "mlp.yaml", "-q")
    assert "directions" not in full.stdout and "skipped" not in full.stdout
    # A check stopped at its deadline must say that targets were never reached.
    stopped = run_cli("check", CONFIGS / "lenet.yaml", "--mode", "full", "--max-seconds", "1e-6",
                      "-q")
    assert stopped.exit_code == 0
    assert "targets skipped (not checked)" in stopped.stdout and " of " in stopped.stdout


@pytest.mark.parametrize("dtype", [bool, np.int8, np.float64])
def test_adjacent_pair_kinks_equals_the_general_comparison(dtype):
    rng = np.random.default_rng(0)
    copies, rows = 6, 3
    state = (rng.random((copies * rows, 4, 2)) > 0.5).astype(dtype)
    state[2 * rows:4 * rows] = state[0:2 * rows]  # pair 1 repeats pair 0 ...
    state[3 * rows:4 * rows] = state[2 * rows:3 * rows]  # ... and its two sides agree
    q = np.arange(copies // 2)
    expected = stacking.pair_kinks([state], copies, (2 * q,), (2 * q + 1,))
    got = stacking.adjacent_pair_kinks([state], copies)
    np.testing.assert_array_equal(got, expected)
    assert not got[1] and got.any()
