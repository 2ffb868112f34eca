"""From objective values at +h and -h to a verdict per element: pass, fail, kink or inconclusive.

The step is per element (``steps``): h = eps * max(|x_i|, s), s the tensor's scale, so a
parameter of 1e-4 is not perturbed by 1% of itself while a weight of 3 gets a step it can feel.
An element that agrees at that step passes. One that does not is looked at again:

1. **Kink.** The unit's branch state differed at +h and -h, or, for units that expose none, the
   objective along the element bends at one point (``gradcheck.kinks``): a central difference
   there averages two slopes and proves nothing. Reported, never a failure.
2. **Step sweep** (Ridders' extrapolation, Numerical Recipes 5.7): differences at steps halving
   from ``max_steps`` (a tenth of the element's own scale, never more) down to h/8, extrapolated
   to h -> 0 in a tableau whose entries also estimate their own error. Truncation error shrinks
   with the step and round-off grows, so the tableau's best entry is the estimate with the least
   of both, and its error estimate says how far it can be trusted. Then:
   - the estimate is certain to half the tolerance: the element passes or fails on it;
   - it is not, but a tolerance up to ``WIDEN_LIMIT`` would make it certain: judged at that
     tolerance, which the report states (JSON ``rtol`` of the target) — never silently;
   - otherwise it fails only if it disagrees beyond the estimate's own uncertainty, and is
     ``inconclusive`` ("truncation and round-off overlap at every step") if not.

``judge`` runs on any ``evaluate(flat_indices, steps) -> Perturbed``: a unit's own objective
(``engine.local``) or the network's loss (``engine.tail``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from gradcheck import kinks, tolerance

# Failing elements per target that get the kink test (2 evaluations each) and, of those not at
# a kink, the step sweep (7 more), worst first; failures beyond these stay failures: by then the
# target is wrong beyond doubt.
MAX_RECHECK = 4096
MAX_SWEEP = 256
# Ridders' constant: stop once an extrapolation is SAFE times worse than the best so far.
SAFE = 2.0
# An estimate whose error is below this share of the element's tolerance decides it.
DECISIVE_SHARE = 0.25
# Measured round-off of at least this share of float32's epsilon (relative to the terms the
# objective sums) is evidence that a unit of a float64 network computes in float32 inside.
FLOAT32_EVIDENCE = 0.1
# The round-off of a (possibly extrapolated) central difference at step h, per unit of one
# objective value's noise: sqrt(2)/2 for the difference, times what extrapolation amplifies.
NOISE_AMPLIFICATION = 2.0
# The widest rtol an element may be judged at when its finite difference is that uncertain;
# beyond it the element is inconclusive (float64: the 1e-4).
WIDEN_LIMIT = {np.dtype(np.float64): 1e-4, np.dtype(np.float32): 5e-2}

Evaluate = Callable[[np.ndarray, np.ndarray], object]


@dataclasses.dataclass
class Verdicts:
    """Per-element outcome for one target (arrays over the compared elements)."""

    indices: np.ndarray
    analytic: np.ndarray
    numeric: np.ndarray
    rel: np.ndarray
    status: np.ndarray
    plus: np.ndarray
    minus: np.ndarray
    step: np.ndarray
    tol: tolerance.Tolerance
    h: np.ndarray | None = None  # the first step of each element
    rtol_used: float = 0.0
    swept: int = 0          # elements that needed the step sweep
    rescued: int = 0        # of those, passing at the rtol asked for
    widened: int = 0        # judged at a widened rtol (rtol_used)
    round_off: float = 0.0  # the largest measured round-off / the dtype's prediction
    # Measured round-off at float32's level in a float64 check: the unit computes in float32
    # inside, so its analytic side is no better either.
    float32_inside: bool = False

    def counts(self) -> dict[str, int]:
        return {s: int(np.sum(self.status == s)) for s in ("pass", "fail", "kink", "inconclusive")}

    def inconclusive_count(self) -> int:
        return int(np.sum(self.status == "inconclusive"))


def judge(evaluate: Evaluate, analytic: np.ndarray, indices: np.ndarray, first, steps: np.ndarray,
          max_steps: np.ndarray, tol: tolerance.Tolerance, dtype) -> Verdicts:
    """Verdicts for the elements at ``indices`` (analytic gradients ``analytic``), given
    ``first`` = ``evaluate(indices, steps)``; ``max_steps`` caps each element's step."""
    dtype = np.dtype(dtype)
    analytic = np.asarray(analytic, dtype=np.float64)
    plus, minus, step = (np.asarray(first.plus, float), np.asarray(first.minus, float),
                         np.asarray(first.step, float))
    numeric = (plus - minus) / step
    noise = tolerance.round_off(dtype, np.asarray(first.scale, float), step)
    rel = tolerance.relative_error(analytic, numeric, tol, noise)
    status = np.where(np.asarray(first.kinked, bool), "kink",
                      np.where(rel > tol.rtol, "fail", "pass")).astype(object)
    steps = np.broadcast_to(np.asarray(steps, float), analytic.shape)
    v = Verdicts(indices, analytic, numeric, rel, status, plus, minus, step, tol, steps, tol.rtol)
    failing = np.flatnonzero(status == "fail")
    if len(failing):
        failing = failing[np.argsort(-rel[failing], kind="stable")][:MAX_RECHECK]
        max_steps = np.broadcast_to(np.asarray(max_steps, float), analytic.shape)
        _recheck(evaluate, v, failing, steps, max_steps, dtype)
    return v


