"""After every selected element is compared: the end-to-end safety net, the weight-decay term,
every unit checked alone once anything fails, blame, failures no unit explains, vacuous targets
and the warnings."""

from __future__ import annotations

import numpy as np

from gradcheck import blame, modes, regularisation, tolerance
from gradcheck.compare import scale_floor
from gradcheck.directional import Directions
from gradcheck.engine.local import INPUT
from gradcheck.engine.tail import TailProbe
from gradcheck.report import Report, TargetReport, worst_status

NEEDS_ISOLATION = ("fail", "inconclusive")


def conclude(network, clean, batch, settings, report: Report, comparison) -> None:
    """Finish ``report`` (see the module docstring)."""
    _weight_decay(network, clean, settings, report)
    mode = settings.effective_mode
    problems = any(layer.problems for layer in report.layers)
    band = _float32_band(report)
    if report.complete and not problems and mode in ("full", "sample"):
        report.end_to_end = _safety_net(network, clean, batch, settings, band)
    safety_failed = bool(report.end_to_end and report.end_to_end["failed"])
    if safety_failed or any(layer.status in NEEDS_ISOLATION for layer in report.layers):
        _isolate(network, clean, settings, report, comparison)
        _patterns_from_isolation(report)
    blame.assign_blame(report.layers)
    if any(layer.root_cause for layer in report.layers):
        _confirm_inherited(network, clean, batch, settings, report, band)
    unexplained = blame.assign_blame(report.layers)
    if (safety_failed or unexplained) and not report.root_causes:
        report.unlocalised = True
        report.span = _smallest_failing_span(network, clean, batch, settings, band)
    _zero_notes(network, clean, report)
    report.warnings.extend(_warnings(network, clean, settings, report))


def _float32_band(report: Report) -> float | None:
    """float32's rtol when some unit computes in float32 inside (its checks say so), else None:
    end-to-end checks through it can be no tighter."""
    inside = any(c.float32_inside for layer in report.layers for c in layer.checks)
    return tolerance.DEFAULTS[np.dtype(np.float32)].rtol if inside else None


def add_directions(check: TargetReport, network, clean, batch, k: int, name: str,
                   analytic: np.ndarray, settings, rng, band: float | None = None) -> None:
    """Random directions through the network for target ``name`` of unit ``k``, folded into
    ``check``: a failing direction fails the target, with the elements bisection finds."""
    probe = TailProbe.for_target(network, clean.inputs, batch.target, k, name)
    floors = [scale_floor(probe.arrays[0], k == 0 and name == INPUT)]
    found = Directions(probe, [analytic], floors, settings.tol, network.dtype, band).check(
        settings.directions, rng)
    coverage = dict(check.coverage or {"elements": check.checked, "of": int(analytic.size)})
    coverage.update(directions=found.directions, directions_failed=found.failed,
                    directions_kinked=found.kinked, directions_inconclusive=found.inconclusive,
                    directional_max_rel_error=found.worst_rel_error)
    if len(found.located_failing):
        coverage["localised"] = [_index(i, check.shape) for i in found.located_failing[:10]]
    check.coverage = coverage
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


def _safety_net(network, clean, batch, settings, band) -> dict:
    """Random directions moving every parameter and the network input at once."""
    x = np.array(clean.inputs[0], copy=True, order="C")
    arrays, grads, floors = [], [], []
    for k, unit in enumerate(network.units):
        for name, param in unit.params.items():
            arrays.append(param)
            grads.append(clean.grads[(k, name)])
            floors.append(scale_floor(param, False))
    arrays.append(x)
    grads.append(clean.grad_in[0])
    floors.append(scale_floor(x, True))
    probe = TailProbe(network, clean.inputs, batch.target, 0, arrays, x)
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(10,)))
    found = Directions(probe, grads, floors, settings.tol, network.dtype, band).check(
        settings.directions, rng, localise=False)
    return {"directions": found.directions, "failed": found.failed, "kinked": found.kinked,
            "inconclusive": found.inconclusive, "max_rel_error": found.worst_rel_error}


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
        x = np.array(clean.inputs[k], copy=True, order="C")
        decay = {name: regularisation.decay_term(network, k, name, settings)
                 for name in network.layers[k].params}
        layer.isolated_checks = comparison.alone(network.layers[k], x, rng, select, decay)
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


def _confirm_inherited(network, clean, batch, settings, report: Report, band) -> None:
    """Targets of units that receive a wrong gradient, checked through the network: those that
    disagree fail (inherited), the others keep their verdict. Not through a unit that breaks the
    contract: a loss computed through a nondeterministic forward says nothing."""
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(11,)))
    broken = [k for k, layer in enumerate(report.layers) if layer.problems]
    for k in blame.upstream_of_wrong_gradient(report.layers):
        layer = report.layers[k]
        if layer.root_cause or any(j >= k for j in broken):
            continue
        for check in layer.checks:
            if check.term != "data" or check.status == "fail":
                continue
            analytic = clean.grad_in[k] if check.target == INPUT else clean.grads[(k, check.target)]
            add_directions(check, network, clean, batch, k, check.target, analytic, settings, rng,
                           band)


def _smallest_failing_span(network, clean, batch, settings, band) -> list[str] | None:
    """The shortest run of consecutive units whose composed check fails along random
    directions of its input (each unit passing alone)."""
    n = len(network.units)
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(12,)))
    for length in range(2, n + 1):
        for start in range(0, n - length + 1):
            stop = start + length
            x = np.array(clean.inputs[start], copy=True, order="C")
            upstream = None if stop == n else clean.grad_in[stop].astype(network.dtype)
            probe = TailProbe(network, clean.inputs, batch.target, start, [x], x,
                              stop=None if stop == n else stop, upstream=upstream)
            found = Directions(probe, [clean.grad_in[start]], [scale_floor(x, start == 0)],
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
            elif not np.any(clean.grad_in[k + 1]):
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
        narrow = [layer.name for layer, out in zip(network.layers, clean.inputs[1:])
                  if out.dtype == np.float32]
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
