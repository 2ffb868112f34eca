"""After every selected element is compared: the end-to-end safety net, the weight-decay term,
every unit checked alone once anything fails, blame, failures no unit explains, vacuous targets
and the warnings."""

from __future__ import annotations

import numpy as np

from gradcheck import blame, modes, regularisation
from gradcheck.compare import scale_floor
from gradcheck.directional import Directions
from gradcheck.engine.local import slot_of
from gradcheck.engine.tail import TailProbe
from gradcheck.report import Report, TargetReport, worst_status

NEEDS_ISOLATION = ("fail", "inconclusive")


def conclude(network, clean, batch, settings, report: Report, comparison,
             end_to_end: dict | None = None) -> None:
    """Finish ``report`` (see the module docstring). ``end_to_end``: the safety net computed
    ahead by a ``--jobs`` worker (``safety_net`` with no precision band), used when no unit
    measured one."""
    _weight_decay(network, clean, settings, report)
    mode = settings.effective_mode
    problems = any(layer.problems for layer in report.layers)
    band = _precision_band(report)
    if report.complete and not problems and mode in ("full", "sample"):
        report.end_to_end = (end_to_end if end_to_end is not None and band is None
                             else safety_net(network, clean, batch, settings, band))
    safety_failed = bool(report.end_to_end and report.end_to_end["failed"])
    if safety_failed or any(layer.status in NEEDS_ISOLATION for layer in report.layers):
        _isolate(network, clean, settings, report, comparison)
        _patterns_from_isolation(report)
        _shared_uses(network, report)
    blame.assign_blame(network, report.layers)
    if any(layer.root_cause for layer in report.layers):
        _confirm_inherited(network, clean, batch, settings, report, band)
    unexplained = blame.assign_blame(network, report.layers)
    if (safety_failed or unexplained) and not report.root_causes:
        report.unlocalised = True
        report.span = _smallest_failing_span(network, clean, batch, settings, band)
    _zero_notes(network, clean, report)
    report.warnings.extend(_warnings(network, clean, settings, report))


def _precision_band(report: Report) -> float | None:
    """The widest band a unit's measured round-off leaves unresolved (float32's rtol when one
    computes in float32 inside; ``judge.precision_band``), else None: end-to-end checks through
    it can be no tighter."""
    return max((c.band for layer in report.layers for c in layer.checks), default=0.0) or None


def add_directions(check: TargetReport, network, clean, batch, k: int, name: str,
                   analytic: np.ndarray, settings, rng, band: float | None = None) -> None:
    """Random directions through the network for target ``name`` of unit ``k``, folded into
    ``check``: a failing direction fails the target, with the elements bisection finds."""
    probe = TailProbe.for_target(network, clean, batch.target, k, name)
    floors = [scale_floor(probe.arrays[0])]
    found = Directions(probe, [analytic], floors, settings.tol, network.dtype, band).check(
        settings.directions, rng)
    coverage = dict(check.coverage or {"elements": check.checked, "of": int(analytic.size)})
    coverage.update(directions=found.directions, directions_failed=found.failed,
                    directions_kinked=found.kinked, directions_inconclusive=found.inconclusive,
                    directional_max_rel_error=found.worst_rel_error)
    if len(found.located_failing):
        coverage["localised"] = [_index(i, check.shape) for i in found.located_failing[:10]]
    check.coverage = coverage
    if found.rtol_used > (check.rtol or settings.tol.rtol):
        check.rtol = found.rtol_used
        check.notes.append(f"precision limits the random directions through the network: "
                           f"certain only to a relative {found.rtol_used:.1e}, so they were "
                           f"judged at rtol {found.rtol_used:.1e} instead of "
                           f"{settings.tol.rtol:.1e}")
    if not found.failed:
        if check.status == "skipped" and found.directions:
            check.status = found.status
            check.compared = "network"
        return
    bad = found.located_failing
    check.status = "fail"
    if check.checked == 0:
        check.compared = "network"
    # Elements bisection compared through the network: new ones count as compared; those it
    # finds wrong are the target's failures (its own check passed them: the gradient it
    # received is what is wrong).
    check.checked += int(np.sum(np.isnan(check.rel_error.get(found.located))))
    check.failed = len(bad)
    check.rel_error.put(found.located, found.located_rel)
    if len(bad):
        worst = int(np.argmax(np.where(np.isin(found.located, bad), found.located_rel, -1)))
        if found.located_rel[worst] >= check.max_rel_error:
            i = int(found.located[worst])
            check.max_rel_error = float(found.located_rel[worst])
            check.worst_index = _index(i, check.shape)
            check.analytic = float(np.reshape(analytic, -1)[i])
            check.numeric = float(found.located_numeric[worst])
        check.notes.append(f"{found.failed} of {found.directions} random directions through the "
                           f"network disagree; bisection localised {len(bad)} wrong element(s)")
    else:
        check.notes.append(f"{found.failed} of {found.directions} random directions through the "
                           f"network disagree (max relative error {found.worst_rel_error:.1e}); "
                           "no single element stands out: the error is spread over many")


