"""The one place that decides colour and width for terminal output."""

from __future__ import annotations

import os
from typing import TextIO

from rich.console import Console


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
    return hasattr(stream, "isatty") and stream.isatty()


def make_console(stream: TextIO, choice: str = "auto") -> Console:
    """A rich Console on ``stream``; without colour it emits no escape sequences at all."""
    # Off a terminal rich would wrap at 80 columns; reports are tables, so allow them room (the
    # full text table, bar column included, is about 165 columns).
    width = None if hasattr(stream, "isatty") and stream.isatty() else 180
    if color_enabled(stream, choice):
        # no_color=False: rich would otherwise read NO_COLOR itself and strip the colours an
        # explicit --color always asked for (the flag overrides the environment).
        return Console(file=stream, force_terminal=True, highlight=False, width=width,
                       no_color=False)
    return Console(file=stream, color_system=None, force_terminal=False, highlight=False,
                   width=width, no_color=True)
