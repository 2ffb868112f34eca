"""The engine's shortcuts agree with plain forward, one copy at a time; the check modes select
what they promise; directional checks localise an injected bug; passes respect their memory cap."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import CONFIGS

from gradcheck import modes, settings as settings_module, tolerance
from gradcheck.build import build_network
from gradcheck.check import check_network, run_check
from gradcheck.compare import element_steps, scale_floor
from gradcheck.config import load_config
from gradcheck.contract import Layer
from gradcheck.directional import Directions
from gradcheck.engine import base, shortcuts
from gradcheck.engine.local import INPUT, LocalProbe
from gradcheck.engine.tail import TailProbe
from gradcheck.engine.verify import Verifier
from gradcheck.layers.dense import Dense
from gradcheck.render.markdown import render_markdown
from gradcheck.registry import loss_class
from gradcheck.settings import settings_for

CNN = {"seed": 3, "input": {"shape": [2, 6, 6], "batch": 3}, "layers": [
    {"type": "conv2d", "filters": 3, "kernel": 3, "padding": 1}, "batchnorm", "relu",
    {"type": "dropout", "rate": 0.3}, "maxpool2d", "flatten", {"type": "dense", "units": 5},
    "tanh", {"type": "dense", "units": 4}], "loss": "cross_entropy"}
# Without batchnorm: every layer's input copies run as stacked single rows.
CNN_ROWS = {**CNN, "layers": [layer for layer in CNN["layers"] if layer != "batchnorm"]}
MLP = {"seed": 1, "input": {"shape": [6], "batch": 4}, "layers": [
    {"type": "dense", "units": 5}, {"type": "dropout", "rate": 0.5}, "sigmoid",
    {"type": "dense", "units": 3}], "loss": "mse"}


def _built(config):
    network, batch = build_network(load_config(config))
    network.set_training(True)
    return network, batch, network.run(batch)


def _probes(network, batch, clean, verifier):
    n = len(network.layers)
    for k, unit in enumerate(network.units):
        upstream = batch.target if k == n else [g.astype(network.dtype) for g in clean.upstream[k]]
        for name in [*unit.params, INPUT]:
            yield LocalProbe(unit, clean.args[k], upstream, name, network.dtype, verifier,
                             f"{unit.name}.{name}")


def _assert_same(a, b):
    np.testing.assert_allclose(a.plus, b.plus, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(a.minus, b.minus, rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(a.step, b.step)
    np.testing.assert_array_equal(a.kinked, b.kinked)


@pytest.mark.parametrize("config", [CNN, CNN_ROWS, MLP], ids=["batchnorm", "rows", "mlp"])
@pytest.mark.parametrize("chunk", [None, 1], ids=["default-chunk", "one-pair-per-pass"])
def test_every_shortcut_equals_plain_forward_one_copy_at_a_time(config, chunk, monkeypatch):
    if chunk is not None:
        monkeypatch.setattr(base, "CHUNK_BYTES", chunk)
    network, batch, clean = _built(config)
    verifier = Verifier(network.dtype, 1e-5, 0)
    kinks = 0
    for probe in _probes(network, batch, clean, verifier):
        indices = np.arange(probe.array.size)
        steps, _ = element_steps(probe.array, indices, 1e-6)
        fast = probe.evaluate(indices, steps)
        with monkeypatch.context() as plain:
            plain.setattr(shortcuts, "route_for", lambda _: None)
            _assert_same(fast, probe.evaluate(indices, steps))
        kinks += int(fast.kinked.sum())
    # Nothing disagrees but dropout's stacked rows (each stacked batch draws its own mask).
    assert not verifier.notes
    assert all("dropout" in event for event in verifier.events)
    # The relu/maxpool layers must really produce kinks, or the kink comparison was not exercised.
    assert kinks > 0 or config is MLP


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


def test_a_pass_holds_no_more_copies_than_its_memory_cap(monkeypatch):
    recorder = _Recorder()
    x = np.random.default_rng(0).normal(size=(4, 50))
    row_bytes = 50 * 8
    for pairs in (1, 3):
        monkeypatch.setattr(base, "CHUNK_BYTES", 2 * base.LIVE_COPIES * row_bytes * pairs)
        recorder.seen.clear()
        probe = LocalProbe(recorder, x, np.ones_like(x), INPUT, np.float64,
                           Verifier(np.float64, 1e-5, 0), "recorder.input")
        probe.evaluate(np.arange(x.size), np.full(x.size, 1e-6))
        assert max(recorder.seen) == max(2 * pairs, x.shape[0])


class _StatefulNoBatchAxis(Layer):
    """A layer whose branch state has no batch axis: stacked rows cannot report it per copy."""

    def forward(self, x):
        self.sign = np.sign(x.sum())
        return x

    def backward(self, grad_out):
        return grad_out

    def branch_state(self):
        return np.asarray(self.sign)


def test_a_layer_whose_state_has_no_row_per_copy_falls_back_to_forward():
    x = np.random.default_rng(0).normal(size=(3, 5))
    verifier = Verifier(np.float64, 1e-5, 0)
    probe = LocalProbe(_StatefulNoBatchAxis(), x, np.ones_like(x), INPUT, np.float64, verifier,
                       "state.input")
    found = probe.evaluate(np.arange(x.size), np.full(x.size, 1e-6))
    np.testing.assert_allclose(found.numeric, 1.0, rtol=1e-8)
    assert any("branch state" in e for e in verifier.events) and not verifier.notes


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
    return network, batch, network.run(batch)


def test_directional_checks_localise_an_injected_bug():
    network, batch, clean = _net_with_bug()
    tol = tolerance.resolve("float64")
    probe = TailProbe.for_target(network, clean, batch.target, 0, "W")
    found = Directions(probe, [clean.grads[(0, "W")]], [scale_floor(probe.arrays[0])], tol,
                       network.dtype).check(4, np.random.default_rng(0))
    assert found.failed == found.directions == 4
    flat_bad = np.ravel_multi_index(_DenseOneWrongElement.bad, probe.arrays[0].shape)
    assert list(found.located_failing) == [flat_bad]
    healthy = TailProbe.for_target(network, clean, batch.target, 2, "W")
    passed = Directions(healthy, [clean.grads[(2, "W")]], [scale_floor(healthy.arrays[0])],
                        tol, network.dtype).check(4, np.random.default_rng(0))
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


def test_auto_is_full_within_budget_and_falls_back_and_says_so_beyond_it(monkeypatch):
    spec = load_config(MLP)
    network, batch = build_network(spec)
    report = run_check(network, batch, settings_for(spec))
    assert report.settings["mode"] == "full" and report.settings["requested_mode"] == "auto"
    assert not any("auto mode" in w for w in report.warnings)
    network, batch = build_network(spec)
    # A default budget no full check fits (an explicit --max-seconds would also be a hard stop,
    # tested in test_integrity).
    monkeypatch.setattr(settings_module, "DEFAULT_BUDGET_SECONDS", 1e-9)
    report = run_check(network, batch, settings_for(spec, samples=4))
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
    # A check stopped at its deadline is incomplete, never a pass.
    stopped = run_cli("check", CONFIGS / "lenet.yaml", "--mode", "full", "--max-seconds", "1e-6",
                      "-q")
    assert stopped.exit_code == 3 and stopped.stdout.startswith("INCOMPLETE")
