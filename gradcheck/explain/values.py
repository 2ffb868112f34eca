"""Fingerprints in the values: a relation between analytic and numeric that holds at every
compared element (a factor, a sign, a decay term, a transposition or flip), or a small error.

Each takes a ``Mismatch`` and returns a ``Pattern`` or None. An exact relation is more specific
than any statement about where the errors are, so those are tried before the places; a small
error is not exact (it varies from element to element) and is tried after them, so that a small
error confined to one region is named by its region.
"""

from __future__ import annotations

import numpy as np

from gradcheck.explain.axes import BATCH, axis_note, is_generic, noun
from gradcheck.explain.evidence import Mismatch, Pattern

# A ratio within this of 1, or differences within this share of the gradient's RMS size, is a
# small error (an approximation), not a wrong factor.
SMALL_ERROR = 1e-2
# A small error is "consistent" when at least this share of the informative elements fail.
CONSISTENT_SHARE = 0.5


def analytic_zero(m: Mismatch) -> Pattern | None:
    if not (np.all(m.a == 0.0) and np.any(m.n != 0.0)):
        return None
    where = (f"in all {m.analytic.size:,} elements" if np.all(m.analytic == 0.0)
             else "at every compared element")
    return m.pattern("analytic_zero", f"the analytic gradient is exactly zero {where}",
                     "backward never writes it, or multiplies it by a zero mask")


def weight_decay(m: Mismatch) -> Pattern | None:
    if m.decay_term is None or not np.any(m.decay_term[m.compared]):
        return None
    if not m.close(m.a, m.n + m.decay_term[m.compared]):
        return None
    return m.pattern("includes_weight_decay", "analytic = data gradient + weight_decay x W",
                     "backward adds the L2 term; return the data gradient only (gradcheck "
                     "checks the L2 term separately)")


def decay_term(m: Mismatch) -> Pattern | None:
    """analytic = numeric + c W for a fitted c: a decay or L2 term inside backward."""
    if m.param is None:
        return None
    w = m.param[m.compared]
    norm = float(w @ w)
    if norm == 0.0:
        return None
    c = float((m.a - m.n) @ w) / norm
    if c == 0.0 or not m.close(m.a, m.n + c * w):
        return None
    configured = ""
    if m.decay_term is not None and np.any(m.decay_term):
        decay = float(np.vdot(m.decay_term, m.param) / np.vdot(m.param, m.param))
        configured = f", {c / decay:.3g}x the configured weight_decay {decay:g}"
    if c > 0:
        return m.pattern("decay_term", f"analytic = numeric + {c:.3g} x W{configured}",
                         f"backward adds an L2 term ({c:.3g} x W, the gradient of {c / 2:.3g} x "
                         "sum(W^2)); return the data gradient only: weight decay belongs in the "
                         "optimiser (declared as train: weight_decay, gradcheck checks it "
                         "separately)")
    return m.pattern("decay_term", f"analytic = numeric - {-c:.3g} x W{configured}",
                     "backward subtracts a decay term (an update step's -lambda W written into "
                     "the gradient, or an L2 gradient with its sign flipped); return the data "
                     "gradient only: weight decay belongs in the optimiser")


def identity_path(m: Mismatch) -> Pattern | None:
    """analytic = numeric - G (or + G): the gradient of an identity path (a skip connection)
    missing from an input's gradient, or counted twice."""
    if m.upstream is None:
        return None
    g = m.upstream[m.compared]
    if not np.any(np.abs(g) > m.floor):
        return None
    if m.close(m.a + g, m.n):
        return m.pattern("identity_path", "analytic = numeric - the upstream gradient",
                         "the identity path's gradient is missing: for y = f(x) + x (a residual "
                         "or skip connection) backward must return f'(x)^T g + g, and the + g is "
                         "not there")
    if m.close(m.a - g, m.n):
        return m.pattern("identity_path", "analytic = numeric + the upstream gradient",
                         "the identity path's gradient is counted twice: the + g of a skip "
                         "connection is added in two places")
    return None


def sign_flip(m: Mismatch) -> Pattern | None:
    if np.any(np.abs(m.n) > m.floor) and m.close(m.a, -m.n):
        return m.pattern("sign_flip", "sign flipped: analytic = -numeric",
                         "a subtraction the wrong way round, or a gradient ascent step")
    return None


def rearranged(m: Mismatch) -> Pattern | None:
    """The analytic gradient of another element: transposed, a kernel rotated, an axis reversed.

    The analytic gradient is known everywhere, so the rearranged one is compared with the
    numeric wherever that was compared (a sample of elements suffices)."""
    for kind, moved, claim, hint in _rearrangements(m.analytic, m.names):
        if m.close(moved[m.compared], m.n):
            return m.pattern(kind, claim, hint)
    return None


