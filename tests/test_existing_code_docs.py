"""The README's "Checking code you already have": every command, YAML network and Python snippet
in it runs as documented."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

import gradcheck
from conftest import ROOT

README = (ROOT / "README.md").read_text()


def block(marker: str, language: str) -> str:
    match = re.search(rf"<!-- {marker} -->\s*```{language}\n(.*?)```", README, re.S)
    assert match, f"README lost its {marker} block"
    return match.group(1)


COMMANDS = [re.match(r"\.venv/bin/gradcheck check (\S+)\s+# exit (\d)(.*)", line).groups()
            for line in block("existing-code-commands", "sh").splitlines()]


@pytest.mark.parametrize("path, code, note", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_documented_commands_exit_as_stated(run_cli, path, code, note):
    result = run_cli("check", ROOT / path)
    assert result.exit_code == int(code), result.stdout + result.stderr
    cause = re.search(r"root cause (\w+)", note)
    if cause:
        assert f"Root cause: {cause.group(1)} " in result.stdout


@pytest.mark.parametrize("marker", ["function-yaml", "adapter-yaml"])
def test_documented_networks_check_from_the_repository_root(monkeypatch, marker):
    monkeypatch.chdir(ROOT)  # "saved in this repository's root": paths resolve from there
    report = gradcheck.check_network(yaml.safe_load(block(marker, "yaml")))
    assert report.passed and report.counts()["checked"] > 0
    assert ("function" if marker == "function-yaml" else "object") in {
        layer.type for layer in report.layers}


def test_documented_check_function_example_runs(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(block("check-function-example", "python"))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
