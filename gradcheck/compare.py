"""Compare one target's analytic gradient with finite differences of its unit's own objective,
at a step per element, in passes that a deadline may stop between (what was compared is kept).
Also: a unit checked alone under a random upstream gradient, and the time a full check takes."""

from __future__ import annotations

import time

import numpy as np

from gradcheck.engine.base import Perturbed, runs
from gradcheck.engine.local import INPUT, LocalProbe, input_target, slot_of
from gradcheck.errors import LayerError
from gradcheck.explain import target_axis_names
from gradcheck.judge import judge
from gradcheck.outcome import target_report
from gradcheck.report import TargetReport
from gradcheck.usercode import invoke

# Elements per evaluation between two deadline checks: the first pass of a target holds
# FIRST_PASS_ELEMENTS, each next one twice as many, up to the larger of MIN_PASS_ELEMENTS and
# 1/PASSES_PER_TARGET of the target (each pass verifies its shortcuts afresh). Small first
# passes keep a deadline close even for a layer that takes milliseconds per copy; the sizes
# never depend on time, so a report does not either.
FIRST_PASS_ELEMENTS = 256
MIN_PASS_ELEMENTS = 4096
PASSES_PER_TARGET = 16
# auto mode's estimate times this many elements per target.
CALIBRATION_ELEMENTS = 16


def scale_floor(array: np.ndarray) -> float:
    """s, the least scale of an element of ``array``: the tensor's RMS (1 for an all-zero
    tensor). The network input is no exception: data of size 1e-6 fed to a layer that scales
    it by 1e6 needs a step of its own size, not one of 1e-6 (a correct layer would fail)."""
    if array.size == 0:
        return 1.0
    flat = array.reshape(-1)
    # A run at a time: the squares of a large tensor are never held whole.
    total = sum(float(np.sum(np.square(flat[run], dtype=np.float64))) for run in runs(flat.size))
    rms = float(np.sqrt(total / flat.size))
    return rms if rms > 0 else 1.0


