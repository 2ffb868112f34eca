"""The step sweep: a derivative estimated from central differences at many steps, with an
estimate of its own error, for elements whose first comparison failed (``gradcheck.judge``) and
for failing directions (``gradcheck.directional``).

Steps are h * 2**level for an element's first step h. The sweep

1. measures the objective's round-off from the differences at the smallest steps, h/8 ... 4h
   (``_sweep_noise``);
2. climbs from h while the difference still behaves like a derivative (``_climb``): changing
   by little from one step to the next, or by round-off alone, and growing as step**2 where
   truncation shows;
3. extrapolates from that step down to h/8 in a Ridders tableau (NR 5.7) whose error estimate
   never drops below the round-off at the step it came from.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# Ridders' constant: stop once an extrapolation is SAFE times worse than the best so far.
SAFE = 2.0
# Climbing stops where the difference changes by more than this share of itself from the step
# below while truncation dominates (its change is more than ROUND_OFF_MARGIN times round-off),
# or where two such changes in a row do not grow by a factor within TRUNCATION_GROWTH (4 for
# c * step**2): still near the derivative, so extrapolation converges from there.
TAYLOR_CHANGE = 0.01
ROUND_OFF_MARGIN = 4.0
TRUNCATION_GROWTH = (2.0, 8.0)
# Steps run from level -LOWEST_LEVEL (h/8) up to at most MAX_LEVEL; the levels below
# NOISE_LEVELS (h/8 ... 4h) measure the round-off.
LOWEST_LEVEL = 3
MAX_LEVEL = 40
NOISE_LEVELS = 3
# Two agreeing steps whose estimate misses the analytic value by this many times the error
# that decides it fail at once, without climbing further (``_clear``).
CLEAR_MISS = 400.0
# The step of the third estimate before an early decision: 2**0.3 (~1.23) times the lower of
# two, an irrational ratio, so no whole number of quanta scales to a whole number.
ODD_LEVEL = 0.3
# A value rounded to a grid of quantum q is off by about this share of q (1 / sqrt(12)).
QUANTUM_ROUND_OFF = 0.3
# The round-off of a (possibly extrapolated) central difference at step h, per unit of one
# objective value's noise: sqrt(2)/2 for the difference, times what extrapolation amplifies.
NOISE_AMPLIFICATION = 2.0

Evaluate = Callable[[np.ndarray, np.ndarray], object]


def ridders(evaluate: Evaluate, sub: np.ndarray, h: np.ndarray, cap: np.ndarray,
            enough=None, noise=None, relative: float = 0.0, analytic=None):
    """The best extrapolated derivative and its error estimate, per element.

    Where to start: each element climbs from its first step h, doubling, while the difference
    still behaves like a derivative (``_climb``): the largest step whose estimate is within
    TAYLOR_CHANGE of the one at half of it, or whose change is round-off, up to ``cap`` (a tenth
    of the element's scale). The element's own size is a poor guide to the scale its function
    varies on: an input of 1e4 that varies by 1 (a normalisation after an offset) is smooth
    over steps of 0.1, not 1e3, and a difference over 1e3 can level off at a value that
    extrapolation takes for converged.

    From there the steps halve down to h/8 in a Ridders tableau (NR 5.7, extrapolation factor 4
    per halving) that keeps the entry whose error estimate is smallest; an element stops once
    its estimate gets worse (round-off has taken over), once ``enough(best)`` says its error is
    small enough to decide, or at its last step. A step whose branch state differs at +h and -h
    (a kink inside it) restarts the element's tableau.

    Two noisy entries can agree by luck, so the error estimate never drops below the round-off
    of the step the best entry came from: ``NOISE_AMPLIFICATION * noise / step``, with ``noise``
    the measured round-off of one objective value (per element), and never below ``relative``
    (the unit's relative round-off: a few ulps of the dtype, or more where it was measured)
    times the largest size of the terms the objective summed at any of the element's steps so
    far (``scale`` of an evaluation, when it has one). The round-off measured at the first step
    alone is not enough: an objective whose change at a small step is below one ulp of its terms
    (a saturated tanh in float32) does not move at all, shows no noise, and its differences at
    the next steps are whole numbers of ulps that halve with the step, so they agree by
    construction."""
    n = len(sub)
    h = np.asarray(h, float)
    cap = np.maximum(np.asarray(cap, float), h)
    steps = _Steps(evaluate, sub, h)
    lowest_top = np.minimum(_highest_level(h, cap), NOISE_LEVELS - 1)
    noise = np.maximum(np.zeros(n) if noise is None else np.asarray(noise, float),
                       _sweep_noise(steps, lowest_top))

    def floor():
        return NOISE_AMPLIFICATION * np.maximum(noise, relative * steps.sizes)

    top = _climb(steps, cap, floor, _clear(enough, analytic))
    # Up to the step that ended the climb: a quantum the smallest steps hid can show there.
    read = np.minimum(np.maximum(top + 1, lowest_top), _highest_level(h, cap))
    noise = np.maximum(noise, _sweep_noise(steps, read))
    best, err = np.zeros(n), np.full(n, np.inf)
    tables: list[list[float]] = [[] for _ in range(n)]
    active = np.ones(n, dtype=bool)
    for i in range(int(np.max(top, initial=0)) + LOWEST_LEVEL + 1):
        level = top - i
        active &= level >= -LOWEST_LEVEL
        at = np.flatnonzero(active)
        if len(at) == 0:
            break
        value, kinked = steps.at(at, level[at])
        below = floor()
        for e, estimate, kink in zip(at, value, kinked):
            if kink:
                tables[e] = []
                continue
            step = h[e] * 2.0 ** level[e]
            row, fac = [estimate], 4.0
            previous = tables[e]
            for j in range(1, len(previous) + 1):
                row.append((row[j - 1] * fac - previous[j - 1]) / (fac - 1.0))
                fac *= 4.0
                errt = max(abs(row[j] - row[j - 1]), abs(row[j] - previous[j - 1]),
                           below[e] / step)
                if errt <= err[e]:
                    best[e], err[e] = row[j], errt
            if not previous and not np.isfinite(err[e]):
                best[e] = estimate
            elif previous and abs(row[-1] - previous[-1]) >= SAFE * err[e]:
                active[e] = False  # higher orders got worse: round-off dominates from here
            tables[e] = row
        if enough is not None:
            active &= ~(err <= enough(best))
    return best, err


class _Steps:
    """Numeric derivatives of each element at steps h * 2**level, evaluated once each."""

    def __init__(self, evaluate: Evaluate, sub: np.ndarray, h: np.ndarray):
        self.evaluate, self.sub, self.h = evaluate, sub, h
        # (element, level) -> numeric derivative, kink flag, size of the objective's terms
        self.found: dict[tuple[int, float], tuple[float, bool, float]] = {}
        self.sizes = np.zeros(len(sub))  # the largest size of the objective's terms seen

    def at(self, which: np.ndarray, levels: np.ndarray, moved: bool = False):
        """The numeric derivative and kink flag of elements ``which`` at ``levels`` (and, with
        ``moved``, whether the objective moved there: an evaluation without ``scale`` counts as
        moved)."""
        missing = [k for k, (e, lv) in enumerate(zip(which, levels))
                   if (int(e), float(lv)) not in self.found]
        if missing:
            e, lv = which[missing], levels[missing]
            found = self.evaluate(self.sub[e], self.h[e] * 2.0 ** lv)
            kinked = np.asarray(getattr(found, "kinked", np.zeros(len(e), bool)), bool)
            size = np.asarray(getattr(found, "scale", np.full(len(e), np.inf)), float)
            self.sizes[e] = np.maximum(self.sizes[e], np.where(np.isfinite(size), size, 0.0))
            for k, (element, level) in enumerate(zip(e, lv)):
                self.found[(int(element), float(level))] = (float(found.numeric[k]),
                                                            bool(kinked[k]), float(size[k]))
        rows = [self.found[(int(e), float(lv))] for e, lv in zip(which, levels)]
        value = np.array([r[0] for r in rows])
        kinked = np.array([r[1] for r in rows], dtype=bool)
        if moved:
            return value, kinked, np.array([r[2] > 0 for r in rows], dtype=bool)
        return value, kinked


def _sweep_noise(steps: _Steps, top: np.ndarray) -> np.ndarray:
    """The round-off of one objective value, per element, read from its estimates at steps
    s = h/8 ... h * 2**top, the larger of two readings:

    - Independent noise: there a difference is the derivative plus truncation (c * s**2, and
      c' * s**4 over seven steps or more) plus round-off of size noise / (sqrt(2) s),
      independent from step to step; a least-squares fit of the first two, weighted by s**2,
      leaves the third (six steps: four degrees of freedom, where one stencil has one, and a
      quantised objective can hide from that one: its rounding at +t and -t cancels there).
    - A quantum: the objective's change over a step, f(x + s) - f(x - s), of a smooth function
      doubles with s up to truncation, c * s**3; one computed in coarse arithmetic moves in
      whole quanta, and can double exactly over many small steps (agreeing estimates that prove
      nothing) until a step where it breaks by one quantum. The smallest nonzero break,
      |change(2s) - 2 change(s)|, is that quantum (for a smooth function: its truncation at the
      smallest step, negligible); a rounding error is about 0.3 of it."""
    n = len(steps.h)
    for level in range(-LOWEST_LEVEL, int(np.max(top, initial=0)) + 1):
        which = np.flatnonzero(top >= level)
        steps.at(which, np.full(len(which), level))  # evaluated together, read below
    noise = np.zeros(n)
    for e in range(n):
        used = np.arange(-LOWEST_LEVEL, int(top[e]) + 1)
        values, kinked = steps.at(np.full(len(used), e), used)
        powers = 3 if len(used) >= 7 else 2
        if kinked.any() or len(used) <= powers:
            continue
        step = steps.h[e] * 2.0 ** used
        relative_step = step / step[-1]
        design = np.stack([relative_step ** (2 * p) for p in range(powers)], axis=1)
        fit, *_ = np.linalg.lstsq(design * relative_step[:, None], values * relative_step,
                                  rcond=None)
        residual = values - design @ fit
        independent = np.sqrt(2.0 * np.sum((step * residual) ** 2) / (len(used) - powers))
        change = 2.0 * step * values
        breaks = np.abs(change[1:] - 2.0 * change[:-1])
        breaks = breaks[breaks > 0]
        quantum = QUANTUM_ROUND_OFF * float(np.min(breaks)) if len(breaks) else 0.0
        noise[e] = max(independent, quantum)
    return noise


def _highest_level(h: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """The highest level whose step h * 2**level is within ``cap`` (at least 0)."""
    level = np.floor(np.log2(np.maximum(cap, h) / h) + 1e-9)
    return np.clip(level, 0, MAX_LEVEL).astype(int)


def _clear(enough, analytic):
    """Whether an estimate with a given error decides an element at once: the error is within
    ``enough`` and the estimate either agrees with ``analytic`` to ``enough`` or misses it by
    CLEAR_MISS times that (a weight of a linear layer: no truncation to climb away from, so
    climbing further only costs time). Anything in between climbs on."""
    if enough is None or analytic is None:
        return None
    analytic = np.asarray(analytic, float)

    def clear(at: np.ndarray, value: np.ndarray, error: np.ndarray) -> np.ndarray:
        full = np.zeros(len(analytic))
        full[at] = value
        bound = np.asarray(enough(full), float)[at]
        miss = np.abs(value - analytic[at])
        return (error <= bound) & ((miss <= bound) | (miss >= CLEAR_MISS * bound))

    return clear


def _climb(steps: _Steps, cap: np.ndarray, floor, clear=None) -> np.ndarray:
    """Each element's top level: doubling from its first step while the estimate changes by
    less than TAYLOR_CHANGE of itself from the step below, or by no more than ROUND_OFF_MARGIN
    times its round-off there (``floor() / step``), with no kink crossed, up to ``cap``. Where
    truncation dominates two changes in a row, each must be TRUNCATION_GROWTH times the last,
    as c * step**2 is: a change that stops growing (the estimate turning back) has left the
    range where the expansion in step**2 holds, however small it is. An element stops early
    where ``clear`` says two steps decide it at once (``_clear``), and a third step 2**0.3
    times the lower one agrees: an objective computed in coarse arithmetic moves in whole
    quanta, and its changes can double exactly with the step over many steps, agreeing at a
    value off by a few quanta, which a step no rational ratio apart exposes."""
    n = len(steps.h)
    highest = _highest_level(steps.h, cap)
    top = np.zeros(n, dtype=int)
    climbing = highest > 0
    below, _, moved_below = steps.at(np.arange(n), np.zeros(n, dtype=int), moved=True)
    last_change = np.zeros(n)  # the last change where truncation dominated, else 0
    for level in range(1, int(np.max(highest, initial=0)) + 1):
        at = np.flatnonzero(climbing & (highest >= level))
        if len(at) == 0:
            break
        value, kinked, moved = steps.at(at, np.full(len(at), level), moved=True)
        change = np.abs(value - below[at])
        size = np.maximum(np.abs(value), np.abs(below[at]))
        round_off = floor()[at] / (steps.h[at] * 2.0 ** (level - 1))
        # An objective that did not move at a step (its change below its resolution) says
        # nothing there: no step to compare with, nor one to start from.
        both = moved & moved_below[at]
        truncation = both & (change > ROUND_OFF_MARGIN * round_off)
        low, high = TRUNCATION_GROWTH
        grown = change / np.where(last_change[at] > 0, last_change[at], np.inf)
        turned = truncation & (last_change[at] > 0) & ((grown < low) | (grown > high))
        coarse = kinked | turned | (truncation & (change > TAYLOR_CHANGE * size))
        last_change[at] = np.where(truncation, change, 0.0)
        top[at[~coarse & moved]] = level
        settled = np.zeros(len(at), dtype=bool) if clear is None else \
            both & clear(at, value, np.maximum(change, round_off))
        if settled.any():
            candidates = at[settled]
            odd, _ = steps.at(candidates, np.full(len(candidates), level - 1 + ODD_LEVEL))
            settled[settled] = clear(candidates, odd, np.abs(odd - value[settled]))
        climbing[at[coarse | settled]] = False
        below[at] = value
        moved_below[at] = moved
    return top
