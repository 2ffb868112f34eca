"""The training probe and what it decides: how a run ends (fits, slow, stalled, diverging,
non-finite), the differential verdict over three probe seeds, findings the evidence contradicts,
the initial loss measured against the network's own init, the zeroed-input baseline and the
gradient re-check after training. Each rule meets a case that must fire and one that must not."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from conftest import CONFIGS, TEST_PLUGINS

from gradcheck.diagnose import diagnose_network
from gradcheck.diagnose import thresholds as T
from gradcheck.diagnose.expect import downgrade, initial_loss
from gradcheck.diagnose.findings import Finding, ProbeRun, Spread
from gradcheck.diagnose.seeds import agree, probe_seeds
from gradcheck.diagnose.verdict import classify, conclude, seed_verdict

PLUGIN = str(TEST_PLUGINS / "diagnose_layers.py")
MLP = [{"type": "dense", "name": "fc1", "units": 16}, "tanh", {"type": "dense", "name": "out",
                                                              "units": 3}]


def net(layers, seed=0, **top):
    """A config dict around ``layers`` (an MLP on 8 samples of 6 features by default)."""
    return {"plugins": [PLUGIN], "seed": seed, "input": {"shape": [6], "batch": 8},
            "layers": layers, "loss": "mse", **top}


def lenet(seed, **train):
    doc = {**_yaml(CONFIGS / "lenet.yaml"), "seed": seed}
    doc.pop("check")
    return {**doc, "train": train} if train else doc


def _yaml(path):
    return yaml.safe_load(path.read_text())


def run(losses, passed=False, stopped="steps", floor=0.0, label="configured", seed=0):
    r = ProbeRun(label, "sgd", 0.01, 0.9, 0.0, len(losses) - 1, list(losses), passed, 0.5, "r2",
                 stopped, seed=seed, loss_floor=floor)
    r.outcome = classify(r)
    return r


def ids(d, severity=None):
    return {f.id for f in d.findings if severity in (None, f.severity)}


def one(d, id_):
    found = [f for f in d.findings if f.id == id_]
    assert len(found) == 1, [(f.id, f.severity) for f in d.findings]
    return found[0]


# --- how a run ends ----------------------------------------------------------------------------

def geometric(start, rate, steps):
    return [start * rate ** k for k in range(steps + 1)]


@pytest.mark.parametrize("losses, outcome", [
    (geometric(1.0, 0.99, 200), "slow"),                    # falls 63% over the second half
    (geometric(1.0, 0.9997, 200), "stalled"),               # falls 3%: less than 5%
    (geometric(1.0, 0.9994, 200), "slow"),                  # falls 6%
    ([1.0] * 201, "stalled"),                               # frozen
    (geometric(1.0, 0.95, 50) + geometric(0.077, 1.05, 100), "diverging"),
])
def test_a_run_is_classified_by_its_loss_curve(losses, outcome):
    assert run(losses).outcome == outcome


def test_progress_is_measured_above_the_floor_the_targets_allow():
    # bce on soft targets cannot fall below their entropy: 0.6 + a vanishing excess still falls.
    losses = [0.6 + 0.4 * 0.97 ** k for k in range(201)]
    assert run(losses).outcome == "stalled"
    assert run(losses, floor=0.6).outcome == "slow"


def test_fit_and_nonfinite_outrank_the_curve():
    assert run([1.0] * 201, passed=True).outcome == "fit"
    assert run([1.0, float("nan")], stopped="nonfinite").outcome == "nonfinite"


# --- the verdict over three probe seeds --------------------------------------------------------

SEEDS = (0, 11, 22)


def verdicts(user_losses, reference_fits):
    out = []
    for seed, losses, fits in zip(SEEDS, user_losses, reference_fits):
        user = run(losses, seed=seed)
        ref = run([1.0, 0.01] if fits else [1.0] * 201, passed=fits, label="reference",
                  seed=seed)
        out.append(seed_verdict(seed, user, ref, gradient_ok=True))
    return out


def test_failing_clearly_at_every_seed_is_an_error_explained_by_the_reference():
    stuck = [[1.0] * 201] * 3
    (f,), text = conclude(verdicts(stuck, [True, True, True]), SEEDS)
    assert (f.id, f.severity) == ("hyperparameter-problem", "error") and "the same at all 3" in text
    assert f.spread.fired == (True, True, True)
    (f,), _ = conclude(verdicts(stuck, [True, False, True]), SEEDS)
    assert (f.id, f.severity) == ("cannot-fit-one-batch", "error")
    assert "the reference fits only at seed 0, 22" in f.cause


def test_failing_at_some_seeds_only_is_info_and_says_where():
    mixed = [[1.0] * 201, geometric(1.0, 0.99, 200), [1.0] * 201]
    found, text = conclude(verdicts(mixed, [True, True, True]), SEEDS)
    failing = next(f for f in found if f.id == "hyperparameter-problem")
    assert failing.severity == "info" and "seen at 2 of 3 probe seeds, seed 0, 22" in failing.cause
    assert next(f for f in found if f.id == "slow-fit").severity == "info"
    assert text.startswith("the probe seeds disagree")


def test_slower_than_the_reference_but_improving_is_info_with_both_curves():
    (f,), _ = conclude(verdicts([geometric(1.0, 0.99, 200)] * 3, [True] * 3), SEEDS)
    assert (f.id, f.severity) == ("slow-fit", "info")
    assert "yours loss 1 -> " in f.cause and "the reference loss 1 -> 0.01" in f.cause


def test_textbook_sgd_that_is_slower_than_adam_is_not_an_error():
    # A conv regression with SGD (lr 0.01, momentum 0.9, decay 5e-4): at seed 1 it reaches r2
    # 0.76 in 200 steps, still improving, where the reference fits in 490.
    doc = {**_yaml(CONFIGS / "batchnorm_cnn.yaml"), "seed": 1,
           "train": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005,
                     "steps": 200}}
    d = diagnose_network(doc)
    assert d.exit_code == 0 and ids(d, "error") == set() and ids(d, "warn") == set()
    slow = one(d, "slow-fit")
    assert "still improving" in slow.cause and "the reference loss" in slow.cause


def test_settings_that_blow_up_at_every_seed_are_a_hyperparameter_error():
    d = diagnose_network(net(MLP, train={"optimizer": "sgd", "lr": 5.0, "momentum": 0.9,
                                         "steps": 100}))
    problem = one(d, "hyperparameter-problem")
    assert problem.severity == "error" and problem.spread.count == 3
    assert "train: {optimizer: adam, lr: 0.001}" in problem.fix


# --- agreement and contradicted findings -------------------------------------------------------

def finding(id_, severity, value=1.0, layer="fc"):
    return Finding(id_, severity, "backward", layer, value, "<= 0.1", "cause", "fix")


def test_a_seed_dependent_finding_is_called_only_when_every_seed_agrees():
    everywhere = agree([[finding("update-ratio", "error", 2.0)],
                        [finding("update-ratio", "warn", 0.5, layer="conv")],
                        [finding("update-ratio", "error", 3.0)]], SEEDS)
    (f,) = everywhere
    # Network-wide: the layer may differ; the mildest severity wins; the spread keeps all three.
    assert f.severity == "warn" and f.spread.values == (2.0, 0.5, 3.0)
    (g,) = agree([[finding("dead-units", "error")], [], [finding("dead-units", "error")]], SEEDS)
    assert g.severity == "info" and "seen at 2 of 3 probe seeds, seed 0, 22" in g.cause
    assert g.spread == Spread(SEEDS, (True, False, True), (1.0, None, 1.0))


def test_probe_seeds_are_the_configs_own_then_two_derived_and_distinct():
    for seed in (0, 1, 12345):
        seeds = probe_seeds(seed)
        assert seeds[0] == seed and len(set(seeds)) == 3 and max(seeds) < 1_000_000
    assert probe_seeds(3) == probe_seeds(3) != probe_seeds(4)


def test_findings_the_training_contradicts_become_info_quoting_the_evidence():
    loud = [finding("init-scale", "warn"), finding("update-ratio", "error"),
            finding("gradient-mismatch", "error"), finding("dead-units", "warn")]
    fits = [run([1.0, 0.1], passed=True, seed=s) for s in SEEDS]
    calm = downgrade(loud, fits, 3)
    assert [f.severity for f in calm] == ["info", "info", "error", "warn"]
    assert calm[0].cause.endswith("but your settings fit the batch in 1 steps at all 3 probe "
                                  "seeds, so this does not stop training")
    # One seed that does not fit is no evidence.
    assert downgrade(loud, fits[:2] + [run([1.0] * 201, seed=22)], 3) == loud


def test_lenet_with_adam_is_not_warned_about_its_default_init():
    # LeNet's He output layer starts seed 16 at loss 4.77, 2.07 x ln(10): the old fixed band
    # warned, though adam at 1e-3 fits the batch in 30-50 steps.
    d = diagnose_network(lenet(16, optimizer="adam", lr=0.001, steps=200))
    assert d.exit_code == 0 and ids(d, "warn") == ids(d, "error") == set()
    assert "initial-loss" not in ids(d)


def test_an_init_warning_the_probe_contradicts_is_downgraded():
    big = [{**MLP[0], "init": {"normal": {"std": 1.5}}}, *MLP[1:]]
    d = diagnose_network(net(big, train={"optimizer": "adam", "lr": 0.01, "steps": 200}))
    scale = one(d, "init-scale")
    assert scale.severity == "info" and "but your settings fit the batch in" in scale.cause
    # The same init where the settings do not fit stays a warning.
    d = diagnose_network(net(big, train={"optimizer": "sgd", "lr": 1e-6, "steps": 30}))
    assert one(d, "init-scale").severity == "warn"


# --- the initial loss against what the init gives ---------------------------------------------

def test_initial_loss_is_compared_with_the_inits_own_expectation():
    # A large loss the same weights also give on standard inputs is the init's own; one twice
    # what they give there is the data's.
    assert initial_loss(9.0, 8.0, "ce") == []
    (f,) = initial_loss(9.0, 2.4, "ce")
    assert f.value == pytest.approx(9.0 / 2.4) and "the 2.4 the same initial weights" in f.cause
    assert initial_loss(4.7, 2.4, "ce") == [] and len(initial_loss(4.8, 2.4, "ce")) == 1
    # A non-finite expectation means nothing to compare with.
    assert initial_loss(9.0, float("nan"), "ce") == []


def test_raw_pixel_inputs_start_far_above_the_inits_expectation():
    relu = [MLP[0], "relu", MLP[2]]
    raw = net(relu, input={"shape": [6], "batch": 8, "data": "uniform", "low": 0.0, "high": 255.0})
    f = one(diagnose_network(raw, probe=False), "initial-loss")
    assert f.severity == "warn" and f.value > 100 and f.spread.count == 3
    assert "standardise the inputs" in f.fix
    # The same network on standard-normal inputs may cross the factor at one seed, by chance of
    # the batch, but never at all three.
    assert "initial-loss" not in ids(diagnose_network(net(relu), probe=False), "warn")


# --- the zeroed-input baseline and the gradient re-check after training ------------------------

def test_an_output_that_ignores_the_input_is_found_by_zeroing_the_input():
    same = net(MLP, input={"shape": [6], "batch": 8, "data": "normal", "mean": 1.0, "std": 0.0},
               train={"optimizer": "adam", "lr": 0.01, "steps": 100})
    f = one(diagnose_network(same), "input-independent")
    assert f.severity == "warn" and f.value >= T.INPUT_GAIN and f.spread.count == 3
    # A linear model cannot fit 16 random targets from 6 features, so it stalls -- at the least
    # squares fit, well below what the zeroed input reaches: it uses its input.
    linear = net([{"type": "dense", "units": 3}], input={"shape": [6], "batch": 16},
                 train={"optimizer": "adam", "lr": 0.1, "steps": 300})
    d = diagnose_network(linear)
    assert {r.outcome for r in d.runs if r.label == "configured"} == {"stalled"}
    assert any(r.label == "zeroed-input" for r in d.runs)
    assert "input-independent" not in ids(d)
    # A run still improving when its budget ends is not compared: it has not shown it yet.
    d = diagnose_network(net(MLP, train={"optimizer": "sgd", "lr": 0.01, "steps": 30}))
    assert not any(r.label == "zeroed-input" for r in d.runs)


def test_a_backward_right_only_near_the_initial_weights_is_caught_after_training():
    layers = [{"type": "dense", "name": "fc", "units": 8}, "tanh",
              {"type": "diag_positive_dense", "name": "pos", "units": 8}, "tanh",
              {"type": "dense", "name": "out", "units": 2}]
    d = diagnose_network(net(layers, train={"optimizer": "adam", "lr": 0.01, "steps": 300}))
    assert d.gradcheck["passed"] and not d.gradcheck["after_training"]["passed"]
    f = one(d, "gradient-mismatch")
    assert (f.layer, f.severity) == ("pos", "error") and f.cause.startswith("after ")
    assert "right only near them" in f.cause and d.exit_code == 1
    # The same network with the correct layer passes both checks.
    fixed = [dict(l, type="dense") if isinstance(l, dict) and l["name"] == "pos" else l
             for l in layers]
    d = diagnose_network(net(fixed, train={"optimizer": "adam", "lr": 0.01, "steps": 300}))
    assert d.gradcheck["after_training"]["passed"] and "gradient-mismatch" not in ids(d)


def test_probe_runs_restore_the_parameters_and_report_every_seed():
    from gradcheck.config import load_config
    from gradcheck.diagnose import run_diagnosis
    from gradcheck.build import build_network

    spec = load_config(CONFIGS / "mlp.yaml")
    network, batch = build_network(spec)
    before = [p.copy() for layer in network.layers for p in layer.params.values()]
    d = run_diagnosis(spec, network, batch)
    after = [p for layer in network.layers for p in layer.params.values()]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert {r.seed for r in d.runs} == set(d.seeds) == set(probe_seeds(spec.seed))
    assert d.spread["configured"]["seeds"] == list(d.seeds)
    assert all(o == "fit" for o in d.spread["configured"]["outcome"])


def test_the_reference_run_stops_once_it_cannot_reach_the_fit():
    # The sigmoid-output regression: the reference creeps at R^2 ~0.05, so it is stopped early.
    d = diagnose_network(CONFIGS / "scenarios" / "r4_keras_sigmoid_regression.yaml")
    refs = [r for r in d.runs if r.label == "reference"]
    assert refs and all(r.stopped in ("unreachable", "stalled") for r in refs)
    assert all(r.steps_run < T.REFERENCE_STEPS and r.outcome in ("slow", "stalled") for r in refs)
