"""No false PASS: green means every selected gradient was compared against the layer's own
forward and was right. Liars (tests/plugins/liars.py) that fool a checker trusting a speed-up,
calling backward once or forward once must end in the right verdict, at every seed."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import gradcheck
import gradcheck.testing
from conftest import TEST_PLUGINS, write_yaml
from gradcheck.probes import unit_problems
from gradcheck.report import EXIT_INCOMPLETE

LIARS = str(TEST_PLUGINS / "liars.py")
SEEDS = range(10)


def _net(layers, seed=0, loss="mse", shape=(6,), batch=4, **extra) -> dict:
    return {"seed": seed, "plugins": [LIARS], "input": {"shape": list(shape), "batch": batch},
            "layers": layers, "loss": loss, **extra}


def _target(report, layer, target):
    found = next(x for x in report.layers if x.name == layer)
    return next(c for c in found.checks if c.target == target)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("liar", ["transposed", "past_first", "later_part", "minus_side"])
def test_a_speed_up_that_lies_like_backward_never_passes(liar, seed):
    report = gradcheck.check_network(_net([{"type": f"liar_{liar}", "name": "liar"}], seed),
                                     mode="full")
    assert not report.passed and report.root_causes == ["liar"]
    assert _target(report, "liar", "W").status == "fail"
    assert any("'liar': perturbed_outputs disagrees with forward" in n for n in report.notes)


def test_the_transposed_liar_is_named_as_transposed():
    report = gradcheck.check_network(_net([{"type": "liar_transposed", "name": "liar"}]),
                                     mode="full")
    assert _target(report, "liar", "W").pattern == "transposed"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_loss_whose_forward_many_lies_is_judged_by_its_forward(seed):
    report = gradcheck.check_network(_net([{"type": "dense", "units": 3}], seed,
                                          loss="liar_mse_many"), mode="full")
    assert not report.passed and report.root_causes == ["loss"]
    assert _target(report, "loss", "input").pattern == "constant_ratio"
    assert any("forward_many disagrees with forward" in n for n in report.notes)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_batch_mixing_layer_whose_forward_groups_lies_is_judged_by_its_forward(seed):
    report = gradcheck.check_network(_net([{"type": "dense", "units": 3},
                                           {"type": "liar_centre_groups", "name": "centre"}],
                                          seed), mode="full")
    assert not report.passed and report.root_causes == ["centre"]
    assert _target(report, "centre", "input").status == "fail"


def test_a_subclass_overriding_only_forward_does_not_inherit_speed_ups():
    shape = {"shape": [2, 3, 3]}
    right = gradcheck.check_network(_net([{"type": "liar_scaled_batchnorm", "name": "bn"}],
                                         shape=shape["shape"]), mode="full")
    assert right.passed and not right.notes, right.notes
    stale = gradcheck.check_network(
        _net([{"type": "liar_scaled_batchnorm_stale_backward", "name": "bn"}],
             shape=shape["shape"]), mode="full")
    assert not stale.passed and stale.root_causes == ["bn"]
    assert all(c.pattern == "constant_ratio" for c in
               next(x for x in stale.layers if x.name == "bn").checks if c.status == "fail")


def test_a_correct_layer_that_cannot_take_stacked_copies_passes():
    report = gradcheck.check_network(_net([{"type": "dense", "units": 5},
                                           {"type": "liar_mask_fixed_on_first_call"},
                                           {"type": "dense", "units": 2}]), mode="full")
    assert report.passed, report.notes
    # A stacking fallback is the engine's business: said under -v, not a note.
    assert not report.notes
    assert any("stacked copies" in e for e in report.events)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_backward_that_mutates_its_cache_fails_and_alone(seed):
    report = gradcheck.check_network(_net([{"type": "dense", "units": 5},
                                           {"type": "liar_cache_mutating", "name": "sin"},
                                           {"type": "dense", "units": 2}], seed), mode="full")
    assert not report.passed and report.root_causes == ["sin"]
    problems = next(x for x in report.layers if x.name == "sin").problems
    assert [p["id"] for p in problems] == ["backward-not-idempotent"]
    assert "s = s * g" in problems[0]["fix"]


@pytest.mark.parametrize("seed", SEEDS)
def test_a_random_forward_always_fails_blaming_only_itself(seed):
    report = gradcheck.check_network(_net([{"type": "dense", "units": 5, "name": "fc"},
                                           {"type": "liar_random_dropout", "name": "drop"},
                                           {"type": "dense", "units": 2}], seed), mode="full")
    assert not report.passed and report.root_causes == ["drop"]
    problem = next(x for x in report.layers if x.name == "drop").problems[0]
    assert problem["id"] == "nondeterministic-forward"
    assert "forward is not deterministic: two calls on the same input differ by" in \
        problem["message"] and "self.rng" in problem["fix"]
    assert all(layer.status != "fail" for layer in report.layers if layer.name != "drop")


@pytest.mark.parametrize("seed", SEEDS)
def test_the_builtin_dropout_draws_from_its_rewound_rng_and_passes(seed):
    report = gradcheck.check_network(_net([{"type": "dense", "units": 5},
                                           {"type": "dropout", "rate": 0.4},
                                           {"type": "dense", "units": 2}], seed), mode="full")
    assert report.passed and not report.notes


def test_nondet_tol_accepts_a_kernel_that_is_only_slightly_nondeterministic():
    net = _net([{"type": "dense", "units": 4}, {"type": "liar_jitter", "name": "jitter"}])
    strict = gradcheck.check_network(net, mode="full")
    assert not strict.passed and strict.root_causes == ["jitter"]
    tolerant = gradcheck.check_network(net, mode="full", nondet_tol=1e-10)
    assert tolerant.verdict == "pass" and not any(x.problems for x in tolerant.layers)


def _slow(bug: bool = False) -> dict:
    """A network whose full check takes seconds (each copy of slow_scale sleeps 1 ms)."""
    layers = [{"type": "slow_scale", "name": "fc1"}, {"type": "dense", "units": 3, "name": "fc2"}]
    if bug:
        layers.insert(1, {"type": "liar_cache_mutating"})
    return {"seed": 1, "input": {"shape": [400], "batch": 2}, "plugins": [LIARS],
            "layers": layers, "loss": "mse"}


def test_a_check_stopped_by_its_deadline_is_incomplete_never_pass(tmp_path, run_cli):
    report = gradcheck.check_network(_slow(), mode="full", max_seconds=0.5)
    assert report.verdict == "incomplete" and not report.passed
    assert report.exit_code == EXIT_INCOMPLETE and report.exit_code_for(True) == 0
    fc1 = _target(report, "fc1", "s")
    assert 0 < fc1.checked < 400 and fc1.coverage["stopped"]
    assert any(f"{fc1.checked:,} of 400 selected elements compared" in n for n in fc1.notes)
    path = write_yaml(tmp_path, json.dumps(_slow()))
    result = run_cli("check", path, "--mode", "full", "--max-seconds", "0.5")
    assert result.exit_code == 3 and "INCOMPLETE" in result.stdout
    assert run_cli("check", path, "--mode", "full", "--max-seconds", "0.5",
                   "--allow-incomplete").exit_code == 0
    doc = json.loads(run_cli("check", path, "--mode", "full", "--max-seconds", "0.5",
                             "--format", "json").stdout)
    assert doc["complete"] is False and doc["summary"]["complete"] is False
    assert doc["verdict"] == "incomplete" and doc["passed"] is False
    junit = ET.fromstring(run_cli("check", path, "--mode", "full", "--max-seconds", "0.5",
                                  "--format", "junit").stdout)
    reasons = [s.get("message") for s in junit.iter("skipped")]
    assert any("stopped" in r for r in reasons)
    markdown = run_cli("check", path, "--mode", "full", "--max-seconds", "0.5",
                       "--format", "markdown").stdout
    assert "INCOMPLETE" in markdown.splitlines()[0]


def test_a_mismatch_found_before_the_deadline_still_fails():
    report = gradcheck.check_network(_slow(bug=True), mode="full", max_seconds=0.5)
    assert report.verdict == "fail" and report.exit_code == 1


@pytest.mark.parametrize("call", [
    lambda: gradcheck.check_network(_net([{"type": "dense", "units": 2}]), eps=0),
    lambda: gradcheck.check_network(_net([{"type": "dense", "units": 2}]), rtol=0.0),
    lambda: gradcheck.check_network(_net([{"type": "dense", "units": 2}]), mode="bogus"),
    lambda: gradcheck.check_layer("dense", (3,), units=2, eps=0),
    lambda: gradcheck.check_layer("dense", (3,), units=2, rtol=-1e-5),
    lambda: gradcheck.check_layer("dense", (3,), units=2, mode="bogus"),
    lambda: gradcheck.testing.assert_gradients("dense", input_shape=(3,), units=2, eps=0),
    lambda: gradcheck.testing.assert_gradients("dense", input_shape=(3,), units=2, atol=-1.0),
])
def test_the_library_refuses_bad_settings_naming_the_argument(call):
    with pytest.raises(gradcheck.ConfigError) as info:
        call()
    assert info.value.path in ("eps", "rtol", "atol", "mode")


def test_the_cli_refuses_bad_settings_with_exit_2(tmp_path, run_cli):
    path = write_yaml(tmp_path, json.dumps(_net([{"type": "dense", "units": 2}])))
    for args in (["--eps", "0"], ["--rtol", "-1"], ["--samples", "0"], ["--directions", "0"],
                 ["--nondet-tol", "-1"], ["--max-seconds", "0"]):
        result = run_cli("check", path, *args)
        assert result.exit_code == 2 and args[0][2:].replace("-", "_") in result.stderr, args


def test_modes_are_defined_once():
    from gradcheck import cli, cli_options, config, settings

    assert cli_options.MODES is settings.MODES
    (mode,) = [p for p in cli.check.params if p.name == "mode"]
    assert tuple(mode.type.choices) == settings.MODES
    assert not hasattr(config, "CHECK_MODES")


def test_replay_applies_the_recorded_dtype_and_still_fails(tmp_path, run_cli):
    config = {"seed": 2, "dtype": "float32", "plugins": [str(TEST_PLUGINS / "buggy_zoo.py")],
              "input": {"shape": [5], "batch": 3},
              "layers": [{"type": "dense", "units": 4},
                         {"type": "zoo_tanh_one_minus_y", "name": "culprit"},
                         {"type": "dense", "units": 2}], "loss": "mse"}
    path = write_yaml(tmp_path, json.dumps(config))
    record = tmp_path / "replay.json"
    assert run_cli("check", path, "--float64", "--replay", record).exit_code == 1
    assert json.loads(record.read_text())["dtype"] == "float64"
    replayed = run_cli("replay", record)
    assert replayed.exit_code == 1 and "still disagrees" in replayed.stdout
    assert "differ from the recording" not in replayed.stdout


def test_a_vacuous_check_fails_and_says_why(tmp_path, run_cli):
    config = {"input": {"shape": [4], "batch": 3},
              "layers": [{"type": "dense", "units": 1, "name": "fc"}], "loss": "cross_entropy"}
    report = gradcheck.check_network(config, mode="full")
    assert report.vacuous and report.verdict == "fail" and report.exit_code == 1
    fc_w = _target(report, "fc", "W")
    assert fc_w.status == "zero"
    assert any("every gradient of fc.W is exactly 0: this check cannot see a bug here" in n
               for n in fc_w.notes)
    loss = _target(report, "loss", "input")
    assert any("single output unit" in n for n in loss.notes)
    result = run_cli("check", write_yaml(tmp_path, json.dumps(config)))
    assert result.exit_code == 1 and "exactly 0" in result.stdout


def test_a_zero_target_beside_checked_ones_is_reported_but_not_a_failure():
    config = {"plugins": [str(TEST_PLUGINS / "tricky_ok.py")], "input": {"shape": [4], "batch": 3},
              "layers": [{"type": "dense", "units": 3, "name": "fc"},
                         {"type": "ok_zero_mask", "keep": 0.0, "name": "off"},
                         {"type": "dense", "units": 2}],
              "loss": "mse"}
    report = gradcheck.check_network(config, mode="full")
    assert _target(report, "fc", "W").status == "zero"
    assert report.verdict == "pass" and report.counts()["zero_targets"] >= 1


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("liar, target", [("objective_past_first", "W"),
                                          ("objective_input_later", "input")])
def test_objective_changes_that_lie_like_backward_never_pass(liar, target, seed):
    report = gradcheck.check_network(_net([{"type": f"liar_{liar}", "name": "liar"}], seed),
                                     mode="full")
    assert not report.passed and report.root_causes == ["liar"]
    assert _target(report, "liar", target).status == "fail"
    assert any("'liar': objective_changes disagrees with forward" in n for n in report.notes)


def _behind_dense(liar: str, seed: int, mode: str = "full"):
    """The report of a check of liar ``liar`` reading a dense layer's output."""
    return gradcheck.check_network(_net([{"type": "dense", "units": 6},
                                         {"type": f"liar_{liar}", "name": "liar"}], seed),
                                   mode=mode)