def safety_net(network, clean, batch, settings, band=None) -> dict:
    """Random directions moving every parameter (each shared array once) and every network
    input that holds real values, at once."""
    arrays, grads, floors, overrides = [], [], [], {}
    for array, total in network.parameters(clean.grads):
        arrays.append(array)
        grads.append(total)
        floors.append(scale_floor(array))
    for name in network.input_names:
        if name in network.integer:
            continue
        readers = network.readers(name)
        x = np.array(clean.tensors[name], copy=True, order="C")
        arrays.append(x)
        grads.append(sum(clean.arg_grads[k][j] for k, j in readers))
        floors.append(scale_floor(x))
        overrides.update({reader: x for reader in readers})
    probe = TailProbe(network, clean, batch.target, arrays, list(range(len(network.units))),
                      overrides)
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(10,)))
    found = Directions(probe, grads, floors, settings.tol, network.dtype, band).check(
        settings.directions, rng, localise=False)
    return {"directions": found.directions, "failed": found.failed, "kinked": found.kinked,
            "inconclusive": found.inconclusive, "max_rel_error": found.worst_rel_error,
            "rtol": max(found.rtol_used, settings.tol.rtol)}


def _weight_decay(network, clean, settings, report: Report) -> None:
    for k, by_name in regularisation.l2_checks(network, settings).items():
        checks = report.layers[k].checks
        for name, l2_report in by_name.items():
            at = next(i for i, c in enumerate(checks) if c.target == name and c.term == "data")
            note = regularisation.masking_note(clean.grads[(k, name)],
                                               network.layers[k].params[name],
                                               settings.weight_decay)
            if note:
                checks[at].notes.append(note)
            checks.insert(at + 1, l2_report)


def _isolate(network, clean, settings, report: Report, comparison) -> None:
    """Every layer checked alone under a random upstream gradient (the loss needs none: its
    own check already differentiates it alone). Exhaustive in full mode, a sample otherwise."""
    mode = "full" if settings.effective_mode == "full" else "sample"

    def select(grad, rng):
        return modes.select_elements(grad, mode, settings.samples, rng)

    for k, layer in enumerate(report.layers):
        if layer.is_loss:
            layer.isolated = worst_status(c.status for c in layer.checks)
            continue
        if layer.problems:
            continue
        rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(5, k)))
        args = [np.array(x, copy=True, order="C") for x in clean.args[k]]
        decay = {name: regularisation.decay_term(network, k, name, settings)
                 for name in network.layers[k].params}
        integer = [t in network.integer for t in network.sources[k]]
        layer.isolated_checks = comparison.alone(network.layers[k], args, rng, select, integer,
                                                 decay)
        layer.isolated = worst_status(c.status for c in layer.isolated_checks)


def _patterns_from_isolation(report: Report) -> None:
    """A pattern read from the network's upstream gradient rests on what that gradient lets
    through (a max-pool passes one element in four); the layer checked alone sees every element
    under a random one. Where both fail, the isolated pattern is the one reported."""
    for layer in report.layers:
        alone = {c.target: c for c in layer.isolated_checks if c.status == "fail" and c.pattern}
        for check in layer.checks:
            twin = alone.get(check.target)
            if check.status == "fail" and check.compared == "layer" and twin is not None \
                    and twin.pattern != check.pattern:
                check.pattern = twin.pattern
                check.explanation = (f"{twin.explanation} (read from the layer checked alone, "
                                     "every element under a random upstream gradient)")


def _shared_uses(network, report: Report) -> None:
    """A layer whose gradient for a shared parameter is exactly zero drops its use of it: the
    parameter's total gradient then matches only its other uses. Named as such."""
    for (k, name), (owner, owned, _) in network.shared.items():
        for unit, param, others in ((k, name, owner), (owner, owned, k)):
            layer = report.layers[unit]
            check = next((c for c in layer.checks if c.target == param and c.term == "data"),
                         None)
            if check is None or check.pattern != "analytic_zero":
                continue
            ref = network.shared_name(k, name)
            check.pattern = "shared_use_dropped"
            check.explanation = (f"{layer.name}'s gradient for its use of a shared parameter "
                                 f"({layer.name}.{param}: {ref}) is exactly 0: its backward drops "
                                 f"this use, so the total gradient matches one use of the shared "
                                 f"parameter only ({report.layers[others].name}'s); compute "
                                 f"and return {layer.name}'s own contribution")


