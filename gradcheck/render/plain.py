"""The human report as plain characters, without rich: for a report that has no colour and a
fixed width (piped, or written to a file), where importing rich and drawing with it would be
about 25 ms of a check's start-up (an eighth of a small network's ``gradcheck check`` outside
the check itself; bench/startup.py).

The characters are exactly those rich prints for it (``gradcheck.render.text`` through
``gradcheck.console.make_console``); tests/test_plain_text.py compares the two. That
holds where rich has nothing to decide: every line fits the width (none is wrapped), the table
fits with the columns it keeps, and every character is one that takes one cell. Otherwise these
functions return None and the caller lets rich draw the report.
"""

from __future__ import annotations

from gradcheck.render import textparts
from gradcheck.render.styled import Styled
from gradcheck.report import Report

# Characters other than printable ASCII that the report draws, each one cell wide for rich (the
# error bars, the heat maps, the bar column's header).
ONE_CELL = frozenset("▏▎▍▌▋▊▉█·‥░▒▓")
# The table as rich draws it with show_edge=False, pad_edge=False and the HEAVY_HEAD box: one
# space of padding each side of a column divider, none at the table's edges.
HEAD_DIVIDER, HEAD_RULE, HEAD_CROSS = " ┃ ", "━", "━╇━"
ROW_DIVIDER, ROW_RULE, ROW_CROSS = " │ ", "─", "─┼─"


def plain_report(report: Report, width: int) -> str | None:
    """The whole text report as rich prints it ``width`` columns wide without colour, or None
    where rich must draw it."""
    above, below = textparts.around_table(report)
    parts = [*(_lines(part, width) for part in above), _table(report, width),
             *(_lines(part, width) for part in below)]
    return None if None in parts else "".join(parts)


def plain_verdict(report: Report, width: int) -> str | None:
    """The one-line verdict (``-q``) as rich prints it, or None where rich must draw it."""
    return _lines(textparts.summary(report), width)


def _fits(text: str, width: int) -> bool:
    """Whether rich would print ``text`` (one line) as it is: no wider than ``width``, and
    nothing it would measure, expand or strip differently (wide or control characters, tabs)."""
    if len(text) > width:
        return False
    return (text.isascii() and text.isprintable()) or all(
        (" " <= char <= "~") or char in ONE_CELL for char in text)


def _lines(part: Styled, width: int) -> str | None:
    """A Styled part's lines, each ended by a newline (a part ending in a newline ends with a
    blank line, as rich prints it)."""
    plain = part.plain
    if not all(_fits(line, width) for line in plain.split("\n")):
        return None
    return plain + "\n"


def _table(report: Report, width: int) -> str | None:
    """The layers x targets table with as many columns as ``width`` allows (as
    ``gradcheck.render.text.FittedTable`` keeps them), each as wide as its widest cell."""
    rows = [([cell.plain for cell in cells], last) for cells, last in textparts.table_rows(report)]
    headers = [column for column, _, _ in textparts.COLUMNS]
    if not rows or not all(_fits(cell, width) for cell in headers) or not all(
            _fits(cell, width) for cells, _ in rows for cell in cells):
        return None
    widths = [max(len(cell) for cell in column) for column in zip(headers, *(c for c, _ in rows))]
    for dropped in range(8):
        keep = textparts.shown_columns(dropped)
        shown = [w for w, kept in zip(widths, keep) if kept]
        if sum(shown) + len(ROW_DIVIDER) * (len(shown) - 1) <= width:
            break
    else:
        return None  # rich would squeeze the columns that are left

    def line(cells: list[str], divider: str) -> str:
        return divider.join(_justify(cell, w, justify) for cell, w, (_, justify, _), kept
                            in zip(cells, widths, textparts.COLUMNS, keep) if kept)

    lines = [line(headers, HEAD_DIVIDER), HEAD_CROSS.join(HEAD_RULE * w for w in shown)]
    for index, (cells, last) in enumerate(rows):
        lines.append(line(cells, ROW_DIVIDER))
        if last and index < len(rows) - 1:
            lines.append(ROW_CROSS.join(ROW_RULE * w for w in shown))
    return "\n".join(lines) + "\n"


def _justify(cell: str, width: int, justify: str) -> str:
    return cell.rjust(width) if justify == "right" else cell.ljust(width)
