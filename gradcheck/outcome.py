"""From one target's verdicts to its ``TargetReport``: counts, the worst elements, what limited
the check, the pattern of a mismatch, and a vacuous target (every gradient exactly 0) named as
such instead of passing."""

from __future__ import annotations

import numpy as np

from gradcheck import explain
from gradcheck.judge import Verdicts
from gradcheck.report import ErrorMap, TargetReport

WORST_SHOWN = 5


def target_report(name: str, shape: tuple[int, ...], v: Verdicts, analytic_full: np.ndarray, *,
                  is_input: bool, compared: str, decay_term: np.ndarray | None = None,
                  of: int | None = None, axis_names: tuple[str, ...] | None = None,
                  param: np.ndarray | None = None,
                  upstream: np.ndarray | None = None) -> TargetReport:
    """The report of target ``name`` (an array of ``shape``) from ``v``. ``compared`` says what
    the numeric side differentiated ("layer": the unit's own objective; "network": the loss);
    ``of``: how many elements were selected when fewer were compared (a stopped check);
    ``axis_names``: the layer's declared layout (``explain.target_axis_names``), generic when
    None; ``param``: the parameter's values, for the decay-term pattern; ``upstream``: for an
    input of the output's shape, the upstream gradient, for the identity-path pattern."""
    counts = v.counts()
    report = TargetReport(target=name, shape=tuple(shape), status="pass", checked=len(v.indices),
                          failed=counts["fail"], kinks=counts["kink"],
                          inconclusive=counts["inconclusive"], rtol=v.rtol_used or v.tol.rtol,
                          compared=compared, float32_inside=v.float32_inside, band=v.band)
    report.rel_error = ErrorMap(shape, v.indices, v.rel)
    report.axis_names = axis_names or explain.default_axis_names(shape, is_input)
    if of is not None and of > len(v.indices):
        report.coverage = {"elements": len(v.indices), "of": int(of), "stopped": True}
        report.notes.append(f"{len(v.indices):,} of {of:,} selected elements compared before "
                            "the check was stopped")
    if len(v.indices) == 0:
        report.status = "skipped"
        return report
    # Comparing strings costs ~10 ns an element: skipped when the counts say all were judged.
    judged = (True if counts["pass"] + counts["fail"] == len(v.status)
              else (v.status == "pass") | (v.status == "fail"))
    scored = np.where(judged, v.rel, -1.0)
    worst = int(np.argmax(scored))
    report.max_abs_error = float(np.max(np.where(judged, np.abs(v.analytic - v.numeric), 0.0)))
    report.max_rel_error = float(max(scored.max(), 0.0))
    report.worst_index = _index(v.indices[worst], shape)
    report.analytic = float(v.analytic[worst])
    report.numeric = float(v.numeric[worst])
    # Only failures are listed: a target without one needs no sort.
    order = np.argsort(-scored, kind="stable")[:WORST_SHOWN] if report.failed else []
    report.worst_elements = [{"index": _index(v.indices[j], shape),
                              "analytic": float(v.analytic[j]), "numeric": float(v.numeric[j]),
                              "rel_error": float(v.rel[j]), "status": str(v.status[j])}
                             for j in order if v.status[j] == "fail"]
    report.replay = {"flat_index": int(v.indices[worst]), "index": report.worst_index,
                     "rtol": report.rtol, "atol": v.tol.atol, "step": float(v.step[worst]),
                     "h": float(v.h[worst]),
                     "loss_plus": float(v.plus[worst]), "loss_minus": float(v.minus[worst]),
                     "analytic": report.analytic, "numeric": report.numeric,
                     "rel_error": float(v.rel[worst]), "compared": compared}
    report.notes.extend(_precision_notes(v, counts["inconclusive"]))
    if report.failed:
        report.status = "fail"
        report.own_failed = report.failed if compared == "layer" else 0
        report.pattern, report.explanation = _pattern(v, shape, analytic_full,
                                                      report.axis_names, decay_term, param,
                                                      upstream)
    elif report.inconclusive:
        report.status = "inconclusive"
    elif report.kinks:
        report.status = "kink"
    elif not np.any(v.analytic) and not np.any(v.numeric):
        report.status = "zero"
    return report


def _precision_notes(v: Verdicts, inconclusive: int) -> list[str]:
    notes = []
    if v.widened:
        notes.append(f"precision limits {v.widened} element(s): their finite difference is "
                     f"certain only to a relative {v.rtol_used:.1e}, so they were judged at "
                     f"rtol {v.rtol_used:.1e} instead of {v.tol.rtol:.1e}")
    if v.float32_inside:
        notes.append(f"measured round-off of the objective is {v.round_off:.1e}x what float64 "
                     "predicts, at float32's level: this layer computes in float32 inside, so a "
                     "disagreement below float32's rtol 1e-2 is inconclusive here, not a pass")
    elif v.band:
        notes.append(f"measured round-off of the objective is {v.round_off:.1e}x what the dtype "
                     f"predicts for its size: a disagreement below {v.band:.1e} is inconclusive "
                     "here, not a pass")
    elif v.round_off > 1e3:
        notes.append(f"measured round-off of the objective is {v.round_off:.1e}x what the dtype "
                     "predicts for its size")
    if inconclusive:
        notes.append("truncation and round-off overlap at every step for "
                     f"{inconclusive} element(s): inconclusive, neither pass nor fail")
    if v.unswept:
        notes.append(f"{v.unswept} element(s) failing at their first step were not swept (the "
                     "worst were): judged with the round-off the sweep measured")
    if v.rescued:
        notes.append(f"{v.rescued} element(s) pass only after the step sweep (the first step was "
                     "too coarse or too fine for them)")
    return notes


def _pattern(v: Verdicts, shape, analytic_full, axis_names, decay_term, param, upstream):
    size = int(np.prod(shape, dtype=np.int64))
    # Target-sized maps (classify reads places): strings only as wide as the statuses present.
    statuses = v.status.astype(str)
    status_map = np.full(size, "", dtype=statuses.dtype)
    status_map[v.indices] = statuses
    numeric_map = np.full(size, np.nan)
    numeric_map[v.indices] = v.numeric
    found = explain.classify(np.asarray(analytic_full, float).reshape(shape),
                             numeric_map.reshape(shape), status_map.reshape(shape),
                             rtol=v.rtol_used or v.tol.rtol, axis_names=axis_names,
                             weight_decay_term=decay_term, param=param, upstream=upstream)
    return (found.kind, found.text) if found else (None, None)


def _index(flat: int, shape: tuple[int, ...]) -> list[int]:
    return [int(i) for i in np.unravel_index(int(flat), shape)]
