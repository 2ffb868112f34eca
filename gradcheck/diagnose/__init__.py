"""``gradcheck diagnose``: explain why a network does not train, and what to change.

Runs the static lints (``lints``) once, then at each of three probe seeds (``seeds``: the config's
and two derived) the init lints (``init_lints``), forward health (``forward``), backward health
(``backward``) and a short training probe (``probe``, judged by ``verdict``); the gradient check
runs at the config's seed, before and after training. A seed-dependent result is called only when
every probe seed agrees (``seeds.agree``), and findings the training evidence contradicts are
downgraded (``expect``). Each finding carries an id, a severity, the layer, the measured value
(and its spread over the seeds), the threshold (``thresholds``), the cause and a fix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from gradcheck.build import build_network
from gradcheck.config import NetworkSpec, load_config
from gradcheck.diagnose import advice, expect, graph, inputs, measure, seeds, verdict
from gradcheck.diagnose.backward import check_backward, gradient_check
from gradcheck.diagnose.behaviour import layer_traits, tail_traits
from gradcheck.diagnose.findings import SEVERITIES, Diagnosis, Finding, ProbeRun
from gradcheck.diagnose.forward import check_forward
from gradcheck.diagnose.init_lints import init_lints
from gradcheck.diagnose.lints import run_lints
from gradcheck.diagnose.probe import SeedProbe, probe_at_seed
from gradcheck.diagnose.sequence import unused_ids
from gradcheck.diagnose.symptoms import input_independent, run_findings
from gradcheck.network import Batch, Network

__all__ = ["SEVERITIES", "Diagnosis", "Finding", "ProbeRun", "diagnose_network", "run_diagnosis"]


def diagnose_network(source: str | Path | dict, probe: bool = True) -> Diagnosis:
    """Load a network (YAML path or dict), build it and diagnose it.

    Raises ``GradcheckError`` subclasses for problems in the user's input.
    """
    spec = load_config(source)
    network, batch = build_network(spec)
    with network:
        return run_diagnosis(spec, network, batch, probe=probe)


def run_diagnosis(spec: NetworkSpec, network: Network, batch: Batch,
                  probe: bool = True) -> Diagnosis:
    """Every check on a built network; parameters are restored to their initial values after.

    The other probe seeds build their own networks from ``spec`` (and close them).
    """
    # Overflow in a diverging probe is a finding, not a warning on stderr: the library never prints.
    with np.errstate(all="ignore"):
        return _Diagnose(spec, network, batch, probe).run()


@dataclasses.dataclass
class _SeedResult:
    """What one probe seed found: its findings and probe runs."""

    seed: int
    findings: list[Finding] = dataclasses.field(default_factory=list)
    probe: SeedProbe | None = None
    seed_verdict: verdict.SeedVerdict | None = None


class _Diagnose:
    """One diagnosis: the structural part once, the seed-dependent part at every probe seed."""

    def __init__(self, spec: NetworkSpec, network: Network, batch: Batch, probe: bool):
        self.spec, self.network, self.batch, self.probe = spec, network, batch, probe
        self.seeds = seeds.probe_seeds(spec.seed)
        self.gradient_ok = True

    def run(self) -> Diagnosis:
        network, batch = self.network, self.batch
        network.set_training(True)
        # The first forward runs on the real batch, exactly as 'gradcheck check' does, so layers
        # that fix state on their first call (dropout masks) fix the same state.
        first = network.run(batch, allow_nonfinite=True, backward=False)
        self.rng = np.random.default_rng(np.random.SeedSequence(self.spec.seed, spawn_key=(7,)))
        self.vocab = inputs.vocabularies(self.spec, network, batch)
        self.complete = _ran_every_layer(network, first)
        options = {layer.name: layer.options for layer in self.spec.layers}
        self.traits = [layer_traits(network, k, self.rng, first.args[k], self.vocab)
                       for k in range(min(len(first.args), len(network.layers)))]
        for k, t in enumerate(self.traits):
            layer = network.layers[k]
            t.init_options = advice.init_options(
                layer, options.get(layer.name, {}),
                inputs.Slots.of(network, k, self.vocab).build_shape, t.roles)
        # Findings that do not depend on the seed: the config lints, the gradient checks.
        self.exact = run_lints(self.spec, network, batch, self.traits, self._tail(),
                               self.rng) if self.complete else []
        self.blockers = [f.layer for f in self.exact
                         if f.id in ("softmax-axis-1", "zero-jacobian")]
        self.diagnosis = Diagnosis(network=network.name, findings=[], seeds=list(self.seeds))
        results = []
        for seed in self.seeds:
            with seeds.at_seed(self.spec, network, batch, seed) as (net, seed_batch), \
                    measure.tagged(seed):
                results.append(self._at_seed(seed, net, seed_batch))
        return self._conclude(results)

    def _tail(self):
        """Traits of the parameter-free layers the loss reads through (what bounds or
        normalises the output)."""
        units = graph.tail(self.network)
        return tail_traits(self.network, units, self.rng, self.vocab) if units else None

    def _at_seed(self, seed: int, network: Network, batch: Batch) -> _SeedResult:
        result = _SeedResult(seed)
        run = network.run(batch, allow_nonfinite=True)
        if len(self.traits) == len(network.layers):
            result.findings += init_lints(network, self.traits, self.rng, self.vocab)
        result.findings += check_forward(network, batch, run, self.traits)
        if not self.complete or not np.isfinite(run.loss):
            return result
        result.findings += expect.initial_loss(
            run.loss, expect.standard_initial_loss(network, batch, self.vocab, self.rng),
            network.loss.name)
        backward = check_backward(self.spec, network, run, self.traits, self.blockers)
        result.findings += backward
        if seed == self.spec.seed and not any(f.id == "nonfinite-backward" for f in backward):
            grad_findings, self.diagnosis.gradcheck = gradient_check(self.spec, network, batch)
            self.exact += grad_findings
            self.gradient_ok = self.diagnosis.gradcheck["passed"]
            # The data decide which ids occur: once, on the config's own.
            loaded = {source.name for source in self.spec.inputs if source.source.file is not None}
            self.exact += unused_ids(network, run, loaded)
        if self.probe:
            result.probe = probe_at_seed(self.spec, network, batch, seed, self.gradient_ok)
            result.findings += self._probe_findings(network, result.probe)
            if seed == self.spec.seed:
                self.exact += self._recheck(network, batch, result.probe)
        return result

    def _probe_findings(self, network: Network, sp: SeedProbe) -> list[Finding]:
        found = []
        # The reference's symptoms only matter when there are no settings of the user's to
        # explain; otherwise only its blowing up is news (the verdict says whether it fitted).
        for outcome in (sp.user, sp.reference):
            if outcome is not None:
                found += run_findings(network, outcome, sp.target[outcome.run.label], self.traits,
                                      sp.init, symptoms=outcome is sp.user)
        if sp.zeroed is not None:
            found += input_independent(sp.user.run, sp.zeroed.run)
        return found

    def _recheck(self, network: Network, batch: Batch, sp: SeedProbe) -> list[Finding]:
        """The gradient check again at the weights the user's run ended with: a backward right
        only near the initial weights (say, only for positive ones) shows once they have moved.
        Not after a run that went non-finite or diverged: weights blown up by 1e20 and more are
        no place to compare a backward with finite differences."""
        run = sp.user.run
        if (self.diagnosis.gradcheck is None or not self.gradient_ok
                or run.outcome in ("nonfinite", "diverging") or run.steps_run == 0):
            return []
        params = graph.parameters(network)
        try:
            for (_, _, p), end in zip(params, sp.user.params_end):
                p[...] = end
            found, summary = gradient_check(self.spec, network, batch)
        finally:
            for (_, _, p), start in zip(params, sp.init):
                p[...] = start
        self.diagnosis.gradcheck["after_training"] = {**summary, "steps": run.steps_run}
        who = "your settings" if run.label == "configured" else "the reference"
        return [dataclasses.replace(f, cause=f"after {run.steps_run} training steps with {who}, "
                                    f"{f.cause}; at the initial weights it agreed, so the backward "
                                    "is right only near them") for f in found]

    def _conclude(self, results: list[_SeedResult]) -> Diagnosis:
        d = self.diagnosis
        probes = [r for r in results if r.probe is not None]
        for r in probes:
            r.seed_verdict = verdict.seed_verdict(r.seed, r.probe.user.run,
                                                  r.probe.reference and r.probe.reference.run,
                                                  self.gradient_ok)
        agreed = seeds.agree([r.findings for r in results], self.seeds)
        verdicts = []
        if probes:
            verdicts, d.verdict = verdict.conclude([r.seed_verdict for r in probes], self.seeds)
            d.runs = [run for r in probes for run in r.probe.runs]
            d.spread = _spread(d.runs)
        d.findings = expect.downgrade(self.exact + agreed + verdicts,
                                      [r.probe.user.run for r in probes], len(self.seeds))
        return d


def _ran_every_layer(network: Network, run) -> bool:
    """Whether every layer ran in ``run`` (the last may have made non-finite outputs)."""
    return all(t in run.tensors for outs in network.outputs for t in outs)


def _spread(runs: list[ProbeRun]) -> dict:
    """Per run label, its fit, steps and outcome at each probe seed that ran it."""
    spread: dict[str, dict[str, list]] = {}
    for run in runs:
        entry = spread.setdefault(run.label, {"seeds": [], "fit": [], "steps_run": [],
                                              "outcome": []})
        entry["seeds"].append(run.seed)
        entry["fit"].append(run.fit if np.isfinite(run.fit) else None)
        entry["steps_run"].append(run.steps_run)
        entry["outcome"].append(run.outcome)
    return spread
