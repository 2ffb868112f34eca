"""From objective values at +h and -h to a verdict per element: pass, fail, kink or inconclusive.

The step is per element (``steps``): h = eps * max(|x_i|, s), s the tensor's scale, so a
parameter of 1e-4 is not perturbed by 1% of itself while a weight of 3 gets a step it can feel.
An element that agrees at that step passes. One that does not is looked at again:

1. **Kink.** The objective along the element bends (``gradcheck.kinks``): a central difference
   there averages two slopes and proves nothing. Reported, never a failure. A unit's branch
   state that differed at +h and -h says where to expect one (several bends may then be
   crossed), but only the objective's own values confirm it: a ``branch_state`` that lies
   cannot turn a wrong gradient into a kink.
2. **Round-off.** What a cubic cannot fit on the five points -h, -h/2, 0, h/2, h is the
   objective's own noise, pooled over the target's rechecked elements relative to the size of
   the terms it sums: the unit's measured relative round-off. At float32's level in a float64
   network the unit computes in float32 inside (said, with the number measured).
3. **Step sweep** (``gradcheck.sweep``: Ridders' extrapolation, Numerical Recipes 5.7, from
   the largest step that still behaves like a derivative down to h/8): the estimate with the
   least truncation and round-off, and how far it can be trusted. Then (``settle``):
   - the estimate is certain to half the tolerance: the element passes or fails on it;
   - it is not, but a tolerance up to ``WIDEN_LIMIT`` would make it certain: judged at that
     tolerance, which the report states (JSON ``rtol`` of the target) — never silently;
   - otherwise it fails only if it disagrees beyond the estimate's own uncertainty, and is
     ``inconclusive`` ("truncation and round-off overlap at every step") if not.
4. **Precision.** The analytic side is computed with the unit's own arithmetic: a failure
   within what its measured round-off allows (``precision_band``: float32's rtol for a unit
   computing in float32 inside, proportionally less for less round-off) is inconclusive, and
   the report says so.

``judge`` runs on any ``evaluate(flat_indices, steps) -> Perturbed``: a unit's own objective
(``engine.local``) or the network's loss (``engine.tail``).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck import kinks, tolerance
from gradcheck.sweep import NOISE_AMPLIFICATION, Evaluate, ridders

# Failing elements per target that get the kink test (2 evaluations each) and, of those not at
# a kink, the step sweep (``gradcheck.sweep``), worst first. Failures beyond these are judged
# by what the sweep found (``_unswept``).
MAX_RECHECK = 4096
MAX_SWEEP = 256
# An estimate whose error is below this share of the element's tolerance decides it.
DECISIVE_SHARE = 0.25
# Measured round-off of at least this share of float32's epsilon (relative to the terms the
# objective sums) is evidence that a unit of a float64 network computes in float32 inside.
FLOAT32_EVIDENCE = 0.1
# The round-off of one objective value, in units of the dtype's epsilon times the size of the
# terms it sums (a few ulps: the sum and the products before it).
POINT_ULPS = 4.0
# The widest rtol an element may be judged at when its finite difference is that uncertain;
# beyond it the element is inconclusive (float64: the 1e-4).
WIDEN_LIMIT = {np.dtype(np.float64): 1e-4, np.dtype(np.float32): 5e-2}
# The statuses at the first step, picked by index: an object array built from a string array
# costs six times as long (statuses are objects: "inconclusive" may replace any of them).
_FIRST_STATUSES = np.array(["fail", "kink", "pass"], dtype=object)


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
    round_off: float = 0.0  # the measured relative round-off / the dtype's prediction
    # Measured round-off at float32's level in a float64 check: the unit computes in float32
    # inside, so its analytic side is no better either.
    float32_inside: bool = False
    # A disagreement within this relative size is inconclusive: the measured round-off leaves it
    # unresolved (``precision_band``); 0 when it is within the rtol asked for.
    band: float = 0.0
    unswept: int = 0        # failing at the first step, beyond the elements swept
    relative_round_off: float = 0.0  # measured, pooled over the rechecked elements

    def counts(self) -> dict[str, int]:
        found, left = {}, len(self.status)
        for status in ("pass", "fail", "kink", "inconclusive"):
            # Comparing strings costs ~10 ns an element: none are left once all are counted.
            found[status] = int(np.count_nonzero(self.status == status)) if left else 0
            left -= found[status]
        return found


def judge(evaluate: Evaluate, analytic: np.ndarray, indices: np.ndarray, first, steps: np.ndarray,
          max_steps: np.ndarray, tol: tolerance.Tolerance, dtype) -> Verdicts:
    """Verdicts for the elements at ``indices`` (analytic gradients ``analytic``), given
    ``first`` = ``evaluate(indices, steps)``; ``max_steps`` caps each element's step."""
    dtype = np.dtype(dtype)
    analytic = np.asarray(analytic, dtype=np.float64)
    plus, minus, step = (np.asarray(first.plus, float), np.asarray(first.minus, float),
                         np.asarray(first.step, float))
    numeric = (plus - minus) / step
    sizes = np.asarray(first.scale, float)
    noise = tolerance.round_off(dtype, sizes, step)
    rel = tolerance.relative_error(analytic, numeric, tol, noise)
    # A branch state that differs at +h and -h is the layer's own claim: an element that fails
    # is a kink only where its objective is seen to bend (``_recheck``), so a layer whose
    # ``branch_state`` lies cannot hide a wrong gradient behind it.
    claimed = np.broadcast_to(np.asarray(first.kinked, bool), analytic.shape)
    status = _FIRST_STATUSES[np.where(rel > tol.rtol, 0, np.where(claimed, 1, 2))]
    steps = np.broadcast_to(np.asarray(steps, float), analytic.shape)
    v = Verdicts(indices, analytic, numeric, rel, status, plus, minus, step, tol, steps, tol.rtol)
    failing = np.flatnonzero(status == "fail")
    if len(failing):
        failing = failing[np.argsort(-rel[failing], kind="stable")]
        # Every claimed kink gets the stencil, past MAX_RECHECK too: unlooked-at, it would
        # be judged like a failure (a max-pool over many tied zeros claims thousands).
        failing = failing[(np.arange(len(failing)) < MAX_RECHECK) | claimed[failing]]
        max_steps = np.broadcast_to(np.asarray(max_steps, float), analytic.shape)
        swept = _recheck(evaluate, v, failing, steps, max_steps, sizes, dtype, claimed)
        rest = np.flatnonzero(v.status == "fail")
        rest = rest[~np.isin(rest, swept)]
        if len(rest):
            _unswept(v, rest, swept, sizes)
    return v


