"""What to expect of the initial loss, and what the training evidence contradicts.

The initial loss is compared with what the network's own init gives on standard-normal inputs of
its shape (uniform ids for token inputs; with the config's targets), at every probe seed and with
the same initial weights -- not with a fixed band around ln(classes): a default He output layer
starts LeNet at about 2 x ln(10) and trains in 10 steps. A loss far above that expectation says
the *data* push the network into a confident start (raw 0-255 pixels, say).

Findings that predict slow or unstable training from the initial state (init scale, initial loss,
update ratio, ...) are downgraded to ``info`` when the user's run fits the batch at every probe
seed: the evidence contradicts them, and the cause quotes it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck.diagnose import inputs
from gradcheck.diagnose import thresholds as T
from gradcheck.diagnose.findings import Finding, ProbeRun, finding
from gradcheck.diagnose.measure import measured
from gradcheck.network import Batch, Network

CONTRADICTED_BY_FIT = frozenset({"init-scale", "init-not-centred", "init-bias", "initial-loss",
                                 "activation-scale", "grad-profile", "exploding-branch",
                                 "update-ratio"})


def standard_initial_loss(network: Network, batch: Batch, vocab: dict[str, int], rng) -> float:
    """The mean initial loss over ``INIT_LOSS_BATCHES`` batches of standard-normal inputs shaped
    like ``batch``'s (so a sum-reduced loss and batch statistics see the same batch size), token
    ids drawn uniformly from ``vocab``."""
    losses = []
    for _ in range(T.INIT_LOSS_BATCHES):
        drawn = inputs.standard(network, batch, vocab, rng)
        losses.append(network.run(drawn, allow_nonfinite=True, backward=False).loss)
    return float(np.mean(losses))


def initial_loss(loss: float, expected: float, loss_name: str) -> list[Finding]:
    """The initial-loss finding, if any, for one probe seed: ``loss`` on the seed's own batch
    against ``expected``, the ``standard_initial_loss`` of the same initial weights."""
    if not (np.isfinite(expected) and expected > 0 and np.isfinite(loss)):
        return []
    ratio = loss / expected
    measured("INIT_LOSS_FACTOR", ratio)
    if ratio < T.INIT_LOSS_FACTOR:
        return []
    return [finding(
        "forward", "initial-loss", "warn", loss_name, ratio,
        f"L0 < {T.INIT_LOSS_FACTOR:g} x what the init gives on standard-normal inputs",
        f"the initial loss {loss:.3g} is {ratio:.3g} x the {expected:.3g} the same initial weights "
        "give on standard-normal inputs of the same shape: the data push the output into a "
        "confident, wrong start", "standardise the inputs (subtract each feature's mean, divide "
        "by its std) before they reach the network")]


def downgrade(findings: list[Finding], user_runs: list[ProbeRun], seeds: int) -> list[Finding]:
    """``findings`` with every ``CONTRADICTED_BY_FIT`` one made ``info`` when the user's run
    fitted the batch at all ``seeds`` probe seeds, the evidence quoted in its cause."""
    if len(user_runs) != seeds or not all(r.outcome == "fit" for r in user_runs):
        return findings
    steps = sorted(r.steps_run for r in user_runs)
    span = f"{steps[0]}" if steps[0] == steps[-1] else f"{steps[0]}-{steps[-1]}"
    who = "your settings fit" if user_runs[0].label == "configured" else "the reference fits"
    evidence = (f"; but {who} the batch in {span} steps at all {seeds} probe seeds, so this does "
                "not stop training")
    return [dataclasses.replace(f, severity="info", cause=f.cause + evidence)
            if f.id in CONTRADICTED_BY_FIT and f.severity != "info" else f for f in findings]
