"""The CLI where people work: CI formats, --exit-zero, -q/-v, pictures, init, layers NAME,
global --plugin and shell completion."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, write_yaml
import gradcheck
from gradcheck import docgen
from gradcheck.starter import example_names

MLP = CONFIGS / "mlp.yaml"
BUGGY = CONFIGS / "broken" / "plugin_buggy.yaml"
BAD_CONFIG = "input: {shape: [4]}\nlayers: [{type: dense, unit: 3}]\nloss: mse\n"


@pytest.mark.parametrize("fmt", ["junit", "markdown", "json", "text"])
def test_every_format_keeps_the_exit_codes(run_cli, fmt):
    assert run_cli("check", MLP, "--format", fmt).exit_code == 0
    assert run_cli("check", BUGGY, "--format", fmt).exit_code == 1


def test_junit_from_the_cli_is_valid_xml_and_goes_to_a_file(run_cli, tmp_path):
    out = tmp_path / "report.xml"
    result = run_cli("check", BUGGY, "--format", "junit", "-o", out)
    assert result.exit_code == 1 and result.stdout == ""
    assert ET.parse(out).getroot().get("failures") == "4"


def test_junit_reports_a_config_error_as_an_error_testcase(run_cli, tmp_path):
    out = tmp_path / "report.xml"
    result = run_cli("check", write_yaml(tmp_path, BAD_CONFIG), "--format", "junit", "-o", out)
    assert result.exit_code == 2 and "did you mean 'units'" in result.stderr
    error = ET.parse(out).getroot().find("./testsuite/testcase/error")
    assert error is not None and "did you mean 'units'" in error.get("message")


def test_exit_zero_hides_mismatches_but_not_usage_errors(run_cli, tmp_path):
    result = run_cli("check", BUGGY, "--exit-zero")
    assert result.exit_code == 0 and "FAIL" in result.stdout
    assert run_cli("check", write_yaml(tmp_path, BAD_CONFIG), "--exit-zero").exit_code == 2


def test_quiet_prints_only_the_verdict_and_verbose_chatters_on_stderr(run_cli):
    quiet = run_cli("check", BUGGY, "-q")
    assert quiet.stdout.strip().splitlines() == [quiet.stdout.strip()]
    assert quiet.stdout.startswith("FAIL") and "Root cause: act" in quiet.stdout
    verbose = run_cli("check", MLP, "-v")
    checked = gradcheck.check_network(MLP).counts()["checked"]
    assert "gradcheck: built 'mlp'" in verbose.stderr
    assert f"checked {checked} elements" in verbose.stderr
    assert "gradcheck:" not in verbose.stdout and "fc1" in verbose.stdout
    assert run_cli("check", MLP).stderr == ""


def test_svg_and_html_exports_hold_the_coloured_report(run_cli, tmp_path):
    svg, html = tmp_path / "r.svg", tmp_path / "r.html"
    result = run_cli("check", BUGGY, "--svg", svg, "--html", html, "--format", "json")
    assert result.exit_code == 1 and result.stdout.startswith("{")  # the report is still printed
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and "root" in svg.read_text() and "cause" in svg.read_text()
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "my_sigmoid" in page and "color" in page


def test_svg_to_an_unwritable_place_is_a_usage_error(run_cli, tmp_path):
    result = run_cli("check", MLP, "--svg", tmp_path / "no" / "such" / "dir.svg")
    assert result.exit_code == 2 and "cannot write" in result.stderr


def test_global_plugin_option_applies_to_any_command(run_cli):
    plugin = CONFIGS / "broken" / "buggy_layers.py"
    result = run_cli("--plugin", plugin, "layers", "my_sigmoid")
    assert result.exit_code == 0 and "my_sigmoid" in result.stdout
    assert run_cli("--plugin", "nowhere.py", "layers").exit_code == 2


def test_init_writes_a_starter_that_passes_and_refuses_to_overwrite(run_cli, tmp_path):
    target = tmp_path / "net.yaml"
    assert run_cli("init", "-o", target).exit_code == 0
    text = target.read_text()
    assert text.count("#") > 10  # commented
    assert run_cli("check", target).exit_code == 0
    target.write_text("mine")
    again = run_cli("init", "-o", target)
    assert again.exit_code == 2 and "--force" in again.stderr and target.read_text() == "mine"
    assert run_cli("init", "-o", target, "--force").exit_code == 0 and target.read_text() == text


@pytest.mark.parametrize("name", example_names())
def test_every_shipped_example_is_a_passing_network(run_cli, tmp_path, name):
    target = tmp_path / f"{name}.yaml"
    assert run_cli("init", "--from-example", name, "-o", target).exit_code == 0
    assert yaml.safe_load(target.read_text())["layers"]
    result = run_cli("check", target, "-q")
    assert result.exit_code == 0, result.stdout


def test_init_to_stdout_and_unknown_example(run_cli):
    assert "layers:" in run_cli("init", "-o", "-").stdout
    result = run_cli("init", "--from-example", "nope")
    assert result.exit_code == 2 and "mlp" in result.stderr


def test_layers_name_shows_options_defaults_yaml_and_full_doc(run_cli):
    result = run_cli("layers", "conv2d")
    out = result.stdout
    assert result.exit_code == 0
    assert "filters" in out and "required" in out and "default 1" in out
    assert "{type: conv2d, filters: ..., kernel: ...}" in out
    assert "out_h" in out  # from the docstring's second paragraph, not only its first line
    assert run_cli("layers", "conv2dd").exit_code == 2


def test_layers_markdown_is_the_generated_reference(run_cli):
    assert run_cli("layers", "--markdown").stdout == docgen.reference()


def test_shell_completion_script_is_provided(tmp_path):
    env = {**os.environ, "_GRADCHECK_COMPLETE": "bash_source"}
    exe = Path(sys.executable).with_name("gradcheck")
    result = subprocess.run([str(exe)], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "_gradcheck_completion" in result.stdout