@pytest.mark.parametrize("seed", SEEDS)
def test_objective_changes_claiming_kinks_forward_does_not_show_are_distrusted(seed):
    report = _behind_dense("objective_fake_kinks", seed)
    assert not report.passed and report.root_causes == ["liar"]
    check = _target(report, "liar", "input")
    assert check.status == "fail" and check.kinks == 0
    assert any("'liar': objective_changes claims a kink" in n for n in report.notes)


def test_a_layer_declining_objective_changes_for_a_target_gets_no_note():
    report = gradcheck.check_network(_net([{"type": "liar_objective_input_later",
                                            "name": "liar"}]), mode="full")
    assert _target(report, "liar", "W").status == "pass"  # declined: forward's copies
    assert not any("W" in n and "objective_changes" in n for n in report.notes)


@pytest.mark.parametrize("seed", SEEDS)
def test_branch_states_that_claim_kinks_the_objective_does_not_show_never_pass(seed):
    report = _behind_dense("state_fake_kinks", seed)
    assert not report.passed and report.root_causes == ["liar"]
    check = _target(report, "liar", "input")
    assert check.status == "fail" and check.failed == check.checked


@pytest.mark.parametrize("seed", SEEDS)
def test_directions_a_lying_branch_state_calls_kinked_still_fail(seed):
    report = _behind_dense("state_fake_kinks", seed, mode="directional")
    assert not report.passed
    check = _target(report, "liar", "input")
    assert check.status == "fail"


