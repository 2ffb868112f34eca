"""Renderers: pure functions from a Report to text. The CLI picks one and writes its output."""

from __future__ import annotations


def compared_phrase(report) -> str:
    """"N elements" of a verdict line, plus the random directions compared when a mode used them,
    so a directional check does not read as "0 elements match"."""
    checked = report.counts()["checked"]
    directions = sum((c.coverage or {}).get("directions", 0)
                     for layer in report.layers for c in layer.checks)
    if directions:
        return f"{checked} elements and {directions} directions"
    return f"{checked} elements"


def checked_cell(check) -> str:
    """What a table's "checked" column says: the elements compared, plus the random directions
    when the check used them (a directional check compares no single element)."""
    directions = (check.coverage or {}).get("directions", 0)
    return f"{check.checked} + {directions} dir" if directions else str(check.checked)


def worst_rel_error(check) -> float:
    """The largest relative error of a check, over its elements and its directions, so that a
    directional check does not read as 0 (the JSON keeps them apart: ``max_rel_error`` and
    ``coverage.directional_max_rel_error``)."""
    directional = (check.coverage or {}).get("directional_max_rel_error", 0.0)
    return max(check.max_rel_error, directional)
