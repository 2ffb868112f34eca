"""From losses at x+h and x-h to a verdict per element: pass, fail, kink or inconclusive.

An element that fails at the default step is not yet a failure. It is looked at again:

1. **Kink.** The branch state of the tail differed at +h and -h (``branch_state``), or, for
   layers that expose none, the loss along the element bends at one point (``gradcheck.kinks``):
   the central difference averages two slopes, so it proves nothing. Reported, never a failure.
2. **Step sweep.** Estimates at h/2, 10h, 100h (and h/10 in float64) and the Richardson extrapolation
   R = (4 D(h/2) - D(h)) / 3, whose truncation error is O(h^4) instead of O(h^2):
   - R agrees with the analytic value: the default step was too coarse; the element passes;
   - D(h), D(h/2) and R agree with each other (the estimate has settled) yet not with the
     analytic value: a real failure;
   - they do not settle and the analytic value lies among them: ``inconclusive`` ("finite
     difference unreliable"), reported, never a failure;
   - they do not settle and the analytic value is far from all of them: a failure.

Round-off is measured, not assumed: the loss is evaluated on a five-point stencil at a few
elements and what a quadratic cannot explain is its noise. When that noise is far above the
dtype's (a layer casting to float32 inside a float64 network, or a noisy float32 sum), the step
grows to the cube root of the relative noise (the optimum for central differences), ``rtol``
to the largest of 10 h^2 (the truncation left at that step), the noise relative to the loss's
change over the step, and float32's own rtol (the analytic side is computed no better), and the
report warns.

``judge`` runs on any ``evaluate(flat_indices, eps) -> Perturbed``: the whole network's tail
(``engine.Probe``) or a single layer under a projection (``gradcheck.isolate``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from gradcheck import explain, kinks, tolerance
from gradcheck.report import TargetReport

# Failing elements per target that get the kink test (2 evaluations each) and, of those not at
# a kink, the step sweep (2-3 more), worst first; failures beyond these many stay failures: by
# then the target is wrong beyond doubt.
MAX_RECHECK = 4096
MAX_SWEEP = 256
# Elements whose stencils measure the round-off, and how much narrower than the step those are.
ROUND_OFF_SAMPLE = 6
MEASURE_SHRINK = 8.0
# The measured noise of a loss value, times this and sqrt(2) / step, bounds a central difference's.
NOISE_FACTOR = 4.0
# Measured round-off this many ulps of the dtype above the loss: precision limits the check.
PRECISION_LIMIT_ULPS = 1e3
WORST_SHOWN = 5

Evaluate = Callable[[np.ndarray, float], object]


@dataclasses.dataclass
class Verdicts:
    """Per-element outcome for one target (arrays over the checked elements)."""

    indices: np.ndarray
    analytic: np.ndarray
    numeric: np.ndarray
    rel: np.ndarray
    status: np.ndarray
    plus: np.ndarray
    minus: np.ndarray
    step: np.ndarray
    tol: tolerance.Tolerance
    round_off: float = 0.0
    round_off_rel: float = 0.0
    precision_limited: bool = False
    rescued: int = 0  # passed only with Richardson extrapolation


def judge(evaluate: Evaluate, analytic: np.ndarray, indices: np.ndarray, first,
          tol: tolerance.Tolerance, dtype) -> Verdicts:
    """Verdicts for the elements at ``indices`` whose analytic gradients are ``analytic``, given
    ``first`` = ``evaluate(indices, tol.eps)`` (the engine's pass at the default step)."""
    dtype = np.dtype(dtype)
    analytic = np.asarray(analytic, dtype=np.float64)
    plain = _verdicts(analytic, indices, first, tol, dtype, 0.0, 0.0, False)[0]
    if not np.any(plain.status == "fail"):
        # Measured round-off can only widen the tolerance: with nothing failing it cannot change
        # a verdict, so a passing target costs no evaluation beyond the engine's.
        return plain
    sigma, sigma_rel, rho = _round_off(evaluate, indices, first, tol.eps, analytic)
    limited = sigma_rel > PRECISION_LIMIT_ULPS * np.finfo(dtype).eps
    if limited:
        eps = max(tol.eps, float(np.cbrt(min(sigma_rel, 1e-3))))
        if eps > tol.eps:
            first = evaluate(indices, eps)
            rho *= tol.eps / eps  # the loss changes in proportion to the step; the noise does not
        # Truncation left at this step, and the noise relative to the loss's change over it.
        # and the analytic side is no better than float32 either (1 - y**2 from a float32 y):
        # float32's own tolerance is the floor.
        rtol = max(tol.rtol, 10.0 * eps ** 2, NOISE_FACTOR * np.sqrt(2.0) * rho,
                   tolerance.DEFAULTS[np.dtype(np.float32)].rtol)
        tol = tolerance.Tolerance(eps=eps, rtol=rtol, atol=tol.atol)
    verdicts, noise = _verdicts(analytic, indices, first, tol, dtype, sigma, sigma_rel, limited)
    failing = np.flatnonzero(verdicts.status == "fail")
    if len(failing):
        failing = failing[np.argsort(-verdicts.rel[failing], kind="stable")][:MAX_RECHECK]
        _recheck(evaluate, verdicts, failing, noise, dtype)
    return verdicts


def _verdicts(analytic, indices, first, tol, dtype, sigma, sigma_rel, limited):
    """The verdicts at the default step with noise from ``sigma``, before any recheck."""
    plus, minus, step = (np.asarray(first.plus, float), np.asarray(first.minus, float),
                         np.asarray(first.step, float))
    numeric = (plus - minus) / step
    noise = _noise(dtype, plus, minus, step, sigma)
    rel = tolerance.relative_error(analytic, numeric, tol, noise)
    status = np.where(np.asarray(first.kinked, bool), "kink",
                      np.where(rel > tol.rtol, "fail", "pass")).astype(object)
    return Verdicts(indices, analytic, numeric, rel, status, plus, minus, step, tol, sigma,
                    sigma_rel, bool(limited)), noise


def _noise(dtype, plus, minus, step, sigma: float) -> np.ndarray:
    formula = tolerance.round_off(dtype, np.maximum(np.abs(plus), np.abs(minus)), step)
    return np.maximum(formula, NOISE_FACTOR * np.sqrt(2.0) * sigma / step)


def _round_off(evaluate: Evaluate, indices: np.ndarray, first, eps: float, analytic: np.ndarray):
    """Measured noise of one loss value: absolute, relative to the loss, and relative to the
    loss's change over the step (a float32 value inside the tail is rounded to its own ulp, so
    its noise follows the element's gradient), from the stencils of a few elements spread over
    the target that are not at a kink."""
    usable = np.flatnonzero(~np.asarray(first.kinked, bool))
    if len(usable) == 0:
        return 0.0, 0.0, 0.0
    pick = usable[np.unique(np.linspace(0, len(usable) - 1, min(len(usable), ROUND_OFF_SAMPLE))
                            .astype(int))]
    # A stencil narrower than the step: round-off does not shrink with it, truncation (which a
    # quadratic cannot absorb: the cubic term of the loss) does, by MEASURE_SHRINK cubed.
    outer = evaluate(indices[pick], eps / MEASURE_SHRINK)
    half = evaluate(indices[pick], eps / (2.0 * MEASURE_SHRINK))
    base = evaluate(indices[pick], 0.0).plus
    values = kinks.stencil_values(outer.minus, half.minus, base, half.plus, outer.plus)
    # Elements at a kink (a bend a line with one break fits) would pass their bend off as noise.
    smooth = ~np.asarray(half.kinked, bool) & ~np.asarray(outer.kinked, bool) & \
        ~kinks.one_bend(values)
    sigma = kinks.measure_round_off(values[smooth])
    # The loss's size where it is evaluated (a loss of exactly 0 at the point has no scale).
    scale = max(float(np.max(np.abs(base))), float(np.max(np.abs(first.plus[pick]))),
                float(np.max(np.abs(first.minus[pick]))), np.finfo(np.float64).tiny)
    # The loss's change over the full step (the stencil spans 1/MEASURE_SHRINK of it).
    change = np.abs(values[smooth, 4] - values[smooth, 0]) / 2.0 * MEASURE_SHRINK
    per_element = kinks.misfit(values[smooth]) * np.sqrt(2.5) / np.maximum(change, 1e-300)
    # The largest: a value rounded inside the tail is noisier at some elements than at others.
    rho = float(np.max(per_element)) if len(per_element) else 0.0
    # A loss that does not move at all where the gradient says it should (a float32 value in the
    # tail rounds both sides to the same number) hides noise of at least the change it missed.
    flat = np.all(values == 0.0, axis=1) & (analytic[pick] != 0.0)
    if flat.any():
        missed = np.abs(analytic[pick][flat]) * eps / MEASURE_SHRINK
        sigma, rho = max(sigma, float(np.max(missed))), max(rho, 0.5 / MEASURE_SHRINK)
    return sigma, sigma / scale, rho


def _recheck(evaluate: Evaluate, v: Verdicts, pos: np.ndarray, noise: np.ndarray, dtype) -> None:
    """The kink test and the step sweep for the failing elements at positions ``pos``."""
    sub = v.indices[pos]
    eps = v.tol.eps
    half = evaluate(sub, eps / 2.0)
    base = np.asarray(evaluate(sub, 0.0).plus, float)
    values = kinks.stencil_values(v.minus[pos], half.minus, base, half.plus, v.plus[pos])
    error = np.abs(v.analytic[pos] - v.numeric[pos])
    point_noise = max(v.round_off, 4.0 * np.finfo(dtype).eps * float(np.max(np.abs(base))))
    kinked = np.asarray(half.kinked, bool) | kinks.stencil_kinked(values, v.step[pos], error,
                                                                  point_noise)
    v.status[pos[kinked]] = "kink"
    keep = ~kinked
    keep[np.cumsum(keep) > MAX_SWEEP] = False
    pos, sub = pos[keep], sub[keep]
    if len(pos) == 0:
        return
    a = v.analytic[pos]
    d_h = v.numeric[pos]
    d_half = (np.asarray(half.plus, float)[keep] - np.asarray(half.minus, float)[keep]) / \
        np.asarray(half.step, float)[keep]
    richardson = (4.0 * d_half - d_h) / 3.0
    wide_p = evaluate(sub, 10.0 * eps)
    widest = evaluate(sub, 100.0 * eps)
    estimates = [(widest.plus - widest.minus) / widest.step,
                 (wide_p.plus - wide_p.minus) / wide_p.step, d_h, d_half, richardson]
    if dtype == np.float64 and not v.precision_limited:
        fine = evaluate(sub, eps / 10.0)
        estimates.append((fine.plus - fine.minus) / fine.step)
    nz = noise[pos]
    agree = lambda x, y, n: tolerance.relative_error(x, y, v.tol, n) <= v.tol.rtol  # noqa: E731
    rich_ok = agree(a, richardson, 3.0 * nz)
    # A loss that did not change at all (a step below the resolution of a float32 value inside
    # the tail) has not settled on 0: it has not been measured.
    resolved = (v.plus[pos] != v.minus[pos]) & (np.asarray(half.plus, float)[keep] !=
                                                np.asarray(half.minus, float)[keep])
    settled = resolved & agree(d_h, d_half, 2.0 * nz) & agree(d_half, richardson, 3.0 * nz)
    stack = np.stack(estimates)
    low, high = stack.min(axis=0), stack.max(axis=0)
    band = v.tol.rtol * np.maximum(np.abs(low), np.abs(high)) + v.tol.atol + 10.0 * nz
    inside = (a >= low - band) & (a <= high + band)
    status = np.where(rich_ok, "pass", np.where(settled, "fail",
                                                np.where(inside, "inconclusive", "fail")))
    v.status[pos] = status
    # The better estimate is the one reported for the elements it rescued.
    v.numeric[pos[rich_ok]] = richardson[rich_ok]
    v.rel[pos[rich_ok]] = tolerance.relative_error(a[rich_ok], richardson[rich_ok], v.tol,
                                                   3.0 * nz[rich_ok])
    v.rescued = int(rich_ok.sum())


def target_report(name: str, array_shape: tuple[int, ...], v: Verdicts, analytic_full: np.ndarray,
                  *, is_input: bool, decay_term: np.ndarray | None = None,
                  axis_names: tuple[str, ...] | None = None,
                  param: np.ndarray | None = None) -> TargetReport:
    """The TargetReport of one target from its verdicts, with the worst elements and the
    pattern of the mismatch. ``axis_names``: the layer's (``explain.target_axis_names``),
    generic when None; ``param``: the parameter's values, for the decay-term pattern."""
    size = int(np.prod(array_shape))
    report = TargetReport(target=name, shape=tuple(array_shape), status="pass",
                          checked=len(v.indices), failed=int(np.sum(v.status == "fail")),
                          kinks=int(np.sum(v.status == "kink")),
                          inconclusive=int(np.sum(v.status == "inconclusive")))
    rel_map = np.full(size, np.nan)
    rel_map[v.indices] = v.rel
    report.rel_error = rel_map.reshape(array_shape)
    report.axis_names = axis_names or explain.default_axis_names(array_shape, is_input)
    if len(v.indices) == 0:
        report.status = "skipped"
        return report
    judged = (v.status == "pass") | (v.status == "fail")
    scored = np.where(judged, v.rel, -1.0)
    worst = int(np.argmax(scored))
    report.max_abs_error = float(np.max(np.where(judged, np.abs(v.analytic - v.numeric), 0.0)))
    report.max_rel_error = float(max(scored.max(), 0.0))
    report.worst_index = _index(v.indices[worst], array_shape)
    report.analytic = float(v.analytic[worst])
    report.numeric = float(v.numeric[worst])
    order = np.argsort(-scored, kind="stable")[:WORST_SHOWN]
    report.worst_elements = [{"index": _index(v.indices[j], array_shape),
                              "analytic": float(v.analytic[j]), "numeric": float(v.numeric[j]),
                              "rel_error": float(v.rel[j]), "status": str(v.status[j])}
                             for j in order if v.status[j] == "fail"]
    report.replay = {"flat_index": int(v.indices[worst]), "index": report.worst_index,
                     "eps": v.tol.eps, "rtol": v.tol.rtol, "atol": v.tol.atol,
                     "step": float(v.step[worst]), "loss_plus": float(v.plus[worst]),
                     "loss_minus": float(v.minus[worst]), "analytic": report.analytic,
                     "numeric": report.numeric, "rel_error": float(v.rel[worst])}
    if v.precision_limited:
        report.notes.append(f"precision limits this check: measured round-off {v.round_off_rel:.1e} "
                            f"of the loss; step {v.tol.eps:.1e}, rtol {v.tol.rtol:.1e}")
    if v.rescued:
        report.notes.append(f"{v.rescued} element(s) pass only with Richardson extrapolation "
                            "(the default step is too coarse for them)")
    if report.failed:
        report.status = "fail"
        status_map = np.full(size, "", dtype=object)
        status_map[v.indices] = v.status
        numeric_map = np.full(size, np.nan)
        numeric_map[v.indices] = v.numeric
        found = explain.classify(np.asarray(analytic_full, float).reshape(array_shape),
                                 numeric_map.reshape(array_shape),
                                 status_map.reshape(array_shape).astype(str),
                                 rtol=v.tol.rtol, axis_names=report.axis_names,
                                 weight_decay_term=decay_term, param=param)
        if found:
            report.pattern, report.explanation = found.kind, found.text
    elif report.inconclusive:
        report.status = "inconclusive"
    elif report.kinks:
        report.status = "kink"
    return report


def _index(flat: int, shape: tuple[int, ...]) -> list[int]:
    return [int(i) for i in np.unravel_index(int(flat), shape)]
