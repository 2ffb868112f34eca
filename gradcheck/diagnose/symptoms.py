"""What one probe run shows: NaN/Inf, a diverging or stuck loss, weights that blow up, die or turn
one sign, outputs that collapse to one value, units that died, and an output that does not depend
on the input at all (the zeroed-input run ends as well as the real one)."""

from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck.diagnose import graph
from gradcheck.diagnose import thresholds as T
from gradcheck.diagnose.findings import Finding, ProbeRun, finding
from gradcheck.diagnose.forward import dead_units, spread
from gradcheck.diagnose.measure import measured
from gradcheck.diagnose.verdict import FAILED, describe, divergence, excess, progress


def run_findings(network, outcome, target, traits, init: list[np.ndarray],
                 symptoms: bool) -> list[Finding]:
    """Findings of one finished run (``outcome``: a ``probe.Outcome``). ``symptoms`` False keeps
    only a blow-up (the reference's other symptoms matter only when it is the user's run)."""
    run = outcome.run
    who = "your settings" if run.label == "configured" else "the reference"
    found = []
    if run.stopped == "nonfinite":
        found.append(finding(
            "probe", "nonfinite-training", "error", outcome.where.split(".")[0].split(" ")[0],
            float(run.nonfinite_step), "finite",
            f"with {who} ({run.optimizer} lr {run.lr:g}) {outcome.where} became NaN/Inf at step "
            f"{run.nonfinite_step}", "if the gradient check fails, fix that backward first (it "
            "feeds wrong updates that grow without bound); otherwise divide lr by 10. Clipping "
            "gradients only hides the cause"))
    if not symptoms:
        return found
    found += _weights(network, outcome, who, init)
    if run.outcome not in FAILED or outcome.final is None:
        return found
    found += _curve(run, who)
    found += _collapse(network, outcome.final.pred, target, who)
    if run.label == "configured":
        for f in dead_units(network, outcome.final, traits):
            found.append(dataclasses.replace(f, stage="probe", cause=f"after {run.steps_run} "
                                             f"steps with {who}, {f.cause}"))
    return found


def input_independent(real: ProbeRun, zeroed: ProbeRun) -> list[Finding]:
    """KR's input-independent baseline: the same run with every input zeroed must end worse."""
    best_real, best_zero = float(np.min(excess(real))), float(np.min(excess(zeroed)))
    if not (np.isfinite(best_real) and np.isfinite(best_zero) and best_zero > 0):
        return []
    ratio = best_real / best_zero
    measured("INPUT_GAIN", ratio)
    if ratio < T.INPUT_GAIN:
        return []
    who = "your settings" if real.label == "configured" else "the reference"
    return [finding(
        "probe", "input-independent", "warn", None, ratio, f"best loss < {T.INPUT_GAIN:g} x "
        "the zeroed input's", f"with {who}, zeroing every input changes nothing: the best loss is "
        f"{best_real + real.loss_floor:.3g} on the real inputs and "
        f"{best_zero + zeroed.loss_floor:.3g} on zeros after "
        f"{zeroed.steps_run} steps, so the output does not depend on the input (the network "
        "predicts the target mean from its biases alone)",
        "find where the input's signal is lost (see sample-collapse, saturation, dead-units and "
        "the gradient check), and check that the inputs vary from sample to sample")]


def _curve(run: ProbeRun, who: str) -> list[Finding]:
    if run.outcome == "diverging":
        ratio = divergence(run)
        return [finding("probe", "loss-diverging", "warn", "train", ratio,
                        f"< {T.DIVERGE_FACTOR:g} x the best loss",
                        f"with {who} the loss climbs to {ratio:.3g} x its best value",
                        "divide lr by 10")]
    if run.outcome == "stalled":
        return [finding("probe", "loss-stagnating", "warn", "train", progress(run),
                        f">= {T.PROGRESS_MIN:.0%} fall over the second half of the run",
                        f"with {who} the loss has stopped falling before the batch is fitted "
                        f"({describe(run)})", "see the other findings, a stuck loss has a cause")]
    return []


