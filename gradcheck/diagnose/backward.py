"""Backward health on the config's batch: the gradient check first, then non-finite and
zero gradients, the gradient-norm profile over depth, over the branches of a graph (``flow``) and
through time (``sequence``), the size of one optimizer step, decay against data, and samples
leaking into each other's gradients. A parameter shared by several
layers (``share:``) is one parameter here, with the gradient of all its uses."""

from __future__ import annotations

import numpy as np

from gradcheck.check import run_check
from gradcheck.settings import settings_for
from gradcheck.config import NetworkSpec
from gradcheck.diagnose import advice, graph
from gradcheck.diagnose import thresholds as T
from gradcheck.diagnose.behaviour import Traits
from gradcheck.diagnose.findings import Finding, finding
from gradcheck.diagnose.flow import branch_findings
from gradcheck.diagnose.measure import measured
from gradcheck.diagnose.optim import first_update
from gradcheck.diagnose.sequence import through_time
from gradcheck.network import Batch, Network, Pass

GRADCHECK_SAMPLES = 16


def gradient_check(spec: NetworkSpec, network: Network, batch: Batch) -> tuple[list[Finding], dict]:
    """B1: the finite-difference check in sample mode; one error per root-cause layer."""
    settings = settings_for(spec, mode="sample", samples=GRADCHECK_SAMPLES)
    report = run_check(network, batch, settings)
    summary = {"passed": report.passed, "mode": "sample", "samples": GRADCHECK_SAMPLES,
               "root_causes": report.root_causes, **report.counts()}
    found = []
    for layer in report.layers:
        if not layer.root_cause:
            continue
        # Wrong end to end, or only when checked alone (the end-to-end samples happened to pass).
        failing = ([c for c in layer.checks if c.status == "fail"]
                   or [c for c in layer.isolated_checks if c.status == "fail"])
        if not failing:  # a broken contract: a forward not deterministic, a backward not
            # idempotent (the check names it in the layer's problems)
            found.append(finding(
                "gradcheck", "gradient-mismatch", "error", layer.name, None,
                f"relative error <= {settings.tol.rtol:g}",
                "; ".join(problem["message"] for problem in layer.problems)
                + "; every other finding is measured with this layer's gradient",
                f"fix {layer.name}'s forward and backward first; 'gradcheck check' shows why"))
            continue
        worst = max(failing, key=lambda c: c.max_rel_error)
        target = "dL/dinput" if worst.target == "input" else f"dL/d{worst.target}"
        found.append(finding(
            "gradcheck", "gradient-mismatch", "error", layer.name, worst.max_rel_error,
            f"relative error <= {settings.tol.rtol:g}",
            f"{layer.name}'s backward disagrees with finite differences: {target} at "
            f"{worst.worst_index} is {worst.analytic:.4g} analytically but {worst.numeric:.4g} "
            f"numerically ({worst.failed} of {worst.checked} sampled elements fail); every other "
            "finding is measured with this wrong gradient",
            f"fix {layer.name}'s backward ({target}) first; 'gradcheck check' shows every target"))
    return found, summary


def check_backward(spec: NetworkSpec, network: Network, run: Pass, traits: list[Traits],
                   blockers: list[str]) -> list[Finding]:
    """B2-B7 on one complete forward/backward ``run``."""
    found = _nonfinite(network, run)
    if found:
        return found
    params = [(k, name, p, g) for (k, name, p), g in
              zip(graph.parameters(network), graph.total_gradients(network, run.grads))]
    found += _zero(network, params, run, blockers)
    found += _profile(network, params)
    found += branch_findings(network, run, traits)
    found += through_time(network, run)
    if spec.train is not None:
        found += _update_ratio(spec, network, params)
        found += _regularisation(spec, network, params)
    found += _batch_mixing(network, run, traits)
    return found


def _nonfinite(network: Network, run: Pass) -> list[Finding]:
    for k in range(len(network.layers), -1, -1):
        unit, sources = network.units[k], network.sources[k]
        arrays = [("dL/dinput" if len(sources) == 1 else f"dL/d{graph.label(network, t)}", g)
                  for t, g in zip(sources, run.arg_grads.get(k, []))]
        arrays += [(f"dL/d{n}", g) for (j, n), g in run.grads.items() if j == k]
        for label, g in arrays:
            if g is not None and not np.all(np.isfinite(g)):
                return [finding(
                    "backward", "nonfinite-backward", "error", unit.name,
                    float(np.mean(~np.isfinite(g))), "0 NaN/Inf",
                    f"{unit.name} is the first unit, in backward order, whose {label} holds "
                    "NaN/Inf although the gradient it received is finite",
                    f"guard {unit.name}'s backward against overflow and division by zero")]
    return []


