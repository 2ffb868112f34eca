"""Every shipped example must pass; the shipped broken example must be caught and blamed."""

from __future__ import annotations

import json

import pytest

from conftest import CONFIGS, ROOT

EXAMPLES = sorted(CONFIGS.glob("*.yaml"))
# Code people already have, checked as it is (README: "Checking code you already have").
EXISTING_CODE = sorted(p for folder in ("course", "adapter")
                       for p in (ROOT / "examples" / folder).glob("*.yaml")
                       if not p.stem.endswith("_buggy"))


def test_at_least_five_examples_ship():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES + EXISTING_CODE, ids=lambda p: p.name)
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


def test_existing_code_examples_ship():
    names = {p.relative_to(ROOT / "examples").as_posix() for p in EXISTING_CODE}
    assert {"course/net.yaml", "adapter/dict_net.yaml", "adapter/tuple_net.yaml",
            "adapter/list_net.yaml"} <= names


def test_buggy_course_example_is_blamed_on_the_conv_weight_gradient(run_cli):
    result = run_cli("check", ROOT / "examples" / "course" / "net_buggy.yaml", "--format", "json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["root_causes"] == ["conv1"]
    conv = next(layer for layer in report["layers"] if layer["name"] == "conv1")
    assert {c["target"]: c["status"] for c in conv["checks"]} == {
        "w": "fail", "b": "pass", "input": "pass"}
    assert conv["isolated"] == "fail"
