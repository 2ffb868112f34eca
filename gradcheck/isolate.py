"""Every layer checked alone once anything fails, to tell a root cause from an inherited failure.

End to end, every layer below a wrong backward fails too: it receives a wrong upstream gradient.
Alone, a layer gets a random upstream gradient G (standard normal, from the seed) and the scalar
sum(G * layer(x)) is finite-differenced with respect to its input and each parameter, at the
input x the layer actually sees in the network. The same judging applies as end to end (kinks,
step sweep, measured round-off, patterns). A layer that fails alone is a root cause; one that
passes alone but fails end to end inherits its failure from the nearest root cause downstream.

The loss needs no separate run: its ``input`` target already differentiates the loss alone.
Layers are isolated only when something fails (or is inconclusive) end to end, and then all of
them: isolation costs one layer evaluation per checked element, far less than the tail.
"""

from __future__ import annotations

import numpy as np

from gradcheck import judge
from gradcheck.analytic import INPUT, analytic_pass, target_array, targets
from gradcheck.engine import Probe
from gradcheck.network import Batch, Network, projected
from gradcheck.report import LayerReport, worst_status

NEEDS_ISOLATION = ("fail", "inconclusive")


def isolate_layers(network: Network, cached, settings, layers: list[LayerReport], select) -> None:
    """Set ``isolated`` (and ``isolated_checks``) on each report in ``layers``.

    ``cached``: the network's clean pass (its ``inputs`` are what each layer sees);
    ``select(grad, rng) -> flat indices``: the element selection the end-to-end check uses.
    """
    # Once anything fails, every layer is checked alone: a wrong dL/dx can hide from a sampled
    # blame probe (gradcheck.modes.INTERMEDIATE_SAMPLES) yet fail alone, exhaustively and cheaply.
    anything_failed = any(report.status in NEEDS_ISOLATION for report in layers)
    for k, report in enumerate(layers):
        if report.is_loss:
            report.isolated = report.status
        elif anything_failed:
            rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(5, k)))
            report.isolated_checks = isolate_layer(network, cached, settings, k, rng, select)
            report.isolated = worst_status(c.status for c in report.isolated_checks)


def isolate_layer(network: Network, cached, settings, k: int, rng, select) -> list:
    """The TargetReports of layer ``k`` under sum(G * y) at its input in the network."""
    layer = network.layers[k]
    x = np.array(cached.inputs[k], copy=True)
    out_shape = network.shapes[k + 1]
    grad_out = rng.standard_normal((x.shape[0], *out_shape)).astype(network.dtype)
    alone = projected(f"{network.name}:{layer.name}", layer, network.shapes[k], out_shape,
                      network.dtype)
    batch = Batch(x, grad_out)
    clean = analytic_pass(alone, batch)
    reports = []
    for target in targets(alone):
        if target.unit != 0:
            continue
        analytic_full = clean.grads[target]
        array = target_array(alone, clean, target)
        indices = select(analytic_full, rng)
        probe = Probe(alone, batch, clean, target)
        first = probe.evaluate(indices, settings.tol.eps)
        verdicts = judge.judge(probe.evaluate, analytic_full.reshape(-1)[indices], indices, first,
                               settings.tol, network.dtype)
        reports.append(judge.target_report(target.name, tuple(array.shape), verdicts,
                                           analytic_full, is_input=target.name == INPUT))
    return reports

