"""Single diagnose checks on small networks: each fires on its failure -- found by behaviour, so
plugin layers named nothing like the built-ins are caught too -- and stays silent on the fix."""

from __future__ import annotations

import pytest

from conftest import TEST_PLUGINS, write_yaml

from gradcheck.diagnose import diagnose_network

PLUGIN = TEST_PLUGINS / "diagnose_layers.py"


def run(tmp_path, layers: str, loss: str = "mse", extra: str = "", probe: bool = False):
    text = (f"plugins: [{PLUGIN}]\nseed: 1\ninput: {{shape: [6], batch: 8}}\n{extra}\n"
            f"layers:\n{layers}\nloss: {loss}\n")
    return diagnose_network(write_yaml(tmp_path, text), probe=probe)


def ids(d, severity=None):
    return {f.id for f in d.findings if severity in (None, f.severity)}


DENSE = "  - {type: dense, name: fc, units: 4}\n"


def test_plugin_softmax_over_one_unit_is_found_by_behaviour(tmp_path):
    d = run(tmp_path, "  - {type: dense, name: fc, units: 1}\n  - {type: diag_normalise, name: norm}\n")
    assert "softmax-axis-1" in ids(d, "error") and "zero-gradient" in ids(d, "error")
    ok = run(tmp_path, "  - {type: dense, name: fc, units: 3}\n  - {type: diag_normalise, name: norm}\n",
             "cross_entropy")
    assert "softmax-axis-1" not in ids(ok)


def test_double_softmax_and_cross_entropy_on_one_unit(tmp_path):
    double = run(tmp_path, DENSE + "  - {type: diag_normalise, name: norm}\n", "cross_entropy")
    finding = next(f for f in double.findings if f.id == "loss-output-mismatch")
    assert finding.layer == "norm" and "remove norm" in finding.fix
    one = run(tmp_path, "  - {type: dense, name: fc, units: 1}\n", "cross_entropy")
    assert "loss-output-mismatch" in ids(one, "error")


def test_probability_loss_on_unbounded_outputs(tmp_path):
    d = run(tmp_path, DENSE, "bce", "target: {data: uniform, low: 0.1, high: 0.9}")
    assert "loss-output-mismatch" in ids(d, "error")
    ok = run(tmp_path, DENSE + "  - sigmoid\n", "bce", "target: {data: uniform, low: 0.1, high: 0.9}")
    assert ids(ok, "error") == set()


def test_linear_stack_without_nonlinearity(tmp_path):
    d = run(tmp_path, DENSE + "  - {type: dropout, rate: 0.2}\n  - {type: dense, name: fc2, units: 2}\n")
    assert "no-nonlinearity" in ids(d, "warn")
    ok = run(tmp_path, DENSE + "  - tanh\n  - {type: dense, name: fc2, units: 2}\n")
    assert "no-nonlinearity" not in ids(ok)


def test_backward_that_mixes_samples(tmp_path):
    d = run(tmp_path, "  - {type: diag_leaky_batch_dense, name: leaky, units: 4}\n  - tanh\n" + DENSE)
    finding = next(f for f in d.findings if f.id == "batch-mixing")
    assert finding.layer == "leaky" and finding.severity == "error"
    assert "batch-mixing" not in ids(run(tmp_path, "  - {type: batchnorm}\n  - tanh\n" + DENSE))


def test_constant_init(tmp_path):
    d = run(tmp_path, "  - {type: diag_constant_dense, name: const, units: 8}\n  - tanh\n" + DENSE)
    assert next(f for f in d.findings if f.id == "init-constant").layer == "const"


@pytest.mark.parametrize("rate, fires", [(0.8, True), (0.5, False)])
def test_dropout_rate(tmp_path, rate, fires):
    d = run(tmp_path, f"  - {{type: dense, units: 32}}\n  - relu\n  - {{type: dropout, rate: {rate}}}\n"
            + DENSE)
    assert ("dropout-high" in ids(d, "warn")) is fires


@pytest.mark.parametrize("lr, decay, expected", [(0.1, 2.0, "decay-large"), (0.01, 0.0005, None)])
def test_weight_decay_against_learning_rate(tmp_path, lr, decay, expected):
    extra = f"train: {{optimizer: sgd, lr: {lr}, weight_decay: {decay}}}"
    d = run(tmp_path, DENSE + "  - tanh\n  - {type: dense, units: 2}\n", extra=extra)
    assert {"decay-large", "decay-flips-weights"} & ids(d) == ({expected} if expected else set())


def test_first_nonfinite_layer(tmp_path):
    d = run(tmp_path, DENSE + "  - {type: diag_overflow, name: boom}\n  - {type: dense, units: 2}\n")
    finding = next(f for f in d.findings if f.id == "nonfinite-forward")
    assert finding.layer == "boom" and d.exit_code == 1


