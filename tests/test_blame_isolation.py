"""Blame agrees with isolation (issue item 3): a layer whose own checks pass is never a root
cause, and a network that fails while no layer fails alone is ``unlocalised``, blames nobody,
exits 1 and names the smallest span that fails."""

from __future__ import annotations

import json

import pytest

from conftest import write_yaml
from gradcheck import check_network
from gradcheck.blame import assign_blame
from gradcheck.report import LayerReport, TargetReport
from zoo_cases import BUGGY, PLUGINS, TRICKY_OK, VERDICT_BUGS, graded_case

SEEDS = range(10)
PAIR = str(PLUGINS / "interacting.py")


def _pair(seed: int = 0) -> dict:
    """dense -> a layer that publishes a summary of its input -> a layer scaled by it ->
    dense: each right alone, wrong together."""
    return {"seed": seed, "plugins": [PAIR], "input": {"shape": [5], "batch": 3},
            "layers": [{"type": "dense", "units": 4, "name": "fc1"},
                       {"type": "pair_announce", "name": "announce"},
                       {"type": "pair_listen", "name": "listen"},
                       {"type": "dense", "units": 2, "name": "fc2"}], "loss": "mse"}


def _own_checks_pass(layer: LayerReport) -> bool:
    """Every check of the layer's own objective passes (in the network and alone), and it
    breaks no contract."""
    own = [c for c in layer.checks if c.compared == "layer"] + layer.isolated_checks
    return not layer.problems and all(c.own_failed == 0 for c in own) and \
        layer.isolated != "fail"


@pytest.mark.parametrize("seed", SEEDS)
def test_layers_right_alone_but_wrong_together_are_unlocalised(seed):
    report = check_network(_pair(seed))
    assert report.exit_code == 1 and report.verdict == "fail"
    assert report.unlocalised and report.root_causes == []
    assert report.span == ["announce", "listen"]
    assert report.end_to_end["failed"] > 0
    for layer in report.layers:
        assert _own_checks_pass(layer) and layer.isolated in ("pass", "kink")


@pytest.mark.parametrize("mode", ["sample", "directional", "auto"])
def test_the_pair_is_unlocalised_in_every_mode(mode):
    report = check_network(_pair(), mode=mode)
    assert report.exit_code == 1 and report.unlocalised and report.root_causes == []
    assert report.span == ["announce", "listen"]


def test_the_json_and_the_text_say_unlocalised(tmp_path, run_cli):
    path = write_yaml(tmp_path, json.dumps(_pair()))
    result = run_cli("check", path, "--format", "json")
    doc = json.loads(result.stdout)
    assert result.exit_code == 1
    assert doc["unlocalised"] is True and doc["root_causes"] == []
    assert doc["span"] == ["announce", "listen"]
    text = run_cli("check", path, "--color", "never")
    assert text.exit_code == 1
    assert "No layer fails on its own" in text.stdout and "announce -> listen" in text.stdout


def _reports():
    """Reports of every kind of verdict: bugs in one layer, correct tricky layers, graded bugs,
    a forward that ignores its input, the interacting pair."""
    configs = [config for config, _ in BUGGY.values()] + list(TRICKY_OK.values())
    configs += [graded_case(kind, 1e-3)[0] for kind in ("graded_factor", "graded_few")]
    configs.append({"plugins": [VERDICT_BUGS], "input": {"shape": [5], "batch": 3},
                    "layers": [{"type": "dense", "units": 4}, {"type": "stale_tanh"},
                               {"type": "dense", "units": 2}], "loss": "mse"})
    configs.append(_pair())
    for seed in range(2):
        for config in configs:
            yield check_network({**config, "seed": seed})


def test_a_layer_whose_own_checks_pass_is_never_a_root_cause():
    inherited = 0
    for report in _reports():
        for layer in report.layers:
            if _own_checks_pass(layer):
                assert not layer.root_cause, (report.network, layer.name)
            if layer.root_cause:
                assert not _own_checks_pass(layer)
            if layer.status == "fail" and not layer.root_cause:
                inherited += 1
                assert layer.inherited_from in report.root_causes or report.unlocalised
    assert inherited > 0  # failing layers that were not blamed exist: the rule was exercised


def _layer(name: str, own_failed: int, network_failed: int, isolated: str) -> LayerReport:
    checks = [TargetReport("W", (2,), "fail" if own_failed else "pass", 2, own_failed,
                           own_failed=own_failed),
              TargetReport("input", (2,), "fail" if network_failed else "pass", 2,
                           network_failed, compared="network")]
    return LayerReport(name, "dense", 0, checks, isolated=isolated)


def test_blame_follows_own_checks_not_network_failures():
    """A layer failing only through the network (it received a wrong gradient) is not a root
    cause; the one failing on its own downstream is, and the first is inherited from it. With
    no root cause at all, the failure is unexplained."""
    layers = [_layer("upstream", 0, 2, "pass"), _layer("culprit", 2, 2, "fail"),
              _layer("after", 0, 0, "pass")]
    assert not assign_blame(_Chain(3), layers)
    assert [x.root_cause for x in layers] == [False, True, False]
    assert layers[0].inherited_from == "culprit"
    alone = [_layer("upstream", 0, 2, "pass"), _layer("after", 0, 0, "pass")]
    assert assign_blame(_Chain(2), alone) and not any(x.root_cause for x in alone)


class _Chain:
    """The one question blame asks of a network, for a chain of ``n`` units: which units lie
    before unit k."""

    def __init__(self, n: int):
        self.n = n

    def ancestors(self, k: int) -> list[int]:
        return list(range(k))
