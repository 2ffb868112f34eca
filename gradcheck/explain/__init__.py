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

import numpy as np

from gradcheck.explain import places, values
from gradcheck.explain.axes import (BATCH, declaration_problem, default_axis_names,
                                    target_axis_names)
from gradcheck.explain.evidence import Evidence, Mismatch, Pattern

__all__ = ["BATCH", "Evidence", "Pattern", "classify", "declaration_problem",
           "default_axis_names", "target_axis_names", "PATTERN_CODES"]

FINGERPRINTS = (values.analytic_zero, values.weight_decay, values.decay_term, values.identity_path,
                values.sign_flip,
                values.rearranged, values.constant_ratio, places.some_samples, places.boundary,
                places.axis_range, places.whole_slices, values.small_relative_error,
                places.isolated)
# Every code a Pattern can carry (the JSON report's ``pattern``): codes are added, never renamed.
PATTERN_CODES = ("analytic_zero", "includes_weight_decay", "decay_term", "sign_flip",
                 "transposed", "kernel_flipped", "axis_flipped", "constant_ratio",
                 "small_relative_error", "some_samples", "boundary", "axis_range",
                 "whole_slices", "isolated", "widespread", "identity_path",
                 "shared_use_dropped")


def classify(analytic: np.ndarray, numeric: np.ndarray, status: np.ndarray, *, rtol: float,
             axis_names: tuple[str, ...], weight_decay_term: np.ndarray | None = None,
             param: np.ndarray | None = None, upstream: np.ndarray | None = None) -> Pattern | None:
    """Classify the mismatch of one target.

    ``analytic``: the analytic gradient, shape S (the target's; for an input the batch axis
    first); ``numeric``: shape S, NaN where not checked; ``status``: shape S, ``"pass"``/
    ``"fail"``/``"kink"``/``"inconclusive"``, or ``""`` where not checked; ``axis_names``: one
    per axis of S (``target_axis_names``; the batch axis is ``"sample"``); ``weight_decay_term``:
    shape S, decay x W for a weight when the config declares weight decay; ``param``: shape S,
    the parameter's values (None for an input), to recognise a decay term inside backward;
    ``upstream``: shape S, the upstream gradient of an input whose layer's output has its shape,
    to recognise a missing identity (skip) path.
    """
    failing = status == "fail"
    if not failing.any():
        return None
    compared = (status == "pass") | failing
    informative = compared & ~((analytic == 0.0) & (numeric == 0.0))
    mismatch = Mismatch(analytic=analytic, numeric=numeric, checked=status != "",
                        compared=compared, failing=failing, informative=informative, rtol=rtol,
                        names=tuple(axis_names), param=param, decay_term=weight_decay_term,
                        upstream=upstream)
    for fingerprint in FINGERPRINTS:
        found = fingerprint(mismatch)
        if found:
            return found
    return places.widespread(mismatch)
