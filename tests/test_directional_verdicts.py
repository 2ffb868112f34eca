"""Directions through the network judged as elements are: the modes that check along random
directions (``directional``, and ``auto`` on a network too large for a full check, which runs
``sample+directional``) raise no false alarm on the correct-but-tricky layers, and still catch
every bug in the zoo with the right layer blamed."""

from __future__ import annotations

import pytest

import gradcheck.check
from gradcheck import check_network
from zoo_cases import BUGGY, TRICKY_OK

# The plugins with kinks and no branch_state, and the ones computing in float32: what a
# direction through the network once failed on.
HARD = ("relu_at_exact_zero", "clip_at_its_bound", "maxpool_exact_ties", "max_over_duplicates",
        "float32_inside_float64", "tanh_rounded_to_float32")


@pytest.fixture
def too_large(monkeypatch):
    """auto mode as on a network whose full check would not fit its budget."""
    monkeypatch.setattr(gradcheck.check, "estimate_seconds", lambda *args, **kwargs: 1e9)


def _failing(report) -> list:
    return [(layer.name, c.target, c.coverage) for layer in report.layers
            for c in layer.checks if c.status == "fail"]


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("case", HARD)
def test_directional_mode_raises_no_false_alarm(case, seed):
    report = check_network({**TRICKY_OK[case], "seed": seed}, mode="directional")
    assert report.exit_code == 0 and not report.unlocalised, _failing(report)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("case", HARD)
def test_auto_on_a_large_network_raises_no_false_alarm(case, seed, too_large):
    report = check_network({**TRICKY_OK[case], "seed": seed})
    assert report.settings["mode"] == "sample+directional"
    assert report.exit_code == 0 and not report.unlocalised, _failing(report)


@pytest.mark.parametrize("case", sorted(TRICKY_OK))
def test_every_tricky_case_passes_in_directional_mode(case):
    report = check_network({**TRICKY_OK[case], "seed": 0}, mode="directional")
    assert report.exit_code == 0, _failing(report)


@pytest.mark.parametrize("case", sorted(BUGGY))
def test_every_bug_is_caught_along_directions_and_blamed_on_its_layer(case):
    config, culprit = BUGGY[case]
    report = check_network(config, mode="directional")
    assert report.exit_code == 1 and report.root_causes == [culprit]


@pytest.mark.parametrize("case", sorted(BUGGY))
def test_every_bug_is_caught_by_auto_on_a_large_network(case, too_large):
    config, culprit = BUGGY[case]
    report = check_network(config)
    assert report.exit_code == 1 and report.root_causes == [culprit]