def _rearrangements(analytic: np.ndarray, names: tuple[str, ...]):
    if analytic.ndim == 2 and analytic.shape[0] == analytic.shape[1] and BATCH not in names:
        yield ("transposed", analytic.T, "matches after transposing",
               "rows and columns are swapped (e.g. (x.T @ g).T, or W where W.T belongs)")
    if analytic.ndim == 4 and analytic.shape[2] == analytic.shape[3] and BATCH not in names:
        yield ("kernel_flipped", analytic[..., ::-1, ::-1],
               "matches after rotating each kernel by 180 degrees",
               "convolution used where cross-correlation belongs")
        yield ("transposed", analytic.swapaxes(2, 3), "matches after transposing each kernel",
               "kernel rows and columns are swapped")
    for axis, name in enumerate(names):
        if name == BATCH or analytic.shape[axis] < 2:
            continue
        what = ("one spatial axis of the kernel flipped: an index K-1-u where u belongs, or a "
                "flip between convolution and correlation done on one axis only"
                if name.startswith("kernel") else
                f"the index{axis_note(name, axis)} runs backwards (n-1-i where i belongs)"
                if is_generic(name) else f"the {name} index runs backwards (n-1-i where i belongs)")
        yield ("axis_flipped", np.flip(analytic, axis),
               f"matches after reversing the {noun(name, 2)}"
               f"{axis_note(name, axis, analytic.shape[axis])}", what)


def constant_ratio(m: Mismatch) -> Pattern | None:
    a, n = m.a, m.n
    significant = np.abs(n) > 1e-3 * np.max(np.abs(n))
    if significant.sum() < 2 or np.any(np.abs(a[~significant]) > 1e-2 * np.max(np.abs(a))):
        return None
    ratio = float(np.median(a[significant] / n[significant]))
    if ratio == 0.0 or abs(ratio - 1.0) <= SMALL_ERROR or not m.close(a, ratio * n):
        return None
    return m.pattern("constant_ratio", f"analytic = {ratio:.4g} x numeric",
                     _factor_words(ratio, m.analytic.shape))


def _factor_words(ratio: float, shape: tuple[int, ...]) -> str:
    """What a constant factor usually means."""
    if ratio < 0:
        return f"sign flipped and {_factor_words(-ratio, shape)}"
    big = ratio >= 1.0
    factor = ratio if big else 1.0 / ratio
    k = round(factor)
    square = round(factor * factor)
    # A square root of an integer: a 1/sqrt(d) scale (attention's scores) left out or doubled.
    root = (f", or a 1/sqrt(d) scale with d = {square} {'missing' if big else 'applied twice'} "
            "(as attention scales its scores)"
            if square >= 2 and abs(factor * factor - square) <= 1e-3 * factor * factor else "")
    if abs(factor - k) > 1e-3 * factor or k < 2:
        return ("a wrong constant factor (a scale or normalisation that differs from the "
                f"forward){root}")
    sizes = [str(i) for i, d in enumerate(shape) if d == k]
    where = f" (axis {', '.join(sizes)} has size {k})" if sizes else ""
    if big:
        return (f"{k}x too large: an extra factor {k}, double counting, or a sum where the forward "
                f"takes a mean over {k} items{where}{root}")
    return (f"missing factor {k}: e.g. the {k} of d(x^{k})/dx, or a wrong 1/N with N = {k} "
            f"(the forward sums, the backward averages){where}{root}")


def small_relative_error(m: Mismatch) -> Pattern | None:
    """Every difference tiny next to the gradient's typical size, yet most elements fail: an
    approximation on one side (a tanh-GELU forward with the exact derivative), not a wrong term."""
    informative = m.informative[m.compared]
    a, n = m.a[informative], m.n[informative]
    if len(n) == 0 or m.evidence.failing < CONSISTENT_SHARE * len(n):
        return None
    typical = float(np.sqrt(np.mean(n * n)))
    worst = float(np.max(np.abs(a - n))) / typical if typical > 0 else np.inf
    if worst > SMALL_ERROR:
        return None
    failing = m.failing[m.compared][informative]
    rel = np.abs(a - n)[failing] / np.maximum(np.abs(a), np.abs(n))[failing]
    larger = np.abs(a[failing]) > np.abs(n[failing])
    direction = ("analytic always larger" if larger.all() else
                 "analytic always smaller" if not larger.any() else "of both signs")
    return m.pattern("small_relative_error",
                     f"a consistent {float(np.median(rel)):.1e} relative error (median over the "
                     f"failing elements, {direction}; every difference within {worst:.1e} of "
                     "the gradient's RMS size)",
                     "as from an approximate formula: a forward and a backward that approximate "
                     "differently (a tanh-approximation GELU forward with the exact derivative, "
                     "a fast exp), a float32 step, or a small term missing")
