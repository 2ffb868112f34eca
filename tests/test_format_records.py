"""What the machine formats carry: a config error as a machine-readable record (json, markdown,
junit) for check and diagnose, exit code 2; each failure's explanation and worst elements in
JUnit and Markdown; and check and diagnose sharing one definition of each option block."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import click
import pytest

from conftest import CONFIGS, write_yaml
from gradcheck import check_network
from gradcheck.cli import check, diagnose
from gradcheck.errors import ConfigError, DataError
from gradcheck.render.formats import FORMATS, SUBJECTS, renderer
from gradcheck.render.junit import render_junit
from gradcheck.render.markdown import render_markdown
from gradcheck.schema import FINDINGS_SCHEMA_FILE, load_schema, validate

BAD_CONFIG = "input: {shape: [4]}\nlayers: [{type: dense, unit: 3}]\nloss: mse\n"
ERROR_FIELDS = {"message": "unknown option 'unit' for dense.", "path": "layers[0].unit",
                "hint": "did you mean 'units'?", "type": "ConfigError"}


@pytest.fixture(scope="module")
def buggy():
    return check_network(CONFIGS / "broken" / "plugin_buggy.yaml")


@pytest.mark.parametrize("command", ["check", "diagnose"])
@pytest.mark.parametrize("to_file", [False, True])
def test_a_config_error_in_json_is_a_record_and_exits_2(run_cli, tmp_path, command, to_file):
    path = write_yaml(tmp_path, BAD_CONFIG, "broken_net.yaml")
    out = tmp_path / "out.json"
    result = run_cli(command, path, "--format", "json", *(["-o", out] if to_file else []))
    assert result.exit_code == 2 and "did you mean 'units'" in result.stderr
    doc = json.loads(out.read_text() if to_file else result.stdout)
    assert doc == {"schema_version": 1, "network": "broken_net",
                   "error": {**ERROR_FIELDS, "where": f"{path}:2:24"}}
    schema = load_schema() if command == "check" else load_schema(FINDINGS_SCHEMA_FILE)
    assert validate(doc, schema) == []


def test_the_error_record_validator_can_fail(run_cli, tmp_path):
    doc = json.loads(run_cli("check", write_yaml(tmp_path, BAD_CONFIG), "--format", "json").stdout)
    del doc["error"]["where"]
    doc["network"] = None
    errors = validate(doc)
    assert "$.error: missing required key 'where'" in errors
    assert any(e.startswith("$.network: expected string") for e in errors), errors


@pytest.mark.parametrize("command, heading", [("check", "gradcheck `net`"),
                                              ("diagnose", "gradcheck diagnose `net`")])
def test_a_config_error_in_markdown_is_a_section(run_cli, tmp_path, command, heading):
    result = run_cli(command, write_yaml(tmp_path, BAD_CONFIG), "--format", "markdown")
    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    assert lines[0] == f"### ⛔ {heading}: ERROR"
    assert "ConfigError: unknown option 'unit' for dense." in lines
    assert "- YAML path: `layers[0].unit`" in lines and "- hint: did you mean 'units'?" in lines


@pytest.mark.parametrize("command", ["check", "diagnose"])
def test_a_config_error_in_junit_is_an_error_case_of_its_class(run_cli, tmp_path, command):
    result = run_cli(command, write_yaml(tmp_path, BAD_CONFIG), "--format", "junit")
    assert result.exit_code == 2
    error = ET.fromstring(result.stdout).find("./testsuite/testcase/error")
    assert error.get("type") == "ConfigError" and "did you mean 'units'" in error.get("message")


def test_text_keeps_a_config_error_on_stderr_only(run_cli, tmp_path):
    result = run_cli("check", write_yaml(tmp_path, BAD_CONFIG))
    assert result.exit_code == 2 and result.stdout == "" and "did you mean" in result.stderr


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "text"])
@pytest.mark.parametrize("subject", SUBJECTS)
def test_every_machine_format_has_an_error_renderer_that_names_everything(fmt, subject):
    error = DataError("x.npy holds NaN.", where="net.yaml:3:10", path="input.file",
                      hint="clean the data")
    text = renderer(fmt, subject, "error")("net", error)
    for part in ("x.npy holds NaN.", "net.yaml:3:10", "input.file", "clean the data", "DataError"):
        assert part in text, (fmt, part)


def test_an_error_without_location_or_hint_leaves_them_out():
    text = renderer("markdown", "report", "error")("net", ConfigError("no layers."))
    assert "where" not in text and "hint" not in text and "ConfigError: no layers." in text
    record = json.loads(renderer("json", "report", "error")("net", ConfigError("no layers.")))
    assert record["error"] == {"message": "no layers.", "where": None, "path": None,
                               "hint": None, "type": "ConfigError"}


def test_junit_failures_carry_the_pattern_and_worst_elements(buggy):
    cases = {c.get("name"): c for c in ET.fromstring(render_junit(buggy)).iter("testcase")}
    act = buggy.layers[1].checks[0]
    assert act.status == "fail" and act.explanation and act.worst_elements
    detail = cases["act (my_sigmoid) dL/dinput"].find("failure").text
    assert f"pattern: {act.explanation}" in detail
    for element in act.worst_elements:
        assert f"  {element['index']} {element['analytic']:.6e} {element['numeric']:.6e}" in detail
    passing = cases["fc2 (dense) dL/dW"]
    assert passing.find("failure") is None and "pattern" not in ET.tostring(passing, "unicode")


def test_markdown_explains_each_failure_and_lists_a_root_causes_worst_elements(buggy):
    text = render_markdown(buggy)
    act = buggy.layers[1].checks[0]
    block = text.split("**`act` (my_sigmoid) dL/dinput**", 1)[1]
    assert f"Pattern: {act.explanation}" in block.splitlines()[0]
    rows = [line for line in block.splitlines() if line.startswith("| [")]
    assert [row.split(" | ")[0] for row in rows] == [f"| {e['index']}" for e in act.worst_elements]
    inherited = text.split("**`fc1` (dense) dL/dW**", 1)[1].split("\n\n", 2)
    assert "inherited from `act`" in inherited[0] and not inherited[1].startswith("| index")


def test_a_passing_report_has_no_failure_sections():
    text = render_markdown(check_network(CONFIGS / "mlp.yaml"))
    assert "Pattern:" not in text and "| index |" not in text


def _options(command: click.Command) -> dict[str, click.Parameter]:
    return {p.name: p for p in command.params}


@pytest.mark.parametrize("name", ["fmt", "exit_zero", "quiet", "verbose", "svg", "html", "output",
                                  "color", "plugins", "debug", "configs"])
def test_check_and_diagnose_share_each_option_definition(name):
    """One decorator per block: the same flags, help, type and default in both commands."""
    mine, theirs = _options(check)[name], _options(diagnose)[name]
    assert (mine.opts, mine.help if hasattr(mine, "help") else None, mine.default, mine.nargs) == (
        theirs.opts, theirs.help if hasattr(theirs, "help") else None, theirs.default,
        theirs.nargs)
    assert type(mine.type) is type(theirs.type)


def test_check_help_states_the_exit_code_order(run_cli):
    for command, order in (("check", "2 > 1 > 3 > 0"), ("diagnose", "2 > 1 > 0")):
        text = " ".join(run_cli(command, "--help").stdout.split())
        assert order in text and "CONFIG..." in text
    assert "1e-06" in " ".join(run_cli("check", "--help").stdout.split())  # deferred help
