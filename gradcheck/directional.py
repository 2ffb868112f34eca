"""Directional checks through the whole network: the analytic g . d against
(L(x + d) - L(x - d)) / 2 along random displacements d, two loss evaluations per direction
whatever the tensor's size.

- Per target (``directional`` mode, and to confirm which targets a root cause's wrong gradient
  reaches): a few random directions; a failing one is localised by bisection (group testing:
  the support is halved and each half checked the same way until groups are small enough to
  compare element by element).
- The safety net of ``full`` and ``sample`` modes: a few directions moving every parameter and
  the network input at once. Each unit's own check is exact by the chain rule; this confirms the
  network composes the units the way they were checked.

A displacement moves element i by eps * max(|x_i|, s) * (+-1) / sqrt(n): the element's own scale,
as for element checks, spread over the n elements moved.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck import kinks, tolerance
from gradcheck.compare import element_steps
from gradcheck.engine.base import Perturbed
from gradcheck.engine.tail import Move, TailProbe, displaced, runs
from gradcheck.judge import FLOAT32_EVIDENCE, POINT_ULPS, precision_band, settle
from gradcheck.sweep import ridders

# Bisection stops at groups this small and checks their elements one by one; at most this many
# failing groups are followed per level, so a tensor that is wrong everywhere costs no more.
LEAF_SIZE = 8
MAX_GROUPS = 8
# A direction whose branch states differ (a kink crossed somewhere) is drawn again, this often.
KINK_RETRIES = 3


@dataclasses.dataclass
class _Estimate:
    """What ``sweep.ridders`` reads of an evaluation: the numeric derivative and the size of
    the loss it came from."""

    numeric: np.ndarray
    scale: np.ndarray


@dataclasses.dataclass
class _Judged:
    """Directions (or groups) judged at their first displacement: the relative error, whether a
    branch state differed, the analytic and numeric directional derivatives, the losses, and the
    spread sqrt(sum((g_i d_i)**2)) of the analytic side's terms (the size their cancellation
    hides)."""

    rel: np.ndarray
    kinked: np.ndarray
    analytic: np.ndarray
    numeric: np.ndarray
    losses: Perturbed
    spread: np.ndarray


@dataclasses.dataclass
class Directional:
    """The outcome of the directional checks of one target (or of the whole network)."""

    directions: int = 0
    failed: int = 0
    kinked: int = 0
    inconclusive: int = 0
    worst_rel_error: float = 0.0
    # The widest rtol a direction was judged at, where its estimate could be no more certain
    # (``judge.settle``); 0 when none was widened.
    rtol_used: float = 0.0
    located: np.ndarray = dataclasses.field(default_factory=lambda: np.arange(0))
    located_failing: np.ndarray = dataclasses.field(default_factory=lambda: np.arange(0))
    located_rel: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    located_numeric: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    @property
    def status(self) -> str:
        if self.failed:
            return "fail"
        if self.directions and self.kinked == self.directions:
            return "kink"
        return "pass" if self.directions else "skipped"


class Directions:
    """Directional checks of the arrays a ``TailProbe`` perturbs, with their analytic
    gradients ``grads`` and scale floors ``floors`` (``compare.scale_floor``: element i's scale
    is max(|x_i|, floor))."""

    def __init__(self, probe: TailProbe, grads: list[np.ndarray], floors: list[float],
                 tol: tolerance.Tolerance, dtype, band: float | None = None):
        # ``band``: a unit on the way computes in float32 inside; a disagreement within this
        # relative size is inconclusive, not a failure.
        self.band = band
        self.probe = probe
        self.grads = [np.asarray(g, dtype=np.float64).reshape(-1) for g in grads]
        self.floors = [float(f) for f in floors]
        self.tol = tol
        self.dtype = np.dtype(dtype)

    def judge(self, signs: list[np.ndarray], groups: list[list[slice]],
              factor: float = 1.0) -> _Judged:
        """Each group moved along ``signs``: ``groups[j]`` holds, per array, the flat positions
        group j moves; ``factor`` scales the displacement. Every array-sized quantity (the
        displacement, the values it stores, their products with the gradient) is computed a run
        of positions at a time, never held whole."""
        eps = self.tol.eps * factor
        moves, analytic, spreads = [], [], []
        for group in groups:
            count = max(1, sum(p.stop - p.start for p in group))
            move = Move(group, self._amount(signs, eps, np.sqrt(count)))
            along, spread = self._analytic(move, eps)
            moves.append(move)
            analytic.append(along)
            spreads.append(np.sqrt(spread))
        found = self.probe.evaluate_displaced(moves)
        analytic, spreads = np.array(analytic), np.array(spreads)
        numeric = (found.plus - found.minus) / (2.0 * eps)
        noise = tolerance.round_off(self.dtype, found.scale, np.full(len(groups), 2.0 * eps))
        scale = (np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), spreads)
                 + (self.tol.atol + noise) / self.tol.rtol)
        return _Judged(np.abs(analytic - numeric) / scale, found.kinked, analytic, numeric, found,
                       spreads)

    def _amount(self, signs: list[np.ndarray], eps: float, root: float):
        """d for a run of array a: eps * (each element's scale) * its sign / ``root``."""
        def amount(a: int, run: slice, keep: np.ndarray) -> np.ndarray:
            return eps * np.maximum(np.abs(keep), self.floors[a]) * signs[a][run] / root
        return amount

    def _analytic(self, move: Move, eps: float) -> tuple[float, float]:
        """g . (the half-difference of the values ``move`` stores) / eps, and the sum of the
        squared terms of that product (the spread its round-off scales with)."""
        along, spread = 0.0, 0.0
        for a, positions in enumerate(move.positions):
            array = self.probe.arrays[a]
            flat = np.ascontiguousarray(array).reshape(-1)  # a transposed view: read a copy
            for run in runs(positions):
                keep = flat[run].astype(np.float64)
                d = move.amount(a, run, keep)
                moved = (displaced(keep, d, 1.0, flat.dtype).astype(np.float64)
                         - displaced(keep, d, -1.0, flat.dtype)) / 2.0
                g = self.grads[a][run]
                along += float(g @ moved)
                spread += float(np.sum(np.square(g * d / eps)))
        return along / eps, spread

    def check(self, n_directions: int, rng, localise: bool = True) -> Directional:
        """``n_directions`` random directions over every element (a kinked one is redrawn up to
        KINK_RETRIES times); a failing one localised by bisection when ``localise``."""
        result = Directional()
        if not any(g.size for g in self.grads):
            return result
        everything = [[slice(0, g.size) for g in self.grads]]
        retries = 0
        while result.directions < n_directions:
            signs = [_signs(rng, g.size) for g in self.grads]
            first = self.judge(signs, everything)
            rel = first.rel
            # A branch state that changed is the units' own claim: a failing direction is a
            # kink only where the loss is seen to bend (``_settle``).
            status = "kink" if first.kinked[0] else "pass"
            if rel[0] > self.tol.rtol:
                status, rel, judged_rtol = self._settle(signs, everything, first)
                result.rtol_used = max(result.rtol_used, judged_rtol)
            if status == "kink" and retries < KINK_RETRIES:
                retries += 1
                continue
            result.directions += 1
            if status == "kink":
                result.kinked += 1
                continue
            result.worst_rel_error = max(result.worst_rel_error, float(rel[0]))
            if status == "inconclusive":
                result.inconclusive += 1
            elif status == "fail":
                result.failed += 1
                if localise and not len(result.located):
                    self._localise(signs, result)
        return result

    def _settle(self, signs, everything, first: _Judged):
        """A failing direction looked at again as a failing element is (``gradcheck.judge``):
        the loss at -1, -1/2, 0, 1/2 and 1 times the displacement says whether it bends at one
        point (a kink the direction crosses, for units without ``branch_state``: "kink") and
        how much round-off it carries; then a Ridders sweep over the displacement's size (up to
        a tenth of each element's scale) whose error estimate never drops below that round-off,
        and only a certain disagreement fails (``judge.settle``). Round-off at float32's level
        in a float64 check means a unit on the way computes in float32: a disagreement within
        float32's rtol is then inconclusive. The analytic side is a sum whose terms may cancel:
        its size for the tolerances is at least their spread, as for the first comparison."""
        eps = self.tol.eps
        analytic, losses = first.analytic, first.losses
        half = self.judge(signs, everything, 0.5).losses
        base = np.array([self.probe.loss()[0]])
        values = kinks.stencil_values(losses.minus, half.minus, base, half.plus, losses.plus)
        ulp = POINT_ULPS * np.finfo(self.dtype).eps
        # Any bend is a kink here, whatever the error, as a branch state that differs is: a
        # direction moves many elements, and where several sit at one kink (a tie in a max) the
        # analytic side is a subgradient whose value along the direction need not lie between
        # the two one-sided slopes, so the bend need not explain the error.
        if kinks.stencil_kinked(values, np.full(1, 2.0 * eps), np.zeros(1), ulp * losses.scale,
                                first.kinked[:1])[0]:
            return "kink", np.zeros(1), 0.0
        measured = kinks.noise(values)
        loss = float(losses.scale[0])
        inside = self.dtype == np.float64 and \
            measured[0] >= FLOAT32_EVIDENCE * np.finfo(np.float32).eps * loss > 0
        band = max(self.band or 0.0,
                   precision_band(float(measured[0]) / loss if loss else 0.0, inside))
        count = sum(g.size for g in self.grads)

        def evaluate(_, steps):
            # Steps in units of eps: the derivative's denominator, as an element's step is.
            judged = self.judge(signs, everything, float(steps[0]) / eps)
            return _Estimate(judged.numeric, judged.losses.scale)

        tol = self.tol

        def enough(best):
            size = np.maximum(np.maximum(np.abs(analytic), np.abs(best)), first.spread)
            return 0.25 * (tol.rtol * size + tol.atol)

        best, err = ridders(evaluate, np.arange(1), np.full(1, eps),
                            np.full(1, np.sqrt(count) / 10.0), enough,
                            np.maximum(measured, ulp * losses.scale), ulp, analytic)
        status, rel, judged, widened = settle(analytic, best, err, self.tol, self.dtype,
                                              first.spread)
        judged_rtol = float(judged[0]) if widened[0] else 0.0
        size = max(abs(float(analytic[0])), abs(float(best[0])), float(first.spread[0]))
        if status[0] == "fail" and abs(float(analytic[0]) - float(best[0])) <= band * size:
            return "inconclusive", rel, judged_rtol
        return str(status[0]), rel, judged_rtol

    def _localise(self, signs, result: Directional) -> None:
        """Group testing on the first array: split failing groups in halves until they are
        small, then compare those elements one by one through the network."""
        groups = [slice(0, self.grads[0].size)]
        leaves: list[slice] = []
        while groups:
            halves = [h for grp in groups for h in _halves(grp) if h.stop > h.start]
            groups_judged = self.judge(signs, [[h] for h in halves])
            rel, kinked = groups_judged.rel, groups_judged.kinked
            failing = [i for i in np.argsort(-rel) if rel[i] > self.tol.rtol and not kinked[i]]
            groups = []
            for i in failing[:MAX_GROUPS]:
                small = halves[i].stop - halves[i].start <= LEAF_SIZE
                (leaves if small else groups).append(halves[i])
        if not leaves:
            return
        located = np.unique(np.concatenate([np.arange(h.start, h.stop) for h in leaves]))
        steps, _ = element_steps(self.probe.arrays[0], located, self.tol.eps)
        found = self.probe.evaluate(located, steps)
        noise = tolerance.round_off(self.dtype, found.scale, found.step)
        rel = tolerance.relative_error(self.grads[0][located], found.numeric, self.tol, noise)
        result.located, result.located_rel = located, rel
        result.located_numeric = found.numeric
        result.located_failing = located[(rel > self.tol.rtol) & ~found.kinked]


def _signs(rng, size: int) -> np.ndarray:
    """A random +-1 per element, as int8 (the draw of ``rng.choice([-1.0, 1.0], size)``)."""
    signs = rng.integers(0, 2, size=size).astype(np.int8)
    signs *= 2
    signs -= 1
    return signs


def _halves(group: slice) -> tuple[slice, slice]:
    """``group`` split in two, the first half the larger (as ``np.array_split``)."""
    middle = group.start + (group.stop - group.start + 1) // 2
    return slice(group.start, middle), slice(middle, group.stop)
