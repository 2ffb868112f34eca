"""Explain a mismatch: classify where and how the analytic gradient of one target is wrong.

A bug leaves a fingerprint in the error: a missing factor makes analytic/numeric constant, a
swapped index makes the gradient match its own transpose, a loop bound off by one spoils only
the last row, a recurrent layer that drops the gradient from later steps spoils every time step
but the last. ``classify`` tries the fingerprints from the most specific to the most general and
returns a ``Pattern`` (a stable code for machines, a sentence for people, and the elements it
rests on), or None when nothing fails:

1. exact relations in the values, which must hold at every compared element (``values``): the
   analytic gradient all zero, a decay term, a sign, a transposition or flip, a constant factor;
2. places (``places``): only some samples, only the edges or the border, only a range of one
   axis, only whole slices of one axis;
3. a small, consistent relative error (an approximation; ``values``), a few isolated elements,
   else errors throughout.

Axis names come from the layer's declared layout (``axes``); elements whose analytic and numeric
gradients are both exactly 0 are uninformative, never proof that a place is right (``evidence``).
"""

from __future__ import annotations

import importlib

from gradcheck.explain.axes import (BATCH, declaration_problem, default_axis_names,
                                    target_axis_names)

__all__ = ["BATCH", "Evidence", "Pattern", "classify", "declaration_problem",
           "default_axis_names", "target_axis_names", "PATTERN_CODES"]

# The classifier's names, imported on first use (PEP 562): a check whose gradients all match
# needs only the axis names above, and the fingerprints cost 3 ms of its start-up.
_LAZY = {"classify": "patterns", "PATTERN_CODES": "patterns", "FINGERPRINTS": "patterns",
         "Evidence": "evidence", "Pattern": "evidence"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gradcheck.explain' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"gradcheck.explain.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
