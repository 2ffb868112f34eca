"""Trustworthy verdicts: every bug in the zoo is caught and blamed on its layer, every correct
but tricky layer passes, mismatches are explained, and replay/weight decay/float32 behave."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TEST_PLUGINS, write_yaml
from gradcheck import build_network, check_network, load_config
from gradcheck.explain import classify
from gradcheck.judge import judge
from gradcheck.engine import Perturbed
from gradcheck.tolerance import Tolerance
from zoo_cases import BUGGY, TRICKY_OK, ZOO


@pytest.mark.parametrize("case", sorted(BUGGY))
def test_every_bug_in_the_zoo_is_caught_and_blamed_on_its_layer(case):
    config, culprit = BUGGY[case]
    report = check_network(config)
    assert report.exit_code == 1
    assert report.root_causes == [culprit]
    layer = next(layer for layer in report.layers if layer.name == culprit)
    assert layer.isolated == "fail"  # it fails alone, not only end to end
    for other in report.layers:
        if other.status == "fail" and other.name != culprit:
            assert other.inherited_from == culprit and other.isolated in ("pass", "kink")


@pytest.mark.parametrize("case", sorted(TRICKY_OK))
def test_correct_but_tricky_layers_pass(case):
    report = check_network(TRICKY_OK[case])
    assert report.exit_code == 0, [(c.target, c.max_rel_error) for layer in report.layers
                                   for c in layer.checks if c.status == "fail"]
    assert report.root_causes == []


def test_kinks_without_branch_state_are_found_generically():
    """The plugin ReLU/max-pool expose no branch_state: their kinks come from the stencil."""
    ties = check_network(TRICKY_OK["maxpool_exact_ties"])
    assert ties.counts()["kinks"] > 0 and ties.counts()["failed"] == 0
    assert check_network(TRICKY_OK["relu_at_exact_zero"]).counts()["kinks"] > 0


# (case, target of the culprit, pattern, words the explanation must contain)
PATTERNS = [
    ("dense_bias_mean", "b", "constant_ratio", "missing factor 4"),
    ("avgpool_divides_by_side", "input", "constant_ratio", "2x too large"),
    ("mse_sign_flipped", "input", "sign_flip", "sign flipped"),
    ("dense_square_transposed", "W", "transposed", "transposing"),
    ("conv_flipped_kernel_grad", "W", "kernel_flipped", "180 degrees"),
    ("dense_loop_bound", "W", "boundary", "the last index along axis 1 (size 6)"),
    ("scale_first_feature_skipped", "gamma", "boundary", "first element"),
    ("dense_batch_loop", "input", "some_samples", "errors only in sample 3 of 4"),
    ("dense_weight_decay_inside", "W", "includes_weight_decay", "weight_decay x W"),
]


@pytest.mark.parametrize("case, target, kind, words", PATTERNS)
def test_mismatch_patterns_are_named_in_words(case, target, kind, words):
    config, culprit = BUGGY[case]
    layer = next(x for x in check_network(config).layers if x.name == culprit)
    check = next(c for c in layer.checks if c.target == target and c.term == "data")
    assert (check.pattern, words in check.explanation) == (kind, True), check.explanation
    assert check.worst_elements and check.worst_elements[0]["status"] == "fail"


def _status(shape, failing):
    status = np.full(shape, "pass", dtype=object)
    status[failing] = "fail"
    return status.astype(str)


def test_classify_analytic_all_zero_and_isolated_elements():
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(5, 7))
    names = ("axis 0", "axis 1")
    zero = classify(np.zeros((5, 7)), numeric, _status((5, 7), np.ones((5, 7), bool)),
                    rtol=1e-5, axis_names=names)
    assert zero.kind == "analytic_zero"
    analytic = numeric.copy()
    analytic[2, 3] += 1.0
    analytic[1, 4] -= 1.0
    mask = np.zeros((5, 7), bool)
    mask[2, 3] = mask[1, 4] = True
    few = classify(analytic, numeric, _status((5, 7), mask), rtol=1e-5, axis_names=names)
    assert few.kind == "isolated" and "[1, 4]" in few.text and "[2, 3]" in few.text
    assert classify(numeric, numeric, _status((5, 7), np.zeros((5, 7), bool)), rtol=1e-5,
                    axis_names=names) is None


def test_classify_border_ring_and_first_channel():
    rng = np.random.default_rng(1)
    numeric = rng.normal(size=(2, 3, 5, 5))
    ring = np.zeros_like(numeric, bool)
    ring[..., 0, :] = ring[..., -1, :] = ring[..., :, 0] = ring[..., :, -1] = True
    analytic = np.where(ring, numeric * 1.3 + 0.1, numeric)
    names = ("sample", "channel", "row", "column")
    found = classify(analytic, numeric, _status(numeric.shape, ring), rtol=1e-5, axis_names=names)
    assert found.kind == "boundary" and "border" in found.text
    channel = np.zeros_like(numeric, bool)
    channel[:, 0] = True
    analytic = np.where(channel, numeric + 0.5, numeric)
    found = classify(analytic, numeric, _status(numeric.shape, channel), rtol=1e-5,
                     axis_names=names)
    assert found.kind == "boundary" and "first channel" in found.text


def _evaluator(function):
    """evaluate(indices, steps) over scalar functions f_i(t) of the perturbation t."""

    def evaluate(indices, steps):
        steps = np.broadcast_to(np.asarray(steps, float), np.shape(indices))
        plus = np.array([function(i, h) for i, h in zip(indices, steps)])
        minus = np.array([function(i, -h) for i, h in zip(indices, steps)])
        return Perturbed(plus, minus, 2.0 * steps, np.zeros(len(indices), bool),
                         np.maximum(np.abs(plus), np.abs(minus)))

    return evaluate


def _judge(f, analytic, indices, h, tol, cap=0.1):
    """judge() with the same step h and step cap for every element."""
    n = len(indices)
    return judge(f, analytic, indices, f(indices, np.full(n, h)), np.full(n, h), np.full(n, cap),
                 tol, np.float64)


def test_a_kink_straddled_by_the_step_is_a_kink_and_a_smooth_mismatch_is_a_failure():
    tol = Tolerance(1e-6, 1e-5, 1e-8)
    # Element 1 has a kink 0.2 h from where it sits; the others are smooth lines of slope 1.
    f = _evaluator(lambda i, t: abs(t - 2e-7) if i == 1 else 1.0 + t)
    indices = np.arange(8)
    right = np.ones(8)
    right[1] = 1.0  # the one-sided slope at the point: right, but the difference averages
    verdicts = _judge(f, right, indices, 1e-6, tol)
    assert list(verdicts.status) == ["pass", "kink", *["pass"] * 6]
    wrong = right.copy()
    wrong[5] = 1.5
    verdicts = _judge(f, wrong, indices, 1e-6, tol)
    assert verdicts.status[5] == "fail"


def test_an_estimate_that_does_not_settle_is_inconclusive_not_a_failure():
    tol = Tolerance(1e-6, 1e-5, 1e-8)
    noise = np.random.default_rng(7)
    table: dict = {}

    def loss(i, t):  # element 3 is rough (a noisy loss), the others a clean slope of 2
        if i != 3:
            return 2.0 * t
        return table.setdefault(t, 2.0 * t + 3e-7 * noise.standard_normal())

    f = _evaluator(loss)
    indices = np.arange(12)
    # The noise (3e-7 of the loss) over steps capped at 1e-5 never gives a stable estimate.
    verdicts = _judge(f, np.full(12, 2.0), indices, 1e-6, tol, cap=1e-5)
    assert verdicts.status[3] == "inconclusive"
    assert set(np.delete(verdicts.status, 3)) == {"pass"}
    # Far from every estimate, the analytic value fails even where the estimate is rough.
    analytic = np.full(12, 2.0)
    analytic[3] = 40.0
    assert _judge(f, analytic, indices, 1e-6, tol, cap=1e-5).status[3] == "fail"


def test_richardson_rescues_a_step_too_coarse_for_a_curved_loss():
    tol = Tolerance(1e-4, 1e-9, 1e-14)  # a step too coarse for so tight a tolerance
    f = _evaluator(lambda i, t: np.exp(3.0 * t))  # L'(0) = 3: D(h) is off by 27 h^2 / 6
    verdicts = _judge(f, np.full(4, 3.0), np.arange(4), 1e-4, tol, cap=1e-3)
    assert set(verdicts.status) == {"pass"} and verdicts.rescued == 4


def test_replay_round_trip(tmp_path, run_cli):
    config, _ = BUGGY["tanh_one_minus_y"]
    path = write_yaml(tmp_path, json.dumps(config))
    record_path = tmp_path / "replay.json"
    result = run_cli("check", path, "-q", "--replay", record_path)
    assert result.exit_code == 1
    record = json.loads(record_path.read_text())
    assert record["layer"] == "culprit" and record["seed"] == 3
    assert set(record) >= {"target", "index", "step", "loss_plus", "loss_minus", "analytic", "numeric"}
    replayed = run_cli("replay", record_path)
    assert replayed.exit_code == 1
    assert f"{record['analytic']: .10e}" in replayed.stdout and "still disagrees" in replayed.stdout
    assert "losses differ" not in replayed.stdout
    # A fixed layer: the same element now matches.
    fixed = {**config, "layers": [dict(x, type="tanh") if x.get("name") == "culprit" else x
                                  for x in config["layers"]]}
    write_yaml(tmp_path, json.dumps(fixed))
    again = run_cli("replay", record_path)
    assert again.exit_code == 0 and "now matches" in again.stdout
    record_path.write_text("{}")
    assert run_cli("replay", record_path).exit_code == 2


def test_a_huge_weight_decay_cannot_mask_a_wrong_data_gradient():
    config, culprit = BUGGY["dense_weight_decay_inside"]
    decay = 1.0e3
    config = {**config, "train": {"weight_decay": decay}}
    report = check_network(config)
    layer = next(x for x in report.layers if x.name == culprit)
    data = next(c for c in layer.checks if c.target == "W" and c.term == "data")
    l2 = next(c for c in layer.checks if c.target == "W" and c.term == "l2")
    assert report.root_causes == [culprit] and data.status == "fail" and l2.status == "pass"
    assert any("cannot mask" in note for note in data.notes)
    # The masking claim: checked as one sum (data gradient + decay * W, what the optimiser sees),
    # the same wrong gradient would pass at the default rtol at every element shown failing.
    network, _ = build_network(load_config(config))
    weights = network.layers[layer.index].params["W"]
    rtol = report.settings["rtol"]
    assert data.worst_elements
    for element in data.worst_elements:
        w = weights[tuple(element["index"])]
        total_a, total_n = element["analytic"] + decay * w, element["numeric"] + decay * w
        summed_error = abs(total_a - total_n) / max(abs(total_a), abs(total_n))
        assert summed_error < rtol < element["rel_error"], (element, w)


def test_float32_network_warns_and_still_catches_a_bug(tmp_path, run_cli):
    config, _ = BUGGY["sigmoid_on_input"]
    config = {**config, "dtype": "float32"}
    report = check_network(config)
    assert report.root_causes == ["culprit"]
    assert any("float32 network" in w for w in report.warnings)
    path = write_yaml(tmp_path, json.dumps(config))
    widened = json.loads(run_cli("check", path, "--float64", "--format", "json").stdout)
    assert widened["settings"]["dtype"] == "float64" and widened["root_causes"] == ["culprit"]
    ok = check_network(TRICKY_OK["float32_network"])
    assert ok.passed and any("float32 network" in w for w in ok.warnings)


def test_float32_inside_a_float64_network_is_not_a_failure_and_says_what_it_measured():
    report = check_network(TRICKY_OK["float32_inside_float64"])
    assert report.passed
    # Every layer returns float64, so nothing is guessed about float32; the measured round-off
    # is reported with its number on the layer that computes in float32 inside.
    assert not any("float32" in w for w in report.warnings)
    tanh = next(layer for layer in report.layers if layer.type == "ok_tanh_float32")
    notes = [n for c in tanh.checks for n in c.notes]
    assert any("measured round-off" in n and "computes in float32 inside" in n for n in notes)
    others = [n for layer in report.layers if layer is not tanh for c in layer.checks
              for n in c.notes]
    assert not any("round-off" in n for n in others)


def test_a_layer_returning_float32_in_a_float64_network_is_named():
    report = check_network({"plugins": [str(TEST_PLUGINS / "tricky_ok.py")],
                            "input": {"shape": [5], "batch": 3},
                            "layers": [{"type": "dense", "units": 4},
                                       {"type": "ok_tanh_returns_float32", "name": "narrow"},
                                       {"type": "dense", "units": 3}], "loss": "mse"})
    assert any(w.startswith("narrow return(s) float32") for w in report.warnings)


def test_text_report_explains_and_draws_a_heat_map(tmp_path, run_cli):
    config, _ = BUGGY["dense_loop_bound"]
    result = run_cli("check", write_yaml(tmp_path, json.dumps(config)), "--color", "never")
    assert result.exit_code == 1
    out = result.stdout
    assert "pattern: errors only in the last index along axis 1" in out
    assert "relative error:" in out
    assert "fails alone too" in out
    rows = [line.strip() for line in out.splitlines() if line.startswith("    ") and
            set(line.strip()) <= {"·", "░", "▒", "▓", "█"} and line.strip()]
    assert rows and all(row[-1] != "·" and set(row[:-1]) == {"·"} for row in rows)


def test_json_carries_pattern_isolation_and_root_causes(tmp_path, run_cli):
    config, _ = BUGGY["dense_square_transposed"]
    doc = json.loads(run_cli("check", write_yaml(tmp_path, json.dumps(config)),
                             "--format", "json").stdout)
    layers = {layer["name"]: layer for layer in doc["layers"]}
    assert doc["root_causes"] == ["culprit"] and layers["culprit"]["isolated"] == "fail"
    # Only W is wrong: dL/dx is right, so nothing upstream fails; once anything fails every
    # layer is checked alone, and the innocent ones pass alone.
    assert layers["first"]["status"] == "pass" and layers["first"]["isolated"] == "pass"
    assert layers["last"]["isolated"] == "pass"
    w = next(c for c in layers["culprit"]["checks"] if c["target"] == "W")
    assert w["pattern"] == "transposed" and w["worst_elements"]


def test_two_wrong_layers_in_one_network_are_both_root_causes():
    config = {"seed": 1, "plugins": [ZOO], "input": {"shape": [5], "batch": 3}, "loss": "mse",
              "layers": [{"type": "dense", "units": 5}, {"type": "zoo_tanh_one_minus_y", "name": "a"},
                         {"type": "dense", "units": 5}, {"type": "zoo_sigmoid_on_input", "name": "b"},
                         {"type": "dense", "units": 2}]}
    report = check_network(config)
    assert report.root_causes == ["a", "b"]
    by_name = {layer.name: layer for layer in report.layers}
    assert by_name["dense_2"].inherited_from == "b" and by_name["dense_1"].inherited_from == "a"
