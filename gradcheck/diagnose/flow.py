"""Gradient flow per branch: where a graph forks (a tensor read by several units, ``graph.forks``)
each branch sends back its own share of the fork's gradient. A branch whose share is a thousandth
of its sibling's is dead (a rectifier pushed off by its bias, weights near zero) and the layers
on it do not learn; one whose share is a thousand times its sibling's explodes and drowns the
other. The branch named is the one whose own backward gain -- the RMS of what it sends back to
the fork over the RMS of the gradient it gets at the merge -- is farther from 1: a skip that goes
straight to the merge has gain 1, so next to it the residual path is the one named, dead or
exploding. A branch that starts silent because a weight or scale on it is exactly zero is not
dead: that is the zero-initialised residual block (Goyal et al. 2017's zero gamma, Fixup), which
starts as the identity and whose zero parameter gets its gradient and grows on the first step.
"""

from __future__ import annotations

import numpy as np

from gradcheck.diagnose import graph
from gradcheck.diagnose import thresholds as T
from gradcheck.diagnose.behaviour import Traits
from gradcheck.diagnose.findings import Finding, finding
from gradcheck.diagnose.measure import measured
from gradcheck.network import Network, Pass


def _rms(arrays) -> float:
    values = [np.asarray(a, dtype=np.float64).ravel() for a in arrays if a is not None]
    if not values:
        return 0.0
    flat = np.concatenate(values)
    return float(np.sqrt(np.mean(flat * flat))) if flat.size else 0.0


def shares(network: Network, run: Pass, fork: graph.Fork) -> list[tuple[float, float]]:
    """Per branch of ``fork``: (RMS of the gradient it sends back to the fork, its gain: that
    over the RMS of the gradient it gets at the merge; NaN when it gets none)."""
    out = []
    for branch in fork.branches:
        unit, slot = branch.reader
        sent = _rms([run.arg_grads[unit][slot]])
        got = _rms([run.arg_grads[fork.merge][j] for j in branch.slots])
        out.append((sent, sent / got if got > 0 else float("nan")))
    return out


def branch_findings(network: Network, run: Pass, traits: list[Traits]) -> list[Finding]:
    """A ``dead-branch`` or ``exploding-branch`` finding for every fork whose branches' shares
    of the gradient differ by ``BRANCH_RATIO`` or more (``traits``: each layer's, for the roles
    of its parameters)."""
    found = []
    for fork in graph.forks(network):
        sent = shares(network, run, fork)
        largest = max(s for s, _ in sent)
        if not largest > 0:
            continue  # nothing reaches the fork: zero-gradient says so
        smallest = min(s for s, _ in sent)
        ratio = largest / smallest if smallest > 0 else float("inf")
        measured("BRANCH_RATIO", ratio)
        if ratio < T.BRANCH_RATIO:
            continue
        # The odd one out: the branch whose own gain is farthest from 1.
        odd = max(range(len(sent)), key=lambda i: abs(np.log(sent[i][1]))
                  if np.isfinite(sent[i][1]) and sent[i][1] > 0 else np.inf)
        if sent[odd][0] < largest and _zero_initialised(network, fork.branches[odd], traits):
            continue
        found.append(_finding(network, fork, odd, sent, ratio))
    return found


def _zero_initialised(network: Network, branch: graph.Branch, traits: list[Traits]) -> bool:
    """Whether a weight or a scale on ``branch`` is exactly zero (a block built to start as the
    identity)."""
    return any(role in ("weight", "scale") and not np.any(network.layers[k].params[name])
               for k in branch.units for name, role in traits[k].roles.items())


def _finding(network: Network, fork: graph.Fork, odd: int, sent, ratio: float) -> Finding:
    branch = fork.branches[odd]
    name = graph.branch_name(network, fork, branch)
    where = graph.label(network, fork.tensor)
    merge = network.units[fork.merge].name
    sibling = " and ".join(graph.branch_name(network, fork, b)
                           for i, b in enumerate(fork.branches) if i != odd)
    layer = network.layers[branch.units[0]].name if branch.units else merge
    share, gain = sent[odd]
    path = f"{name} (from {where} to {merge})"
    if share < max(s for s, _ in sent):
        return finding(
            "backward", "dead-branch", "warn", layer, 1.0 / ratio,
            f"share >= {1 / T.BRANCH_RATIO:g} x its sibling's",
            f"the branch {path} sends back "
            + ("no gradient at all" if share == 0 else
               f"{1 / ratio:.2g} x the gradient {sibling} sends")
            + f" (RMS {share:.3g}, its gain from {merge} back to {where} {gain:.3g}): {sibling} "
            "carries all of it, and the layers on the branch do not learn",
            f"find what blocks the branch {name}, a rectifier pushed off by a negative bias "
            "(start biases at zero), weights near zero (draw them N(0, 2/fan_in)) or a saturated "
            "activation; see dead-units and zero-gradient")
    return finding(
        "backward", "exploding-branch", "warn", layer, ratio,
        f"share <= {T.BRANCH_RATIO:g} x its sibling's",
        f"the branch {path} sends back {ratio:.3g} x the gradient {sibling} sends (RMS "
        f"{share:.3g}, its gain from {merge} back to {where} {gain:.3g}): its gradient explodes "
        "and drowns the other path",
        f"scale down the init of the weights on {name} to N(0, 2/fan_in), or put a "
        f"normalisation layer at the branch's end, before {merge}")
