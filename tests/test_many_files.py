"""`gradcheck check A.yaml B.yaml dir/` and `gradcheck diagnose` on several files: which files,
in which order, one report each and a summary, the worst exit code, and one document per format
(JSON files document, one JUnit testsuite per file)."""

from __future__ import annotations

import itertools
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import CONFIGS, write_yaml
from gradcheck import emit
from gradcheck.cli import main
from gradcheck.filerun import EXIT_SEVERITY, network_files, worst_exit
from gradcheck.report import EXIT_INCOMPLETE, EXIT_MISMATCH, EXIT_PASS, EXIT_USAGE
from gradcheck.schema import FINDINGS_SCHEMA_FILE, load_schema, validate

MLP = CONFIGS / "mlp.yaml"
BUGGY = CONFIGS / "broken" / "plugin_buggy.yaml"
BAD_CONFIG = "input: {shape: [4]}\nlayers: [{type: dense, unit: 3}]\nloss: mse\n"


@pytest.fixture
def bad(tmp_path) -> Path:
    return write_yaml(tmp_path, BAD_CONFIG, "bad.yaml")


def test_exit_severity_is_the_documented_order():
    assert EXIT_SEVERITY == (EXIT_USAGE, EXIT_MISMATCH, EXIT_INCOMPLETE, EXIT_PASS) == (2, 1, 3, 0)
    assert emit.EXIT_USAGE == EXIT_USAGE  # emit cannot import gradcheck.report (numpy)


@pytest.mark.parametrize("codes", [c for n in range(1, 5)
                                   for c in itertools.combinations((0, 1, 2, 3), n)])
def test_worst_exit_of_every_combination(codes):
    """Against an independent statement of the order: a config error beats a mismatch, which
    beats an incomplete check, which beats a pass (max() would rank 3 above 1: wrong)."""
    expected = 2 if 2 in codes else 1 if 1 in codes else 3 if 3 in codes else 0
    assert worst_exit(codes) == expected
    assert worst_exit(reversed(codes)) == expected