def _recheck(evaluate: Evaluate, v: Verdicts, pos: np.ndarray, steps, max_steps, sizes,
             dtype, claimed: np.ndarray) -> np.ndarray:
    """The kink test, then the step sweep, for the failing elements at positions ``pos``;
    ``sizes``: the size of the terms each element's objective summed at its first step;
    ``claimed``: per element, whether the unit's branch state changed across its step.
    Returns the positions swept."""
    sub, h = v.indices[pos], steps[pos]
    half = evaluate(sub, h / 2.0)
    # The terms' size at h or h/2, whichever moved: a coarse forward may not move at h/2.
    sizes = np.maximum(sizes[pos], np.asarray(half.scale, float))
    base = np.asarray(evaluate(sub, np.zeros_like(h)).plus, float)
    values = kinks.stencil_values(v.minus[pos], half.minus, base, half.plus, v.plus[pos])
    error = np.abs(v.analytic[pos] - v.numeric[pos])
    ulp = POINT_ULPS * np.finfo(dtype).eps
    point_noise = ulp * sizes
    said = claimed[pos] | np.asarray(half.kinked, bool)
    kinked = kinks.stencil_kinked(values, v.step[pos], error, point_noise, said)
    v.status[pos[kinked]] = "kink"
    keep = np.flatnonzero(~kinked)[:MAX_SWEEP]
    if len(keep) == 0:
        return keep
    evaluate = _unclaimed(evaluate, sub[said & ~kinked])
    pos, sub, h = pos[keep], sub[keep], h[keep]
    measured = kinks.noise(values[keep])
    predicted = point_noise[keep]
    moved = predicted > 0
    # One stencil estimates its element's round-off from one degree of freedom, which sees only
    # the even part of the noise: it comes out near 0 by chance, and exactly 0 for many
    # elements of a quantised forward, whose rounding at +t and -t cancels in it. The unit's
    # relative round-off pooled over its rechecked elements (root mean square) is a floor for
    # each.
    pooled = 0.0
    if moved.any():
        pooled = float(np.sqrt(np.mean(np.square(measured[moved] / sizes[keep][moved]))))
        v.round_off = pooled / ulp
        v.relative_round_off = pooled
    noise = np.maximum.reduce([measured, predicted, pooled * sizes[keep]])
    if np.dtype(dtype) == np.float64:
        float32_level = FLOAT32_EVIDENCE * np.finfo(np.float32).eps * sizes[keep]
        # An objective that does not move at all (a forward that ignores the perturbation) has
        # no terms to measure round-off against: zero noise is no evidence of float32.
        evidence = moved & (measured >= float32_level)
        v.float32_inside = bool(np.mean(evidence) >= 0.5)
    a = v.analytic[pos]
    tol = v.tol

    def enough(best):
        return DECISIVE_SHARE * (tol.rtol * np.maximum(np.abs(a), np.abs(best)) + tol.atol)

    best, err = ridders(evaluate, sub, h, max_steps[pos], enough, noise, max(ulp, pooled), a)
    _decide(v, pos, best, err, dtype)
    # A disagreement within what the unit's arithmetic allows proves nothing either way.
    band = precision_band(pooled, v.float32_inside)
    if band > tol.rtol:
        v.band = band
        size = np.maximum(np.abs(a), np.abs(v.numeric[pos]))
        within = (v.status[pos] == "fail") & (np.abs(a - v.numeric[pos]) <= band * size)
        v.status[pos[within]] = "inconclusive"
    return pos


