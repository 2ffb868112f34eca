"""The sequence layers through the library API (gradcheck.check_layer, check_network): the
built-ins pass, the buggy plugin versions fail with the buggy layer blamed."""

from __future__ import annotations

import pytest

import gradcheck
from conftest import CONFIGS
from gradcheck.plugins import load_plugin
from gradcheck.registry import layer_class
from gradcheck.testing import report_text


@pytest.mark.parametrize("name, shape, options", [
    ("rnn", (5, 3), {"units": 4}),
    ("lstm", (5, 3), {"units": 4}),
    ("gru", (5, 3), {"units": 4}),
    ("lstm", (6, 2), {"units": 3, "return_sequences": False, "learn_initial_state": True}),
    ("gru", (1, 2), {"units": 3, "learn_initial_state": True}),
    ("attention", (5, 6), {"heads": 2}),
    ("attention", (4, 6), {"heads": 3, "causal": True}),
    ("positional_encoding", (5, 3), {}),
])
def test_check_layer_passes_the_float_input_sequence_layers(name, shape, options):
    report = gradcheck.check_layer(name, shape, **options)
    assert report.passed, report_text(report)
    assert report.layers[0].checks[-1].target == "input"


def _broken(name: str):
    load_plugin("broken/sequence_layers.py", CONFIGS)
    return layer_class(name)


@pytest.mark.parametrize("buggy, twin, shape, options", [
    ("rnn_no_bptt", "scratch_rnn", (5, 3), {"units": 4}),
    ("attention_unscaled_backward", "scratch_attention", (4, 6), {"heads": 2}),
])
def test_check_layer_blames_the_buggy_plugin_and_passes_its_twin(buggy, twin, shape, options):
    report = gradcheck.check_layer(_broken(buggy), shape, **options)
    assert not report.passed and report.root_causes == [buggy]
    failing = {c.target for c in report.layers[0].checks if c.status == "fail"}
    assert "input" in failing
    assert gradcheck.check_layer(_broken(twin), shape, **options).passed


def test_a_transformer_style_chain_passes_a_full_check():
    config = {"seed": 1, "input": {"shape": [6, 8], "batch": 3},
              "layers": [{"type": "positional_encoding"},
                         {"type": "attention", "heads": 2, "causal": True},
                         {"type": "layernorm", "axes": "last"},
                         {"type": "dense", "units": 5}],
              "loss": "sequence_cross_entropy"}
    report = gradcheck.check_network(config, mode="full")
    assert report.passed, report_text(report)
