"""Static lints: the config and the built layers, before anything is trained.

Every lint reads behavioural traits (``behaviour.py``), the loss's own behaviour on probe
predictions and the ``train:`` block, never a layer's registered name, so plugin layers are linted
exactly like built-ins. None depends on the seed (the initial weights are ``init_lints.py``'s).
"""

from __future__ import annotations

import numpy as np

from gradcheck.config import NetworkSpec
from gradcheck.diagnose import advice, graph, inputs
from gradcheck.diagnose import thresholds as T
from gradcheck.diagnose.behaviour import Traits
from gradcheck.diagnose.findings import Finding, finding
from gradcheck.diagnose.measure import measured
from gradcheck.errors import GradcheckError
from gradcheck.network import Batch, Network
from gradcheck.usercode import invoke


def loss_takes_probabilities(network: Network, batch: Batch) -> bool:
    """Whether the loss refuses (raises, or returns NaN/Inf for) predictions outside [0, 1]."""
    if network.loss.target_kind == "labels":
        return False
    shape = (inputs.rows(batch), *network.shapes[-1])
    for value in (1.5, -0.5):
        with np.errstate(all="ignore"):
            try:
                loss = network.loss_value(np.full(shape, value, dtype=network.dtype), batch.target)
            except GradcheckError:
                return True
        if not np.isfinite(loss):
            return True
    return False


def loss_applies_softmax(network: Network, batch: Batch, rng) -> bool:
    """Whether the loss is unchanged when a constant is added to every score of a sample."""
    if network.loss.target_kind != "labels":
        return False
    pred = rng.normal(size=(inputs.rows(batch), *network.shapes[-1])).astype(network.dtype)
    # Valid for probability losses too.
    pred = np.abs(pred) / np.abs(pred).sum(axis=1, keepdims=True)
    try:
        a = network.loss_value(pred, batch.target)
        b = network.loss_value(pred + 3.0, batch.target)
    except GradcheckError:
        return False
    return bool(np.isfinite(a) and abs(a - b) <= 1e-9 * max(abs(a), 1.0))


def run_lints(spec: NetworkSpec, network: Network, batch: Batch, traits: list[Traits],
              tail: Traits | None, rng) -> list[Finding]:
    """All static lints, in the order the issue lists them."""
    found = []
    found += _zero_jacobian(traits, network)
    found += _loss_output(network, batch, tail, rng)
    found += _bounded_regression(network, batch, tail)
    found += _linear_stack(network, traits)
    found += _double_activation(network, traits)
    found += _train(spec)
    found += _dropout(network, traits)
    return found


def _zero_jacobian(traits: list[Traits], network: Network) -> list[Finding]:
    found = []
    for k, t in enumerate(traits):
        if not (t.constant and t.zero_jacobian):
            continue
        shape = network.tensor_shapes[network.outputs[k][0]]
        size = shape[0] if shape else 1
        if t.normalizes:
            found.append(finding(
                "lint", "softmax-axis-1", "error", t.name, float(size), "normalised axis size >= 2",
                f"{t.name} normalises over an axis of size {size}: its output is 1 for every input "
                "and its Jacobian is exactly zero, so no gradient reaches any layer before it",
                f"drop {t.name}; use a linear output with mse for regression, or a sigmoid with "
                "bce for a yes/no target (a softmax needs one unit per class, >= 2)"))
        else:
            found.append(finding(
                "lint", "zero-jacobian", "error", t.name, 0.0, "Jacobian != 0",
                f"{t.name} returns the same output for every input and its backward returns zeros: "
                "it blocks every gradient",
                f"check {t.name}'s options and input shape (a normalisation over a size-1 axis "
                "does this)"))
    return found


def _loss_output(network: Network, batch: Batch, tail: Traits | None, rng) -> list[Finding]:
    loss, out = network.loss.name, network.shapes[-1]
    if network.loss.target_kind == "labels" and invoke(
            network.loss, "label_shape", network.loss.label_shape, out)[1] == 1:
        return [finding(
                "lint", "loss-output-mismatch", "error", loss, 1.0, "classes >= 2",
            f"{loss} takes class labels but the network has one output unit: a softmax over one "
            "class is always 1, so the loss is constant and its gradient zero",
            "give the last layer one unit per class (>= 2), or use bce on a sigmoid output for a "
            "yes/no target")]
    if loss_takes_probabilities(network, batch):
        lo, hi = tail.bounded if tail is not None and tail.bounded else (-np.inf, np.inf)
        if lo < -1e-12 or hi > 1 + 1e-12:
            return [finding(
                "lint", "loss-output-mismatch", "error", loss, None, "outputs in [0, 1]",
                f"{loss} takes probabilities but the network's outputs are not confined to [0, 1] "
                f"(measured range [{lo:.3g}, {hi:.3g}])",
                "end the network with a sigmoid so that its outputs lie in (0, 1), or use a loss "
                "that takes raw scores")]
    if tail is not None and tail.normalizes and loss_applies_softmax(network, batch, rng):
        return [finding(
                "lint", "loss-output-mismatch", "error", tail.name, None, "one softmax",
            f"{tail.name} already outputs probabilities (each sample sums to 1) and {loss} applies "
            "its own softmax on top: the scores are squashed twice and the gradients shrink",
            f"remove {tail.name}; {loss} takes raw scores (logits)")]
    return []


