"""The text report written without rich (gradcheck.render.plain) is character for character what
rich prints for it, or nothing (rich then draws it): on passing and failing reports at several
widths, and on reports whose names and notes hold what rich treats otherwise (wide, combining
or control characters, tabs, markup, long lines). The command takes that path when its output
has no colour and no terminal (a pipe, a file), and then loads no rich."""

from __future__ import annotations

import builtins
import copy
import io
from unittest import mock

import pytest
from hypothesis import given, settings, strategies as st
from rich.cells import cell_len

from conftest import CONFIGS, examples
from gradcheck import check_network, console
from gradcheck.console import OFF_TERMINAL_WIDTH, make_console, plain_width
from gradcheck.render.plain import ONE_CELL, plain_report, plain_verdict
from gradcheck.render.text import render_text, summary

PASSING = [("mlp.yaml", {}), ("lenet.yaml", {}), ("resnet_block.yaml", {}),
           ("all_layers.yaml", {"mode": "sample"}), ("mlp.yaml", {"mode": "directional"})]
# Broken contracts, root causes with inherited failures, patterns, notes and heat maps.
FAILING = [("broken/plugin_buggy.yaml", {}), ("broken/residual_plugin.yaml", {}),
           ("broken/rnn_no_bptt.yaml", {}), ("scenarios/r1_matlab_cnn.yaml", {}),
           ("scenarios/residual_dead_branch.yaml", {})]
WIDTHS = (OFF_TERMINAL_WIDTH, 400, 100, 60)


@pytest.fixture(scope="module")
def reports():
    return {(name, tuple(options.items())): check_network(CONFIGS / name, **options)
            for name, options in PASSING + FAILING}


def rich_prints(renderable, width: int = OFF_TERMINAL_WIDTH) -> str:
    """What the command prints with rich for a colourless stream, ``width`` columns wide."""
    out = io.StringIO()
    with mock.patch.object(console, "OFF_TERMINAL_WIDTH", width):
        make_console(out, "never").print(renderable)
    return out.getvalue()


def assert_same_or_none(report, width: int) -> tuple[str | None, str | None]:
    full, verdict = plain_report(report, width), plain_verdict(report, width)
    if full is not None:
        assert full == rich_prints(render_text(report), width)
    if verdict is not None:
        assert verdict == rich_prints(summary(report), width)
    return full, verdict


@pytest.mark.parametrize("width", WIDTHS)
def test_plain_text_is_what_rich_prints_or_nothing(reports, width):
    for report in reports.values():
        assert_same_or_none(report, width)


def test_plain_text_draws_passing_reports_at_the_command_width_and_failing_ones_when_wide(
        reports):
    """Not vacuous: every passing report is drawn without rich as the command prints it, and
    every failing one (details, patterns, heat maps) where its longest lines fit."""
    for (name, options), report in reports.items():
        width = OFF_TERMINAL_WIDTH if (name, dict(options)) in PASSING else 400
        full, verdict = assert_same_or_none(report, width)
        assert full is not None and verdict is not None, name


def test_plain_text_drops_columns_where_rich_does(reports):
    report = reports[("mlp.yaml", ())]
    table_width = max(len(line) for line in plain_report(report, OFF_TERMINAL_WIDTH).split("\n"))
    drawn = {width: assert_same_or_none(report, width)[0]
             for width in (table_width - 1, table_width, table_width + 1)}
    assert None not in drawn.values()
    assert drawn[table_width] == drawn[table_width + 1] != drawn[table_width - 1]


def test_plain_text_gives_way_to_rich_where_rich_has_something_to_decide(reports):
    report = reports[("mlp.yaml", ())]
    narrow = OFF_TERMINAL_WIDTH // 4  # too narrow for the table even with its columns dropped
    assert plain_report(report, narrow) is None
    for text in ("名前", "e\u0301", "a\tb", "\x1b[31m", "x" * (OFF_TERMINAL_WIDTH + 1)):
        changed = copy.deepcopy(report)
        changed.notes.append(text)
        assert plain_report(changed, OFF_TERMINAL_WIDTH) is None, repr(text)


NAMES = st.text(st.sampled_from("ab_[]/ \t\x1b\x07\u0301名😀éµ·█‥" + "".join(ONE_CELL)),
                max_size=12) | st.text(max_size=200)


@settings(max_examples=examples(60))
@given(network=NAMES, layer=NAMES, note=NAMES, warning=NAMES, explanation=NAMES)
def test_any_text_in_a_report_is_drawn_as_rich_draws_it_or_left_to_rich(
        reports, network, layer, note, warning, explanation):
    report = copy.deepcopy(reports[("broken/plugin_buggy.yaml", ())])
    report.network = network
    report.layers[0].name = layer
    report.notes.append(note)
    report.warnings.append(warning)
    failing = next(c for lr in report.layers for c in lr.checks if c.status == "fail")
    failing.explanation = explanation
    for width in (OFF_TERMINAL_WIDTH, 400):
        assert_same_or_none(report, width)


def test_the_glyphs_drawn_without_rich_take_one_cell_in_rich():
    assert all(cell_len(char) == 1 for char in ONE_CELL)


class FakeStream(io.StringIO):
    def __init__(self, tty: bool = False, encoding: str | None = None):
        super().__init__()
        self._tty, self._encoding = tty, encoding

    def isatty(self):
        return self._tty

    @property
    def encoding(self):
        return self._encoding


def test_plain_width_only_without_colour_terminal_or_anything_rich_draws_otherwise(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert plain_width(io.StringIO()) == OFF_TERMINAL_WIDTH
    assert plain_width(FakeStream(encoding="UTF-8")) == OFF_TERMINAL_WIDTH
    assert plain_width(io.StringIO(), "always") is None
    assert plain_width(FakeStream(tty=True), "never") is None  # a terminal's own width
    assert plain_width(FakeStream(encoding="latin-1")) is None  # rich draws ASCII boxes
    monkeypatch.setattr(builtins, "get_ipython", lambda: None, raising=False)
    assert plain_width(io.StringIO()) is None


@pytest.mark.parametrize("name", ["mlp.yaml", "broken/plugin_buggy.yaml"])
def test_the_command_prints_what_rich_would_on_a_pipe_and_into_a_file(run_cli, tmp_path, name):
    report = check_network(CONFIGS / name)
    out = tmp_path / "report.txt"
    for args in ((), ("-q",)):
        expected = rich_prints((summary if args else render_text)(report))
        assert run_cli("check", CONFIGS / name, *args).stdout == expected
        run_cli("check", CONFIGS / name, *args, "-o", out)
        assert out.read_text() == expected
