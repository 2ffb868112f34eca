"""``gradcheck diagnose``: explain why a network does not train, and what to change.

Runs, in order: the static lints (``lints``), forward health (``forward``), the gradient check and
backward health (``backward``), and a short training probe (``probe``). Each finding carries an id,
a severity, the layer, the measured value, the threshold (``thresholds``), the cause and a fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gradcheck.config import NetworkSpec, load_config
from gradcheck.diagnose import passes
from gradcheck.diagnose.backward import check_backward, gradient_check
from gradcheck.diagnose.behaviour import layer_traits, tail_traits
from gradcheck.diagnose.findings import SEVERITIES, Diagnosis, Finding, ProbeRun
from gradcheck.diagnose.forward import check_forward
from gradcheck.diagnose.lints import run_lints
from gradcheck.diagnose.probe import run_probe
from gradcheck.network import Batch, Network
from gradcheck.build import build_network

__all__ = ["SEVERITIES", "Diagnosis", "Finding", "ProbeRun", "diagnose_network", "run_diagnosis"]


def diagnose_network(source: str | Path | dict, probe: bool = True) -> Diagnosis:
    """Load a network (YAML path or dict), build it and diagnose it.

    Raises ``GradcheckError`` subclasses for problems in the user's input.
    """
    spec = load_config(source)
    network, batch = build_network(spec)
    return run_diagnosis(spec, network, batch, probe=probe)


def run_diagnosis(spec: NetworkSpec, network: Network, batch: Batch, probe: bool = True) -> Diagnosis:
    """Every check on a built network; parameters are restored to their initial values after."""
    # Overflow in a diverging probe is a finding, not a warning on stderr: the library never prints.
    with np.errstate(all="ignore"):
        return _diagnose(spec, network, batch, probe)


def _diagnose(spec: NetworkSpec, network: Network, batch: Batch, probe: bool) -> Diagnosis:
    network.set_training(True)
    # The first forward runs on the real batch, exactly as 'gradcheck check' does, so layers that
    # fix state on their first call (dropout masks) fix the same state.
    first = passes.forward(network, batch.x, batch.target)
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(7,)))
    complete_forward = len(first.acts) == len(network.layers) + 1
    traits = [layer_traits(network, k, rng, first.acts[k]) if k < len(first.acts) else None
              for k in range(len(network.layers))]
    traits = [t for t in traits if t is not None]
    findings: list[Finding] = []
    if complete_forward:
        tail = _tail(spec, network, rng)
        findings += run_lints(spec, network, batch, traits, tail, rng)
    first = passes.forward(network, batch.x, batch.target)
    findings += check_forward(network, batch, first, traits)
    diagnosis = Diagnosis(network=network.name, findings=findings)
    if not complete_forward or not np.isfinite(first.loss):
        return diagnosis
    run = passes.complete(network, batch.x, batch.target)
    blockers = [f.layer for f in findings if f.id in ("softmax-axis-1", "zero-jacobian")]
    backward = check_backward(spec, network, run, traits, blockers)
    findings += backward
    if not any(f.id == "nonfinite-backward" for f in backward):
        grad_findings, diagnosis.gradcheck = gradient_check(spec, network, batch)
        findings += grad_findings
    if probe:
        gradient_ok = diagnosis.gradcheck is not None and diagnosis.gradcheck["passed"]
        probe_findings, diagnosis.runs, diagnosis.verdict = run_probe(spec, network, batch, traits,
                                                                      gradient_ok)
        findings += probe_findings
    return diagnosis


def _tail(spec: NetworkSpec, network: Network, rng):
    """Traits of the trailing parameter-free layers (what bounds or normalises the output)."""
    start = len(network.layers)
    while start > 0 and not any(p.size for p in network.layers[start - 1].params.values()):
        start -= 1
    return tail_traits(network, start, rng) if start < len(network.layers) else None