def _recheck(evaluate: Evaluate, v: Verdicts, pos: np.ndarray, steps, max_steps, dtype) -> None:
    """The kink test, then the step sweep, for the failing elements at positions ``pos``."""
    sub, h = v.indices[pos], steps[pos]
    half = evaluate(sub, h / 2.0)
    base = np.asarray(evaluate(sub, np.zeros_like(h)).plus, float)
    values = kinks.stencil_values(v.minus[pos], half.minus, base, half.plus, v.plus[pos])
    error = np.abs(v.analytic[pos] - v.numeric[pos])
    point_noise = 4.0 * np.finfo(dtype).eps * np.asarray(half.scale, float)
    kinked = np.asarray(half.kinked, bool) | kinks.stencil_kinked(values, v.step[pos], error,
                                                                  point_noise)
    v.status[pos[kinked]] = "kink"
    keep = np.flatnonzero(~kinked)[:MAX_SWEEP]
    if len(keep) == 0:
        return
    pos, sub, h = pos[keep], sub[keep], h[keep]
    measured = kinks.noise(values[keep])
    predicted = np.maximum(point_noise[keep], np.finfo(np.float64).tiny)
    v.round_off = float(np.max(measured / predicted))
    if np.dtype(dtype) == np.float64:
        float32_level = FLOAT32_EVIDENCE * np.finfo(np.float32).eps * np.asarray(
            half.scale, float)[keep]
        # An objective that does not move at all (a forward that ignores the perturbation) has
        # no terms to measure round-off against: zero noise is no evidence of float32.
        evidence = (float32_level > 0) & (measured >= float32_level)
        v.float32_inside = bool(np.mean(evidence) >= 0.5)
    a = v.analytic[pos]
    tol = v.tol

    def enough(best):
        return DECISIVE_SHARE * (tol.rtol * np.maximum(np.abs(a), np.abs(best)) + tol.atol)

    best, err = ridders(evaluate, sub, h, max_steps[pos], enough, np.maximum(measured, predicted))
    _decide(v, pos, best, err, dtype)
    if v.float32_inside:
        # A disagreement within what float32 arithmetic allows proves nothing either way.
        band = tolerance.DEFAULTS[np.dtype(np.float32)].rtol
        size = np.maximum(np.abs(a), np.abs(v.numeric[pos]))
        within = (v.status[pos] == "fail") & (np.abs(a - v.numeric[pos]) <= band * size)
        v.status[pos[within]] = "inconclusive"


