"""The command line: exit codes, JSON shape, colour rules, layer listing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import CONFIGS, ROOT, write_yaml

ANSI = "\x1b["
MLP = CONFIGS / "mlp.yaml"


def test_passing_network_exits_0_with_summary(run_cli):
    result = run_cli("check", MLP)
    assert result.exit_code == 0
    assert "PASS" in result.stdout and "fc1" in result.stdout


def test_json_has_the_promised_keys(run_cli):
    result = run_cli("check", MLP, "--format", "json")
    report = json.loads(result.stdout)
    assert report["schema_version"] == 1
    assert {"passed", "root_causes", "layers", "settings"} <= set(report)
    check = report["layers"][0]["checks"][0]
    assert {"target", "status", "checked", "failed", "max_abs_error", "max_rel_error",
            "worst_index", "analytic", "numeric"} <= set(check)
    assert {"name", "type", "status", "checks"} <= set(report["layers"][0])
    statuses = {c["status"] for layer in report["layers"] for c in layer["checks"]}
    assert statuses <= {"pass", "fail", "kink", "inconclusive", "skipped"}
    assert report["settings"]["eps"] == 1e-6 and report["settings"]["mode"] == "full"


def test_json_output_file(run_cli, tmp_path):
    out = tmp_path / "report.json"
    result = run_cli("check", MLP, "--format", "json", "-o", out)
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(out.read_text())["passed"] is True


def test_cli_options_override_config(run_cli):
    report = json.loads(run_cli("check", MLP, "--format", "json", "--eps", "1e-5",
                                "--rtol", "1e-4").stdout)
    assert report["settings"]["eps"] == 1e-5 and report["settings"]["rtol"] == 1e-4


def test_config_error_exits_2_without_traceback(run_cli, tmp_path):
    path = write_yaml(tmp_path, "input: {shape: [4]}\nlayers: [{type: dense, unit: 3}]\nloss: mse\n")
    result = run_cli("check", path)
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    assert "did you mean 'units'" in result.stderr and "net.yaml:2" in result.stderr


def test_missing_file_exits_2(run_cli, tmp_path):
    result = run_cli("check", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "not found" in result.stderr


def test_bad_option_exits_2(run_cli):
    assert run_cli("check", MLP, "--mode", "everything").exit_code == 2
    assert run_cli("check", MLP, "--eps", "-1").exit_code == 2


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {}])
def test_no_ansi_when_piped_or_no_color(run_cli, env):
    result = run_cli("check", MLP, env=env)
    assert ANSI not in result.stdout


def test_color_always_emits_ansi_but_no_color_wins_over_auto(run_cli):
    assert ANSI in run_cli("check", MLP, "--color", "always").stdout
    assert ANSI not in run_cli("check", MLP, "--color", "auto", env={"NO_COLOR": "1"}).stdout


def test_explicit_color_always_overrides_no_color(run_cli):
    # The flag is per-invocation, NO_COLOR a user default: the flag wins (no-color.org), and the
    # verdict keeps its green, not just bold.
    out = run_cli("check", MLP, "-q", "--color", "always", env={"NO_COLOR": "1"}).stdout
    assert "\x1b[1;32mPASS" in out


def test_layers_lists_builtins_with_options(run_cli):
    result = run_cli("layers")
    assert result.exit_code == 0
    for name in ("dense", "conv2d", "maxpool2d", "batchnorm", "lrn", "cross_entropy", "mse"):
        assert name in result.stdout
    assert "units" in result.stdout


def test_layers_shows_plugin_layers(run_cli):
    result = run_cli("layers", "--plugin", CONFIGS / "my_layers.py")
    assert "swish" in result.stdout and "plugin" in result.stdout


def test_layers_unknown_name_exits_2(run_cli):
    result = run_cli("layers", "convv2d")
    assert result.exit_code == 2 and "conv2d" in result.stderr


def test_python_dash_m_and_piped_output():
    proc = subprocess.run([sys.executable, "-m", "gradcheck", "check", str(MLP)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "PASS" in proc.stdout and ANSI not in proc.stdout


@pytest.mark.parametrize("width", [80, 100, 200])
def test_text_report_fits_the_terminal_without_truncated_cells(width):
    import io

    from rich.console import Console

    from gradcheck.check import check_network
    from gradcheck.render.text import render_text

    report = check_network(CONFIGS / "broken" / "plugin_buggy.yaml")
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(render_text(report))
    table_lines = [line for line in out.getvalue().splitlines() if "│" in line or "┃" in line]
    assert table_lines and all(len(line) <= width for line in table_lines)
    assert not any("…" in line for line in table_lines)
    assert "root cause" in out.getvalue() and "inherited from act" in out.getvalue()


def test_the_command_runs_blas_on_one_thread_unless_the_user_set_a_count(monkeypatch):
    import gc
    import os

    import gradcheck.cli as cli

    seen = {}
    monkeypatch.setattr(cli, "main", lambda **_: seen.update(os.environ))
    for name in cli.BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    try:
        cli.run()
    finally:
        gc.unfreeze()
    assert seen["OPENBLAS_NUM_THREADS"] == "4"  # the user's count wins
    assert all(seen[name] == "1" for name in cli.BLAS_THREAD_VARIABLES[1:])
