"""The short training probe: can the network overfit one small batch, with the user's settings and
with a safe reference (Adam 1e-3, no regularisation)? Comparing the two separates a hyper-parameter
problem from a structural one or a gradient bug."""

from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck.config import NetworkSpec, TrainSpec
from gradcheck.diagnose import passes
from gradcheck.diagnose import thresholds as T
from gradcheck.diagnose.behaviour import Traits
from gradcheck.diagnose.findings import Finding, ProbeRun, finding
from gradcheck.diagnose.forward import spread
from gradcheck.diagnose.lints import loss_takes_probabilities
from gradcheck.diagnose.optim import Optimizer
from gradcheck.network import Batch, Network

REFERENCE = TrainSpec(optimizer="adam", lr=T.REFERENCE_LR, momentum=0.0, weight_decay=0.0,
                      steps=T.REFERENCE_STEPS)



@dataclasses.dataclass
class _Outcome:
    run: ProbeRun
    final: passes.Pass | None
    where: str | None = None
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    params_end: list[np.ndarray] = dataclasses.field(default_factory=list)


def fit(network: Network, pred: np.ndarray, target) -> tuple[float, bool]:
    """Accuracy (labels) or R^2 (values) of ``pred``, and whether it counts as fitted."""
    if network.loss.target_kind == "labels":
        _, classes = network.loss.label_shape(network.shapes[-1])
        predicted = np.argmax(pred.reshape(*np.shape(target), classes), axis=-1)
        acc = float(np.mean(predicted == target))
        return acc, acc >= T.FIT_ACCURACY
    y, p = np.asarray(target, np.float64), np.asarray(pred, np.float64)
    sse = float(np.sum((p - y) ** 2))
    sst = float(np.sum((y - y.mean(axis=0)) ** 2))
    r2 = 1.0 - sse / sst if sst > 0 else (1.0 if sse < 1e-12 else 0.0)
    return r2, r2 >= T.FIT_R2


def _train(network: Network, x, target, spec: TrainSpec, label: str) -> _Outcome:
    params = passes.param_list(network)
    opt = Optimizer(spec, [p for _, _, p in params])
    metric = "accuracy" if network.loss.target_kind == "labels" else "r2"
    losses: list[float] = []
    history = {f"{network.layers[k].name}.{n}": [] for k, n, _ in params}
    out = _Outcome(ProbeRun(label, spec.optimizer, spec.lr, spec.momentum, spec.weight_decay,
                            spec.steps, losses, False, float("nan"), metric, "steps"), None, None,
                   history)
    for step in range(spec.steps + 1):
        run = passes.complete(network, x, target)
        losses.append(run.loss)
        grads = [run.grads.get((k, n)) for k, n, _ in params]
        bad = _nonfinite_where(network, run, params, grads)
        if bad is not None:
            out.run.stopped, out.run.nonfinite_step, out.where = "nonfinite", step, bad
            return out
        out.final = run
        if step % T.CHECK_PERIOD == 0 or step == spec.steps:
            for (k, n, p) in params:
                history[f"{network.layers[k].name}.{n}"].append(float(np.mean(np.abs(p))))
            out.run.fit, out.run.passed = fit(network, run.pred, target)
            if out.run.passed:
                out.run.stopped = "passed"
                return out
        if step < spec.steps:
            opt.step(grads)
    return out


def _nonfinite_where(network, run, params, grads) -> str | None:
    for (k, n, p) in params:
        if not np.all(np.isfinite(p)):
            return f"{network.layers[k].name}.{n}"
    if not np.isfinite(run.loss):
        for k, a in enumerate(run.acts[1:]):
            if not np.all(np.isfinite(a)):
                return f"{network.layers[k].name} (its output)"
        return f"{network.loss.name} (the loss)"
    for (k, n, _), g in zip(params, grads):
        if g is None or not np.all(np.isfinite(g)):
            return f"{network.layers[k].name}.{n}"
    return None


def run_probe(spec: NetworkSpec, network: Network, batch: Batch, traits: list[Traits],
              gradient_ok: bool = True) -> tuple[list[Finding], list[ProbeRun], str]:
    """Train on min(batch, 16) samples with the configured optimizer (if any) and the reference.

    ``gradient_ok`` says whether the gradient check passed: if not, no verdict may blame settings
    alone, since every run trains with the wrong gradient.
    """
    n = min(len(batch.x), T.PROBE_BATCH)
    x, target = batch.x[:n], batch.target[:n]
    saved = [p.copy() for _, _, p in passes.param_list(network)]
    outcomes, targets = [], {"configured": target, "reference": _reference_target(network, batch, target)}
    try:
        for train, label in ((spec.train, "configured"), (REFERENCE, "reference")):
            if train is None:
                continue
            try:
                outcome = _train(network, x, targets[label], train, label)
                outcome.params_end = [p.copy() for _, _, p in passes.param_list(network)]
                outcomes.append(outcome)
            finally:
                for (_, _, p), s in zip(passes.param_list(network), saved):
                    p[...] = s
    finally:
        network.set_training(True)
    found = []
    configured = next((o for o in outcomes if o.run.label == "configured"), None)
    for o in outcomes:
        # The reference's symptoms only matter when there are no settings of the user's to explain;
        # otherwise only its blowing up is news (the verdict already says whether it fitted).
        symptoms = o is configured or configured is None
        found += _run_findings(network, o, targets[o.run.label], traits, saved, symptoms)
    verdict_findings, verdict = _verdict(outcomes)
    if not gradient_ok and verdict_findings:
        note = ("; but the gradient check fails, so every run used a wrong gradient: fix it first")
        verdict += note
        verdict_findings = [dataclasses.replace(f, cause=f.cause + note) for f in verdict_findings]
    return verdict_findings + found, [o.run for o in outcomes], verdict


