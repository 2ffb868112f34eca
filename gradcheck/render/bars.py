"""A log-scale bar of a relative error, for the text report: position, not digits, says how far
an error is from the tolerance, so a glance down the column finds the layer that is off."""

from __future__ import annotations

import math

from gradcheck.render.styled import Styled

# The scale spans machine epsilon for float64 to a 100% error: every relative error lands in it.
LOG_MIN, LOG_MAX = -16.0, 0.0
WIDTH = 12
_EIGHTHS = " ▏▎▍▌▋▊▉"
# The column header states the scale; "|" in a bar marks the tolerance.
BAR_HEADER = "1e-16 ‥ 1"


def error_bar(rel_error: float | None, rtol: float, width: int = WIDTH) -> Styled:
    """``rel_error`` as a bar on a log10 scale from 1e-16 to 1, with ``|`` at the tolerance.

    Green below the tolerance, red above it; an error of 0 draws nothing, one above 1 fills the bar.
    """
    cells = width * 8
    tick = _position(rtol, cells) // 8
    length = 0 if rel_error is None or rel_error <= 0 else _position(rel_error, cells)
    full, part = divmod(length, 8)
    bar = "█" * full + (_EIGHTHS[part] if part else "")
    # NaN compares false both ways: an undefined error is drawn as a failure, never as a pass.
    style = "red" if rel_error is not None and not rel_error <= rtol else "green"
    text = Styled(bar, style=style)
    rest = []
    for i in range(len(bar), width):
        rest.append("|" if i == min(tick, width - 1) else "·")
    text.append("".join(rest), style="dim")
    return text


def _position(value: float, cells: int) -> int:
    """Where ``value`` falls on the log scale, in eighths of a character."""
    if not math.isfinite(value) or value >= 10 ** LOG_MAX:
        return cells
    frac = (math.log10(value) - LOG_MIN) / (LOG_MAX - LOG_MIN)
    return max(0, min(cells, round(frac * cells)))