def _unclaimed(evaluate: Evaluate, refuted: np.ndarray) -> Evaluate:
    """``evaluate``, except that the elements ``refuted`` (whose branch state claimed a kink
    their objective did not show) claim none: their sweep reads their objective, not the
    state that was just caught lying about it."""
    if len(refuted) == 0:
        return evaluate

    def without_claims(flat_indices, steps):
        found = evaluate(flat_indices, steps)
        kinked = np.asarray(found.kinked, bool) & ~np.isin(flat_indices, refuted)
        return dataclasses.replace(found, kinked=kinked)
    return without_claims


def _unswept(v: Verdicts, rest: np.ndarray, swept: np.ndarray, sizes: np.ndarray) -> None:
    """Elements that failed at their first step but were not swept (beyond MAX_RECHECK or
    MAX_SWEEP, worse ones first), judged by what the sweep measured: their first difference
    compared again with the unit's measured round-off in the noise term (the tolerance rule of
    ``gradcheck.tolerance``, with the round-off measured instead of predicted) and within the
    precision band inconclusive; the others fail if a swept element of the target failed too,
    and are inconclusive if none did (the sweep found the worst ones right: a first step that
    fails does not show these wrong)."""
    v.unswept = len(rest)
    a, numeric = v.analytic[rest], v.numeric[rest]
    noise = NOISE_AMPLIFICATION * v.relative_round_off * sizes[rest] / v.h[rest]
    rel = tolerance.relative_error(a, numeric, v.tol, noise)
    size = np.maximum(np.abs(a), np.abs(numeric))
    confirmed = bool(np.any(v.status[swept] == "fail"))
    status = np.where(rel <= v.tol.rtol, "pass",
                      np.where(np.abs(a - numeric) <= v.band * size, "inconclusive",
                               "fail" if confirmed else "inconclusive"))
    v.status[rest] = status
    v.rel[rest] = np.where(status == "pass", rel, v.rel[rest])


def precision_band(relative_round_off: float, float32_inside: bool = False) -> float:
    """The relative disagreement a unit's measured round-off leaves unresolved: its analytic
    side is computed with the same arithmetic, so it is no more precise than its forward.
    float32's rtol scaled to the measured round-off (float32's own epsilon gets float32's rtol,
    the policy of float32 networks), at most float32's rtol, and all of it for a unit that
    computes in float32 inside. Round-off at float64's level gives ~1e-11: no band at all."""
    rtol = tolerance.DEFAULTS[np.dtype(np.float32)].rtol
    if float32_inside:
        return rtol
    return min(rtol, rtol * relative_round_off / float(np.finfo(np.float32).eps))


def settle(a: np.ndarray, best: np.ndarray, err: np.ndarray, tol: tolerance.Tolerance, dtype,
           size_floor=0.0):
    """Verdicts from extrapolated estimates ``best`` with error estimates ``err``: certain ones
    decide; uncertain ones are judged at a widened rtol (within WIDEN_LIMIT, and said) or are
    inconclusive unless they disagree beyond their own uncertainty. ``size_floor``: the least
    size the relative tolerance applies to (a directional sum's spread). Returns the statuses,
    the relative errors, the rtol each was judged at and which were widened."""
    rtol, atol = tol.rtol, tol.atol
    size = np.maximum(np.maximum(np.abs(a), np.abs(best)), size_floor)
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