def _reference_target(network: Network, batch: Batch, target):
    """Regression targets standardised per output element for the reference run (KR: this is what
    a well-initialised output bias gives; without it Adam needs ~1000 steps just to move the bias
    to a target mean of 50, anchors App. A2). Labels and probability targets stay as they are."""
    if network.loss.target_kind == "labels" or loss_takes_probabilities(network, batch):
        return target
    y = np.asarray(target, dtype=np.float64)
    std = y.std(axis=0)
    return ((y - y.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.asarray(target).dtype)


def _verdict(outcomes: list[_Outcome]) -> tuple[list[Finding], str]:
    by = {o.run.label: o.run for o in outcomes}
    ref, mine = by["reference"], by.get("configured")
    if mine is not None and mine.passed:
        return [], f"your settings fit one batch in {len(mine.losses) - 1} steps"
    if mine is not None and ref.passed:
        text = ("your settings fail where the reference succeeds: a hyper-parameter problem "
                f"(the reference, adam lr {ref.lr:g} without weight decay, fits the batch in "
                f"{len(ref.losses) - 1} steps; yours reach {mine.fit_metric} {mine.fit:.3g} "
                f"after {len(mine.losses) - 1})")
        return [finding("probe", "hyperparameter-problem", "error", "train", mine.fit,
                         f"{mine.fit_metric} >= {_fit_threshold(mine)}", text,
                         "fix the flagged settings (lr, momentum, weight_decay), or start from the "
                         f"reference: train: {{optimizer: adam, lr: {ref.lr:g}}}")], text
    if ref.passed:
        return [], f"the reference fits one batch in {len(ref.losses) - 1} steps"
    who = "both your settings and the reference fail" if mine is not None else "the reference fails"
    text = (f"{who} to fit one batch of {T.PROBE_BATCH} or fewer samples: a structural problem or a "
            "gradient bug -- see the gradient check")
    return [finding("probe", "cannot-fit-one-batch", "error", None, ref.fit,
                     f"{ref.fit_metric} >= {_fit_threshold(ref)}", text + f" (reference "
                     f"{ref.fit_metric} {ref.fit:.3g} after {len(ref.losses) - 1} steps)",
                     "fix the errors above first (gradient, loss/output, collapse); no optimizer "
                     "setting fixes them")], text


def _fit_threshold(run: ProbeRun) -> float:
    return T.FIT_ACCURACY if run.fit_metric == "accuracy" else T.FIT_R2


def _run_findings(network, o: _Outcome, target, traits, init, symptoms: bool) -> list[Finding]:
    run, who = o.run, ("your settings" if o.run.label == "configured" else "the reference")
    found = []
    if run.stopped == "nonfinite":
        found.append(finding("probe", 
            "nonfinite-training", "error", o.where.split(".")[0].split(" ")[0], float(run.nonfinite_step), "finite",
            f"with {who} ({run.optimizer} lr {run.lr:g}) {o.where} became NaN/Inf at step "
            f"{run.nonfinite_step}", "if the gradient check fails, fix that backward first (it "
            "feeds wrong updates that grow without bound); otherwise divide lr by 10. Clipping "
            "gradients only hides the cause"))
    if not symptoms:
        return found
    found += _weights(o, who, init, network)
    if run.passed or o.final is None:
        return found
    found += _curve(run, who)
    found += _collapse(network, o.final.pred, target, who, traits)
    if run.label == "configured":
        from gradcheck.diagnose.forward import _dead  # the same rule as at initialisation
        for f in _dead(network, o.final, traits):
            found.append(dataclasses.replace(f, stage="probe", cause=f"after {len(run.losses) - 1} "
                                             f"steps with {who}, {f.cause}"))
    return found


def _curve(run: ProbeRun, who: str) -> list[Finding]:
    checks = np.array(run.losses[::T.CHECK_PERIOD], dtype=np.float64)
    if len(checks) <= T.TREND_CHECKS:
        return []
    last = checks[-T.TREND_CHECKS:]
    best = np.minimum.accumulate(checks)[-T.TREND_CHECKS:]
    if np.all(last >= T.DIVERGE_FACTOR * best):
        return [finding("probe", "loss-diverging", "warn", "train", float(last[-1] / best[-1]),
                         f"< {T.DIVERGE_FACTOR:g} x the best loss",
                         f"with {who} the loss climbs to {last[-1] / best[-1]:.3g} x its best value",
                         "divide lr by 10")]
    drops = 1.0 - last[1:] / np.maximum(checks[-T.TREND_CHECKS - 1:-1][1:], 1e-300)
    if np.all(drops < T.STAGNATE_DECREASE):
        return [finding("probe", "loss-stagnating", "warn", "train", float(np.max(drops)),
                         f">= {T.STAGNATE_DECREASE:.0%} decrease per {T.CHECK_PERIOD} steps",
                         f"with {who} the loss has stopped falling ({checks[-1]:.3g}) before the "
                         "batch is fitted", "see the other findings: a stuck loss has a cause")]
    return []


def _weights(o: _Outcome, who: str, init, network) -> list[Finding]:
    found = []
    for (k, n, _), p0, p in zip(passes.param_list(network), init, o.params_end):
        label, series = f"{network.layers[k].name}.{n}", o.history.get(f"{network.layers[k].name}.{n}", [])
        if p0.ndim < 2 or p0.size < T.INIT_MIN_SIZE or len(series) < 2:
            continue
        tiny0, tiny = np.mean(np.abs(p0) < T.WEIGHT_TINY), np.mean(np.abs(p) < T.WEIGHT_TINY)
        if tiny > T.WEIGHT_SHARE >= tiny0:
            found.append(finding(
                "probe", "weights-crushed", "warn", network.layers[k].name, float(tiny),
                                  f"<= {T.WEIGHT_SHARE} of |w| < {T.WEIGHT_TINY:g}",
                                  f"with {who} {tiny:.0%} of {label} ends below {T.WEIGHT_TINY:g} "
                                  "in magnitude: the layer is switched off",
                                  "lower weight_decay; check for a zero or vanishing gradient"))
        sign0 = max(np.mean(p0 > 0), np.mean(p0 < 0))
        sign = max(np.mean(p > 0), np.mean(p < 0))
        if sign > T.WEIGHT_SHARE >= sign0 and np.all(np.isfinite(p)):
            found.append(finding(
                "probe", "weights-one-sign", "warn", network.layers[k].name, float(sign),
                                  f"<= {T.WEIGHT_SHARE} of one sign",
                                  f"with {who} {sign:.0%} of {label} end with the same sign "
                                  "(balanced at the start): one huge update pushed them together",
                                  "lower lr; centre the inputs and the init (zero mean)"))
        growth = np.array(series[1:]) / np.maximum(np.array(series[:-1]), 1e-300)
        doubling = len(growth) >= T.TREND_CHECKS and np.all(growth[-T.TREND_CHECKS:] >= 2.0)
        if series[-1] > T.WEIGHT_HUGE or doubling:
            found.append(finding(
                "probe", "weights-diverging", "warn", network.layers[k].name, series[-1],
                                  f"<= {T.WEIGHT_HUGE:g}, not doubling per check",
                                  f"with {who} mean |{label}| grows from {series[0]:.3g} to "
                                  f"{series[-1]:.3g}", "check its gradient, then lower lr"))
    return found


def _collapse(network, pred, target, who: str, traits) -> list[Finding]:
    name = network.layers[-1].name
    if network.loss.target_kind == "labels":
        if spread(pred) < T.COLLAPSE_WARN:
            return [finding("probe", "collapse-to-constant", "error", name, spread(pred),
                             f">= {T.COLLAPSE_WARN:g}", f"with {who} the outputs end up the same for "
                             "every sample: the network ignores its input",
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
    to_mean = np.all(np.abs(p.mean(axis=0)[live] - y.mean(axis=0)[live]) < T.COLLAPSE_MEAN * std_y[live])
    if to_mean:
        return [finding("probe", "collapse-to-mean", "error", name, float(ratio.max()),
                         f"spread ratio >= {T.COLLAPSE_SPREAD:g}",
                         f"with {who} every output predicts the target mean for every sample "
                         f"(spread ratio {ratio.max():.2g}): the cheapest fit when the output "
                         "cannot follow the input", "use a linear output layer and standardised "
                         "targets; check the sample-collapse and saturation findings")]
    return [finding("probe", "collapse-to-constant", "error", name, float(ratio.max()),
                     f"spread ratio >= {T.COLLAPSE_SPREAD:g}",
                     f"with {who} the outputs stick at one value for every sample (spread ratio "
                     f"{ratio.max():.2g}), away from the target mean: a saturated or bounded output",
                     "use a linear output layer and standardised targets")]
