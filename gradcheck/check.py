"""Check a network's gradients: the library entry point under the ``gradcheck check`` command.

1. One clean forward and backward (``Network.run``) gives every analytic gradient and every
   unit's input and upstream gradient.
2. Every unit is probed for the contract finite differences rest on (``gradcheck.probes``).
3. Every selected element of every target is compared against finite differences of its own
   unit's objective (``gradcheck.compare``), in passes a deadline may stop between.
4. ``gradcheck.conclude`` adds the end-to-end safety net, the weight-decay term, the units
   checked alone, blame and the warnings.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from gradcheck import modes
from gradcheck.build import build_network
from gradcheck.compare import Comparison, estimate_seconds
from gradcheck.conclude import add_directions, conclude, safety_net
from gradcheck.config import load_config
from gradcheck.engine.local import input_target, slot_of
from gradcheck.fanout import Fanout
from gradcheck.engine.verify import Verifier
from gradcheck.network import Batch, Network
from gradcheck.probes import contract_problems
from gradcheck.regularisation import decay_term
from gradcheck.report import ErrorMap, LayerReport, Report, TargetReport
from gradcheck.resources import fit as fit_memory
from gradcheck.settings import CheckSettings, settings_for
from gradcheck.timing import Ticker
from gradcheck.usercode import type_name


def check_network(source: str | Path | dict, **options) -> Report:
    """Load a network (YAML path or dict), build it and check every gradient.

    ``options`` override the config's ``check:`` block (mode, eps, rtol, atol, samples,
    directions, max_seconds, nondet_tol) and set ``jobs`` (processes comparing gradients: 1
    unless given, ``"auto"`` for every available core); a bad value raises ConfigError naming
    it. Raises
    ``GradcheckError`` subclasses for problems in the user's input.
    """
    spec = load_config(source)
    settings = settings_for(spec, **options)
    network, batch = build_network(spec)
    with network:  # stops external layers' child processes, also on error
        return run_check(network, batch, settings)


def run_check(network: Network, batch: Batch, settings: CheckSettings,
              progress=None) -> Report:
    """Compare analytic and finite-difference gradients for every target of ``network``.

    ``progress(done, total, what)``, when given, is called as the check advances (the CLI draws
    a progress bar with it; the library itself never prints). ``settings.jobs`` processes
    compare the gradients (``gradcheck.fanout``), with the same report whatever their number.
    Buffers (running statistics) are
    never perturbed, and are left as they were before the check.
    """
    buffers = network.buffer_state()
    try:
        report = _run(network, batch, settings, progress)
    finally:
        changed = network.restore_buffers(buffers)
    if changed:
        report.events.append(f"forward changed the buffers {', '.join(changed)}; they are "
                             "restored to their values before the check")
    return report


def _run(network: Network, batch: Batch, settings: CheckSettings, progress) -> Report:
    started = time.monotonic()
    settings, memory = fit_memory(network, batch, settings)
    network.set_training(True)
    clean = network.run(batch)
    problems = contract_problems(network, clean, batch, settings.nondet_tol)
    verifier = Verifier(network.dtype, settings.tol.rtol, settings.seed)
    comparison = Comparison(settings, network.dtype, verifier)
    settings = _resolve(network, clean, batch, settings, comparison)
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(3,)))
    plan = [(k, name, modes.select_elements(grad, settings.effective_mode, settings.samples, rng))
            for k, name, grad in targets(network, clean)]
    deadline = started + settings.max_seconds if settings.max_seconds is not None else None
    comparison.ticker = Ticker(progress, sum(len(idx) for _, _, idx in plan), deadline)
    directional_rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(4,)))

    def make_probe(t: int):
        k, name, _ = plan[t]
        return comparison.probe(network.units[k], clean.args[k],
                                upstream_of(network, clean, batch, k), name)

    def end_to_end() -> dict:
        return safety_net(network, clean, batch, settings)

    by_unit: dict[int, list[TargetReport]] = {}
    stopped = False
    # The safety net runs after the comparison (``conclude``); with workers, it is computed
    # ahead, alongside the passes.
    ahead = end_to_end if settings.effective_mode in ("full", "sample") and not problems else None
    with Fanout(plan, settings.jobs, comparison, make_probe, lambda t: plan[t][0] not in problems,
                network.units, ahead,
                lambda wanted, extra: memory.processes(settings.effective_mode, wanted,
                                                       extra)) as fanout:
        for t, (k, name, indices) in enumerate(plan):
            unit = network.units[k]
            comparison.ticker.what = f"{unit.name}.{name}"
            analytic = _analytic(clean, k, name)
            if stopped or k in problems:
                checked = _not_compared(name, analytic.shape, "the check was stopped before "
                                        "this target" if stopped else "not compared: this unit "
                                        "breaks the contract (see its problems)")
            else:
                probe, steps = fanout.probe(t)
                checked, stopped = comparison.compare(
                    probe, steps, indices, analytic, evaluate=fanout.evaluate,
                    decay_term=decay_term(network, k, name, settings))
                note_sharing(network, k, name, checked)
                if "directional" in settings.effective_mode.split("+") and not stopped:
                    add_directions(checked, network, clean, batch, k, name, analytic, settings,
                                   directional_rng)
            by_unit.setdefault(k, []).append(checked)
        computed_ahead = None if stopped else fanout.ahead_result()
    layers = [LayerReport(name=unit.name, type=type_name(unit), index=k,
                          checks=by_unit.get(k, []), is_loss=k == len(network.layers),
                          problems=problems.get(k, []), inputs=list(network.sources[k]))
              for k, unit in enumerate(network.units)]
    report = Report(network=network.name, settings=settings.as_dict(), layers=layers,
                    complete=not stopped, warnings=list(network.warnings),
                    not_differentiable=sorted(network.integer))
    conclude(network, clean, batch, settings, report, comparison, computed_ahead)
    report.notes.extend(verifier.notes)
    report.events.extend(verifier.events)
    report.events.extend(fanout.events)
    report.events.append(memory.describe(settings.effective_mode))
    return report


def targets(network: Network, clean):
    """Every target, in the order units run: each unit's parameters, then each of its inputs
    that holds real values (token ids are never perturbed: they have no gradient)."""
    for k, unit in enumerate(network.units):
        for name in unit.params:
            yield k, name, clean.grads[(k, name)]
        sources = network.sources[k]
        for j, tensor in enumerate(sources):
            if tensor not in network.integer:
                yield k, input_target(j, len(sources)), clean.arg_grads[k][j]


def _analytic(clean, k: int, name: str) -> np.ndarray:
    slot = slot_of(name)
    return clean.grads[(k, name)] if slot is None else clean.arg_grads[k][slot]


def upstream_of(network: Network, clean, batch: Batch, k: int):
    """What unit k's objective is projected on: dL/d(each of its outputs) in the network's
    dtype, or the loss's target."""
    if k == len(network.layers):
        return batch.target
    return [g.astype(network.dtype) for g in clean.upstream[k]]


