"""Every shipped example must pass; the shipped broken example must be caught and blamed."""

from __future__ import annotations

import json

import pytest

from conftest import CONFIGS

EXAMPLES = sorted(CONFIGS.glob("*.yaml"))


def test_at_least_five_examples_ship():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_shipped_example_passes(path, run_cli):
    result = run_cli("check", path, "--format", "json")
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["root_causes"] == []
    assert report["summary"]["checked"] > 0


def test_broken_plugin_example_is_blamed(run_cli):
    result = run_cli("check", CONFIGS / "broken" / "plugin_buggy.yaml", "--format", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["root_causes"] == ["act"]
