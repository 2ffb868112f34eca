"""Styled text without rich: what a line of the text report says and in which styles, built once
and drawn either by rich (``to_text``: colour, a terminal's width) or as plain characters
(``gradcheck.render.plain``): a report piped or written to a file has no colour, and need not
pay the 25 ms rich costs a check's start-up."""

from __future__ import annotations


class Styled:
    """Text with a base ``style`` and a sequence of runs, each a piece of text with its own style
    (``""``: none) or a nested ``Styled``: the way rich's ``Text(text, style=...)``, ``append``
    and ``append_text`` build a Text, kept so that ``to_text`` builds the very same one."""

    def __init__(self, text: str = "", style: str = ""):
        self.style = style
        self.runs: list[tuple[str, str] | Styled] = []
        self.append(text)

    def append(self, text: str, style: str = "") -> Styled:
        if text:
            self.runs.append((text, style))
        return self

    def append_text(self, other: Styled) -> Styled:
        self.runs.append(other)
        return self

    @property
    def plain(self) -> str:
        """The characters, without styles."""
        return "".join(run.plain if isinstance(run, Styled) else run[0] for run in self.runs)

    def to_text(self):
        """The rich ``Text`` the same calls would have built."""
        from rich.text import Text

        text = Text(style=self.style)
        for run in self.runs:
            if isinstance(run, Styled):
                text.append_text(run.to_text())
            else:
                text.append(run[0], style=run[1] or None)
        return text
