"""``classify``: the fingerprints of ``values`` and ``places``, tried from the most specific to
the most general (see the package docstring)."""

from __future__ import annotations

import numpy as np

from gradcheck.explain import places, values
from gradcheck.explain.evidence import Mismatch, Pattern

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