def _bounded_regression(network: Network, batch: Batch, tail: Traits | None) -> list[Finding]:
    if (network.loss.target_kind == "labels" or tail is None or tail.bounded is None
            or tail.batch_coupled or tail.constant or loss_takes_probabilities(network, batch)):
        return []
    lo, hi = tail.bounded
    target = np.asarray(batch.target, dtype=np.float64)
    outside = float(np.mean((target < lo - 1e-9) | (target > hi + 1e-9)))
    fix = (f"use a linear output (drop {tail.name}) and standardise the targets (subtract their "
           "mean, divide by their std)")
    if outside > 0:
        return [finding(
            "lint", "bounded-output-regression", "error", tail.name, outside,
            f"targets in [{lo:.3g}, {hi:.3g}]",
            f"{tail.name} confines a regression's outputs to [{lo:.3g}, {hi:.3g}] but "
            f"{outside:.0%} of the targets lie outside: those can never be reached and the "
            "saturated output stops learning", fix)]
    return [finding(
        "lint", "bounded-output-regression", "warn", tail.name, 0.0,
        f"targets in [{lo:.3g}, {hi:.3g}]",
        f"{tail.name} bounds a regression's outputs to [{lo:.3g}, {hi:.3g}]: its slope is small "
        "and vanishes near the bounds, so targets near them are learnt slowly and the output "
        "drifts to the target mean", fix)]


def _linear_stack(network: Network, traits: list[Traits]) -> list[Finding]:
    """Two parametric affine layers with only affine layers on a path between them."""
    found = []
    for k, t in enumerate(traits):
        if not (t.affine and t.parametric):
            continue
        pending, seen = graph.readers(network, k), set()
        while pending:
            j = pending.pop(0)
            if j in seen or j >= len(traits) or not traits[j].affine:
                continue
            seen.add(j)
            if not traits[j].parametric:
                pending += graph.readers(network, j)
                continue
            found.append(finding(
                "lint", "no-nonlinearity", "warn", traits[j].name, None,
                "a non-linear layer between",
                f"{t.name} and {traits[j].name} are affine maps with only affine layers between "
                "them: together they are one linear map, so the second adds parameters but no "
                "expressive power",
                f"insert a non-linearity (e.g. relu) after {t.name}, or merge the two layers"))
    return found


def _double_activation(network: Network, traits: list[Traits]) -> list[Finding]:
    def activation(t: Traits) -> bool:
        return t.elementwise and not t.affine

    return [finding("lint", "double-activation", "info", traits[j].name, None, None,
                    f"{a.name} and {traits[j].name} are two non-linear elementwise activations "
                    "in a row", f"keep one of {a.name} and {traits[j].name}, unless the pair is "
                    "intended")
            for k, a in enumerate(traits) if activation(a)
            for j in graph.readers(network, k) if j < len(traits) and activation(traits[j])]


def _train(spec: NetworkSpec) -> list[Finding]:
    train = spec.train
    if train is None:
        return []
    found = []
    if train.optimizer == "sgd" and train.weight_decay > 0:
        product = train.lr * train.weight_decay
        if product >= T.DECAY_WARN:
            error = product >= T.DECAY_FLIP
            factor = 1.0 - product
            cause = (f"lr x weight_decay = {train.lr:g} x {train.weight_decay:g} = {product:.3g}: "
                     f"each step multiplies every weight by 1 - {product:.3g} = {factor:.3g}"
                     + (", so all weights flip sign every step and decay overwhelms the data"
                        if error else ", so weight decay dominates every update"))
            found.append(finding(
                "lint", "decay-flips-weights" if error else "decay-large",
                "error" if error else "warn", "train", product,
                f"< {T.DECAY_WARN} (error at >= {T.DECAY_FLIP})", cause,
                f"lower weight_decay so that lr x weight_decay < {T.DECAY_WARN}, typically 1e-4 "
                f"to 5e-4 and at most {T.DECAY_WARN / train.lr:.3g} at lr {train.lr:g}, e.g. "
                + advice.train_block(weight_decay=min(5e-4, 0.5 * T.DECAY_WARN / train.lr))))
    effective = train.lr / (1.0 - train.momentum) if train.optimizer == "sgd" else train.lr
    if effective > T.LR_HIGH or effective < T.LR_LOW:
        what = (f"lr / (1 - momentum) = {train.lr:g} / (1 - {train.momentum:g}) = {effective:.3g}"
                if train.optimizer == "sgd" and train.momentum else f"lr = {effective:g}")
        found.append(finding(
                "lint", "lr-range", "info", "train", effective, f"in [{T.LR_LOW:g}, {T.LR_HIGH:g}]",
            f"the effective step is {what}, outside the usual range; the update-ratio check "
            "decides whether it is too large for this network",
            "if the probe diverges, divide lr by 10 (or lower the momentum)"))
    return found


def _dropout(network: Network, traits: list[Traits]) -> list[Finding]:
    found = []
    for layer, t in zip(network.layers, traits):
        # The share is measured on one batch's masks: allow three binomial standard errors.
        margin = 3.0 * np.sqrt(0.25 / max(t.drop_sample, 1))
        if t.drop_share is not None:
            measured("DROPOUT_MAX", t.drop_share - margin)
        if t.drop_share is not None and t.drop_share > T.DROPOUT_MAX + margin:
            lower = advice.on_layer(layer, "rate", f"{T.DROPOUT_MAX:g}",
                                    f"lower {t.name}'s drop rate to {T.DROPOUT_MAX:g}")
            found.append(finding(
                "lint", "dropout-high", "warn", t.name, t.drop_share, f"<= {T.DROPOUT_MAX}",
                f"{t.name} drops {t.drop_share:.0%} of its units in training: most of the signal "
                "and gradient is discarded each step", f"{lower} or below"))
    return found
