"""gradcheck diagnose speaks the same formats and exit codes as check: JUnit whose failures are
exactly the error-severity findings, a Markdown table, --exit-zero, -q/-v, SVG/HTML export, and JSON
that the published findings schema describes. Scenarios run with --no-probe to stay fast."""

from __future__ import annotations

import functools
import json
import xml.etree.ElementTree as ET

import click
import pytest
from click.testing import CliRunner

from conftest import CONFIGS
from gradcheck.cli import check, diagnose, main
from gradcheck.diagnose.findings import Diagnosis, Finding
from gradcheck.render.findings_ci import render_findings_junit, render_findings_markdown
from gradcheck.schema import FINDINGS_SCHEMA_FILE, load_schema, validate

SCENARIOS = CONFIGS / "scenarios"
BROKEN = sorted(p for p in SCENARIOS.glob("*.yaml") if not p.stem.endswith("_fixed"))
TWINS = sorted(SCENARIOS.glob("*_fixed.yaml"))


@functools.lru_cache(maxsize=None)
def run(*args):
    """``gradcheck diagnose ARGS`` in-process (cached: every output is deterministic)."""
    result = CliRunner().invoke(main, ["diagnose", *map(str, args)], env={"NO_COLOR": None},
                                catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def findings(path):
    code, out, _ = run(path, "--no-probe", "--format", "json")
    assert code in (0, 1)
    return json.loads(out)


def _options(command: click.Command) -> dict[str, click.Option]:
    return {p.name: p for p in command.params if isinstance(p, click.Option)}


def test_diagnose_has_checks_output_options_with_the_same_choices():
    mine, theirs = _options(diagnose), _options(check)
    for name in ("fmt", "exit_zero", "quiet", "verbose", "svg", "html", "output", "color"):
        assert name in mine, name
        assert mine[name].opts == theirs[name].opts
    assert mine["fmt"].type.choices == theirs["fmt"].type.choices


@pytest.mark.parametrize("path", BROKEN + TWINS, ids=lambda p: p.stem)
def test_junit_fails_exactly_on_error_findings_and_matches_the_exit_code(path):
    doc = findings(path)
    code, out, _ = run(path, "--no-probe", "--format", "junit")
    suite = ET.fromstring(out).find("testsuite")
    cases = suite.findall("testcase")
    groups = {(f["id"], f["layer"]) for f in doc["findings"]}
    failing = {(f["id"], f["layer"]) for f in doc["findings"] if f["severity"] == "error"}
    assert len(cases) == max(len(groups), 1)
    failed_names = {c.get("name") for c in cases if c.find("failure") is not None}
    assert failed_names == {f"{i} ({layer})" if layer else i for i, layer in failing}
    assert int(suite.get("failures")) == len(failing) and suite.get("errors") == "0"
    for case in cases:
        # warn and info findings are told, not failed: CI fails only where the exit code does.
        if case.find("failure") is None and case.get("name") != "no findings":
            assert case.find("system-out") is not None
            assert "fix: " in case.find("system-out").text
    assert code == (1 if failing else 0)
    if path in BROKEN:
        assert failing, "every broken scenario has an error-severity finding"
    else:
        assert not failing


def test_junit_failure_names_cause_and_fix_and_is_byte_stable():
    path = SCENARIOS / "r2_alexnet_softmax.yaml"
    _, out, _ = run(path, "--no-probe", "--format", "junit")
    fresh = CliRunner().invoke(main, ["diagnose", str(path), "--no-probe", "--format", "junit"])
    assert fresh.stdout == out
    case = next(c for c in ET.fromstring(out).iter("testcase") if c.get("name") == "softmax-axis-1 (prob)")
    failure = case.find("failure")
    assert failure.get("type") == "softmax-axis-1" and "axis of size 1" in failure.get("message")
    assert "fix: drop prob" in failure.text
    assert case.get("classname") == "gradcheck.diagnose.r2-alexnet-softmax.prob"


def test_junit_of_a_network_without_findings_is_one_passing_case():
    d = Diagnosis(network="clean", findings=[])
    case, = ET.fromstring(render_findings_junit(d)).iter("testcase")
    assert case.get("name") == "no findings" and len(case) == 0


def test_junit_crash_is_an_error_case_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: {shape: [4]}\nlayers: [{type: no_such_layer}]\nloss: mse\n")
    for extra in ((), ("--exit-zero",)):
        code, out, err = run(bad, "--format", "junit", *extra)
        assert code == 2 and "no_such_layer" in err
        suite = ET.fromstring(out).find("testsuite")
        assert suite.get("errors") == "1" and suite.get("failures") == "0"
        assert "no_such_layer" in suite.find("testcase/error").get("message")


@pytest.mark.parametrize("path", [SCENARIOS / "r1_matlab_cnn.yaml",
                                  SCENARIOS / "r4_keras_sigmoid_regression_fixed.yaml"],
                         ids=lambda p: p.stem)
def test_markdown_has_one_table_row_per_finding_worst_first(path):
    doc = findings(path)
    code, out, _ = run(path, "--no-probe", "--format", "markdown")
    heading = out.splitlines()[0]
    assert heading.startswith("### ") and heading.endswith(
        {"error": "FAIL", "warn": "WARN"}.get(doc["status"], "OK"))
    assert "| severity | id | layer | value | threshold | cause | fix |" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == len(doc["findings"]) > 0
    for row, f in zip(rows, doc["findings"]):
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert cells[0].endswith(f["severity"]) and cells[1] == f"`{f['id']}`"
        assert cells[2] == (f"`{f['layer']}`" if f["layer"] else "-")
        assert cells[6] == f["fix"].replace("|", "\\|")
    assert code == (1 if doc["counts"]["error"] else 0)


def test_markdown_escapes_cells_and_says_when_nothing_was_found():
    piped = Finding("dead-units", "warn", "lint", "a|b", 2.0, "< 1",
                    "cause with | pipe\nand newline", "fix it")
    out = render_findings_markdown(Diagnosis(network="n", findings=[piped]))
    row = out.splitlines()[-1]
    assert "`a\\|b`" in row and "cause with \\| pipe and newline" in row and row.count(" | ") == 6
    assert "No findings." in render_findings_markdown(Diagnosis(network="n", findings=[]))


def test_exit_zero_quiet_and_verbose():
    broken = SCENARIOS / "r2_alexnet_softmax.yaml"
    code, full, _ = run(broken, "--no-probe")
    assert code == 1 and "[softmax-axis-1]" in full
    code, quiet, err = run(broken, "--no-probe", "-q")
    assert code == 1 and quiet.strip() == full.strip().splitlines()[-1] == "FAIL  3 error, 0 warn, 3 info"
    assert err == ""
    code, out, _ = run(broken, "--no-probe", "-q", "--exit-zero")
    assert code == 0 and out == quiet
    code, out, err = run(broken, "--no-probe", "-v")
    assert code == 1 and out == full
    assert "gradcheck: built 'r2-alexnet-softmax'" in err and "diagnosed: 6 findings" in err
    code, quiet, _ = run(SCENARIOS / "r2_alexnet_softmax_fixed.yaml", "--no-probe", "-q")
    assert code == 0 and quiet.startswith("OK  0 error")


def test_svg_and_html_export_the_text_report(tmp_path):
    svg, html, md = tmp_path / "d.svg", tmp_path / "d.html", tmp_path / "d.md"
    code, out, _ = run(SCENARIOS / "r2_alexnet_softmax.yaml", "--no-probe", "--format", "markdown",
                       "-o", md, "--svg", svg, "--html", html)
    assert code == 1 and out == ""
    assert md.read_text(encoding="utf-8").startswith("### ❌ gradcheck diagnose")
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and "softmax-axis-1" in svg.read_text(encoding="utf-8")
    assert "softmax-axis-1" in html.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def json_outputs():
    """A run with the probe (NaN losses become null) and fast runs of a broken and a healthy twin."""
    code, out, _ = run(SCENARIOS / "r5_scratch_cnn.yaml", "--format", "json")
    assert code == 1
    return [json.loads(out), findings(SCENARIOS / "r2_alexnet_softmax.yaml"),
            findings(SCENARIOS / "r3_cpp_conv_fixed.yaml")]


def test_real_diagnose_outputs_validate_against_the_findings_schema(json_outputs):
    schema = load_schema(FINDINGS_SCHEMA_FILE)
    for doc in json_outputs:
        assert validate(doc, schema) == []
    assert any(None in run_["losses"] for run_ in json_outputs[0]["probe"]["runs"])
    assert {doc["status"] for doc in json_outputs} >= {"error"}


def test_every_key_printed_is_described_in_the_findings_schema(json_outputs):
    schema = load_schema(FINDINGS_SCHEMA_FILE)
    top, defs = schema["properties"], schema["$defs"]
    for doc in json_outputs:
        assert set(doc) <= set(top)
        assert set(doc["counts"]) <= set(top["counts"]["properties"])
        assert set(doc["gradcheck"]) <= set(top["gradcheck"]["properties"])
        assert set(doc["probe"]) <= set(top["probe"]["properties"])
        for f in doc["findings"]:
            assert set(f) <= set(defs["finding"]["properties"]), set(f)
        for r in doc["probe"]["runs"]:
            assert set(r) <= set(defs["run"]["properties"]), set(r)


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d["findings"][0].update(severity="fatal"), "$.findings[0].severity: expected one of"),
    (lambda d: d["findings"][0].pop("fix"), "$.findings[0]: missing required key 'fix'"),
    (lambda d: d.update(status="broken"), "$.status: expected one of"),
    (lambda d: d["probe"]["runs"][0].update(stopped="bored"), "$.probe.runs[0].stopped"),
    (lambda d: d["counts"].update(error=-1), "$.counts.error: -1 is below the minimum 0"),
])
def test_findings_schema_rejects_broken_documents(json_outputs, mutate, needle):
    doc = json.loads(json.dumps(json_outputs[0]))
    mutate(doc)
    errors = validate(doc, load_schema(FINDINGS_SCHEMA_FILE))
    assert any(needle in e for e in errors), errors


def test_a_finding_outside_the_rule_table_is_refused():
    with pytest.raises(ValueError, match="unknown finding id 'x-rule'"):
        Finding("x-rule", "warn", "lint", None, None, None, "cause", "fix")


def test_json_gives_the_spread_of_every_seed_dependent_result(json_outputs):
    doc = json_outputs[0]
    seeds = doc["probe"]["seeds"]
    assert len(seeds) == 3 and seeds[0] == 0
    spreads = {f["id"]: f["spread"] for f in doc["findings"]}
    # Exact findings do not depend on the seed; measured ones say where they fired and what.
    assert spreads["gradient-mismatch"] is None
    nan = spreads["nonfinite-training"]
    assert nan["seeds"] == seeds and nan["fired"] == [True] * 3
    assert nan["min"] == min(nan["values"]) and nan["max"] == max(nan["values"])
    assert {r["seed"] for r in doc["probe"]["runs"]} == set(seeds)
    configured = doc["probe"]["spread"]["configured"]
    assert configured["seeds"] == seeds and configured["outcome"] == ["nonfinite"] * 3
