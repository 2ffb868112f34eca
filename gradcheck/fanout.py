"""The comparison stage of a check: every target of the plan compared with its own unit's
objective, pass by pass (``compare.pass_slices``), in this process or, with ``--jobs``, fanned
out to forked worker processes (``gradcheck.parallel``), with the same result to the bit.

A work item is one pass of one target. A worker evaluates it (``LocalProbe.evaluate``) and sends
back the perturbed objective values (through memory it shares with this process,
``gradcheck.handover``), which shortcuts it computed with and which it refused; this process does
the same (``_here``) with the next item no process has claimed, whenever the result it needs
next is still in a worker, so ``jobs`` processes keep ``jobs`` cores busy. This process
takes the results in plan order, as one process would have run them, and for each:

- if a shortcut the item computed with was refused by an item before it (a worker does not see
  the refusals of the others, nor an item computed here ahead of its turn those made after it
  was computed), the item is evaluated again here, where every refusal before it is known:
  exactly what one process would have computed;
- else its refusals are made here, in order, so the report's notes come in the same order;
- a worker's error is raised in its item's turn: the error one process would have met first
  (a worker that dies instead is reported as the layer's error, with a hint to run one
  process, where what killed it shows).

Verification positions depend on the pass alone (``Verifier.positions``), so a pass verifies the
same elements wherever it runs. Judging, the report of each target and the directional checks
stay in this process, target by target, while the workers compute the passes after it.

``jobs="auto"`` starts workers (one per available core, but this process's) only once the
comparison has run ``settings.JOBS_GAIN_SECONDS`` and the passes left would take as long again
(projected from the time per element so far): a shorter comparison would lose more to starting
them than it gains. An explicit number starts them from the first pass. With workers, the
end-to-end safety net (``conclude.safety_net``) is the first worker's first job, outside the
order of the passes: it is computed while passes are left for the other processes to balance
against (as the last item, it kept this process waiting after its last target), and the passes'
results are taken meanwhile (as the first item, it held every result after it back until the
window of results filled). The caller uses it unless a unit measured a precision band.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from gradcheck import handover, parallel
from gradcheck.compare import Comparison, pass_slices
from gradcheck.engine.base import Perturbed
from gradcheck.engine.local import LocalProbe
from gradcheck.engine.verify import Distrusted
from gradcheck.errors import GradcheckError, LayerError
from gradcheck.settings import JOBS_GAIN_SECONDS
from gradcheck.usercode import type_name


AHEAD = -1  # the work item of ``Fanout.ahead``
# How many elements' results may wait in this process per process computing passes, before they
# stop to let it catch up (``parallel.Workers.map``); the shared memory they are handed over in
# holds as many (25 bytes each: 6.5 MiB a process, ``handover``). In items
# instead, the window held few of the small passes that end most targets: measured on N3 with 2
# jobs, 16 passes a process left the worker waiting 7 ms while this process judged a large
# target (10 ms) and the passes after it took 0.5 ms each.
AHEAD_ELEMENTS = 2**18


@dataclasses.dataclass
class Outcome:
    """What a worker sends back for one pass: the objective values (or the error it met), the
    shortcuts it computed with, and the refusals it made (method, message, quiet). From a
    worker, the values travel without their ``step``, a quarter of their bytes, which this
    process recomputes from the pass (``Fanout.values``)."""

    perturbed: Perturbed | None
    error: GradcheckError | None
    tried: set[str]
    refusals: list[tuple[str, str, bool]]


class Fanout:
    """The passes of every target in ``plan`` ((unit index, name, indices) triples) that
    ``compare(t)`` admits, run by ``jobs`` processes (1, N or "auto"). The caller asks for them
    in plan order, one ``evaluate`` per pass, with each target's ``probe(t)`` (made by
    ``make_probe(t)``); ``ahead()``, when given, is work done first once workers start
    (``ahead_result``). ``memory(processes, extra)``, when given, is how many processes fit in
    memory, each with ``extra`` bytes besides its working copies, and why fewer
    (``resources.Fit.processes``). Use as a context manager: the workers stop at its end, also
    on error. ``events``: what ``-v`` says about the processes."""

    def __init__(self, plan, jobs, comparison: Comparison, make_probe, compare, units=(),
                 ahead=None, memory=None):
        self.plan = plan
        self.units = list(units)  # reopened in each worker (``Workers``)
        self.ahead = ahead  # work after the comparison done ahead with workers (``ahead_result``)
        self.comparison = comparison
        self.make_probe = make_probe  # t -> LocalProbe of target t
        # Every pass of every compared target, in the order one process runs them.
        self.items = [(t, part) for t, (_, _, indices) in enumerate(plan) if compare(t)
                      for part in pass_slices(len(indices))]
        self.passes = len(self.items)
        # Elements in the passes before each pass (and in all): auto's projection of time left.
        self._before = np.cumsum([0] + [part.stop - part.start for _, part in self.items])
        self.position = 0
        self.events: list[str] = []
        self.redone = 0
        self._workers = None
        self._results = None
        self._began = None
        self.started = False
        self._probes: dict[int, tuple[LocalProbe, tuple]] = {}  # see ``probe``
        self._shared: handover.SharedValues | None = None  # with workers: see ``_start``
        self._index: dict[tuple[int, int], int] = {}  # (target, first element) -> item index
        self.count, self.auto = self._count(jobs)
        if memory is not None and self.count > 1:
            self.count, why = memory(self.count, handover.BYTES_PER_ELEMENT * AHEAD_ELEMENTS)
            if why is not None:
                self.events.append(f"jobs: at most {self.count} process(es), memory: {why}")
            self.auto = self.auto and self.count > 1

    def _count(self, jobs) -> tuple[int, bool]:
        """How many processes may work, and whether to decide by the time taken (auto)."""
        if jobs == 1:
            return 1, False
        if not parallel.can_fork():
            self.events.append("jobs: 1, this system cannot fork worker processes")
            return 1, False
        if jobs == "auto":
            cores = parallel.available_cores()
            if cores == 1:
                self.events.append("jobs: 1 (auto), one core is available")
            return cores, cores > 1
        return jobs, False

    def __enter__(self) -> Fanout:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._results is not None:
            # The map refers to this object (``_here``, ``_arrived``): closed, it lets go, so
            # reference counting frees the probes and results at once, without a collection.
            self._results.close()
            self._results = None
        if self._workers is not None:
            self._workers.close()
            self._workers = None
        if self._shared is not None:
            self._shared.release()
            self._shared = None
        if self.redone:
            self.events.append(f"jobs: {self.redone} pass(es) redone in this process: they "
                               "were computed (by a worker, or here ahead of their turn) with "
                               "a shortcut an earlier pass had refused")
        if self._began is None or self.started or self.count == 1:
            return
        if self.auto:
            took = time.perf_counter() - self._began
            self.events.append(f"jobs: 1 (auto), the comparison took {took:.2f} s: workers "
                               f"start only after {JOBS_GAIN_SECONDS:g} s with as much left, "
                               "sooner they cost more than they save")
        else:
            self.events.append(f"jobs: 1, {self.passes} pass(es) to compare: nothing to "
                               "share between processes")

    def evaluate(self, probe: LocalProbe, indices: np.ndarray, steps: np.ndarray,
                 out_of_time) -> Perturbed | None:
        """The next pass of the plan, which is of ``probe``'s target over ``indices`` at
        ``steps``; None when ``out_of_time()`` stopped the check before it."""
        if self._began is None:
            self._began = time.perf_counter()
        if self._results is None:
            if out_of_time():
                return None
            if self._should_start():
                self._start(out_of_time)
            else:
                self.position += 1
                return probe.evaluate(indices, steps)
        try:
            got = next(self._results, None)
        except parallel.WorkerDied as failure:
            raise self._died(failure) from None
        if got is None:
            return None
        self.position += 1
        return self._merge(probe, got[1], indices, steps)

    def ahead_result(self):
        """What ``ahead()`` returned, computed by a worker with the passes; None when it was
        not (one process, or an error there: the caller computes it). Call once every pass is
        taken, unless a deadline stopped them."""
        if self._workers is None or self.ahead is None:
            return None
        try:
            ok, value = self._workers.first_result()
        except parallel.WorkerDied as failure:
            raise self._died(failure) from None
        return value if ok else None

    def _should_start(self) -> bool:
        left = self.passes - self.position
        if self.count == 1 or left < 2:
            return False
        if not self.auto:
            return True
        elapsed = time.perf_counter() - self._began
        if elapsed < JOBS_GAIN_SECONDS:
            return False
        # The time left, projected from the time per element so far, must be worth it too.
        done = int(self._before[self.position])
        return elapsed / max(1, done) * (int(self._before[-1]) - done) >= JOBS_GAIN_SECONDS

    def _start(self, out_of_time) -> None:
        work = self.items[self.position:]
        count = min(self.count, len(work) + (self.ahead is not None))
        sizes = [part.stop - part.start for _, part in work]
        # Made before the fork, for the workers to find: where each item's values go.
        self._shared = handover.SharedValues(sizes, AHEAD_ELEMENTS * count)
        self._index = {(t, part.start): index for index, (t, part) in enumerate(work)}
        # This process works too (``_here``): ``count`` processes, one core each.
        self._workers = parallel.Workers(count - 1, self._in_worker, self.units,
                                         receive=self._arrived)
        self._results = self._workers.map(
            work, stop=out_of_time, helper=self._here,
            first=(AHEAD, None) if self.ahead is not None else None, sizes=sizes,
            ahead=AHEAD_ELEMENTS)
        elapsed = time.perf_counter() - self._began
        self.events.append(f"jobs: {count} processes, this one and {count - 1} worker(s), "
                           f"from pass {self.position + 1} of {self.passes} ({elapsed:.2f} s "
                           "into the comparison)")
        self.started = True

    def _merge(self, probe: LocalProbe, outcome: Outcome, indices, steps) -> Perturbed:
        verifier = self.comparison.verifier
        if any(not verifier.usable(probe.unit, method) for method in outcome.tried):
            self.redone += 1
            return probe.evaluate(indices, steps)
        if outcome.error is not None:
            raise outcome.error
        for method, message, quiet in outcome.refusals:
            verifier.refuse(probe.unit, Distrusted(method, message, quiet))
        return self.values(probe, outcome, indices, steps)

    @staticmethod
    def values(probe: LocalProbe, outcome: Outcome, indices, steps) -> Perturbed:
        """The values of ``outcome``, a pass of ``probe`` over ``indices`` at ``steps``: those a
        worker sent get their step again (see ``Outcome``); those computed here have it."""
        if outcome.perturbed.step is not None:
            return outcome.perturbed
        return dataclasses.replace(outcome.perturbed, step=probe.stored_step(indices, steps))

    def _died(self, failure: parallel.WorkerDied) -> LayerError:
        """A user error for a worker that ended while computing ``failure.item``: the code of
        the layer it was evaluating (a plugin, a compiled extension, an ``external`` client) is
        the likely cause, and one process shows what happened."""
        t, part = failure.item if failure.item is not None else (None, None)
        layer = ""
        if t is None:
            what = "before it computed anything"
        elif t == AHEAD:
            what = "while computing the end-to-end safety net"
        else:
            k, name, _ = self.plan[t]
            if self.units:
                layer = f"layer {self.units[k].name!r} ({type_name(self.units[k])}): "
            what = (f"while evaluating {name} elements {part.start}-{part.stop - 1} of those "
                    "selected")
        return LayerError(f"{layer}a --jobs worker process ended unexpectedly ({failure.how}) "
                          f"{what}; the code a layer runs (a plugin, a compiled extension, an "
                          "external client) may have crashed or exited it.",
                          hint="run with --jobs 1 to meet the failure in this process, where "
                          "its error shows")

    # -- the work of an item ----------------------------------------------------------------------

    def _in_worker(self, item) -> Outcome:
        # A worker's verifier is its own copy: what it refuses, it stops using itself. A worker
        # is handed the passes in plan order: a target before this one is done with.
        outcome = self._work(item, self.comparison.verifier, turn=True)
        if isinstance(outcome, Outcome) and outcome.perturbed is not None:
            t, part = item
            outcome.perturbed = self._shared.put(
                self._index[t, part.start], dataclasses.replace(outcome.perturbed, step=None))
        return outcome

    def _arrived(self, value):
        """A worker's value, as it arrives here: a pass's values copied out of the shared
        memory they were handed over in (``handover``)."""
        if isinstance(value, Outcome) and isinstance(value.perturbed, handover.Placed):
            value.perturbed = self._shared.take(value.perturbed)
        return value

    def _here(self, item) -> Outcome:
        """An item this process computes while a worker has the one it waits for: as a worker
        would, with a copy of what is refused so far, its own refusals made in its turn."""
        return self._work(item, self.comparison.verifier.scratch(), turn=False)

    def probe(self, t: int, turn: bool = True):
        """Target t's probe, and the steps of its selected elements with their caps, made once in
        this process: one probe serves t's turn (judging, a pass redone) and the passes of t this
        process computes ahead (a probe costs a forward and a copy of its input). ``turn``: t's
        turn has come, so the probes of the targets before it are dropped."""
        if turn:
            for done in [k for k in self._probes if k < t]:
                del self._probes[done]
        got = self._probes.get(t)
        if got is None:
            probe = self.make_probe(t)
            got = self._probes[t] = probe, self.comparison.steps(probe, self.plan[t][2])
        return got

    def _work(self, item, verifier, turn: bool) -> Outcome:
        t, part = item
        if t == AHEAD:
            try:
                return self.ahead()
            except GradcheckError:
                return None  # met again, and raised, where the caller computes it
        made = len(verifier.refusals)
        tried: set[str] = set()
        try:
            probe, (steps, _) = self.probe(t, turn)
            probe.verifier, probe.tried = verifier, tried
            try:
                perturbed, error = probe.evaluate(self.plan[t][2][part], steps[part]), None
            finally:
                probe.verifier, probe.tried = self.comparison.verifier, set()
        except GradcheckError as exc:
            perturbed, error = None, exc
        refusals = [(f.method, f.message, f.quiet) for f in verifier.refusals[made:]]
        return Outcome(perturbed, error, tried, refusals)
