"""Explain a mismatch: classify where and how the analytic gradient of one target is wrong.

A bug leaves a fingerprint in the error: a missing factor makes analytic/numeric constant, a
swapped index makes the gradient match its own transpose, a loop bound off by one spoils only
the last row. ``classify`` tries the fingerprints from the most specific to the most general and
returns a ``Pattern`` (a stable code for machines, a sentence for people), or None when nothing
fails.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Fingerprints must hold on every compared element to within this many rtol (the numeric side
# carries its own error, a few rtol at most; bugs are off by orders of magnitude more).
MATCH_RTOL_FACTOR = 10.0
# "A few isolated elements": at most this many, or this share of those compared.
FEW_ELEMENTS, FEW_SHARE = 3, 0.05


@dataclasses.dataclass(frozen=True)
class Pattern:
    """``kind``: a code (constant_ratio, sign_flip, transposed, kernel_flipped, analytic_zero,
    includes_weight_decay, some_samples, boundary, isolated, widespread); ``text``: in words."""

    kind: str
    text: str


def axis_names(shape: tuple[int, ...], is_input: bool) -> list[str]:
    """Human names of a target's axes: batch/channel/row/column for NCHW inputs, filter/channel/
    row/column for conv kernels, row/column for matrices."""
    ndim = len(shape)
    if is_input:
        tail = {1: [], 2: ["feature"], 3: ["row", "column"], 4: ["channel", "row", "column"]}
        return ["sample", *tail.get(ndim, [f"axis {i}" for i in range(1, ndim)])]
    return {1: ["element"], 2: ["row", "column"], 3: ["channel", "row", "column"],
            4: ["filter", "channel", "row", "column"]}.get(ndim, [f"axis {i}" for i in range(ndim)])


def _close(x: np.ndarray, y: np.ndarray, rtol: float, floor: float) -> bool:
    scale = np.maximum(np.abs(x), np.abs(y)) + floor
    return bool(np.all(np.abs(x - y) <= MATCH_RTOL_FACTOR * rtol * scale))


def classify(analytic: np.ndarray, numeric: np.ndarray, status: np.ndarray, *, rtol: float,
             is_input: bool, weight_decay_term: np.ndarray | None = None) -> Pattern | None:
    """Classify the mismatch of one target.

    ``analytic``, ``numeric``: arrays of the target's shape (numeric NaN where not checked);
    ``status``: same shape, ``"pass"``/``"fail"``/``"kink"``/``"inconclusive"`` or ``""`` where
    not checked; ``is_input``: the first axis is the batch; ``weight_decay_term``: decay * W for a
    weight tensor when the config declares weight decay.
    """
    failing = status == "fail"
    if not failing.any():
        return None
    compared = (status == "pass") | failing
    a, n = analytic[compared], numeric[compared]
    floor = 1e-6 * float(np.max(np.abs(n))) + 1e-300
    finders = (_analytic_zero, _weight_decay, _sign_flip, _transposed, _constant_ratio)
    for finder in finders:
        found = finder(analytic, numeric, a, n, compared, rtol, floor, weight_decay_term)
        if found:
            return found
    names = axis_names(analytic.shape, is_input)
    return (_some_samples(failing, compared, is_input) or _boundary(failing, compared, names)
            or _isolated(failing, compared, names) or
            Pattern("widespread", f"errors throughout: {int(failing.sum())} of "
                                  f"{int(compared.sum())} elements, no simple pattern"))


def _analytic_zero(analytic, numeric, a, n, compared, rtol, floor, decay_term):
    if np.all(a == 0.0) and np.any(n != 0.0):
        return Pattern("analytic_zero", "the analytic gradient is exactly zero everywhere: backward "
                                        "never writes it, or multiplies it by a zero mask")
    return None


def _weight_decay(analytic, numeric, a, n, compared, rtol, floor, decay_term):
    if decay_term is None or not np.any(decay_term[compared]):
        return None
    if _close(a, n + decay_term[compared], rtol, floor):
        return Pattern("includes_weight_decay",
                       "analytic = data gradient + weight_decay x W: backward adds the L2 term; "
                       "return the data gradient only (gradcheck checks the L2 term separately)")
    return None


def _sign_flip(analytic, numeric, a, n, compared, rtol, floor, decay_term):
    if np.any(np.abs(n) > floor) and _close(a, -n, rtol, floor):
        return Pattern("sign_flip", "sign flipped: analytic = -numeric (a subtraction the wrong "
                                    "way round, or a gradient ascent step)")
    return None


def _transposed(analytic, numeric, a, n, compared, rtol, floor, decay_term):
    if not compared.all():
        return None  # a transpose needs every element of both
    if analytic.ndim == 2 and analytic.shape[0] == analytic.shape[1] and \
            _close(analytic, numeric.T, rtol, floor):
        return Pattern("transposed", "matches after transposing: rows and columns are swapped "
                                     "(e.g. (x.T @ g).T, or W where W.T belongs)")
    if analytic.ndim == 4 and analytic.shape[2] == analytic.shape[3]:
        if _close(analytic, numeric[..., ::-1, ::-1], rtol, floor):
            return Pattern("kernel_flipped", "matches after rotating each kernel by 180 degrees: "
                                             "convolution used where cross-correlation belongs")
        if _close(analytic, numeric.swapaxes(2, 3), rtol, floor):
            return Pattern("transposed", "matches after transposing each kernel: kernel rows and "
                                         "columns are swapped")
    return None


def _constant_ratio(analytic, numeric, a, n, compared, rtol, floor, decay_term):
    significant = np.abs(n) > 1e-3 * np.max(np.abs(n))
    if significant.sum() < 2 or np.any(np.abs(a[~significant]) > 1e-2 * np.max(np.abs(a))):
        return None
    ratios = a[significant] / n[significant]
    ratio = float(np.median(ratios))
    if ratio == 0.0 or not _close(a, ratio * n, rtol, floor):
        return None
    return Pattern("constant_ratio", f"analytic = {ratio:.4g} x numeric: {_factor_words(ratio, analytic.shape)}")


def _factor_words(ratio: float, shape: tuple[int, ...]) -> str:
    """What a constant factor usually means."""
    if ratio < 0:
        return f"sign flipped and {_factor_words(-ratio, shape)}"
    big = ratio >= 1.0
    factor = ratio if big else 1.0 / ratio
    k = round(factor)
    if abs(factor - k) > 1e-3 * factor or k < 2:
        return "a wrong constant factor (a scale or normalisation that differs from the forward)"
    sizes = [str(i) for i, d in enumerate(shape) if d == k]
    where = f" (axis {', '.join(sizes)} has size {k})" if sizes else ""
    if big:
        return (f"{k}x too large: an extra factor {k}, double counting, or a sum where the forward "
                f"takes a mean over {k} items{where}")
    return (f"missing factor {k}: e.g. the {k} of d(x^{k})/dx, or a wrong 1/N with N = {k} "
            f"(the forward sums, the backward averages){where}")


def _some_samples(failing, compared, is_input):
    if not is_input or failing.shape[0] < 2:
        return None
    per_sample = failing.reshape(failing.shape[0], -1).any(axis=1)
    checked = compared.reshape(compared.shape[0], -1).any(axis=1)
    clean = checked & ~per_sample
    if not clean.any():
        return None
    bad = [int(i) for i in np.flatnonzero(per_sample)]
    return Pattern("some_samples", f"errors only in sample(s) {bad} of {failing.shape[0]}: the "
                                   "batch is mishandled (a sample index, or only part of the batch "
                                   "processed)")


def _boundary(failing, compared, names):
    for axis in range(failing.ndim):
        if names[axis] == "sample":
            continue
        size = failing.shape[axis]
        if size < 2:
            continue
        bad = np.flatnonzero(np.moveaxis(failing, axis, 0).reshape(size, -1).any(axis=1))
        seen = np.flatnonzero(np.moveaxis(compared, axis, 0).reshape(size, -1).any(axis=1))
        if len(bad) == len(seen):
            continue  # every index along this axis fails somewhere: not a boundary effect
        ends = set(bad.tolist())
        if ends == {0}:
            which = "first"
        elif ends == {size - 1}:
            which = "last"
        elif ends == {0, size - 1} and size > 2:
            which = "first and last"
        else:
            continue
        return Pattern("boundary", f"errors only in the {which} {names[axis]} (axis {axis}, size "
                                   f"{size}): a boundary, padding or loop-bound (off-by-one) error")
    return _border(failing, compared)


def _border(failing, compared):
    """Failures only on the outer ring of the last two (spatial) axes: padding."""
    if failing.ndim < 3 or min(failing.shape[-2:]) < 3:
        return None
    ring = np.ones(failing.shape[-2:], dtype=bool)
    ring[1:-1, 1:-1] = False
    inside = compared & ~ring
    if np.any(failing & ~ring) or not inside.any():
        return None
    return Pattern("boundary", "errors only on the border (first/last rows and columns): a "
                               "padding offset or an edge case of the window loop")


def _isolated(failing, compared, names):
    count = int(failing.sum())
    if count > max(FEW_ELEMENTS, FEW_SHARE * int(compared.sum())):
        return None
    where = [list(map(int, idx)) for idx in np.argwhere(failing)[:5]]
    return Pattern("isolated", f"only {count} isolated element(s) wrong, at {where}: a special case "
                               "in a loop or a mask that misses them")
