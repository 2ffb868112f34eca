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


def target_label(check, layer) -> str:
    """How a table names a target: dL/dW, dL/dinput, dL/d(skip) for one of several inputs (by
    the tensor it reads), dR/dW (L2) for the weight-decay term."""
    if check.term == "l2":
        return f"dR/d{check.target} (L2)"
    head, _, slot = check.target.partition(".")
    if head == "input" and slot.isdigit() and int(slot) < len(layer.inputs):
        return f"dL/d({layer.inputs[int(slot)]})"
    return f"dL/d{check.target}"


def type_cell(report, k: int) -> str:
    """A layer's type, and what it reads when that is not simply the layer before it."""
    layer = report.layers[k]
    default = [report.layers[k - 1].name] if k > 0 else None
    if not layer.inputs or layer.inputs == default or (k == 0 and len(layer.inputs) == 1):
        return layer.type
    return f"{layer.type} <- {', '.join(layer.inputs)}"
