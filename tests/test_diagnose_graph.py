"""gradcheck diagnose on graph networks: the branches of a fork and their merge, a dead or
exploding branch named (and a zero-initialised block, built to start silent, left alone), the
lints along readers rather than list order, token ids never perturbed, zeroed or drawn normal,
and a shared parameter trained once with the gradient of all its uses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import CONFIGS, TEST_PLUGINS, write_yaml
from test_diagnose import SCENARIOS, diagnosis

from gradcheck.build import build_network
from gradcheck.config import TrainSpec, load_config
from gradcheck.diagnose import diagnose_network, flow, graph, inputs, probe
from gradcheck.diagnose.behaviour import layer_traits

PLUGIN = TEST_PLUGINS / "diagnose_layers.py"
SEEDS = range(10)


def built(path, seed=0):
    return build_network(dataclasses.replace(load_config(path), seed=seed))


def branches(network):
    """{fork tensor: (merge, [branch as layer names])}."""
    return {fork.tensor: (network.units[fork.merge].name,
                          [[network.layers[k].name for k in b.units] for b in fork.branches])
            for fork in graph.forks(network)}


def test_forks_and_merges_are_read_from_the_graph():
    network, _ = built(CONFIGS / "resnet_block.yaml")
    assert branches(network) == {"input": ("residual", [
        ["conv1", "bn1", "relu1", "conv2", "bn2"], ["shortcut", "bn_shortcut"]])}
    network, _ = built(CONFIGS / "transformer_block.yaml")
    # The ids are read twice too (embedding, padding mask), but have no gradient: not a fork.
    assert branches(network) == {"positions": ("residual1", [["attention"], []]),
                                 "norm1": ("residual2", [["mlp_hidden", "mlp_act", "mlp_out"], []])}
    network, _ = built(CONFIGS / "unet_small.yaml")
    found = branches(network)
    assert found["enc2_act"] == ("skip2", [["down2", "bottom", "bottom_act", "up2"], []])
    assert found["enc1_act"][0] == "skip1" and found["enc1_act"][1][1] == []
    for chain in ("mlp.yaml", "lenet.yaml", "siamese.yaml", "tied_autoencoder.yaml"):
        assert graph.forks(built(CONFIGS / chain)[0]) == []


def test_a_skip_has_gain_one_and_a_healthy_branch_a_share_like_it():
    network, batch = built(CONFIGS / "resnet_block.yaml")
    run = network.run(batch, allow_nonfinite=True)
    (fork,) = graph.forks(network)
    sent = flow.shares(network, run, fork)
    # What a branch sends back is its reader's own dL/d(fork tensor); together, the fork's.
    total = sum(run.arg_grads[k][j] for k, j in network.readers("input"))
    assert np.allclose(total, sum(run.arg_grads[b.reader[0]][b.reader[1]]
                                  for b in fork.branches))
    assert 0.5 < sent[0][0] / sent[1][0] < 2
    network, batch = built(CONFIGS / "transformer_block.yaml")
    run = network.run(batch, allow_nonfinite=True)
    for fork in graph.forks(network):
        assert flow.shares(network, run, fork)[1][1] == pytest.approx(1.0)  # the skip


@pytest.mark.parametrize("seed", SEEDS)
def test_a_dead_branch_is_named_with_its_layers(seed):
    d = diagnosis(SCENARIOS / "residual_dead_branch.yaml", seed)
    dead = next(f for f in d.findings if f.id == "dead-branch")
    assert dead.severity == "warn" and dead.value == 0.0 and dead.spread.count == 3
    assert "branch_fc1 -> branch_relu -> branch_fc2 (from stem_act to residual)" in dead.cause
    assert "no gradient at all" in dead.cause and "the skip from stem_act" in dead.cause
    # The network still fits its batch through the skip: the branch stays named at warn.
    assert "but your settings fit" not in dead.cause


@pytest.mark.parametrize("seed", SEEDS)
def test_an_exploding_branch_is_named_and_its_sibling_is_not(seed):
    d = diagnosis(SCENARIOS / "residual_exploding_branch.yaml", seed)
    (exploding,) = [f for f in d.findings if f.id == "exploding-branch"]
    assert exploding.layer == "branch_fc1" and exploding.value > 1e3
    assert exploding.severity == "warn" and "explodes and drowns" in exploding.cause
    assert not any(f.id == "dead-branch" for f in d.findings)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_twins_branches_stay_silent(seed):
    for name in ("residual_dead_branch_fixed", "residual_exploding_branch_fixed"):
        d = diagnosis(SCENARIOS / f"{name}.yaml", seed)
        assert not {"dead-branch", "exploding-branch"} & {f.id for f in d.findings}


BLOCK = ("input: {{shape: [12], batch: 16}}\nseed: {seed}\nlayers:\n"
         "  - {{type: dense, name: stem, units: 16}}\n  - {{type: tanh, name: stem_act}}\n"
         "  - {{type: dense, name: fc1, units: 16}}\n  - {{type: relu, name: act}}\n"
         "  - {{type: dense, name: fc2, units: 16{fc2}}}\n"
         "  - {{type: add, name: residual, inputs: [stem_act, fc2]}}\n"
         "{after}  - {{type: dense, name: out, units: 4}}\nloss: cross_entropy\n")


@pytest.mark.parametrize("seed", SEEDS)
def test_a_block_zero_initialised_to_start_as_the_identity_is_not_dead(tmp_path, seed):
    # Its last weight starts at exactly 0 (the zero-init residual trick): the branch sends back
    # nothing at first, but that weight gets its gradient and grows on the first step.
    text = BLOCK.format(seed=seed, fc2=", init: zeros", after="  - relu\n")
    d = diagnose_network(write_yaml(tmp_path, text), probe=False)
    assert "dead-branch" not in {f.id for f in d.findings}
    # The same block with tiny, not zero, weights on the branch is dead.
    text = BLOCK.format(seed=seed, fc2=", init: {normal: {std: 1.0e-9}}", after="  - relu\n")
    d = diagnose_network(write_yaml(tmp_path, text), probe=False)
    dead = next(f for f in d.findings if f.id == "dead-branch")
    assert dead.layer == "fc1" and 0 < dead.value < 1e-3


def test_lints_follow_the_readers_of_a_layer(tmp_path):
    # fc2 -> add -> out: two affine maps with only an affine merge between them.
    d = diagnose_network(write_yaml(tmp_path, BLOCK.format(seed=0, fc2="", after="")),
                         probe=False)
    (lint,) = [f for f in d.findings if f.id == "no-nonlinearity"]
    assert lint.layer == "out" and "fc2 and out" in lint.cause
    d = diagnose_network(write_yaml(tmp_path, BLOCK.format(seed=0, fc2="", after="  - relu\n")),
                         probe=False)
    assert "no-nonlinearity" not in {f.id for f in d.findings}


def test_a_softmax_before_cross_entropy_is_found_at_the_end_of_a_graph(tmp_path):
    text = BLOCK.format(seed=0, fc2="", after="  - relu\n").replace(
        "loss: cross_entropy", "  - {type: softmax, name: probs}\nloss: cross_entropy")
    d = diagnose_network(write_yaml(tmp_path, text), probe=False)
    (lint,) = [f for f in d.findings if f.id == "loss-output-mismatch"]
    assert lint.layer == "probs" and lint.severity == "error" and "remove probs" in lint.fix


def test_the_output_layers_are_those_the_loss_reads(tmp_path):
    # Two heads added: the loss reads both through the add, so each is an output layer whose
    # bias may start non-zero (at the target mean); the hidden layer's may not.
    text = ("input: {shape: [6], batch: 8}\nlayers:\n"
            "  - {type: dense, name: hidden, units: 4, bias_init: ones}\n"
            "  - {type: tanh, name: a}\n"
            "  - {type: dense, name: head1, units: 2, bias_init: ones}\n"
            "  - {type: dense, name: head2, units: 2, inputs: [a], bias_init: ones}\n"
            "  - {type: add, name: merged, inputs: [head1, head2]}\nloss: mse\n")
    d = diagnose_network(write_yaml(tmp_path, text), probe=False)
    assert {f.layer for f in d.findings if f.id == "init-bias"} == {"hidden"}
    network, _ = build_network(load_config(write_yaml(tmp_path, text)))
    assert graph.output_layers(network, {0, 2, 3}) == {2, 3}
    assert graph.tail(network) == []  # the add reads two tensors: no single tail


@pytest.mark.parametrize("seed", SEEDS)
def test_token_ids_are_drawn_from_their_vocabulary_and_never_changed(seed):
    network, batch = built(CONFIGS / "transformer_block.yaml", seed)
    spec = load_config(CONFIGS / "transformer_block.yaml")
    vocab = inputs.vocabularies(spec, network, batch)
    assert vocab == {"tokens": 20}
    rng = np.random.default_rng(seed)
    attention = next(k for k, layer in enumerate(network.layers) if layer.name == "attention")
    slots = inputs.Slots.of(network, attention, vocab)
    assert slots.floats == [0] and slots.vocab == (None, 20)
    drawn = slots.draw(rng)
    assert drawn[1].dtype.kind == "i" and drawn[1].min() >= 0 and drawn[1].max() < 20
    for changed in (slots.redraw(drawn, rng), slots.zeros(drawn),
                    slots.mix(drawn, lambda j, a: 1e4 * a)):
        assert changed[1] is drawn[1]
    ids = batch.x
    assert inputs.zeroed(network, batch).x is ids
    standard = inputs.standard(network, batch, vocab, rng).x
    assert standard.dtype.kind == "i" and standard.min() >= 0 and standard.max() < 20
    # The attention layer gets its ids in every probe, and its traits are measured.
    first = network.run(batch, allow_nonfinite=True)
    traits = layer_traits(network, attention, rng, first.args[attention], vocab)
    assert traits.parametric and not traits.affine and traits.roles["Wq"] == "weight"


def test_a_siamese_pair_zeroes_both_of_its_inputs():
    network, batch = built(CONFIGS / "siamese.yaml")
    zeroed = inputs.zeroed(network, batch)
    assert set(zeroed.x) == {"left", "right"} and not any(np.any(a) for a in zeroed.x.values())
    assert inputs.rows(batch) == 4 and inputs.head(batch, 2).x["right"].shape == (2, 10)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_shared_weight_is_one_parameter_updated_once_with_its_summed_gradient(seed):
    network, batch = built(CONFIGS / "tied_autoencoder.yaml", seed)
    names = [graph.param_label(network, k, n) for k, n, _ in graph.parameters(network)]
    assert names == ["encoder.W", "encoder.b", "decoder.b"]
    run = network.run(batch)
    uses = run.grads[(0, "W")] + run.grads[(2, "W")].T
    (total, *_) = graph.total_gradients(network, run.grads)
    assert np.allclose(total, uses)
    w0 = network.layers[0].params["W"].copy()
    adam = TrainSpec(optimizer="adam", lr=0.01, momentum=0.0, weight_decay=0.0, steps=1)
    out = probe.train_run(network, batch.x, batch.target, adam, "configured", seed,
                          until_fit=False, exits=False)
    # Adam's first step moves every entry by lr against the sign of its gradient: once, with
    # the sum of both uses (two updates, one per use, would move some entries by 0 or 2 lr).
    step = out.params_end[0] - w0
    assert np.allclose(np.abs(step), 0.01, rtol=1e-4)
    assert np.array_equal(np.sign(step), -np.sign(uses))
    # The decoder reads the same array, transposed: it moved with it.
    assert np.array_equal(network.layers[2].params["W"], network.layers[0].params["W"].T)


def test_the_probe_trains_a_network_of_named_inputs():
    network, batch = built(CONFIGS / "siamese.yaml")
    sgd = TrainSpec(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, steps=5)
    out = probe.train_run(network, batch.x, batch.target, sgd, "configured", 0,
                          until_fit=False, exits=False)
    assert out.run.steps_run == 5 and all(np.isfinite(out.run.losses))
    assert out.run.losses[-1] < out.run.losses[0]
