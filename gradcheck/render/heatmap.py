"""A small terminal heat map of a target's relative error, so that row and column structure
(an off-by-one in the last column, a padding ring, every time step but the last) shows at a
glance. The legend names what the rows and columns are, from the target's axis names (the
layer's declared layout, ``TargetReport.axis_names``)."""

from __future__ import annotations

import numpy as np

from gradcheck.render.styled import Styled
from gradcheck.report import ErrorMap

MAX_ROWS, MAX_COLS = 16, 48
SHADES = "░▒▓█"  # relative error from rtol (light) up to 1 and beyond (full)
PASS_MARK, UNCHECKED = "·", " "


def grid(rel_error: np.ndarray | ErrorMap, axis_names=None) -> tuple[np.ndarray, str]:
    """The 2-D array drawn and what it shows: 1-D as one row, 2-D as is, more axes as the
    maximum over the leading ones (the last two are rows and columns); larger grids are
    reduced by block maxima. NaN (not checked) stays NaN unless a block has checked elements.
    ``axis_names``: one per axis of ``rel_error`` (generic "axis i" when None). A sparse
    ``ErrorMap`` is drawn from its entries, never made target-sized."""
    if isinstance(rel_error, ErrorMap):
        if rel_error.sparse:
            return _sparse_grid(rel_error, axis_names)
        rel_error = rel_error.dense()
    rel = np.asarray(rel_error, dtype=float)
    names = list(axis_names) if axis_names is not None else [f"axis {i}" for i in range(rel.ndim)]
    what = ""
    if rel.ndim == 0:
        rel = rel.reshape(1, 1)
    elif rel.ndim == 1:
        rel = rel.reshape(1, -1)
        what = f"one row: {names[0]}; "
    else:
        what = f"rows: {names[-2]}, columns: {names[-1]}; "
        if rel.ndim > 2:
            what += f"max over {', '.join(names[:-2])}; "
            rel = _nanmax(rel.reshape(-1, *rel.shape[-2:]), axis=0)
    rows, cols = rel.shape
    row_block, col_block = -(-rows // MAX_ROWS), -(-cols // MAX_COLS)
    if row_block > 1 or col_block > 1:
        what += f"each cell the max of {row_block}x{col_block}; "
        padded = np.full((-(-rows // row_block) * row_block, -(-cols // col_block) * col_block),
                         np.nan)
        padded[:rows, :cols] = rel
        blocks = padded.reshape(padded.shape[0] // row_block, row_block,
                                padded.shape[1] // col_block, col_block)
        rel = _nanmax(blocks.transpose(0, 2, 1, 3).reshape(*blocks.shape[::2], -1), axis=-1)
    return rel, what


def _sparse_grid(rel_error: ErrorMap, axis_names) -> tuple[np.ndarray, str]:
    """``grid`` of a sparse map: each compared element's cell, the maximum per cell."""
    shape = rel_error.shape
    names = (list(axis_names) if axis_names is not None
             else [f"axis {i}" for i in range(len(shape))])
    rows, cols = (1, 1) if not shape else (1, shape[0]) if len(shape) == 1 else shape[-2:]
    what = "" if not shape else f"one row: {names[0]}; " if len(shape) == 1 else \
        f"rows: {names[-2]}, columns: {names[-1]}; "
    if len(shape) > 2:
        what += f"max over {', '.join(names[:-2])}; "
    row_block, col_block = -(-rows // MAX_ROWS), -(-cols // MAX_COLS)
    if row_block > 1 or col_block > 1:
        what += f"each cell the max of {row_block}x{col_block}; "
    row, col = np.divmod(rel_error.indices % (rows * cols), cols)
    cells = np.full((-(-rows // row_block), -(-cols // col_block)), np.nan)
    np.fmax.at(cells, (row // row_block, col // col_block), rel_error.values)
    return cells, what


def _nanmax(values: np.ndarray, axis: int) -> np.ndarray:
    checked = ~np.isnan(values)
    best = np.max(np.where(checked, values, -np.inf), axis=axis)
    return np.where(np.any(checked, axis=axis), best, np.nan)


def heatmap(rel_error: np.ndarray | ErrorMap, rtol: float, axis_names=None,
            indent: str = "    ") -> Styled:
    """The heat map as Styled text: one character per element (or block), then a legend that
    names the axes (``axis_names``, one per axis of ``rel_error``; generic when None)."""
    cells, what = grid(rel_error, axis_names)
    text = Styled()
    span = max(np.log10(1.0 / rtol), 1e-9)
    for row in cells:
        text.append(indent)
        for value in row:
            if np.isnan(value):
                text.append(UNCHECKED)
            elif value <= rtol:
                text.append(PASS_MARK, style="green")
            else:
                level = min(int(np.log10(value / rtol) / span * len(SHADES)), len(SHADES) - 1)
                text.append(SHADES[level], style="red")
        text.append("\n")
    text.append(f"{indent}({what}{PASS_MARK} within rtol, {SHADES} relative error from rtol to 1"
                f"{', blank: not checked' if np.isnan(cells).any() else ''})", style="dim")
    return text
