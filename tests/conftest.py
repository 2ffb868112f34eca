"""Shared fixtures: paths of the shipped configs and test plugins, and a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
TEST_PLUGINS = Path(__file__).resolve().parent / "plugins"

# `make test` (CI): derandomised, so every run draws the same examples and a failure reproduces;
# deadlines flake on a loaded 2-core machine. `make test-deep` (GRADCHECK_DEEP=1): fresh random
# examples on every run, DEEP_FACTOR times as many, and the tests marked `deep` (slow sweeps).
DEEP = os.environ.get("GRADCHECK_DEEP") == "1"
DEEP_FACTOR = 20
settings.register_profile("gradcheck", deadline=None, derandomize=True)
settings.register_profile("deep", deadline=None, derandomize=False, database=None)
settings.load_profile("deep" if DEEP else "gradcheck")


def examples(n: int) -> int:
    """Hypothesis example count for a test: ``n`` in `make test`, DEEP_FACTOR times more deep."""
    return n * DEEP_FACTOR if DEEP else n


def pytest_collection_modifyitems(config, items):
    if DEEP:
        return
    skip = pytest.mark.skip(reason="a slow sweep: run with `make test-deep`")
    for item in items:
        if "deep" in item.keywords:
            item.add_marker(skip)


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


__all__ = ["CONFIGS", "ROOT", "TEST_PLUGINS", "examples", "write_yaml", "os"]
