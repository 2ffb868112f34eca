"""The short training probe at one seed: can the network overfit one small batch with the user's
settings, and, when it cannot, with a safe reference (Adam 1e-3, no regularisation) and with every
input zeroed? Comparing them separates a hyper-parameter problem from a structural one or a
gradient bug, and an output that ignores its input. Parameters are restored after every run."""

from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck.config import NetworkSpec, TrainSpec
from gradcheck.diagnose import graph, inputs
from gradcheck.diagnose import thresholds as T
from gradcheck.diagnose.findings import ProbeRun
from gradcheck.diagnose.lints import loss_takes_probabilities
from gradcheck.diagnose.optim import Optimizer
from gradcheck.diagnose.verdict import classify, divergence, progress
from gradcheck.errors import GradcheckError
from gradcheck.network import Batch, Network, Pass

REFERENCE = TrainSpec(optimizer="adam", lr=T.REFERENCE_LR, momentum=0.0, weight_decay=0.0,
                      steps=T.REFERENCE_STEPS)


@dataclasses.dataclass
class Outcome:
    """A finished run, with what its findings need: the last finite pass, where it became
    non-finite, mean |param| per check and the parameters it ended with."""

    run: ProbeRun
    final: Pass | None
    where: str | None = None
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    params_end: list[np.ndarray] = dataclasses.field(default_factory=list)
    fits: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SeedProbe:
    """The runs at one probe seed: the user's (configured, or the reference without ``train:``),
    the reference when the user's did not fit, and the zeroed-input twin of a user's run that
    stalled. ``init`` holds the parameters before training; ``target`` the targets each label
    trained on."""

    seed: int
    user: Outcome
    reference: Outcome | None
    zeroed: Outcome | None
    init: list[np.ndarray]
    target: dict[str, np.ndarray]

    @property
    def runs(self) -> list[ProbeRun]:
        return [o.run for o in (self.user, self.reference, self.zeroed) if o is not None]


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


def probe_at_seed(spec: NetworkSpec, network: Network, batch: Batch, seed: int,
                  gradient_ok: bool) -> SeedProbe:
    """Train on min(batch, 16) samples of ``batch``; restore the parameters after each run.

    A run stops once it fits the batch -- except the user's run when the gradient check failed: it
    takes its whole budget, since what a wrong gradient does to training builds up over the steps
    (R5 fits the batch, then diverges to NaN) -- or once it fails clearly (stalls or diverges).
    """
    sub = inputs.head(batch, min(inputs.rows(batch), T.PROBE_BATCH))
    x, target = sub.x, sub.target
    init = [p.copy() for _, _, p in graph.parameters(network)]
    targets = {"configured": target, "reference": _reference_target(network, batch, target)}
    user_spec, user_label = (spec.train, "configured") if spec.train else (REFERENCE, "reference")
    targets["zeroed-input"] = targets[user_label]

    def run(label, train, inputs, **how):
        try:
            return train_run(network, inputs, targets[label], train, label, seed, **how)
        finally:
            for (_, _, p), p0 in zip(graph.parameters(network), init):
                p[...] = p0

    try:
        user = run(user_label, user_spec, x, until_fit=gradient_ok)
        reference = zeroed = None
        # A reference that only yardsticks the user's failing run may stop once it cannot fit.
        if spec.train is not None and user.run.outcome != "fit":
            yardstick = REFERENCE if gradient_ok else dataclasses.replace(
                REFERENCE, steps=T.REFERENCE_STEPS_WRONG_GRADIENT)
            reference = run("reference", yardstick, x, project=True)
        # Only a run that stopped improving is compared with its zeroed-input twin: a run still
        # improving has not yet shown what its input is worth.
        if user.run.outcome == "stalled":
            steps = dataclasses.replace(user_spec, steps=user.run.steps_run)
            zeroed = run("zeroed-input", steps, inputs.zeroed(network, sub).x, until_fit=False,
                         exits=False)
    finally:
        network.set_training(True)
    return SeedProbe(seed, user, reference, zeroed, init, targets)