class _OneUlpLateOnSecondCall(gradcheck.Layer):
    """y = 2x, except that every second call moves its last output by one ulp: the smallest
    nondeterminism there is, where a check that looks at the start would not."""

    def __init__(self, shift: bool = True):
        super().__init__()
        self.calls, self.shift = 0, shift

    def build(self, input_shape, rng):
        return input_shape

    def forward(self, x):
        self.calls += 1
        y = 2.0 * x
        if self.shift and self.calls % 2 == 0:
            flat = y.reshape(-1)
            flat[-1] = np.nextafter(flat[-1], np.inf)
        return y

    def backward(self, grad_out):
        return 2.0 * grad_out


@pytest.mark.parametrize("seed", SEEDS)
def test_a_forward_one_ulp_off_at_its_last_output_on_the_second_call_breaks_the_contract(seed):
    # The probes compare two forwards bit for bit (nondet_tol 0): equal arrays are found equal
    # at once, and any difference, however small and however late, is found and located.
    layer = _OneUlpLateOnSecondCall()
    layer.name = "late"
    x = np.random.default_rng(seed).normal(size=(3, 5))
    problems = unit_problems(layer, [x], [np.ones_like(x)], 0.0)
    assert [p["id"] for p in problems] == ["nondeterministic-forward"]
    assert problems[0]["message"].endswith("at [14]")  # the last of the 15 outputs
    honest = _OneUlpLateOnSecondCall(shift=False)
    honest.name = "honest"
    assert unit_problems(honest, [x], [np.ones_like(x)], 0.0) == []
