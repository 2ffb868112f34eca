"""Compare one target's analytic gradient with finite differences of its unit's own objective,
at a step per element, in passes that a deadline may stop between (what was compared is kept).
Also: a unit checked alone under a random upstream gradient, and the time a full check takes."""

from __future__ import annotations

import time

import numpy as np

from gradcheck.engine.base import Perturbed, runs
from gradcheck.engine.local import INPUT, LocalProbe
from gradcheck.errors import LayerError
from gradcheck.explain import target_axis_names
from gradcheck.judge import judge
from gradcheck.outcome import target_report
from gradcheck.report import TargetReport
from gradcheck.usercode import invoke

# Elements per evaluation between two deadline checks: at least this many, and at most
# PASSES_PER_TARGET passes per target (each pass verifies its shortcuts afresh).
MIN_PASS_ELEMENTS = 4096
PASSES_PER_TARGET = 16
# auto mode's estimate times this many elements per target.
CALIBRATION_ELEMENTS = 16


def scale_floor(array: np.ndarray, network_input: bool) -> float:
    """s, the least scale of an element of ``array``: the tensor's RMS (1 for a network input,
    whose scale is the user's data, or for an all-zero tensor)."""
    if network_input or array.size == 0:
        return 1.0
    flat = array.reshape(-1)
    # A run at a time: the squares of a large tensor are never held whole.
    total = sum(float(np.sum(np.square(flat[run], dtype=np.float64))) for run in runs(flat.size))
    rms = float(np.sqrt(total / flat.size))
    return rms if rms > 0 else 1.0


def element_steps(array: np.ndarray, indices: np.ndarray, eps: float,
                  network_input: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per element: the step h = eps * max(|x_i|, s) and the largest step allowed,
    max(|x_i|, s) / 10, where s is ``scale_floor``."""
    values = np.abs(array.reshape(-1)[indices].astype(np.float64))
    scale = np.maximum(values, scale_floor(array, network_input))
    return eps * scale, scale / 10.0


class Comparison:
    """The context every local comparison of a check shares."""

    def __init__(self, settings, dtype, verifier, ticker=None):
        self.settings = settings
        self.tol = settings.tol
        self.dtype = np.dtype(dtype)
        self.verifier = verifier
        self.ticker = ticker

    def target(self, unit, x, upstream, name: str, indices: np.ndarray, analytic: np.ndarray, *,
               network_input: bool = False, decay_term=None) -> tuple[TargetReport, bool]:
        """The report of target ``name`` of ``unit`` (input ``x``, upstream gradient or loss
        target ``upstream``) over the elements at ``indices``; and whether a deadline stopped
        it before every one was compared."""
        probe = LocalProbe(unit, x, upstream, name, self.dtype, self.verifier,
                           f"{unit.name}.{name}")
        steps, cap = element_steps(probe.array, indices, self.tol.eps, network_input)
        per_pass = max(MIN_PASS_ELEMENTS, -(-len(indices) // PASSES_PER_TARGET))
        parts, done, stopped = [], 0, False
        for lo in range(0, len(indices), per_pass):
            if self.ticker is not None and self.ticker.out_of_time():
                stopped = True
                break
            part = slice(lo, lo + per_pass)
            parts.append(probe.evaluate(indices[part], steps[part]))
            done = min(len(indices), lo + per_pass)
            if self.ticker is not None:
                self.ticker(done - lo)
        compared = indices[:done]
        flat = np.asarray(analytic, dtype=np.float64).reshape(-1)
        verdicts = judge(probe.evaluate, flat[compared], compared, Perturbed.join(parts),
                         steps[:done], cap[:done], self.tol, self.dtype)
        shape = tuple(probe.array.shape)
        report = target_report(name, shape, verdicts, analytic, is_input=name == INPUT,
                               compared="layer", decay_term=decay_term,
                               of=len(indices) if stopped else None,
                               axis_names=target_axis_names(unit, name, shape),
                               param=None if name == INPUT else unit.params[name])
        return report, stopped

    def alone(self, unit, x: np.ndarray, rng, select, decay_terms=None) -> list[TargetReport]:
        """``unit`` checked alone: sum(G * unit(x)) under a random upstream gradient G (standard
        normal, from ``rng``), for each parameter and its input, at ``select(grad, rng)``;
        ``decay_terms``: the weight-decay term of each parameter, for the patterns."""
        y = invoke(unit, "forward", unit.forward, x)
        upstream = rng.standard_normal(np.shape(y)).astype(self.dtype)
        grad_in = invoke(unit, "backward", unit.backward, upstream.copy())
        if not isinstance(grad_in, np.ndarray) or grad_in.shape != x.shape:
            raise LayerError(f"layer {unit.name!r}: backward returned "
                             f"{getattr(grad_in, 'shape', type(grad_in).__name__)}, expected "
                             f"shape {x.shape}.")
        analytic = {name: np.array(unit.grads[name], dtype=np.float64) for name in unit.params}
        analytic[INPUT] = np.array(grad_in, dtype=np.float64)
        reports = []
        for name in [*unit.params, INPUT]:
            indices = select(analytic[name], rng)
            if len(indices) == 0:
                continue
            report, _ = self.target(unit, x, upstream, name, indices, analytic[name],
                                    decay_term=(decay_terms or {}).get(name))
            reports.append(report)
        return reports


def estimate_seconds(network, clean, target: np.ndarray, comparison: Comparison, units_targets,
                     rng) -> float:
    """Seconds a full comparison of ``units_targets`` ((unit index, name, size) triples) would
    take: each target's cost per element, timed on a few of its elements (fewer elements
    amortise less overhead, so this errs on the long side)."""
    total = 0.0
    n = len(network.layers)
    for k, name, size in units_targets:
        if size == 0:
            continue
        unit = network.units[k]
        upstream = target if k == n else clean.grad_in[k + 1].astype(network.dtype)
        probe = LocalProbe(unit, clean.inputs[k], upstream, name, network.dtype,
                           comparison.verifier, f"{unit.name}.{name}")
        picked = np.sort(rng.choice(size, size=min(size, CALIBRATION_ELEMENTS), replace=False))
        steps, _ = element_steps(probe.array, picked, comparison.tol.eps, False)
        started = time.perf_counter()
        probe.evaluate(picked, steps)
        total += (time.perf_counter() - started) / len(picked) * size
    return total

