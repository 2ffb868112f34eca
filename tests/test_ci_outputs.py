"""CI outputs: JUnit XML, Markdown summary and the log-scale error bar, on real and built reports."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from conftest import CONFIGS
from gradcheck import check_network
from gradcheck.render.bars import error_bar
from gradcheck.render.junit import render_junit, render_junit_error
from gradcheck.render.markdown import render_markdown
from gradcheck.report import LayerReport, Report, TargetReport

SETTINGS = {"mode": "full", "eps": 1e-6, "rtol": 1e-5, "atol": 1e-8, "samples": None, "seed": 0,
            "dtype": "float64"}


@pytest.fixture(scope="module")
def buggy():
    return check_network(CONFIGS / "broken" / "plugin_buggy.yaml")


def _target(name, status, failed=0, kinks=0, inconclusive=0, rel=1e-9):
    return TargetReport(target=name, shape=(2, 3), status=status, checked=6, failed=failed,
                        kinks=kinks, inconclusive=inconclusive, max_rel_error=rel,
                        worst_index=[0, 1], analytic=1.0, numeric=1.0)


def _every_status_report() -> Report:
    checks = [_target("W", "pass"), _target("b", "fail", failed=2, rel=0.5),
              _target("gamma", "kink", kinks=1), _target("beta", "inconclusive", inconclusive=1),
              _target("input", "skipped"), _target("scale", "error")]
    layer = LayerReport(name="weird <layer> & co", type="t", index=0, checks=checks, root_cause=True)
    return Report(network="net\x1b", settings=SETTINGS, layers=[layer])


def test_junit_has_one_testcase_per_target_with_failures_where_the_report_fails(buggy):
    root = ET.fromstring(render_junit(buggy))
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == sum(len(layer.checks) for layer in buggy.layers) == 8
    failing = {c.get("name") for c in cases if c.find("failure") is not None}
    assert failing == {"fc1 (dense) dL/dW", "fc1 (dense) dL/db", "fc1 (dense) dL/dinput",
                       "act (my_sigmoid) dL/dinput"}
    act = next(c for c in cases if c.get("name").startswith("act"))
    assert "root cause" in act.find("failure").get("message")
    assert root.get("failures") == "4" and root.get("tests") == "8" and root.get("errors") == "0"


def test_junit_maps_kink_and_inconclusive_to_skipped_and_unknown_status_to_error():
    text = render_junit(_every_status_report())
    root = ET.fromstring(text)  # escapes the name and drops the control character
    kinds = [[child.tag for child in case] for case in root.iter("testcase")]
    assert kinds == [[], ["failure"], ["skipped"], ["skipped"], ["skipped"], ["error"]]
    suite = root.find("testsuite")
    assert (suite.get("failures"), suite.get("skipped"), suite.get("errors")) == ("1", "3", "1")
    assert "weird <layer> & co" in text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def test_junit_is_byte_stable(buggy):
    again = check_network(CONFIGS / "broken" / "plugin_buggy.yaml")
    assert render_junit(buggy) == render_junit(again)
    assert "time" not in render_junit(buggy) and "timestamp" not in render_junit(buggy)


def test_junit_error_document_for_a_crashed_check():
    root = ET.fromstring(render_junit_error("net", "layer 'x' raised <KeyError>"))
    error = root.find("./testsuite/testcase/error")
    assert error is not None and "KeyError" in error.get("message") and root.get("errors") == "1"


def test_markdown_table_names_root_cause_and_escapes_cells(buggy):
    text = render_markdown(buggy)
    assert text.startswith("### ❌ gradcheck `buggy-plugin`: FAIL")
    assert "**Root cause: `act`**" in text
    table = text.split("| layer |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in ("| layer |" + table).splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 8  # header + one row per target
    assert all(row.count(" | ") == rows[0].count(" | ") for row in rows)
    weird = render_markdown(Report("a|b", SETTINGS, [LayerReport("x|y", "t", 0, [_target("W", "pass")])]))
    assert "a\\|b" in weird and "x\\|y" in weird


def test_markdown_pass_says_so():
    text = render_markdown(check_network(CONFIGS / "mlp.yaml"))
    assert ": PASS" in text and "❌" not in text and "elements in" in text


@pytest.mark.parametrize("value, filled", [(1e-16, 0), (1e-8, 6), (1e-4, 9), (1.0, 12), (50.0, 12)])
def test_error_bar_length_is_log_scaled(value, filled):
    bar = error_bar(value, 1e-5).plain
    assert len(bar) == 12
    assert bar.count("█") == filled


def test_error_bar_colours_by_tolerance_and_marks_it():
    assert "|" in error_bar(1e-10, 1e-5).plain and error_bar(1e-10, 1e-5).style == "green"
    assert error_bar(1e-3, 1e-5).style == "red"
    assert error_bar(float("nan"), 1e-5).style == "red"
    assert "█" not in error_bar(0.0, 1e-5).plain


def _help_formats(run_cli, command: str) -> list[str]:
    text = " ".join(run_cli(command, "--help").stdout.split())
    choices = re.search(r"--format \[([a-z|]+)\]", text)
    assert choices, text
    return choices.group(1).split("|")


@pytest.mark.parametrize("command", ["check", "diagnose"])
def test_every_format_in_help_renders_for_both_commands(run_cli, tmp_path, command):
    """One format registry: a format listed by either command's --help renders for both, as
    what it claims to be (never a silent fall-through to the text report)."""
    listed = _help_formats(run_cli, command)
    assert listed == _help_formats(run_cli, "diagnose" if command == "check" else "check")
    extra = ["--no-probe"] if command == "diagnose" else []
    for fmt in listed:
        out = tmp_path / f"{command}.{fmt}"
        result = run_cli(command, CONFIGS / "mlp.yaml", "--format", fmt, "-o", out, *extra)
        assert result.exit_code == 0, result.stderr
        text = out.read_text()
        if fmt == "json":
            assert json.loads(text)["network"]
        elif fmt == "junit":
            assert ET.fromstring(text).tag == "testsuites"
        elif fmt == "markdown":
            assert text.lstrip().startswith("#") and "|" in text
        else:  # the text report's verdict line
            assert text.splitlines()[-1].startswith("PASS" if command == "check" else "OK"), text