def note_sharing(network: Network, k: int, name: str, check: TargetReport) -> None:
    """Say when a parameter is another layer's (``share:``): its check is of this use."""
    ref = network.shared_name(k, name)
    if ref is not None:
        check.notes.append(f"shared: this is {ref}; checked here for this layer's use of it")


def _not_compared(name: str, shape, note: str) -> TargetReport:
    size = int(np.prod(shape, dtype=np.int64))
    return TargetReport(target=name, shape=tuple(shape), status="skipped", checked=0, failed=0,
                        rel_error=ErrorMap(shape, np.arange(0), np.zeros(0)), notes=[note],
                        coverage={"elements": 0, "of": size})


def _resolve(network: Network, clean, batch: Batch, settings: CheckSettings,
             comparison: Comparison) -> CheckSettings:
    """``auto``: full when its estimated time fits the budget, else sample and directional
    (unless memory already decided, ``resources.fit``)."""
    if settings.mode != "auto" or settings.resolved:
        return settings
    estimate = full_seconds(network, clean, batch, comparison, settings.seed)
    resolved = "full" if estimate <= settings.budget_seconds else "sample+directional"
    return dataclasses.replace(settings, resolved=resolved)


def full_seconds(network: Network, clean, batch: Batch, comparison: Comparison,
                 seed: int) -> float:
    """The estimated seconds of a full check of every target (timed on a few elements each)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(5,)))
    sizes = [(k, name, grad.size) for k, name, grad in targets(network, clean)]
    return estimate_seconds(network, clean, batch.target, comparison, sizes, rng)
