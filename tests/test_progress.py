"""Progress while a check runs: off a terminal, -v prints a plain line every few seconds (elements
done of the total, time elapsed, an estimate of the time left); on a terminal the rich bar stays;
without -v off a terminal, nothing."""

from __future__ import annotations

import io
import re

import pytest

from conftest import CONFIGS
from gradcheck import progress
from gradcheck.progress import ProgressBar, ProgressLines, duration, progress_for, progress_line


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("seconds, text", [(0, "0 s"), (4.4, "4 s"), (59.6, "1 min 00 s"),
                                           (61, "1 min 01 s"), (3725, "62 min 05 s")])
def test_duration(seconds, text):
    assert duration(seconds) == text


@pytest.mark.parametrize("done, total, elapsed", [(1, 4, 2.0), (300, 1200, 30.0), (7, 9, 0.7),
                                                  (999, 1000, 12.0), (50, 50, 3.0)])
def test_the_estimate_left_is_the_average_cost_of_the_rest(done, total, elapsed):
    """An independent statement of the estimate: elapsed / done per element, times the rest."""
    line = progress_line(done, total, elapsed, "fc1.W")
    assert line.startswith(f"{done:,} of {total:,} elements ({round(100 * done / total)}%), "
                           f"{duration(elapsed)} elapsed, ")
    assert f"about {duration(elapsed / done * (total - done))} left (fc1.W)" in line


def test_nothing_done_yet_gives_no_estimate():
    assert "time left unknown" in progress_line(0, 10, 3.0)


def test_lines_come_at_most_once_per_period():
    clock, stream = FakeClock(), io.StringIO()
    with ProgressLines(stream, "net.yaml", period=5.0, clock=clock) as show:
        for step in range(1, 13):  # one call per second of fake time
            clock.now += 1.0
            show(step * 10, 120, "conv.W")
    lines = stream.getvalue().splitlines()
    assert lines == [f"gradcheck: net.yaml: {progress_line(50, 120, 5.0, 'conv.W')}",
                     f"gradcheck: net.yaml: {progress_line(100, 120, 10.0, 'conv.W')}"]


def test_progress_for_picks_by_terminal_and_verbosity():
    assert isinstance(progress_for(0, stream=Terminal()), ProgressBar)
    assert isinstance(progress_for(1, stream=Terminal()), ProgressBar)  # the bar stays
    assert isinstance(progress_for(1, stream=io.StringIO()), ProgressLines)
    with progress_for(0, stream=io.StringIO()) as nothing:
        assert nothing is None  # run_check then reports no progress


def test_verbose_check_off_a_terminal_prints_progress_lines(run_cli, monkeypatch):
    monkeypatch.setattr(progress, "PERIOD", 0.0)  # a line at every step of the check
    result = run_cli("check", CONFIGS / "mlp.yaml", "-v")
    assert result.exit_code == 0
    pattern = re.compile(r"gradcheck: .*mlp\.yaml: ([\d,]+) of ([\d,]+) elements \(\d+%\), "
                         r"\d+ s elapsed, (about \d+ s left|time left unknown) \(\S+\)$")
    found = [pattern.match(line) for line in result.stderr.splitlines()]
    counts = [tuple(int(n.replace(",", "")) for n in m.groups()[:2]) for m in found if m]
    assert len(counts) > 1, result.stderr
    assert [done for done, _ in counts] == sorted(done for done, _ in counts)
    assert counts[-1][0] == counts[-1][1]  # it ends with everything compared
    assert " elements (" not in result.stdout


def test_without_verbose_a_check_off_a_terminal_prints_no_progress(run_cli, monkeypatch):
    monkeypatch.setattr(progress, "PERIOD", 0.0)
    assert run_cli("check", CONFIGS / "mlp.yaml").stderr == ""
