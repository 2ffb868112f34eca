"""The README cannot drift: its YAML reference is generated from the registry, its CI step and the
pre-commit hook are run exactly as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import gradcheck
from conftest import CONFIGS, ROOT
from gradcheck import docgen
from gradcheck.config import TOP_KEYS

README = ROOT / "README.md"
BIN = Path(sys.executable).parent


def test_readme_yaml_reference_is_up_to_date():
    text = README.read_text()
    assert docgen.update(text) == text, "run: python -m gradcheck.docgen"


def test_docgen_check_mode_detects_a_stale_section(tmp_path):
    stale = tmp_path / "README.md"
    stale.write_text(README.read_text().replace("| `relu` |", "| `relu_old` |"))
    assert docgen.main(["--check", str(stale)]) == 1
    assert docgen.main([str(stale)]) == 0 and docgen.main(["--check", str(stale)]) == 0
    assert stale.read_text() == README.read_text()


def test_reference_lists_every_builtin_with_its_required_options():
    reference = docgen.reference()
    assert "| `conv2d` | `filters` (required), `kernel` (required)" in reference
    assert "| `cross_entropy` |" in reference


def test_readme_graph_example_builds_and_passes():
    block = README.read_text().split("<!-- graph-example", 1)[1].split("```yaml\n", 1)[1]
    spec = yaml.safe_load(block.split("```", 1)[0])
    report = gradcheck.check_network(spec, mode="full")
    assert report.passed and report.complete
    decoder = next(layer for layer in report.layers if layer.name == "decoder")
    assert [c.target for c in decoder.checks] == ["W", "b", "input"]
    assert decoder.checks[0].notes == ["shared: this is encoder.W.T; checked here for this "
                                       "layer's use of it"]
    assert next(layer for layer in report.layers if layer.name == "residual").inputs == [
        "relu1", "image"]


def test_every_top_level_yaml_key_is_in_the_readme_example():
    example = README.read_text().split("## The network file (YAML)", 1)[1].split("```", 2)[1]
    for key in TOP_KEYS:
        assert re.search(rf"^(# )?{key}:", example, re.M), key


def _ci_step() -> str:
    block = README.read_text().split("<!-- ci-step -->", 1)[1].split("```yaml\n", 1)[1]
    (step,) = yaml.safe_load(block.split("```", 1)[0])
    return step["run"]


def _run_like_github(script: str, cwd: Path, summary: Path) -> subprocess.CompletedProcess:
    # GitHub runs `run:` blocks with `bash --noprofile --norc -eo pipefail`.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "GITHUB_STEP_SUMMARY": str(summary)}
    env.pop("NO_COLOR", None)
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_documented_ci_step_passes_on_this_repository(tmp_path):
    summary = tmp_path / "summary.md"
    result = _run_like_github(_ci_step(), ROOT, summary)
    assert result.returncode == 0, result.stderr
    verdicts = re.findall(r"^### \S+ gradcheck `[^`]+`: (\w+)$", summary.read_text(), re.M)
    assert verdicts == ["PASS"] * len(list(CONFIGS.glob("*.yaml")))


def test_documented_ci_step_fails_the_job_on_a_wrong_gradient(tmp_path):
    work = tmp_path / "repo"
    (work / "configs").mkdir(parents=True)
    shutil.copy(CONFIGS / "mlp.yaml", work / "configs")
    for name in ("plugin_buggy.yaml", "buggy_layers.py"):
        shutil.copy(CONFIGS / "broken" / name, work / "configs")
    summary = tmp_path / "summary.md"
    result = _run_like_github(_ci_step(), work, summary)
    assert result.returncode == 1
    text = summary.read_text()
    assert "### ✅ gradcheck `mlp`" in text and "### ❌ gradcheck `buggy-plugin`: FAIL" in text


def test_pre_commit_hook_passes_the_changed_networks_and_runs(tmp_path):
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert {"id", "name", "entry", "language"} <= set(hook) and hook["pass_filenames"] is True
    # pre-commit's own selection: `files` and `exclude` are Python regexes searched in the path.
    selected = [path for path in ("configs/mlp.yaml", "nets/a.yml", "README.md", "my_layers.py",
                                  ".pre-commit-config.yaml", ".github/workflows/ci.yml",
                                  "docs/.hidden/x.yaml")
                if re.search(hook["files"], path) and not re.search(hook["exclude"], path)]
    assert selected == ["configs/mlp.yaml", "nets/a.yml"]
    command = hook["entry"].split()
    command[0] = str(BIN / command[0])
    ok = subprocess.run([*command, str(CONFIGS / "mlp.yaml"), str(CONFIGS / "lenet.yaml")],
                        capture_output=True, text=True)
    bad = subprocess.run([*command, str(CONFIGS / "mlp.yaml"),
                          str(CONFIGS / "broken" / "plugin_buggy.yaml")],
                         capture_output=True, text=True)
    assert ok.returncode == 0 and len(ok.stdout.splitlines()) == 2, ok.stdout + ok.stderr
    assert bad.returncode == 1 and "Root cause: act" in bad.stdout
    assert bad.stdout.splitlines()[0].startswith(f"{CONFIGS / 'mlp.yaml'}: PASS")
    documented = README.read_text().split("**pre-commit**", 1)[1]
    assert f"- id: {hook['id']}" in documented


def _stub(folder: Path, name: str, script: str = "exit 0") -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


@pytest.mark.parametrize("present, uid, has_apt, expected_calls", [
    (["octave-cli", "g++", "cc"], "0", True, []),                    # nothing to install
    (["cc"], "0", True, ["update -qq", "install -y -qq --no-install-recommends octave g++"]),
    (["g++", "cc"], "1000", True, []),                               # not root: hands off
    (["g++", "cc"], "0", False, []),                                 # no apt-get: hands off
])
def test_ci_installs_the_external_client_tools_only_when_it_can(tmp_path, present, uid, has_apt,
                                                                 expected_calls):
    """.ci/install-external-tools asks apt-get for exactly the missing tools, as root, and
    otherwise changes nothing and still succeeds (the tests then skip, or fail in CI)."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in present:
        _stub(stubs, tool)
    _stub(stubs, "id", f"echo {uid}")
    calls = tmp_path / "apt-calls"
    if has_apt:
        # Only the arguments after apt-get's lock option, one call per line.
        _stub(stubs, "apt-get", f'shift 2; echo "$*" >> {calls}')
    result = subprocess.run(["/bin/bash", str(ROOT / ".ci" / "install-external-tools")],
                            env={"PATH": str(stubs)}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    logged = calls.read_text().splitlines() if calls.exists() else []
    assert logged == expected_calls
    if not expected_calls and len(present) < 3:
        assert "not installing: octave" in result.stderr
