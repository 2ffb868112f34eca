"""Shared fixtures: paths of the shipped configs and test plugins, and a CLI runner."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
TEST_PLUGINS = Path(__file__).resolve().parent / "plugins"
EXTERNAL_EXAMPLES = ROOT / "examples" / "external"
# How the tests start GNU Octave: no startup files, and no history (Octave 7.3 errors at exit on
# saving it in a non-interactive session).
OCTAVE_FLAGS = ("--quiet", "--norc", "--no-history")

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


GOLDEN = Path(__file__).resolve().parent / "golden"


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true",
                     help="rewrite tests/golden/ from the current output (review the diff)")


@pytest.fixture
def golden(request):
    """``golden(name, text)``: assert ``text`` equals tests/golden/NAME, or rewrite the file
    under --update-goldens (golden files change only on purpose, and are reviewed)."""
    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if request.config.getoption("--update-goldens"):
            path.write_text(text)
        assert path.read_text() == text, f"{name} changed; if on purpose: pytest --update-goldens"

    return check


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


@pytest.fixture(autouse=True)
def _one_job(monkeypatch):
    """The command runs in one process unless a test asks for --jobs: forking workers in every
    CLI test would slow the suite down (tests/test_jobs.py tests the default, auto)."""
    monkeypatch.setenv("GRADCHECK_JOBS", "1")
    yield


def require_tool(*names: str, install: str) -> str:
    """The path of the first of ``names`` on PATH. Without one, the test is skipped, or fails
    under GRADCHECK_REQUIRE_EXTERNAL_TOOLS=1 (set by .ci/run, so that CI cannot skip silently)."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    message = f"{' or '.join(names)} is not on PATH (install: {install})"
    if os.environ.get("GRADCHECK_REQUIRE_EXTERNAL_TOOLS") == "1":
        pytest.fail(f"{message}, and GRADCHECK_REQUIRE_EXTERNAL_TOOLS=1 requires it")
    pytest.skip(message)


@pytest.fixture(scope="session")
def octave() -> str:
    """The path of octave-cli (see require_tool)."""
    return require_tool("octave-cli", install="apt-get install --no-install-recommends octave, "
                        "or .ci/install-external-tools")


def gone(pid: int, wait: float = 3.0) -> bool:
    """Whether process ``pid`` has ended within ``wait`` seconds (an unreaped zombie counts)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def logged_pids(folder: Path, name: str = "child.pid") -> list[int]:
    """The pids a test's wrapper command appended to ``folder / name``."""
    return [int(p) for p in (folder / name).read_text().split()]


def write_yaml(tmp_path: Path, text: str, name: str = "net.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


__all__ = ["CONFIGS", "EXTERNAL_EXAMPLES", "OCTAVE_FLAGS", "ROOT", "TEST_PLUGINS", "examples",
           "gone", "logged_pids", "require_tool", "write_yaml", "os"]
