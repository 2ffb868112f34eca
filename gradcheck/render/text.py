"""The human report drawn by rich: in colour, or as wide as a terminal is. What it says comes from
``gradcheck.render.textparts``; ``gradcheck.render.plain`` draws the same characters without rich
where no colour and no terminal's width are wanted."""

from __future__ import annotations

from rich.cells import cell_len
from rich.console import Group
from rich.table import Table
from rich.text import Text

from gradcheck.render import textparts
from gradcheck.render.textparts import COLUMNS, shown_columns
from gradcheck.report import Report


def summary(report: Report) -> Text:
    """The one-line verdict."""
    return textparts.summary(report).to_text()


def table(report: Report, dropped: int = 0) -> Table:
    """One row per target; the first row of each layer names it and says where blame lies.

    ``dropped``: leave out the columns whose drop rank is above ``8 - dropped`` (see COLUMNS)."""
    keep = shown_columns(dropped)
    rows = [([cell.to_text() for cell in cells], last)
            for cells, last in textparts.table_rows(report)]
    grid = Table(show_edge=False, header_style="bold", pad_edge=False)
    for index, ((column, justify, _), shown) in enumerate(zip(COLUMNS, keep)):
        if shown:
            # A fixed width (the widest cell) spares rich from measuring every cell again each
            # time the table is measured and drawn: most of the cost of printing the report.
            width = max([cell_len(column), *(cells[index].cell_len for cells, _ in rows)])
            grid.add_column(Text(column), justify=justify, no_wrap=True, width=width)
    for cells, last in rows:
        grid.add_row(*(c for c, shown in zip(cells, keep) if shown), end_section=last)
    return grid


class FittedTable:
    """The layers x targets table with as many columns as the console's width allows."""

    def __init__(self, report: Report):
        self.report = report

    def __rich_console__(self, console, options):
        unbounded = options.update(max_width=10**6)
        for dropped in range(8):
            grid = table(self.report, dropped)
            if console.measure(grid, options=unbounded).maximum <= options.max_width:
                break
        yield grid


def render_text(report: Report) -> Group:
    """The whole report as one rich renderable."""
    above, below = textparts.around_table(report)
    return Group(*(part.to_text() for part in above), FittedTable(report),
                 *(part.to_text() for part in below))
