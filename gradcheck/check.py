"""Check a network's gradients: the library entry point under the ``gradcheck check`` command."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from gradcheck import isolate, judge, modes, regularisation, tolerance
from gradcheck.config import NetworkSpec, load_config
from gradcheck.analytic import INPUT, AnalyticPass, Target, analytic_pass, target_array, targets
from gradcheck.engine import Probe
from gradcheck.network import Batch, Network
from gradcheck.build import build_network
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
    # train.weight_decay: the L2 term is then checked apart from the data loss (regularisation.py).
    weight_decay: float = 0.0
    # auto mode: full when its estimated time fits max_seconds (gradcheck.modes); once resolved,
    # ``mode`` is what was done and ``requested_mode`` what was asked for.
    max_seconds: float = modes.DEFAULT_MAX_SECONDS
    directions: int = modes.DEFAULT_DIRECTIONS
    requested_mode: str | None = None
    estimated_full_seconds: float | None = None
    # An explicit --max-seconds (or check.max_seconds) is also a hard stop: past it the check
    # ends cleanly and reports the targets it did not reach as skipped.
    deadline_seconds: float | None = None

    def as_dict(self) -> dict:
        settings = {"mode": self.mode, "eps": self.tol.eps, "rtol": self.tol.rtol,
                    "atol": self.tol.atol,
                    "samples": self.samples if "sample" in self.mode.split("+") else None,
                    "seed": self.seed, "dtype": self.dtype}
        if "directional" in self.mode.split("+"):
            settings["directions"] = self.directions
        if self.requested_mode and self.requested_mode != self.mode:
            settings["requested_mode"] = self.requested_mode
            settings["max_seconds"] = self.max_seconds
        if self.weight_decay:
            settings["weight_decay"] = self.weight_decay
        if self.mode == "full":
            settings["intermediate_samples"] = max(self.samples, modes.INTERMEDIATE_SAMPLES)
        return settings


def settings_for(spec: NetworkSpec, mode: str | None = None, eps: float | None = None,
                 rtol: float | None = None, atol: float | None = None,
                 samples: int | None = None, max_seconds: float | None = None,
                 directions: int | None = None) -> CheckSettings:
    """The spec's ``check:`` block, with explicitly given options taking precedence."""
    tol = tolerance.resolve(spec.dtype, eps if eps is not None else spec.check.eps,
                            rtol if rtol is not None else spec.check.rtol,
                            atol if atol is not None else spec.check.atol)
    return CheckSettings(mode=mode or spec.check.mode, tol=tol,
                         samples=samples or spec.check.samples or DEFAULT_SAMPLES,
                         seed=spec.seed, dtype=spec.dtype,
                         weight_decay=spec.train.weight_decay if spec.train else 0.0,
                         max_seconds=(max_seconds or spec.check.max_seconds
                                      or modes.DEFAULT_MAX_SECONDS),
                         deadline_seconds=max_seconds or spec.check.max_seconds,
                         directions=directions or modes.DEFAULT_DIRECTIONS)


def check_network(source: str | Path | dict, **options) -> Report:
    """Load a network (YAML path or dict), build it and check every gradient.

    ``options`` override the config's ``check:`` block: mode, eps, rtol, atol, samples.
    Raises ``GradcheckError`` subclasses for problems in the user's input.
    """
    spec = load_config(source)
    network, batch = build_network(spec)
    with network:  # stops external layers' child processes, also on error
        return run_check(network, batch, settings_for(spec, **options))


def run_check(network: Network, batch: Batch, settings: CheckSettings,
              progress=None) -> Report:
    """Compare analytic and finite-difference gradients for every target of ``network``.

    ``progress(done, total, what)``, when given, is called as the check advances (the CLI draws
    a progress bar with it; the library itself never prints).
    """
    started = time.monotonic()
    network.set_training(True)
    cached = analytic_pass(network, batch)
    settings = resolve_mode(network, batch, cached, settings)
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(3,)))
    all_targets = targets(network)
    chosen = [modes.select_for_target(t, cached.grads[t], settings.mode, settings.samples, rng)
              for t in all_targets]
    deadline = started + settings.deadline_seconds if settings.deadline_seconds else None
    ticker = modes.Ticker(progress, sum(len(c) for c in chosen) + len(all_targets) * (
        2 * settings.directions if "directional" in settings.mode else 0), deadline)
    directional_rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(4,)))
    by_unit: dict[int, list[TargetReport]] = {}
    stopped_at = None
    for n, (target, indices) in enumerate(zip(all_targets, chosen)):
        ticker.what = f"{network.units[target.unit].name}.{target.name}"
        try:
            if stopped_at is not None:
                raise modes.TimeUp
            ticker.check_deadline()
            probe = Probe(network, batch, cached, target)
            checked = _check_target(network, probe, target, settings, indices, ticker)
            if "directional" in settings.mode:
                modes.add_directional(checked, probe, cached.grads[target], settings.tol,
                                      network.dtype, settings.directions, directional_rng, ticker)
        except modes.TimeUp:
            stopped_at = n if stopped_at is None else stopped_at
            array = target_array(network, cached, target)
            checked = modes.empty_report(target.name, tuple(array.shape), cached.grads[target])
            checked.notes.append(f"not checked: the --max-seconds {settings.deadline_seconds:g} "
                                 "deadline had passed")
        by_unit.setdefault(target.unit, []).append(checked)
    layers = [LayerReport(name=unit.name, type=getattr(type(unit), "registered_name",
                                                        type(unit).__name__),
                          index=k, checks=by_unit[k], is_loss=k == len(network.layers))
              for k, unit in enumerate(network.units)]
    report = Report(network=network.name, settings=settings.as_dict(), layers=layers)
    report.warnings.extend(modes.coverage_warnings(settings, report))
    if stopped_at is not None:
        report.warnings.append(
            f"stopped at the --max-seconds {settings.deadline_seconds:g} deadline: the targets it "
            "did not reach are reported as skipped")
    finish_verdicts(network, cached, settings, report)
    return report


