"""The one place that decides colour and width for terminal output."""

from __future__ import annotations

import builtins
import os
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console

# Off a terminal rich would wrap at 80 columns; reports are tables, so allow them room (the full
# text table, bar column included, is about 165 columns).
OFF_TERMINAL_WIDTH = 180


def color_enabled(stream: TextIO, choice: str = "auto") -> bool:
    """Colour when asked to, or (``auto``) on a TTY unless NO_COLOR is set or TERM is dumb."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    return _isatty(stream)


def _isatty(stream: TextIO) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


def make_console(stream: TextIO, choice: str = "auto") -> Console:
    """A rich Console on ``stream``; without colour it emits no escape sequences at all."""
    from rich.console import Console

    width = None if _isatty(stream) else OFF_TERMINAL_WIDTH
    if color_enabled(stream, choice):
        # no_color=False: rich would otherwise read NO_COLOR itself and strip the colours an
        # explicit --color always asked for (the flag overrides the environment).
        return Console(file=stream, force_terminal=True, highlight=False, width=width,
                       no_color=False)
    return Console(file=stream, color_system=None, force_terminal=False, highlight=False,
                   width=width, no_color=True)


def plain_width(stream: TextIO, choice: str = "auto") -> int | None:
    """The width text on ``stream`` has when it can be written as plain characters, without
    rich (``gradcheck.render.plain``): no colour, not a terminal (a pipe or a file, where
    ``make_console`` fixes the width), and nothing that makes rich draw otherwise: a stream that
    is not UTF-8 (ASCII boxes), a Windows console (other boxes) or Jupyter (its own display).
    None where rich must draw it."""
    if color_enabled(stream, choice) or _isatty(stream):
        return None
    encoding = (getattr(stream, "encoding", None) or "utf-8").lower()
    if not encoding.startswith("utf") or sys.platform == "win32":
        return None
    if hasattr(builtins, "get_ipython"):  # IPython or Jupyter, where rich may display itself
        return None
    return OFF_TERMINAL_WIDTH
