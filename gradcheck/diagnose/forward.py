"""Forward health on one probe seed's batch: non-finite values, collapse across samples, dead and
saturated units, activation scale, attention collapsed at init (``sequence.py``) and the loss's
batch reduction (the initial loss against what the init gives is ``expect.py``'s, since it needs
every seed)."""

from __future__ import annotations

import numpy as np

from gradcheck.diagnose import advice, graph
from gradcheck.diagnose import thresholds as T
from gradcheck.diagnose.behaviour import Traits
from gradcheck.diagnose.findings import Finding, finding
from gradcheck.diagnose.measure import measured
from gradcheck.diagnose.sequence import attention_collapse
from gradcheck.errors import GradcheckError
from gradcheck.network import Batch, Network, Pass
from gradcheck.usercode import invoke


def spread(a: np.ndarray) -> float:
    """Median over units of the std across the batch, over the layer's RMS (0 if all zero).

    Units that are zero for every sample are left out: they are dead (a finding of their own), and
    a rectifier layer whose live half varies normally must not count as collapsed.
    """
    flat = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    flat = flat[:, np.any(flat != 0, axis=0)]
    rms = float(np.sqrt(np.mean(flat * flat))) if flat.size else 0.0
    return 0.0 if rms == 0 else float(np.median(flat.std(axis=0)) / rms)


def check_forward(network: Network, batch: Batch, run: Pass, traits: list[Traits]) -> list[Finding]:
    """All forward-health findings for one forward ``run`` on ``batch`` (``Network.run``, which
    stops at the first layer whose output is not finite)."""
    found = _nonfinite(network, run)
    if found:
        return found
    if run.loss_error is not None:
        return [finding("forward", "loss-rejects-output", "error", network.loss.name, None, None,
                         f"{network.loss.name} refused the network's output: {run.loss_error}",
                         "make the last layer produce what the loss takes (see the lints above)")]
    found += _collapse(network, run)
    found += dead_units(network, run, traits)
    found += _saturation(network, run, traits)
    found += _scale(network, run)
    found += attention_collapse(network, run)
    found += _reduction(network, batch, run)
    return found


def _nonfinite(network: Network, run: Pass) -> list[Finding]:
    for tensor, a in run.tensors.items():  # the inputs, then each output in the order made
        bad = ~np.isfinite(a)
        if bad.any():
            nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
            where, given = graph.label(network, tensor), tensor in network.input_names
            return [finding(
                "forward", "nonfinite-forward", "error", where, float(bad.mean()), "0 NaN/Inf",
                f"{graph.words(network, tensor)}{' holds' if given else ''} {nan} NaN and {inf} "
                "Inf values on the batch" + ("" if given else " although its input is finite"),
                "clean the input data" if given else f"guard {where}'s forward against overflow "
                "(exp of large values, division by zero, log of 0)")]
    return []


def _collapse(network: Network, run: Pass) -> list[Finding]:
    inputs = [run.tensors[t] for t in network.input_names]
    if len(inputs[0]) < 2 or any(spread(a) < T.COLLAPSE_WARN for a in inputs):
        return []
    for k, outs in enumerate(network.outputs):
        for tensor in outs:
            s = spread(run.tensors[tensor])
            measured("COLLAPSE_WARN", s)
            if s >= T.COLLAPSE_WARN:
                continue
            # The first collapsed output in the order layers run: everything it reads varies.
            name = network.layers[k].name
            before = " and ".join(graph.label(network, t) for t in network.sources[k])
            dead = not np.any(run.tensors[tensor])
            return [finding(
                "forward", "sample-collapse", "error" if s < T.COLLAPSE_ERROR else "warn", name,
                s, f">= {T.COLLAPSE_WARN:g} (error below {T.COLLAPSE_ERROR:g})",
                f"{name} is the first layer whose outputs are (near-)identical across samples "
                f"(spread {s:.2g}; {before} still varies){': they are all zero' if dead else ''}"
                ", so everything after it cannot tell the samples apart",
                f"find why {name} ignores its input, a dead rectifier, a saturated or size-1 "
                "normalisation, or a vanishing init scale before it (see the other findings)")]
    return []


def _units(a: np.ndarray) -> np.ndarray:
    """(samples, units): a unit is a feature, or a channel for (batch, C, ...) outputs."""
    if a.ndim <= 2:
        return a.reshape(len(a), -1)
    return np.moveaxis(a, 1, 0).reshape(a.shape[1], -1).T


def dead_units(network: Network, run: Pass, traits: list[Traits]) -> list[Finding]:
    """TDC's dead units in every rectifier-like layer of ``run`` (also judged after training)."""
    found = []
    for k, t in enumerate(traits):
        if not t.elementwise or t.affine or t.bounded is not None:
            continue
        units = np.abs(_units(run.tensors[network.outputs[k][0]]))
        dead = float(np.mean(np.percentile(units, 95, axis=0) < T.DEAD_ACTIVATION))
        # A live rectifier unit is off for one sample with probability ~1/2, so for all of a
        # batch of B with 2^-B: below DEAD_MIN_BATCH samples only a wholly dead layer is telling.
        small = len(units) < T.DEAD_MIN_BATCH
        if not small:
            measured("DEAD_SHARE_WARN", dead)
        if dead == 1.0 or (dead > T.DEAD_SHARE_WARN and not small):
            found.append(finding(
                "forward", "dead-units", "error" if dead == 1.0 else "warn", t.name, dead,
                f"<= {T.DEAD_SHARE_WARN} of units", f"{dead:.0%} of {t.name}'s units output 0 for "
                "the whole batch; they pass no gradient and never recover",
                "centre the inputs and the init of the layer before (zero-mean weights, zero "
                "bias), lower the learning rate, or use a leaky rectifier"))
    return found