def test_output_that_ignores_the_input_collapses(tmp_path):
    # Every sample is the same input, so the best the network can do is one value for all: the
    # target mean once converged (a run stopped earlier sits away from it).
    extra = "train: {optimizer: adam, lr: 0.01, steps: 100}"
    text = (f"seed: 1\ninput: {{shape: [6], batch: 8, data: normal, mean: 1.0, std: 0.0}}\n{extra}\n"
            f"layers:\n{DENSE}  - tanh\n  - {{type: dense, units: 2}}\nloss: mse\n")
    d = diagnose_network(write_yaml(tmp_path, text))
    collapse = next(f for f in d.findings if f.id.startswith("collapse-to-"))
    assert collapse.severity == "error" and collapse.spread.count == 3
    assert "collapse-to-mean at seed" in collapse.cause
    assert "input-independent" in ids(d, "warn")


def test_a_learned_scale_is_not_told_to_start_at_zero(tmp_path):
    # A gain initialised at 1 multiplies its input: a scale, whatever its shape or name; so are
    # batchnorm's and layernorm's gamma.
    d = run(tmp_path, DENSE + "  - tanh\n  - {type: diag_gain, name: gain}\n  - tanh\n"
            "  - {type: layernorm, name: ln}\n  - {type: dense, units: 2}\n")
    assert "init-bias" not in ids(d)
    d = run(tmp_path, "  - {type: dense, name: fc, units: 4, bias_init: ones}\n  - tanh\n"
            "  - {type: dense, units: 2}\n")
    bias = next(f for f in d.findings if f.id == "init-bias")
    assert (bias.layer, bias.severity) == ("fc", "info") and "bias_init: zeros on fc" in bias.fix


def test_a_bias_is_found_by_behaviour_whatever_its_shape(tmp_path):
    # A per-channel shift stored as (C, 1, 1) and starting at 0.1 is a bias: init-bias, not the
    # "all units compute the same thing" error a constant weight would get.
    text = (f"plugins: [{PLUGIN}]\nseed: 0\ninput: {{shape: [2, 6, 6], batch: 8}}\nlayers:\n"
            "  - {type: conv2d, name: conv, filters: 3, kernel: 3}\n"
            "  - {type: diag_channel_shift, name: shift}\n  - relu\n  - flatten\n"
            "  - {type: dense, units: 2}\nloss: mse\n")
    d = diagnose_network(write_yaml(tmp_path, text), probe=False)
    assert "init-constant" not in ids(d)
    bias = next(f for f in d.findings if f.id == "init-bias")
    assert bias.layer == "shift" and "shift.s" in bias.cause
    # It has no bias_init option, so the fix says where to change it instead.
    assert "in ChannelShift.build" in bias.fix and "bias_init" not in bias.fix


def test_roles_are_measured_not_read_from_names():
    import numpy as np

    from gradcheck.diagnose.behaviour import _roles
    from gradcheck.diagnose.inputs import Slots
    from gradcheck.registry import layer_class

    rng = np.random.default_rng(0)
    cases = [("dense", {"units": 3}, (4,), {"W": "weight", "b": "bias"}),
             ("conv2d", {"filters": 2, "kernel": 3}, (2, 5, 5), {"W": "weight", "b": "bias"}),
             ("batchnorm", {}, (3, 4, 4), {"gamma": "scale", "beta": "bias"}),
             ("prelu", {}, (4,), None)]
    for name, options, shape, expected in cases:
        layer = layer_class(name)(**options)
        out = layer.build(shape, rng)
        slots = Slots((shape,), (None,), np.dtype(np.float64))
        roles = _roles(layer, slots, slots.draw(rng), [out], rng)
        if expected is None:  # prelu's slope multiplies the negative inputs: a scale
            assert set(roles.values()) == {"scale"}
        else:
            assert roles == expected


@pytest.mark.parametrize("liar, broken", [("liar_cache_mutating", "backward is not idempotent"),
                                          ("liar_jitter", "forward is not deterministic")])
def test_a_layer_that_breaks_the_contract_is_a_gradient_error(tmp_path, liar, broken):
    # Its end-to-end samples may all pass: the check blames it for the broken contract alone.
    text = (f"plugins: [{TEST_PLUGINS / 'liars.py'}]\nseed: 0\ninput: {{shape: [6], batch: 8}}\n"
            f"layers:\n{DENSE}  - {{type: {liar}, name: liar}}\n  - {{type: dense, units: 2}}\n"
            "loss: mse\n")
    d = diagnose_network(write_yaml(tmp_path, text), probe=False)
    (found,) = [f for f in d.findings if f.id == "gradient-mismatch"]
    assert found.layer == "liar" and found.severity == "error" and broken in found.cause
    assert d.exit_code == 1
