"""Every fix diagnose can print names only options that exist, and the README's rule table lists
every finding id the code can emit.

A fix spells an option as YAML (``gradcheck.diagnose.advice``): ``train: {lr: 0.001}`` is a config
key with its sub-keys, ``init: lecun on fc2`` an option of the layer fc2. The fixes are collected
by diagnosing every shipped config and, for the rules no shipped config reaches, a small network
that reaches it; the collection must cover every id in ``FINDING_IDS``."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest

from conftest import CONFIGS, ROOT, TEST_PLUGINS
from test_diagnose import diagnosis

from gradcheck.build import build_network
from gradcheck.config import INPUT_KEYS, TOP_KEYS, CheckSpec, TrainSpec, load_config
from gradcheck.diagnose import run_diagnosis
from gradcheck.diagnose.findings import FINDING_IDS
from gradcheck.registry import layer_class

PLUGIN = str(TEST_PLUGINS / "diagnose_layers.py")
SUB_KEYS = {"train": {f.name for f in dataclasses.fields(TrainSpec)},
            "check": {f.name for f in dataclasses.fields(CheckSpec)}, "input": set(INPUT_KEYS)}
BLOCK = re.compile(r"\b(\w+): \{([^{}]*)\}")
ON_LAYER = re.compile(r"\b(\w+): (\S+) on (\w+)")
ANY_OPTION = re.compile(r"\b(\w+): ")


def net(layers, probe=False, **top):
    doc = {"plugins": [PLUGIN], "seed": 0, "input": {"shape": [6], "batch": 8},
           "layers": layers, "loss": "mse", **top}
    return doc, probe


D4, D2 = {"type": "dense", "units": 4}, {"type": "dense", "units": 2}
SMALL = {
    "dropout-high": net([{"type": "dense", "units": 32}, "relu",
                         {"type": "dropout", "name": "drop", "rate": 0.8}, D2]),
    "double-activation": net([D4, "tanh", "sigmoid", D2]),
    "saturation": net([{"type": "dense", "units": 8, "init": {"normal": {"std": 10.0}}},
                       "sigmoid", D2]),
    "grad-profile": net([{"type": "dense", "units": 16, "init": "lecun"}, "sigmoid"] * 8 + [D2]),
    "loss-rejects-output": net([D4], loss="bce", target={"data": "uniform", "low": 0.1,
                                                          "high": 0.9}),
    "zero-jacobian": net([D4, {"type": "diag_flatline", "name": "flat"}, D2]),
    # With the probe: a run on a network whose backward is not finite must not trip over the
    # gradient check that could not run.
    "nonfinite-backward": net([D4, {"type": "diag_inf_backward", "name": "inf"}, D2], probe=True,
                              train={"optimizer": "sgd", "lr": 0.01, "steps": 20}),
    "nonfinite-forward": net([D4, {"type": "diag_overflow", "name": "boom"}, D2]),
    "batch-mixing": net([{"type": "diag_leaky_batch_dense", "name": "leaky", "units": 4},
                         "tanh", D2]),
    "init-constant": net([{"type": "diag_constant_dense", "name": "const", "units": 8}, "tanh",
                          D2]),
    "init-bias": net([{"type": "dense", "name": "fc", "units": 4, "bias_init": "ones"}, "tanh",
                      D2]),
    "no-nonlinearity": net([D4, D2]),
    "weights-crushed": net([{"type": "dense", "units": 16}, "tanh", D2], probe=True,
                           train={"optimizer": "sgd", "lr": 0.1, "weight_decay": 9.0,
                                  "steps": 100}),
    "loss-diverging": net([{"type": "dense", "units": 16}, "tanh", D2], probe=True,
                          train={"optimizer": "sgd", "lr": 1.2, "steps": 100}),
    "slow-fit": net([{"type": "dense", "units": 16}, "tanh", D2], probe=True,
                    train={"optimizer": "sgd", "lr": 0.01, "steps": 30}),
    "collapse-to-mean": net([D4, "tanh", D2], probe=True,
                            input={"shape": [6], "batch": 8, "data": "normal", "mean": 1.0,
                                   "std": 0.0},
                            train={"optimizer": "adam", "lr": 0.01, "steps": 100}),
    "decay-large": net([D4, "tanh", D2], train={"optimizer": "sgd", "lr": 0.1,
                                                "weight_decay": 2.0}),
    "vanishing-through-time": net([{"type": "diag_faint_rnn", "name": "rnn", "units": 8}, D2],
                                  input={"shape": [12, 3], "batch": 8}),
    "exploding-through-time": net([{"type": "diag_amplifying_rnn", "name": "rnn", "units": 8},
                                   D2], input={"shape": [10, 3], "batch": 8}),
    "attention-collapse": net([{"type": "diag_dot_attention", "name": "att", "sharpness": 30.0},
                               D2], input={"shape": [8, 16], "batch": 8}),
}


def _diagnose(source, probe):
    spec = load_config(source)
    network, batch = build_network(spec)
    with network:
        d = run_diagnosis(spec, network, batch, probe=probe)
    return d, {layer.name: type(layer) for layer in network.layers}


@pytest.fixture(scope="module")
def fixes():
    """(id, fix, layer classes by name) of every finding of every collected diagnosis: the
    shipped configs' (at their own seed, shared with test_diagnose) and the small networks'."""
    found = []
    for path in [p for p in sorted(CONFIGS.rglob("*.yaml")) if "broken" not in p.parts]:
        d = diagnosis(path)
        classes = {layer.name: layer_class(layer.type) for layer in load_config(path).layers}
        found += [(f.id, f.fix, classes) for f in d.findings]
    for source, probe in SMALL.values():
        d, classes = _diagnose(source, probe)
        found += [(f.id, f.fix, classes) for f in d.findings]
    return found


def test_the_collection_reaches_every_rule(fixes):
    assert {id_ for id_, _, _ in fixes} == set(FINDING_IDS)
    # Each small network reaches the rule it is there for.
    reached = {id_ for id_, _, _ in fixes}
    assert set(SMALL) <= reached


def _options(cls) -> set[str]:
    params = inspect.signature(cls.__init__).parameters
    return {n for n, p in params.items() if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                                      p.KEYWORD_ONLY)}


def problems(fix: str, classes: dict[str, type]) -> list[str]:
    """Every option ``fix`` names that does not exist where it says."""
    wrong = []
    for key, body in BLOCK.findall(fix):
        if key not in SUB_KEYS:
            wrong.append(f"{key}: is not a config block with keys")
            continue
        wrong += [f"{key}: {{{sub}}}" for sub in re.findall(r"(\w+): ", body)
                  if sub not in SUB_KEYS[key]]
    rest = BLOCK.sub("", fix)
    for key, _, layer in ON_LAYER.findall(rest):
        if layer not in classes or key not in _options(classes[layer]):
            wrong.append(f"{key}: on {layer}")
    rest = ON_LAYER.sub("", rest)
    wrong += [f"{key}: (no layer named)" for key in ANY_OPTION.findall(rest)
              if key not in TOP_KEYS]
    return wrong


def test_every_fix_names_only_options_that_exist(fixes):
    bad = {(id_, fix): problems(fix, classes) for id_, fix, classes in fixes
           if problems(fix, classes)}
    assert bad == {}
    # The init advice names the option where the layer takes it, and words where it does not.
    named = [fix for id_, fix, _ in fixes if id_ == "init-scale" and "init: " in fix]
    assert named and all(re.search(r"init: (he|lecun) on \w+", fix) for fix in named)
    assert any("in MatlabConv.build" in fix for id_, fix, _ in fixes if id_ == "init-scale")


def test_the_option_checker_catches_options_that_do_not_exist():
    dense, conv = layer_class("dense"), layer_class("conv2d")
    classes = {"fc": dense, "conv": conv}
    assert problems("set init: lecun on fc, or train: {lr: 0.001, momentum: 0.9}", classes) == []
    assert problems("set initializer: lecun on fc", classes) == ["initializer: on fc"]
    assert problems("set init: lecun on fc9", classes) == ["init: on fc9"]
    assert problems("try train: {learning_rate: 0.1}", classes) == ["train: {learning_rate}"]
    assert problems("use activation: relu", classes) == ["activation: (no layer named)"]
    assert problems("drop prob; use a linear output", classes) == []
    assert "rate" in _options(layer_class("dropout")) and "rate" not in _options(dense)


def test_readme_rule_table_lists_every_finding_id_once():
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- diagnose-rules -->", 2)[1]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    ids = [re.match(r"\| `([a-z0-9-]+)`", row).group(1) for row in rows]
    assert sorted(ids) == sorted(FINDING_IDS) and len(ids) == len(set(ids))
    # Every row gives a rule, a severity, a source and a measured margin (or why none applies).
    for row in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]
        assert len(cells) == 5 and all(cells), row