def element_steps(array: np.ndarray, indices: np.ndarray,
                  eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per element: the step h = eps * max(|x_i|, s) and the largest step allowed,
    max(|x_i|, s) / 10, where s is ``scale_floor``."""
    values = np.abs(array.reshape(-1)[indices].astype(np.float64))
    scale = np.maximum(values, scale_floor(array))
    return eps * scale, scale / 10.0


def pass_slices(n: int):
    """The passes a target of ``n`` selected elements is evaluated in (see FIRST_PASS_ELEMENTS)."""
    largest = max(MIN_PASS_ELEMENTS, -(-n // PASSES_PER_TARGET))
    size, lo = FIRST_PASS_ELEMENTS, 0
    while lo < n:
        yield slice(lo, min(n, lo + size))
        lo += size
        size = min(2 * size, largest)


def _declared(name: str) -> str:
    """The key a layer's ``axis_names`` declares a target under: every input slot is "input"."""
    return INPUT if slot_of(name) is not None else name


def _same_shaped(probe: LocalProbe, shape) -> np.ndarray | None:
    """The upstream gradient of an input target whose layer has one output of the input's
    shape (an identity path can run through it), else None."""
    if probe.slot is None or probe.is_loss or len(probe.upstream) != 1:
        return None
    upstream = probe.upstream[0]
    return np.asarray(upstream, dtype=np.float64) if upstream.shape == tuple(shape) else None


class Comparison:
    """The context every local comparison of a check shares."""

    def __init__(self, settings, dtype, verifier, ticker=None):
        self.settings = settings
        self.tol = settings.tol
        self.dtype = np.dtype(dtype)
        self.verifier = verifier
        self.ticker = ticker

    def probe(self, unit, args, upstream, name: str) -> LocalProbe:
        """The objective of target ``name`` of ``unit`` (inputs ``args``, upstream gradients or
        loss target ``upstream``)."""
        return LocalProbe(unit, args, upstream, name, self.dtype, self.verifier,
                          f"{unit.name}.{name}")

    def steps(self, probe: LocalProbe, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The step of each element at ``indices`` and the largest allowed (``element_steps``)."""
        return element_steps(probe.array, indices, self.tol.eps)

    def target(self, unit, args, upstream, name: str, indices: np.ndarray, analytic: np.ndarray,
               *, decay_term=None) -> tuple[TargetReport, bool]:
        """The report of target ``name`` of ``unit`` (inputs ``args``, upstream gradients or loss
        target ``upstream``) over the elements at ``indices``, evaluated in this process; and
        whether a deadline stopped it before every one was compared."""
        probe = self.probe(unit, args, upstream, name)
        return self.compare(probe, self.steps(probe, indices), indices, analytic,
                            decay_term=decay_term)

    def compare(self, probe: LocalProbe, steps: tuple[np.ndarray, np.ndarray],
                indices: np.ndarray, analytic: np.ndarray, *, evaluate=None,
                decay_term=None) -> tuple[TargetReport, bool]:
        """The report of ``probe``'s target over ``indices`` at ``steps`` (the steps and their
        caps), pass by pass, each by ``evaluate(probe, indices, steps, out_of_time)`` (None
        once the deadline stopped the check; default: in this process); and whether the
        deadline stopped it."""
        evaluate = evaluate or _evaluate_here
        parts, stopped = [], False
        for part in pass_slices(len(indices)):
            got = evaluate(probe, indices[part], steps[0][part], self._out_of_time)
            if got is None:
                stopped = True
                break
            parts.append(got)
            if self.ticker is not None:
                self.ticker(len(got.plus))
        report = self.report(probe, indices, analytic, parts, steps, stopped,
                             decay_term=decay_term)
        return report, stopped

    def _out_of_time(self) -> bool:
        return self.ticker is not None and self.ticker.out_of_time()

    def report(self, probe: LocalProbe, indices: np.ndarray, analytic: np.ndarray,
               parts: list[Perturbed], steps: tuple[np.ndarray, np.ndarray], stopped: bool, *,
               decay_term=None) -> TargetReport:
        """The report of ``probe``'s target from ``parts``, the passes evaluated over the first
        elements of ``indices`` (all of them unless ``stopped``), at ``steps`` (the steps and
        their caps); failing elements are looked at again through ``probe`` (``judge``)."""
        first = Perturbed.join(parts)
        done = len(first.plus)
        compared = indices[:done]
        flat = np.asarray(analytic, dtype=np.float64).reshape(-1)
        verdicts = judge(probe.evaluate, flat[compared], compared, first, steps[0][:done],
                         steps[1][:done], self.tol, self.dtype)
        unit, name = probe.unit, probe.name
        shape = tuple(probe.array.shape)
        return target_report(name, shape, verdicts, analytic,
                             is_input=slot_of(name) is not None,
                             compared="layer", decay_term=decay_term,
                             of=len(indices) if stopped else None,
                             axis_names=target_axis_names(unit, _declared(name), shape),
                             param=None if slot_of(name) is not None else unit.params[name],
                             upstream=_same_shaped(probe, shape))

    def alone(self, unit, args: list, rng, select, integer: list[bool],
              decay_terms=None) -> list[TargetReport]:
        """``unit`` checked alone: its objective under random upstream gradients G (standard
        normal, from ``rng``, one per output), for each parameter and each input that holds real
        values (``integer[j]``: slot j holds ids), at ``select(grad, rng)``; ``decay_terms``:
        the weight-decay term of each parameter, for the patterns."""
        out = invoke(unit, "forward", unit.forward, *args)
        outs = out if isinstance(out, tuple) else (out,)
        upstream = [rng.standard_normal(np.shape(y)).astype(self.dtype) for y in outs]
        got = invoke(unit, "backward", unit.backward, *[g.copy() for g in upstream])
        grads_in = list(got) if len(args) > 1 else [got]
        analytic = {name: np.array(unit.grads[name], dtype=np.float64) for name in unit.params}
        for j, (grad, x) in enumerate(zip(grads_in, args)):
            if integer[j]:
                continue
            if not isinstance(grad, np.ndarray) or grad.shape != x.shape:
                raise LayerError(f"layer {unit.name!r}: backward returned "
                                 f"{getattr(grad, 'shape', type(grad).__name__)} for input "
                                 f"{j + 1}, expected shape {x.shape}.")
            analytic[input_target(j, len(args))] = np.array(grad, dtype=np.float64)
        reports = []
        for name, grad in analytic.items():
            indices = select(grad, rng)
            if len(indices) == 0:
                continue
            report, _ = self.target(unit, args, upstream, name, indices, grad,
                                    decay_term=(decay_terms or {}).get(name))
            reports.append(report)
        return reports


def _evaluate_here(probe: LocalProbe, indices: np.ndarray, steps: np.ndarray,
                   out_of_time) -> Perturbed | None:
    return None if out_of_time() else probe.evaluate(indices, steps)


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
        upstream = target if k == n else [g.astype(network.dtype) for g in clean.upstream[k]]
        probe = LocalProbe(unit, clean.args[k], upstream, name, network.dtype,
                           comparison.verifier, f"{unit.name}.{name}")
        picked = np.sort(rng.choice(size, size=min(size, CALIBRATION_ELEMENTS), replace=False))
        steps, _ = element_steps(probe.array, picked, comparison.tol.eps)
        _ = probe.clean  # the clean forward, once per target: not part of an element's cost
        started = time.perf_counter()
        probe.evaluate(picked, steps)
        total += (time.perf_counter() - started) / len(picked) * size
    return total