def _zero(network: Network, params: list, run: Pass, blockers: list[str]) -> list[Finding]:
    zero = [(k, n) for k, n, _, g in params if not np.any(g)]
    if zero:
        labels = ", ".join(graph.param_label(network, k, n) for k, n in zero)
        why = (f": {', '.join(blockers)} has a zero Jacobian and blocks them" if blockers else
               ": nothing reaches them (dead units or a zero Jacobian downstream)")
        return [finding("backward", "zero-gradient", "error", network.layers[zero[0][0]].name,
                         float(len(zero)), "0 parameters with exactly zero gradient",
                         f"{len(zero)} of {len(params)} parameters receive exactly zero gradient "
                         f"({labels}){why}; they can never change",
                         f"remove what blocks the gradient ({', '.join(blockers)})" if blockers
                         else "find the layer after them whose backward returns zeros")]
    total = sum(g.size for g in run.grads.values())
    zeros = sum(int(np.sum(g == 0)) for g in run.grads.values())
    if total:
        measured("ZERO_GRAD_SHARE", zeros / total)
    if total and zeros / total >= T.ZERO_GRAD_SHARE:
        return [finding(
            "backward", "zero-gradient", "warn", None, zeros / total, f"< {T.ZERO_GRAD_SHARE}",
                         f"{zeros / total:.0%} of all parameter-gradient entries are exactly 0",
                         "look for dead rectifiers (see dead-units) and reinitialise")]
    return []


def _weights(network: Network, params: list) -> list[tuple[str, float, float]]:
    """(layer name, |g|, mean |g|) of each parametric layer's largest parameter, forward order."""
    best: dict[int, tuple[int, float, float]] = {}
    for k, _, p, g in params:
        if k not in best or p.size > best[k][0]:
            best[k] = (p.size, float(np.linalg.norm(g)), float(np.mean(np.abs(g))))
    return [(network.layers[k].name, norm, mean) for k, (_, norm, mean) in sorted(best.items())]


def _profile(network: Network, params: list) -> list[Finding]:
    layers = [w for w in _weights(network, params) if w[1] > 0]
    if len(layers) < 2:
        return []
    (first, g_first, _), (last, g_last, _) = layers[0], layers[-1]
    ratio = g_first / g_last
    measured("VANISH_RATIO", ratio)
    measured("EXPLODE_RATIO", ratio)
    measured("VANISH_MEAN", min(m for _, _, m in layers))
    fix_vanish = ("use rectifiers with N(0, 2/fan_in) init, or add normalisation layers")
    if ratio < T.VANISH_RATIO or any(m < T.VANISH_MEAN for _, _, m in layers):
        low = min(layers, key=lambda w: w[2])
        return [finding(
            "backward", "grad-profile", "warn", low[0], ratio,
            f"|g_first|/|g_last| >= {T.VANISH_RATIO:g}",
                         f"gradients vanish towards the input: |g({first})| / |g({last})| = "
                         f"{ratio:.3g}; smallest mean |g| {low[2]:.3g} in {low[0]}", fix_vanish)]
    if ratio > T.EXPLODE_RATIO:
        return [finding("backward", "grad-profile", "warn", first, ratio, f"<= {T.EXPLODE_RATIO:g}",
                         f"gradients explode towards the input: |g({first})| / |g({last})| = "
                         f"{ratio:.3g}", "scale down the init (N(0, 1/fan_in)), normalise the "
                         "inputs, or add normalisation layers")]
    return []