def resolve_mode(network: Network, batch: Batch, cached: AnalyticPass,
                 settings: CheckSettings) -> CheckSettings:
    """``auto``: full when its estimated time fits ``max_seconds``, else sample + directional."""
    if settings.mode != "auto":
        return dataclasses.replace(settings, requested_mode=settings.mode)
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(5,)))
    estimate = modes.estimate_full_seconds(network, batch, cached, settings.tol.eps, rng)
    mode = "full" if estimate <= settings.max_seconds else "sample+directional"
    return dataclasses.replace(settings, mode=mode, requested_mode="auto",
                               estimated_full_seconds=estimate)


def _check_target(network: Network, probe: Probe, target: Target, settings: CheckSettings,
                  indices: np.ndarray, ticker=None) -> TargetReport:
    analytic_full = probe.cached.grads[target]
    shape = tuple(probe.array.shape)
    if len(indices) == 0:
        return modes.empty_report(target.name, shape, analytic_full)
    perturbed = probe.evaluate(indices, settings.tol.eps, progress=ticker)
    # Judging (kinks, step sweep, measured round-off, the pattern) lives in gradcheck.judge.
    verdicts = judge.judge(probe.evaluate, analytic_full.reshape(-1)[indices], indices, perturbed,
                           settings.tol, network.dtype)
    return judge.target_report(target.name, shape, verdicts, analytic_full,
                               is_input=target.name == INPUT,
                               decay_term=regularisation.decay_term(network, target, settings))


def finish_verdicts(network: Network, cached: AnalyticPass, settings: CheckSettings,
                    report: Report) -> None:
    """After every element is judged: the L2 term's own checks, every layer checked alone once
    anything fails, blame, and the warnings about precision."""
    for k, by_name in regularisation.l2_checks(network, settings).items():
        checks = report.layers[k].checks
        for name, l2_report in by_name.items():
            at = next(i for i, c in enumerate(checks) if c.target == name and c.term == "data")
            note = regularisation.masking_note(cached.grads[Target(k, name)],
                                               network.layers[k].params[name], settings.weight_decay)
            if note:
                checks[at].notes.append(note)
            checks.insert(at + 1, l2_report)

    def select(grad: np.ndarray, rng) -> np.ndarray:
        # A layer checked alone is small: element checks there (every element in full mode, a
        # sample otherwise), even in directional mode.
        mode = "full" if settings.mode == "full" else "sample"
        return modes.select_elements(grad, mode, settings.samples, rng)

    isolate.isolate_layers(network, cached, settings, report.layers, select)
    assign_blame(report.layers)
    report.warnings.extend(_precision_warnings(settings, report))


def _precision_warnings(settings: CheckSettings, report: Report) -> list[str]:
    warnings = []
    if settings.dtype == "float32":
        warnings.append("float32 network: a central difference carries about 1e-7 relative "
                        f"round-off, so the check is only as tight as rtol={settings.tol.rtol:g}; "
                        "re-run with --float64 to check the formulas tightly")
    flagged = [(layer, [c.target for c in layer.checks
                        if any(n.startswith("precision limits") for n in c.notes)])
               for layer in report.layers]
    flagged = [(layer, limited) for layer, limited in flagged if limited]
    if flagged and settings.dtype != "float32":
        # Round-off entering the loss at one layer reaches the checks of every layer before it
        # too; the deepest flagged layer is where it enters.
        source, limited = flagged[-1]
        others = [layer.name for layer, _ in flagged[:-1]]
        also = f"; it also limits the checks of {', '.join(others)} before it" if others else ""
        warnings.append(f"layer {source.name!r}: the loss carries far more round-off from here on "
                        f"than {settings.dtype} (computes in float32 inside?); tolerances for "
                        f"{', '.join(limited)} come from the measured round-off, so precision "
                        f"limits the check{also}")
    return warnings


def assign_blame(layers: list[LayerReport]) -> None:
    """Mark root causes: a unit fails on its own unless the gradient flowing into it is wrong.

    A layer checked alone (``isolated``, gradcheck.isolate) decides: failing alone makes it a root
    cause, passing alone makes its failures inherited from the nearest root cause downstream.
    Without a usable isolated verdict the structure decides: unit k receives dL/d(output of k)
    from unit k+1's backward, which is exactly unit k+1's ``input`` target; if that target fails,
    k's failures are inherited, otherwise they are k's own.
    """
    for k in range(len(layers) - 1, -1, -1):
        layer = layers[k]
        layer.root_cause, layer.inherited_from = False, None
        if layer.status != "fail":
            continue
        if layer.isolated == "fail":
            layer.root_cause = True
            continue
        downstream = layers[k + 1] if k + 1 < len(layers) else None
        if layer.isolated in ("pass", "kink"):
            cause = next((d.name for d in layers[k + 1:] if d.root_cause), None)
            if cause is not None:
                layer.inherited_from = cause
                continue
        upstream_bad = downstream is not None and any(
            c.target == INPUT and c.status == "fail" for c in downstream.checks)
        if upstream_bad:
            layer.inherited_from = downstream.inherited_from or downstream.name
        else:
            layer.root_cause = True