def _confirm_inherited(network, clean, batch, settings, report: Report, band) -> None:
    """Targets of units that receive a wrong gradient, checked through the network: those that
    disagree fail (inherited), the others keep their verdict. Not through a unit that breaks the
    contract: a loss computed through a nondeterministic forward says nothing."""
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(11,)))
    broken = [k for k, layer in enumerate(report.layers) if layer.problems]
    for k in blame.upstream_of_wrong_gradient(network, report.layers):
        layer = report.layers[k]
        if layer.root_cause or any(k in network.ancestors(j) for j in broken):
            continue
        for check in layer.checks:
            if check.term != "data" or check.status == "fail":
                continue
            slot = slot_of(check.target)
            analytic = (clean.arg_grads[k][slot] if slot is not None
                        else clean.grads[(k, check.target)])
            add_directions(check, network, clean, batch, k, check.target, analytic, settings, rng,
                           band)


def _smallest_failing_span(network, clean, batch, settings, band) -> list[str] | None:
    """In a chain: the shortest run of consecutive units whose composed check fails along
    random directions of its input (each unit passing alone). None for a graph, where a run of
    consecutive units is not a piece of the network."""
    if not network.is_chain():
        return None
    n = len(network.units)
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(12,)))
    for length in range(2, n + 1):
        for start in range(0, n - length + 1):
            stop = start + length
            x = np.array(clean.args[start][0], copy=True, order="C")
            projection = None if stop == n else clean.upstream[stop - 1][0]
            probe = TailProbe(network, clean, batch.target, [x], list(range(start, stop)),
                              {(start, 0): x}, projection)
            found = Directions(probe, [clean.grad_in[start]], [scale_floor(x)],
                               settings.tol, network.dtype, band).check(2, rng, localise=False)
            if found.failed:
                return [u.name for u in network.units[start:stop]]
    return None


def _zero_notes(network, clean, report: Report) -> None:
    n = len(network.layers)
    for k, layer in enumerate(report.layers):
        for check in layer.checks:
            if check.status != "zero":
                continue
            label = f"{layer.name}.{check.target}"
            if k == n:
                cause = ("the loss is constant in its input (e.g. a softmax or cross-entropy over "
                         "a single output unit)")
            elif not any(np.any(g) for g in clean.upstream[k]):
                cause = (f"nothing downstream passes a gradient to {layer.name}: dL/d(its "
                         "output) is exactly 0 (a constant loss, dead units or zero weights "
                         "after it)")
            else:
                cause = "it does not affect the loss on this batch (e.g. units that are off)"
            check.notes.append(f"every gradient of {label} is exactly 0: this check cannot see a "
                               f"bug here; {cause}")
    if report.vacuous:
        report.warnings.append("every compared gradient is exactly 0, so this check cannot see a "
                               "bug anywhere; see the notes for the likely cause")


def _warnings(network, clean, settings, report: Report) -> list[str]:
    warnings = []
    if settings.dtype == "float32":
        warnings.append("float32 network: a central difference carries about 1e-7 relative "
                        f"round-off, so the check is only as tight as rtol={settings.tol.rtol:g}; "
                        "re-run with --float64 to check the formulas tightly")
    else:
        narrow = [layer.name for layer, outs in zip(network.layers, network.outputs)
                  if any(clean.tensors[t].dtype == np.float32 for t in outs)]
        if narrow:
            warnings.append(f"{', '.join(narrow)} return(s) float32 in a float64 network: "
                            "checks through them are limited to float32 precision")
    if settings.effective_mode != "full":
        warnings.append(_coverage(settings, report))
    if not report.complete:
        warnings.append(f"stopped at the --max-seconds {settings.max_seconds:g} deadline: the "
                        "elements compared so far are reported, the rest was not compared "
                        "(INCOMPLETE, exit 3; --allow-incomplete accepts it)")
    return warnings


def _coverage(settings, report: Report) -> str:
    checks = [c for layer in report.layers for c in layer.checks]
    compared = sum(c.checked for c in checks)
    total = sum(int(np.prod(c.shape, dtype=np.int64)) for c in checks)
    parts = []
    if settings.mode == "auto" and settings.resolved_by == "memory":
        # No estimate here: the report must be byte-stable for a given seed.
        parts.append("auto mode: a full check would not fit in memory, so")
    elif settings.mode == "auto":
        # No measured seconds here: the report must be byte-stable for a given seed.
        parts.append(f"auto mode: a full check would take longer than "
                     f"{settings.budget_seconds:g} s, so")
    mode = settings.effective_mode.split("+")
    what = []
    if "sample" in mode:
        what.append(f"up to {settings.samples} elements per tensor")
    if "directional" in mode:
        what.append(f"{settings.directions} random directions per tensor")
    parts.append(f"checked {' and '.join(what)}: {compared:,} of {total:,} elements compared "
                 "one by one (--mode full compares every element)")
    return " ".join(parts)


def _index(flat: int, shape: tuple[int, ...]) -> list[int]:
    return [int(i) for i in np.unravel_index(int(flat), shape)]