def _update_ratio(spec: NetworkSpec, network: Network, params: list) -> list[Finding]:
    ratios = []
    for k, name, p, g in params:
        norm = float(np.linalg.norm(p))
        if norm > 0 and np.any(g):
            step = first_update(spec.train, np.asarray(p, np.float64), g)
            ratios.append((float(np.linalg.norm(step)) / norm, graph.param_label(network, k, name),
                           network.layers[k].name))
    if not ratios:
        return []
    found = []
    high, low = max(ratios), min(ratios)
    measured("UPDATE_HIGH", high[0])
    measured("UPDATE_LOW", low[0])
    opt = spec.train
    what = (f"lr {opt.lr:g}, momentum {opt.momentum:g}, weight_decay {opt.weight_decay:g}"
            if opt.optimizer == "sgd" else f"adam lr {opt.lr:g}, weight_decay {opt.weight_decay:g}")
    if high[0] > T.UPDATE_HIGH:
        error = high[0] >= T.UPDATE_ERROR
        # SGD's first step is proportional to lr; Adam's first step is lr per element.
        lr = opt.lr * 1e-3 / high[0]
        found.append(finding(
            "backward", "update-ratio", "error" if error else "warn", high[2], high[0],
            f"<= {T.UPDATE_HIGH:g} (error at >= {T.UPDATE_ERROR:g})",
            f"the first step of the configured optimizer ({what}) changes {high[1]} by "
            f"{high[0]:.3g} x its own size{_momentum(opt)}; about 1e-3 is healthy",
            "lower the learning rate until the ratio is near 1e-3, about "
            f"{advice.train_block(lr=lr)} (and lower momentum or weight_decay if they are large)"))
    if low[0] < T.UPDATE_LOW:
        lr = opt.lr * 1e-3 / low[0]
        found.append(finding(
            "backward", "update-ratio", "warn", low[2], low[0], f">= {T.UPDATE_LOW:g}",
            f"the first step of the configured optimizer ({what}) changes {low[1]} by only "
            f"{low[0]:.3g} x its size; it will barely train",
            f"raise the learning rate, about {advice.train_block(lr=lr)}, or look for a "
            "vanishing gradient"))
    return found


def _momentum(opt) -> str:
    if opt.optimizer != "sgd" or not opt.momentum:
        return ""
    return (f", and momentum can grow later steps up to 1/(1 - {opt.momentum:g}) = "
            f"{1 / (1 - opt.momentum):.3g} x that")


def _regularisation(spec: NetworkSpec, network: Network, params: list) -> list[Finding]:
    decay = spec.train.weight_decay
    if not decay:
        return []
    worst = None
    for k, name, p, g in params:
        data = float(np.linalg.norm(g))
        reg = decay * float(np.linalg.norm(p))
        if data > 0:
            measured("REG_DOMINATES", reg / data)
        if data > 0 and reg / data >= T.REG_DOMINATES and (worst is None or reg / data > worst[0]):
            worst = (reg / data, graph.param_label(network, k, name), network.layers[k].name)
    if worst is None:
        return []
    return [finding(
        "backward", "reg-dominates", "warn", worst[2], worst[0], f"< {T.REG_DOMINATES:g}",
                     f"the weight-decay gradient of {worst[1]} is {worst[0]:.3g} x its data "
                     "gradient: training mostly shrinks weights instead of fitting the data, and "
                     "it can mask a wrong data gradient", f"lower weight_decay (now {decay:g}) "
                     f"by at least {worst[0] / T.REG_DOMINATES * 10:.2g} x")]


def _batch_mixing(network: Network, run: Pass, traits: list[Traits]) -> list[Finding]:
    for k, layer in enumerate(network.layers):
        args = run.args[k]
        floats = [j for j, t in enumerate(network.sources[k]) if t not in network.integer]
        if len(args[0]) < 2 or not floats or traits[k].batch_coupled or getattr(
                layer, "mixes_batch", False):
            continue
        rng = np.random.default_rng(k)
        grad_out = []
        for t in network.outputs[k]:
            g = np.zeros_like(run.tensors[t])
            g[0] = rng.normal(size=g[0].shape)
            grad_out.append(g)
        got = graph.input_gradients(layer, args, grad_out)
        if got is None:
            continue
        grad = np.concatenate([np.asarray(got[j], dtype=np.float64).reshape(len(args[0]), -1)
                               for j in floats], axis=1)
        scale = float(np.max(np.abs(grad), initial=0.0))
        leak = float(np.max(np.abs(grad[1:]), initial=0.0))
        if scale > 0:
            measured("BATCH_LEAK", leak / scale)
        if scale > 0 and leak > T.BATCH_LEAK * scale:
            return [finding("backward", 
                "batch-mixing", "error", layer.name, leak / scale, f"<= {T.BATCH_LEAK:g}",
                f"{layer.name}'s forward treats samples independently, yet its backward sends "
                f"sample 0's gradient into other samples' inputs (largest leak {leak / scale:.3g} "
                "of the largest dL/dx): an indexing bug mixes the batch axis with another",
                f"check the batch index in {layer.name}'s backward (dL/dx[n] may only use "
                "grad_out[n] and x[n])")]
    return []
