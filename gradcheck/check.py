"""Check a network's gradients: the library entry point under the ``gradcheck check`` command."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from gradcheck import tolerance
from gradcheck.config import NetworkSpec, load_config
from gradcheck.engine import INPUT, AnalyticPass, Probe, Target, analytic_pass, target_array, targets
from gradcheck.network import Batch, Network, build_network
from gradcheck.report import LayerReport, Report, TargetReport

DEFAULT_SAMPLES = 32


@dataclasses.dataclass(frozen=True)
class CheckSettings:
    """How to check: mode, finite-difference step and tolerances, sample size, seed."""

    mode: str
    tol: tolerance.Tolerance
    samples: int
    seed: int
    dtype: str

    def as_dict(self) -> dict:
        return {"mode": self.mode, "eps": self.tol.eps, "rtol": self.tol.rtol,
                "atol": self.tol.atol, "samples": self.samples if self.mode == "sample" else None,
                "seed": self.seed, "dtype": self.dtype}


def settings_for(spec: NetworkSpec, mode: str | None = None, eps: float | None = None,
                 rtol: float | None = None, atol: float | None = None,
                 samples: int | None = None) -> CheckSettings:
    """The spec's ``check:`` block, with explicitly given options taking precedence."""
    tol = tolerance.resolve(spec.dtype, eps if eps is not None else spec.check.eps,
                            rtol if rtol is not None else spec.check.rtol,
                            atol if atol is not None else spec.check.atol)
    return CheckSettings(mode=mode or spec.check.mode, tol=tol,
                         samples=samples or spec.check.samples or DEFAULT_SAMPLES,
                         seed=spec.seed, dtype=spec.dtype)


def check_network(source: str | Path | dict, **options) -> Report:
    """Load a network (YAML path or dict), build it and check every gradient.

    ``options`` override the config's ``check:`` block: mode, eps, rtol, atol, samples.
    Raises ``GradcheckError`` subclasses for problems in the user's input.
    """
    spec = load_config(source)
    network, batch = build_network(spec)
    with network:  # stops external layers' child processes, also on error
        return run_check(network, batch, settings_for(spec, **options))


def run_check(network: Network, batch: Batch, settings: CheckSettings) -> Report:
    """Compare analytic and finite-difference gradients for every target of ``network``."""
    network.set_training(True)
    cached = analytic_pass(network, batch)
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(3,)))
    by_unit: dict[int, list[TargetReport]] = {}
    for target in targets(network):
        by_unit.setdefault(target.unit, []).append(
            _check_target(network, batch, cached, target, settings, rng))
    layers = [LayerReport(name=unit.name, type=getattr(type(unit), "registered_name",
                                                        type(unit).__name__),
                          index=k, checks=by_unit[k], is_loss=k == len(network.layers))
              for k, unit in enumerate(network.units)]
    assign_blame(layers)
    return Report(network=network.name, settings=settings.as_dict(), layers=layers)


def select_elements(grad: np.ndarray, mode: str, samples: int, rng) -> np.ndarray:
    """Flat indices to check: all of them, or in ``sample`` mode the largest-gradient quarter of
    the budget plus a uniform draw of the rest (large gradients are where bugs show first)."""
    size = grad.size
    if mode == "full" or size <= samples:
        return np.arange(size)
    magnitude = np.abs(grad).reshape(-1)
    n_top = max(1, samples // 4)
    top = np.argpartition(-magnitude, n_top - 1)[:n_top]
    rest = np.setdiff1d(np.arange(size), top)
    drawn = rng.choice(rest, size=samples - n_top, replace=False)
    return np.sort(np.concatenate([top, drawn]))


def _check_target(network: Network, batch: Batch, cached: AnalyticPass, target: Target,
                  settings: CheckSettings, rng) -> TargetReport:
    analytic_full = cached.grads[target]
    array = target_array(network, cached, target)
    indices = select_elements(analytic_full, settings.mode, settings.samples, rng)
    probe = Probe(network, batch, cached, target)
    perturbed = probe.evaluate(indices, settings.tol.eps)
    analytic = analytic_full.reshape(-1)[indices]
    numeric = perturbed.numeric
    noise = tolerance.round_off(network.dtype, np.maximum(np.abs(perturbed.plus),
                                                          np.abs(perturbed.minus)), perturbed.step)
    rel = tolerance.relative_error(analytic, numeric, settings.tol, noise)
    failing = (rel > settings.tol.rtol) & ~perturbed.kinked
    rel_map = np.full(array.size, np.nan)
    rel_map[indices] = rel
    report = TargetReport(target=target.name, shape=tuple(array.shape), status="pass",
                          checked=len(indices), failed=int(failing.sum()),
                          kinks=int(perturbed.kinked.sum()),
                          rel_error=rel_map.reshape(array.shape))
    if len(indices) == 0:
        report.status = "skipped"
        return report
    scored = np.where(perturbed.kinked, -1.0, rel)
    worst = int(np.argmax(scored)) if np.any(~perturbed.kinked) else int(np.argmax(rel))
    report.max_abs_error = float(np.max(np.where(perturbed.kinked, 0.0, np.abs(analytic - numeric))))
    report.max_rel_error = float(max(scored.max(), 0.0))
    report.worst_index = [int(i) for i in np.unravel_index(indices[worst], array.shape)]
    report.analytic = float(analytic[worst])
    report.numeric = float(numeric[worst])
    if report.failed:
        report.status = "fail"
    elif report.kinks:
        report.status = "kink"
    return report


def assign_blame(layers: list[LayerReport]) -> None:
    """Mark root causes: a unit fails on its own unless the gradient flowing into it is wrong.

    Unit k receives dL/d(output of k) from unit k+1's backward, which is exactly unit k+1's
    ``input`` target. If that target fails, k's failures are inherited; otherwise they are k's own.
    """
    for k in range(len(layers) - 1, -1, -1):
        layer = layers[k]
        if layer.status != "fail":
            continue
        downstream = layers[k + 1] if k + 1 < len(layers) else None
        upstream_bad = downstream is not None and any(
            c.target == INPUT and c.status == "fail" for c in downstream.checks)
        if upstream_bad:
            layer.inherited_from = downstream.inherited_from or downstream.name
        else:
            layer.root_cause = True