def _weights(network, outcome, who: str, init: list[np.ndarray]) -> list[Finding]:
    found = []
    for (k, n, _), p0, p in zip(graph.parameters(network), init, outcome.params_end):
        name = network.layers[k].name
        label, series = f"{name}.{n}", outcome.history.get(f"{name}.{n}", [])
        if p0.ndim < 2 or p0.size < T.INIT_MIN_SIZE or len(series) < 2:
            continue
        tiny0, tiny = np.mean(np.abs(p0) < T.WEIGHT_TINY), np.mean(np.abs(p) < T.WEIGHT_TINY)
        sign0 = max(np.mean(p0 > 0), np.mean(p0 < 0))
        sign = max(np.mean(p > 0), np.mean(p < 0))
        growth = np.array(series[1:]) / np.maximum(np.array(series[:-1]), 1e-300)
        measured("WEIGHT_SHARE", max(tiny, sign))
        measured("WEIGHT_HUGE", series[-1])
        if tiny > T.WEIGHT_SHARE >= tiny0:
            found.append(finding(
                "probe", "weights-crushed", "warn", name, float(tiny),
                f"<= {T.WEIGHT_SHARE} of |w| < {T.WEIGHT_TINY:g}",
                f"with {who} {tiny:.0%} of {label} ends below {T.WEIGHT_TINY:g} in magnitude, the "
                "layer is switched off",
                "lower weight_decay; check for a zero or vanishing gradient"))
        if sign > T.WEIGHT_SHARE >= sign0 and np.all(np.isfinite(p)):
            found.append(finding(
                "probe", "weights-one-sign", "warn", name, float(sign),
                f"<= {T.WEIGHT_SHARE} of one sign",
                f"with {who} {sign:.0%} of {label} end with the same sign (balanced at the "
                "start), one huge update pushed them together",
                "lower lr; centre the inputs and the init (zero mean)"))
        doubling = len(growth) >= T.TREND_CHECKS and np.all(growth[-T.TREND_CHECKS:] >= 2.0)
        if series[-1] > T.WEIGHT_HUGE or doubling:
            found.append(finding(
                "probe", "weights-diverging", "warn", name, series[-1],
                f"<= {T.WEIGHT_HUGE:g}, not doubling per check",
                f"with {who} mean |{label}| grows from {series[0]:.3g} to {series[-1]:.3g}",
                "check its gradient, then lower lr"))
    return found


def _collapse(network, pred, target, who: str) -> list[Finding]:
    # The output layer: the one whose output the loss reads.
    source = graph.loss_source(network)
    name = network.layers[source].name if source is not None else network.loss.name
    if network.loss.target_kind == "labels":
        if spread(pred) < T.COLLAPSE_WARN:
            return [finding("probe", "collapse-to-constant", "error", name, spread(pred),
                            f">= {T.COLLAPSE_WARN:g}",
                            f"with {who} the outputs end up the same for "
                            "every sample, the network ignores its input",
                            "see the sample-collapse and gradient findings")]
        return []
    y = np.asarray(target, np.float64).reshape(len(target), -1)
    p = np.asarray(pred, np.float64).reshape(len(pred), -1)
    std_y = y.std(axis=0)
    live = std_y > 0
    if len(y) < 2 or not live.any():
        return []
    ratio = p.std(axis=0)[live] / std_y[live]
    if not np.all(ratio < T.COLLAPSE_SPREAD):
        return []
    near = np.abs(p.mean(axis=0)[live] - y.mean(axis=0)[live]) < T.COLLAPSE_MEAN * std_y[live]
    if np.all(near):
        return [finding("probe", "collapse-to-mean", "error", name, float(ratio.max()),
                        f"spread ratio >= {T.COLLAPSE_SPREAD:g}",
                        f"with {who} every output predicts the target mean for every sample "
                        f"(spread ratio {ratio.max():.2g}), the cheapest fit when the output "
                        "cannot follow the input", "use a linear output layer and standardised "
                        "targets; check the sample-collapse and saturation findings")]
    return [finding("probe", "collapse-to-constant", "error", name, float(ratio.max()),
                    f"spread ratio >= {T.COLLAPSE_SPREAD:g}",
                    f"with {who} the outputs stick at one value for every sample (spread ratio "
                    f"{ratio.max():.2g}), away from the target mean, a saturated or bounded output",
                    "use a linear output layer and standardised targets")]
