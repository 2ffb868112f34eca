"""The published JSON Schema describes what `--format json` really prints, and the validator
that checks it can fail."""

from __future__ import annotations

import copy
import json

import pytest

from conftest import CONFIGS
from gradcheck.schema import load_schema, validate

CASES = [CONFIGS / "mlp.yaml", CONFIGS / "broken" / "plugin_buggy.yaml", CONFIGS / "plugin.yaml"]


@pytest.fixture(scope="module")
def outputs():
    from click.testing import CliRunner

    from gradcheck.cli import main

    docs = []
    for path in CASES:
        result = CliRunner().invoke(main, ["check", str(path), "--format", "json"],
                                    catch_exceptions=False)
        assert result.exit_code in (0, 1)
        docs.append(json.loads(result.stdout))
    return docs


def test_real_outputs_validate(outputs):
    for doc in outputs:
        assert validate(doc) == []
    assert {doc["passed"] for doc in outputs} == {True, False}


def test_every_key_printed_is_described_in_the_schema(outputs):
    """Consumers read the schema to learn the format: a key missing from it is undocumented."""
    schema = load_schema()
    defs = schema["$defs"]
    described = {
        "$": set(schema["properties"]), "settings": set(schema["properties"]["settings"]["properties"]),
        "summary": set(schema["properties"]["summary"]["properties"]),
        "layer": set(defs["layer"]["properties"]), "check": set(defs["check"]["properties"]),
    }
    for doc in outputs:
        assert set(doc) <= described["$"], set(doc) - described["$"]
        assert set(doc["settings"]) <= described["settings"]
        assert set(doc["summary"]) <= described["summary"]
        for layer in doc["layers"]:
            assert set(layer) <= described["layer"], set(layer) - described["layer"]
            for check in layer["checks"]:
                assert set(check) <= described["check"], set(check) - described["check"]


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.pop("passed"), "missing required key 'passed'"),
    (lambda d: d.update(schema_version=2), "$.schema_version: expected 1"),
    (lambda d: d["layers"][0].update(status="broken"), "$.layers[0].status: expected one of"),
    (lambda d: d["layers"][0]["checks"][0].update(checked=-1), "below the minimum"),
    (lambda d: d["layers"][0]["checks"][0].update(failed=True), "expected integer"),
    (lambda d: d["settings"].update(eps=0), "must be greater than 0"),
    (lambda d: d["layers"][1].update(inherited_from=3), "expected string or null"),
    (lambda d: d["layers"][0]["checks"][0].update(worst_index=[1, "a"]), "worst_index[1]"),
])
def test_validator_catches_broken_documents(outputs, mutate, needle):
    doc = copy.deepcopy(outputs[0])
    mutate(doc)
    errors = validate(doc)
    assert any(needle in e for e in errors), errors


def test_validator_refuses_keywords_it_does_not_implement():
    with pytest.raises(ValueError, match="not supported"):
        validate({}, {"type": "object", "patternProperties": {}})