def train_run(network: Network, x, target, spec: TrainSpec, label: str, seed: int,
              until_fit: bool = True, exits: bool = True, project: bool = False) -> Outcome:
    """Up to ``spec.steps`` updates of ``spec``'s optimizer on inputs ``x`` (an array, or a dict
    by name) and ``target``; each distinct parameter array is updated once, with the gradient of
    all its uses. ``until_fit`` stops once the batch is fitted; ``exits`` stops a run that is
    failing clearly (frozen, diverging); ``project`` stops one that cannot reach the fit
    threshold within its budget."""
    params = graph.parameters(network)
    labels = [graph.param_label(network, k, n) for k, n, _ in params]
    opt = Optimizer(spec, [p for _, _, p in params])
    metric = "accuracy" if network.loss.target_kind == "labels" else "r2"
    losses: list[float] = []
    history = {name: [] for name in labels}
    out = Outcome(ProbeRun(label, spec.optimizer, spec.lr, spec.momentum, spec.weight_decay,
                           spec.steps, losses, False, float("nan"), metric, "steps", seed=seed,
                           loss_floor=loss_floor(network, target)),
                  None, None, history)
    batch = Batch(x, target)
    for step in range(spec.steps + 1):
        run = network.run(batch, allow_nonfinite=True)
        losses.append(run.loss)
        # A finite loss means the backward ran through every unit.
        grads = (graph.total_gradients(network, run.grads) if np.isfinite(run.loss)
                 else [None] * len(params))
        bad = _nonfinite_where(network, run, params, labels, grads)
        if bad is not None:
            out.run.stopped, out.run.nonfinite_step, out.where = "nonfinite", step, bad
            break
        out.final = run
        if step % T.CHECK_PERIOD == 0 or step == spec.steps:
            for name, (_, _, p) in zip(labels, params):
                history[name].append(float(np.mean(np.abs(p))))
            out.run.fit, out.run.passed = fit(network, run.pred, target)
            out.fits.append(out.run.fit)
            stop = _stop(out, step, until_fit, exits, project)
            if stop is not None:
                out.run.stopped = stop
                break
        if step < spec.steps:
            opt.step(grads)
    out.params_end = [p.copy() for _, _, p in params]
    out.run.outcome = classify(out.run)
    return out


def _stop(out: Outcome, step: int, until_fit: bool, exits: bool, project: bool) -> str | None:
    """Why the run stops at this check, or None to go on."""
    run = out.run
    if run.passed:
        return "passed" if until_fit else None
    if not exits:
        return None
    if divergence(run) >= T.DIVERGE_FACTOR:
        return "diverging"
    gained = progress(run)
    if step >= T.STALL_MIN_STEPS and gained is not None and gained < T.FROZEN:
        return "stalled"
    # Accuracy moves in jumps, so only R^2 is extrapolated.
    if project and run.fit_metric == "r2" and step >= T.PROJECT_MIN_STEPS and not _reachable(
            out, step):
        return "unreachable"
    return None


def _reachable(out: Outcome, step: int) -> bool:
    """Whether R^2, gaining ``PROJECT_SLACK`` x as fast as over the last half of the run, would
    reach the fit threshold by the end of the budget."""
    half = len(out.fits) // 2
    rate = (out.fits[-1] - out.fits[half]) / (step - half * T.CHECK_PERIOD)
    projected = out.fits[-1] + T.PROJECT_SLACK * max(rate, 0.0) * (out.run.steps - step)
    return projected >= T.FIT_R2


def loss_floor(network: Network, target) -> float:
    """The least loss ``target`` allows: the loss of predicting value targets exactly (0 for mse,
    their entropy for bce on soft targets); 0 for labels, whose loss falls to 0 with confidence."""
    if network.loss.target_kind == "labels":
        return 0.0
    y = np.asarray(target)
    try:
        floor = network.loss_value(y.astype(network.dtype), y)
    except GradcheckError:
        return 0.0
    return floor if np.isfinite(floor) and floor > 0 else 0.0


def _nonfinite_where(network, run, params, labels, grads) -> str | None:
    """Where the step first went non-finite: a parameter, a layer's output, the loss or a
    gradient, or None. (A sum is finite only if every entry is, barring overflow: one sum over
    all gradients screens a healthy step, and only a non-finite one is looked at closely. An
    update that overflows a parameter shows in the next step's loss.)"""
    if np.isfinite(run.loss) and all(g is not None for g in grads) and np.isfinite(
            sum(float(np.sum(g)) for g in grads)):
        return None
    for name, (_, _, p) in zip(labels, params):
        if not _finite(p):
            return name
    if not np.isfinite(run.loss):
        for k, outs in enumerate(network.outputs):
            if any(t in run.tensors and not _finite(run.tensors[t]) for t in outs):
                return f"{network.layers[k].name} (its output)"
        return f"{network.loss.name} (the loss)"
    for name, g in zip(labels, grads):
        if g is None or not _finite(g):
            return name
    return None


def _finite(a: np.ndarray) -> bool:
    return bool(np.isfinite(np.sum(a)) or np.all(np.isfinite(a)))


def _reference_target(network: Network, batch: Batch, target):
    """Regression targets standardised per output element for the reference run (KR: this is what
    a well-initialised output bias gives; without it Adam needs ~1000 steps just to move the bias
    to a target mean of 50, anchors App. A2). Labels and probability targets stay as they are."""
    if network.loss.target_kind == "labels" or loss_takes_probabilities(network, batch):
        return target
    y = np.asarray(target, dtype=np.float64)
    std = y.std(axis=0)
    return ((y - y.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.asarray(target).dtype)