def ridders(evaluate: Evaluate, sub: np.ndarray, h: np.ndarray, cap: np.ndarray,
            enough=None, noise=None):
    """The best extrapolated derivative and its error estimate, per element.

    Each element's steps halve from its cap (a tenth of its scale) down to h/8; a Ridders
    tableau (NR 5.7, extrapolation factor 4 per halving) keeps the entry whose error estimate is
    smallest, and an element stops once its estimate gets worse (round-off has taken over), once
    ``enough(best)`` says its error is small enough to decide, or at its last step. A step whose
    branch state differs at +h and -h (a kink inside it) restarts the element's tableau.

    Two noisy entries can agree by luck, so the error estimate never drops below the round-off
    of the step the best entry came from: ``NOISE_AMPLIFICATION * noise / step``, with ``noise``
    the measured round-off of one objective value (per element)."""
    n = len(sub)
    top = np.maximum(np.asarray(cap, float), np.asarray(h, float))
    rows = int(np.clip(np.max(np.ceil(np.log2(top / (np.asarray(h, float) / 8.0)))), 0, 40)) + 1
    best, err = np.zeros(n), np.full(n, np.inf)
    floor = np.zeros(n) if noise is None else NOISE_AMPLIFICATION * np.asarray(noise, float)
    tables: list[list[float]] = [[] for _ in range(n)]
    active = np.ones(n, dtype=bool)
    for i in range(rows):
        step = top / 2.0 ** i
        active &= step >= h / 8.0
        at = np.flatnonzero(active)
        if len(at) == 0:
            break
        found = evaluate(sub[at], step[at])
        kinked = np.asarray(getattr(found, "kinked", np.zeros(len(at), bool)), bool)
        for e, value, kink in zip(at, np.asarray(found.numeric, float), kinked):
            if kink:
                tables[e] = []
                continue
            row, fac = [value], 4.0
            previous = tables[e]
            for j in range(1, len(previous) + 1):
                row.append((row[j - 1] * fac - previous[j - 1]) / (fac - 1.0))
                fac *= 4.0
                errt = max(abs(row[j] - row[j - 1]), abs(row[j] - previous[j - 1]),
                           floor[e] / step[e])
                if errt <= err[e]:
                    best[e], err[e] = row[j], errt
            if not previous and not np.isfinite(err[e]):
                best[e] = value
            elif previous and abs(row[-1] - previous[-1]) >= SAFE * err[e]:
                active[e] = False  # higher orders got worse: round-off dominates from here
            tables[e] = row
        if enough is not None:
            active &= ~(err <= enough(best))
    return best, err


def settle(a: np.ndarray, best: np.ndarray, err: np.ndarray, tol: tolerance.Tolerance, dtype):
    """Verdicts from extrapolated estimates ``best`` with error estimates ``err``: certain ones
    decide; uncertain ones are judged at a widened rtol (within WIDEN_LIMIT, and said) or are
    inconclusive unless they disagree beyond their own uncertainty. Returns the statuses, the
    relative errors, the rtol each was judged at and which were widened."""
    rtol, atol = tol.rtol, tol.atol
    size = np.maximum(np.abs(a), np.abs(best))
    gap = np.abs(a - best)
    # The rtol at which the estimate is certain to half the tolerance: rtol*size + atol >= 2 err.
    needed = np.where(2.0 * err <= atol, 0.0,
                      np.where(size > 0, (2.0 * err - atol) / np.maximum(size, 1e-300), np.inf))
    widened_rtol = np.maximum(rtol, needed)
    certain = widened_rtol <= rtol
    widen = ~certain & (widened_rtol <= WIDEN_LIMIT[np.dtype(dtype)])
    judged_rtol = np.where(widen, widened_rtol, rtol)
    agrees = gap <= judged_rtol * size + atol
    decisive_fail = gap > rtol * size + atol + err
    status = np.where(certain | widen, np.where(agrees, "pass", "fail"),
                      np.where(decisive_fail, "fail", "inconclusive"))
    return status, gap / (size + atol / judged_rtol), judged_rtol, widen


def _decide(v: Verdicts, pos: np.ndarray, best: np.ndarray, err: np.ndarray, dtype) -> None:
    """Apply ``settle`` to the swept elements at ``pos``."""
    status, rel, judged_rtol, widen = settle(v.analytic[pos], best, err, v.tol, dtype)
    v.status[pos] = status
    v.numeric[pos] = best
    v.rel[pos] = rel
    v.swept = len(pos)
    v.rescued = int(np.sum((status == "pass") & ~widen))
    v.widened = int(np.sum(widen))
    if v.widened:
        v.rtol_used = max(v.rtol_used, float(np.max(judged_rtol[widen])))
