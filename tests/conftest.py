"""Shared fixtures: paths of the shipped configs and test plugins, and a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
TEST_PLUGINS = Path(__file__).resolve().parent / "plugins"

# Hypothesis deadlines flake on a loaded 2-core CI machine; example counts are capped per test.
settings.register_profile("gradcheck", deadline=None, derandomize=True)
settings.load_profile("gradcheck")


@pytest.fixture
def run_cli():
    """Run the CLI in-process; returns the click Result (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    from gradcheck.cli import main

    def run(*args, env=None):
        runner = CliRunner()
        merged = {"NO_COLOR": None, **(env or {})}
        return runner.invoke(main, [str(a) for a in args], env=merged, catch_exceptions=False)

    return run


@pytest.fixture(autouse=True)
def _no_color_leak(monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    yield


def write_yaml(tmp_path: Path, text: str, name: str = "net.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


__all__ = ["CONFIGS", "ROOT", "TEST_PLUGINS", "write_yaml", "os"]
