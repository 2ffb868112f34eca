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