def test_directories_are_searched_recursively_sorted_and_files_not_repeated(tmp_path):
    for name in ("b.yaml", "a.yaml", "sub/c.yaml", "sub/deeper/a.yaml", "notes.txt", "x.yml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    found = network_files([tmp_path / "sub" / "c.yaml", tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "sub/c.yaml", "a.yaml", "b.yaml", "sub/deeper/a.yaml"]


def test_a_directory_without_networks_is_a_usage_error(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("check", tmp_path / "empty")
    assert result.exit_code == 2 and "holds no .yaml file" in result.stderr


def test_text_has_a_report_per_file_and_a_summary_table(run_cli, bad):
    result = run_cli("check", MLP, BUGGY, bad)
    assert result.exit_code == 2
    out = result.stdout
    for path in (MLP, BUGGY, bad):
        assert f"━━ {path}" in out
    verdicts = [line.split()[0] for line in out.splitlines()
                if line.startswith(("PASS  ", "FAIL  ", "ERROR  "))]
    assert verdicts == ["PASS", "FAIL", "ERROR"]
    summary = out.split("3 files: 1 PASS, 1 FAIL, 1 ERROR", 1)[1]
    assert "file" in summary and "verdict" in summary and "root causes" in summary
    row = next(line for line in summary.splitlines() if str(BUGGY) in line)
    assert row.split()[1:] == ["FAIL", "183", "act"]
    assert "did you mean 'units'" in result.stderr  # the error also goes to stderr


@pytest.mark.parametrize("files, flags, code", [
    ((MLP, MLP), (), 0),                          # the same file twice is checked once
    ((MLP, BUGGY), (), 1),
    ((BUGGY, "bad"), (), 2),
    ((MLP, "bad"), (), 2),
    ((MLP, BUGGY), ("--exit-zero",), 0),
    ((BUGGY, "bad"), ("--exit-zero",), 2),        # a config error is never hidden
])
def test_the_exit_code_is_the_worst_of_the_files(run_cli, bad, files, flags, code):
    paths = [bad if f == "bad" else f for f in files]
    result = run_cli("check", *paths, "-q", *flags)
    assert result.exit_code == code, result.stdout + result.stderr
    assert len(result.stdout.splitlines()) == len(set(paths))


def test_an_incomplete_check_exits_3_unless_allowed(run_cli, tmp_path):
    """Exit 3 with several files too: a tiny --max-seconds stops every check early."""
    shutil.copy(MLP, tmp_path / "one.yaml")
    shutil.copy(MLP, tmp_path / "two.yaml")
    args = ("check", tmp_path, "--mode", "full", "--max-seconds", "1e-9", "-q")
    result = run_cli(*args)
    assert result.exit_code == 3 and result.stdout.count("INCOMPLETE") == 2
    assert run_cli(*args, "--allow-incomplete").exit_code == 0


@pytest.mark.parametrize("files", [(MLP,), (MLP, BUGGY)])
def test_quiet_leaves_machine_formats_whole(run_cli, files):
    """-q shortens the text report only: a JSON document stays the whole document."""
    quiet = run_cli("check", *files, "-q", "--format", "json").stdout
    assert quiet == run_cli("check", *files, "--format", "json").stdout
    assert json.loads(quiet)["schema_version"] == 1


def test_quiet_prints_one_line_per_file(run_cli, bad):
    lines = run_cli("check", MLP, BUGGY, bad, "-q").stdout.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [str(MLP), str(BUGGY), str(bad)]
    assert [line.split(": ", 1)[1].split()[0] for line in lines] == ["PASS", "FAIL", "ERROR"]


def test_json_files_document_holds_each_files_own_document(run_cli, bad):
    result = run_cli("check", MLP, BUGGY, bad, "--format", "json")
    doc = json.loads(result.stdout)
    assert validate(doc) == []
    assert set(doc) == {"schema_version", "files"} and doc["schema_version"] == 1
    assert [entry["file"] for entry in doc["files"]] == [str(MLP), str(BUGGY), str(bad)]
    for entry, path in zip(doc["files"][:2], (MLP, BUGGY)):
        alone = json.loads(run_cli("check", path, "--format", "json").stdout)
        assert entry == {"file": str(path), "report": alone}
    assert doc["files"][2] == {"file": str(bad), "error": {
        "message": "unknown option 'unit' for dense.", "where": f"{bad}:2:24",
        "path": "layers[0].unit", "hint": "did you mean 'units'?", "type": "ConfigError"}}


def test_one_file_argument_keeps_the_single_report_document(run_cli, tmp_path):
    """Nobody's CI breaks: one file is today's document; a directory is the files document
    even when it holds one file, so its shape does not depend on what the directory holds."""
    assert "layers" in json.loads(run_cli("check", MLP, "--format", "json").stdout)
    shutil.copy(MLP, tmp_path / "only.yaml")
    assert "files" in json.loads(run_cli("check", tmp_path, "--format", "json").stdout)


def test_json_of_several_files_is_byte_stable(run_cli):
    outputs = [run_cli("check", MLP, BUGGY, "--format", "json").stdout for _ in range(2)]
    assert outputs[0] == outputs[1]


def test_the_validator_catches_a_broken_files_document(run_cli, bad):
    doc = json.loads(run_cli("check", MLP, bad, "--format", "json").stdout)
    doc["files"][0]["report"].pop("passed")
    doc["files"][1]["error"]["hint"] = 3
    errors = validate(doc)
    assert any("$.files[0].report: missing required key 'passed'" in e for e in errors), errors
    assert any("$.files[1].error.hint: expected string or null" in e for e in errors), errors


def test_junit_has_one_testsuite_per_file_in_one_testsuites(run_cli, bad, tmp_path):
    out = tmp_path / "report.xml"
    result = run_cli("check", MLP, BUGGY, bad, "--format", "junit", "-o", out)
    assert result.exit_code == 2 and result.stdout == ""
    root = ET.parse(out).getroot()
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["gradcheck.mlp", "gradcheck.buggy-plugin",
                                               "gradcheck.bad"]
    for key in ("tests", "failures", "errors", "skipped"):
        assert int(root.get(key)) == sum(int(s.get(key)) for s in suites), key
    assert (root.get("name"), root.get("failures"), root.get("errors")) == ("gradcheck", "4", "1")
    error = suites[2].find("testcase/error")
    assert error.get("type") == "ConfigError" and "did you mean 'units'" in error.get("message")


def test_markdown_has_a_section_per_file_and_a_summary(run_cli, bad):
    out = run_cli("check", MLP, BUGGY, bad, "--format", "markdown").stdout
    assert out.index("### ✅ gradcheck `mlp`: PASS") < out.index("gradcheck `buggy-plugin`: FAIL")
    assert "### ⛔ gradcheck `bad`: ERROR" in out
    summary = out.split("### gradcheck: 3 files: 1 PASS, 1 FAIL, 1 ERROR", 1)[1]
    assert f"| `{BUGGY}` | FAIL | 183 | act |" in summary
    assert f"| `{bad}` | ERROR | - | - |" in summary


def test_replay_takes_exactly_one_file(run_cli, tmp_path):
    result = run_cli("check", MLP, BUGGY, "--replay", tmp_path / "r.json")
    assert result.exit_code == 2 and "exactly one CONFIG" in result.stderr


def test_svg_of_several_files_holds_every_report(run_cli, tmp_path):
    svg = tmp_path / "all.svg"
    assert run_cli("check", MLP, BUGGY, "--svg", svg, "-q").exit_code == 1
    text = svg.read_text()
    assert "mlp.yaml" in text and "plugin_buggy.yaml" in text and "files:" in text


def test_diagnose_takes_several_files(run_cli, bad):
    scenarios = CONFIGS / "scenarios"
    broken = scenarios / "r2_alexnet_softmax.yaml"
    fixed = scenarios / "r2_alexnet_softmax_fixed.yaml"
    result = CliRunner().invoke(main, ["diagnose", str(fixed), str(broken), str(bad), "--no-probe",
                                       "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert validate(doc, load_schema(FINDINGS_SCHEMA_FILE)) == []
    statuses = [entry["report"]["status"] if "report" in entry else "error"
                for entry in doc["files"]]
    assert statuses[0] != "error" and statuses[2] == "error"
    assert any(f["severity"] == "error" for f in doc["files"][1]["report"]["findings"])
    text = run_cli("diagnose", fixed, broken, "--no-probe")
    assert text.exit_code == 1 and "2 files:" in text.stdout and "findings" in text.stdout