def _gain(fn, x: np.ndarray) -> np.ndarray | None:
    h = 1e-4 * np.maximum(np.abs(x), 1.0)
    with np.errstate(all="ignore"):
        try:
            return (np.asarray(fn(x + h)) - np.asarray(fn(x - h))) / (2 * h)
        except GradcheckError:
            return None


def _saturation(network: Network, run: Pass, traits: list[Traits]) -> list[Finding]:
    found = []
    for k, t in enumerate(traits):
        if not t.elementwise or t.affine or t.bounded is None or t.constant:
            continue
        layer = network.layers[k]
        fn = lambda v, layer=layer: invoke(layer, "forward", layer.forward, v)  # noqa: E731
        x = run.args[k][0]
        grid = np.resize(np.linspace(-4.0, 4.0, 81), x.shape).astype(x.dtype)
        peak, gain = _gain(fn, grid), _gain(fn, x)
        if peak is None or gain is None or not np.max(np.abs(peak)) > 0:
            continue
        saturated = np.abs(gain) < T.SATURATED_GAIN * np.max(np.abs(peak))
        share = float(np.mean(_units(saturated).mean(axis=0) > T.SATURATED_SHARE))
        measured("SATURATED_SHARE", share)
        if share > T.SATURATED_SHARE:
            found.append(finding(
                "forward", "saturation", "warn", t.name, share, f"<= {T.SATURATED_SHARE} of units",
                f"{share:.0%} of {t.name}'s units sit where its slope is below "
                f"{T.SATURATED_GAIN:g} of its peak for most samples; gradients through them vanish",
                f"scale down what feeds {t.name}, {_smaller_init(network, k, traits)}, or put "
                "a normalisation layer before the activation"))
    return found


def _smaller_init(network: Network, k: int, traits: list[Traits]) -> str:
    """How to make the weights feeding layer ``k`` LeCun-sized (the nearest weight it reads
    through)."""
    for j in reversed(network.ancestors(k)):
        weights = [n for n, r in traits[j].roles.items() if r == "weight"]
        if weights:
            layer = network.layers[j]
            return advice.weight_init(layer, f"{layer.name}.{weights[0]}", "lecun",
                                      traits[j].init_options.get(weights[0]))
    return "standardise the inputs"


def _scale(network: Network, run: Pass) -> list[Finding]:
    found, info = [], None
    output = network.sources[len(network.layers)][0]  # its scale is the targets' business
    tensors = [*graph.float_inputs(network),
               *(t for outs in network.outputs for t in outs if t != output)]
    for tensor in tensors:
        a = np.asarray(run.tensors[tensor], dtype=np.float64)
        name, magnitude = graph.label(network, tensor), float(np.mean(np.abs(a)))
        given = tensor in network.input_names
        measured("SCALE_ABNORMAL", magnitude)
        if magnitude >= T.SCALE_ABNORMAL:
            found.append(finding(
                "forward", "activation-scale", "warn", name, magnitude, f"< {T.SCALE_ABNORMAL:g}",
                f"mean |value| of {graph.words(network, tensor)} is "
                f"{magnitude:.3g}; large activations give large gradients and saturate what "
                "follows", "normalise the inputs to zero mean and unit variance" if given else
                f"scale down the init of the layers up to {name}"))
            break
        std = float(a.std())
        if not given:
            measured("SCALE_LOW", std)
            measured("SCALE_HIGH", std)
        if info is None and not given and not T.SCALE_LOW <= std <= T.SCALE_HIGH:
            info = finding("forward", "activation-scale", "info", name, std,
                           f"std in [{T.SCALE_LOW}, {T.SCALE_HIGH}]",
                           f"{name} outputs have std {std:.3g}, outside the range a fan-in "
                           "scaled init keeps", "check the init scale of the layers before it")
    return found + ([info] if info and not found else [])


def _reduction(network: Network, batch: Batch, run: Pass) -> list[Finding]:
    pred = run.pred
    target = np.asarray(batch.target)
    try:
        doubled = network.loss_value(np.concatenate([pred, pred]), np.concatenate([target, target]))
    except GradcheckError:
        return []
    if not run.loss > 0:
        return []
    measured("REDUCTION_GROWTH", doubled / run.loss)
    if doubled < T.REDUCTION_GROWTH * run.loss:
        return []
    return [finding(
        "forward", "loss-reduction", "info", network.loss.name, doubled / run.loss,
        f"< {T.REDUCTION_GROWTH}", f"{network.loss.name} doubles when the batch is duplicated; "
        "it sums over the batch, so gradients and the right learning rate scale with the batch "
        "size", "average over the batch, or divide the learning rate by the batch size")]
