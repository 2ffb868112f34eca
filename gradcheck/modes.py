"""Which elements a check compares, and how: ``full``, ``sample``, ``directional`` and ``auto``.

- ``full``: every element of every parameter and of the network input, by central differences;
  the input of each later layer (and of the loss) is a blame probe compared on a stratified sample
  of ``INTERMEDIATE_SAMPLES`` elements (see below).
- ``sample``: N elements per tensor: the largest-gradient quarter (bugs show first where the
  gradient is large) and the rest stratified over the leading axis (rows of a weight matrix,
  filters of a kernel, samples and channels of an input), so no row or channel is skipped
  wholesale the way a uniform draw can.
- ``directional``: per tensor, a few random unit directions v; the directional derivative
  g . v is compared with (L(x + h v) - L(x - h v)) / 2h: two evaluations per direction, whatever
  the tensor's size. A failing direction is localised by bisection (group testing): the support
  is halved, each half checked the same way, and the failing halves split again until groups are
  small enough to check element by element.
- ``auto`` (the default): ``full`` when its estimated time fits ``max_seconds``, otherwise
  ``sample`` and ``directional`` together; the report says which was done.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from gradcheck import tolerance
from gradcheck.analytic import INPUT, target_array, targets
from gradcheck.engine import Probe
from gradcheck.report import TargetReport

MODES = ("auto", "full", "sample", "directional")
DEFAULT_MAX_SECONDS = 60.0
DEFAULT_DIRECTIONS = 4
# Bisection stops at groups this small and checks their elements one by one; at most this many
# failing groups are followed per level, so a tensor that is wrong everywhere costs no more.
LEAF_SIZE = 8
MAX_GROUPS = 8
# auto's estimate times this many elements per target. A parameter's copies each cost a forward
# of its layer (4 tell that cost well, and keep slow external layers' requests few); an input's
# copies share one stacked pass, where more elements give a fairer per-element figure.
CALIBRATION_ELEMENTS = 24
CALIBRATION_PARAM_ELEMENTS = 4
# Directions whose +h/-h copies are built at once: n_directions * size values.
DIRECTION_BATCH_VALUES = 2**22


# ``full`` compares every element of every parameter and of the network input. The input of each
# later layer (dL/d(its input)) is a blame probe, not extra coverage: any error in it reaches the
# exhaustively checked parameters and network input upstream, and a failing check isolates every
# layer (gradcheck.isolate). Checking all of it would cost one tail forward per activation, often
# 10x the rest of the check. So a probe compares a stratified sample: the 16 largest gradients
# (where a wrong backward shows first) and 48 drawn across samples and channels. More buys little
# blame (isolation settles it) at a real price: with 256, probes were a fifth of bench N4's time.
INTERMEDIATE_SAMPLES = 64


def is_blame_probe(target) -> bool:
    """Whether ``target`` is the input of a layer after the first (or of the loss)."""
    return target.name == INPUT and target.unit > 0


def select_for_target(target, grad: np.ndarray, mode: str, samples: int, rng) -> np.ndarray:
    """``select_elements`` for one target, with ``full`` sampling the blame probes."""
    if mode == "full" and is_blame_probe(target):
        return select_elements(grad, "sample", max(samples, INTERMEDIATE_SAMPLES), rng)
    return select_elements(grad, mode, samples, rng)


def select_elements(grad: np.ndarray, mode: str, samples: int, rng) -> np.ndarray:
    """Flat indices to compare one by one: all of them (``full``), none (``directional``), or
    ``samples`` of them (``sample``): the largest-|gradient| quarter plus a draw stratified over
    the leading axis (the two leading axes of an input, batch and channel)."""
    size = grad.size
    if mode == "directional":
        return np.arange(0)
    if mode == "full" or size <= samples:
        return np.arange(size)
    magnitude = np.abs(grad).reshape(-1)
    n_top = max(1, samples // 4)
    top = np.argpartition(-magnitude, n_top - 1)[:n_top]
    taken = np.zeros(size, dtype=bool)
    taken[top] = True
    strata = _strata(grad.shape)
    per_stratum = size // strata
    need = samples - n_top
    chosen = []
    # Visit strata in a random order, round-robin, one element each time a stratum comes up.
    counts = np.full(strata, need // strata)
    counts[rng.permutation(strata)[:need % strata]] += 1
    for stratum in np.flatnonzero(counts):
        pool = np.arange(stratum * per_stratum, (stratum + 1) * per_stratum)
        pool = pool[~taken[pool]]
        if len(pool):
            chosen.append(rng.choice(pool, size=min(int(counts[stratum]), len(pool)),
                                     replace=False))
    drawn = np.concatenate(chosen) if chosen else np.arange(0)
    return np.sort(np.concatenate([top, drawn])).astype(np.intp)


def _strata(shape: tuple[int, ...]) -> int:
    if len(shape) >= 3:
        return int(shape[0] * shape[1])  # an input (batch, channels, ...) or a conv kernel
    return int(shape[0]) if len(shape) == 2 else 1


@dataclasses.dataclass
class Directional:
    """The outcome of the directional checks of one target."""

    directions: int = 0
    failed: int = 0
    kinked: int = 0
    evaluations: int = 0
    worst_rel_error: float = 0.0
    # Elements localised by bisection and then compared one by one.
    located: np.ndarray = dataclasses.field(default_factory=lambda: np.arange(0))
    located_failing: np.ndarray = dataclasses.field(default_factory=lambda: np.arange(0))
    located_rel: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    located_numeric: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    @property
    def status(self) -> str:
        if self.failed:
            return "fail"
        if self.directions and self.kinked == self.directions:
            return "kink"
        return "pass" if self.directions else "skipped"


def directional_check(probe: Probe, grad: np.ndarray, tol: tolerance.Tolerance, dtype,
                      n_directions: int, rng) -> Directional:
    """Compare g . v with central differences along ``n_directions`` random unit directions;
    localise the elements behind a failing direction by bisection."""
    g = np.asarray(grad, dtype=np.float64).reshape(-1)
    size = g.size
    result = Directional()
    if size == 0:
        return result
    support = np.arange(size)
    for _ in range(n_directions):
        signs = rng.choice(np.array([-1.0, 1.0]), size=size)
        rel, kinked = _judge_groups(probe, g, signs, [support], tol, dtype)
        result.directions += 1
        result.evaluations += 2
        result.worst_rel_error = max(result.worst_rel_error, float(rel[0]))
        if kinked[0]:
            result.kinked += 1
        elif rel[0] > tol.rtol:
            result.failed += 1
            if not len(result.located):
                _localise(probe, g, signs, tol, dtype, result)
    return result


def _judge_groups(probe: Probe, g: np.ndarray, signs: np.ndarray, groups: list[np.ndarray],
                  tol: tolerance.Tolerance, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Relative error and kink flag of the directional derivative along ``signs`` restricted to
    (and normalised over) each group of flat indices."""
    shape = probe.array.shape
    rel = np.empty(len(groups))
    kinked = np.zeros(len(groups), dtype=bool)
    per_call = max(1, DIRECTION_BATCH_VALUES // max(1, g.size))
    for lo in range(0, len(groups), per_call):
        part = groups[lo:lo + per_call]
        directions = np.zeros((len(part), g.size))
        for j, group in enumerate(part):
            directions[j, group] = signs[group] / np.sqrt(len(group))
        perturbed, analytic = probe.evaluate_directions(directions.reshape(len(part), *shape),
                                                        tol.eps, g)
        numeric = perturbed.numeric
        noise = tolerance.round_off(dtype, np.maximum(np.abs(perturbed.plus),
                                                      np.abs(perturbed.minus)), perturbed.step)
        # Cancellation can make g . v tiny; the size of its terms, |g v|_2, is the scale that
        # a wrong element has to stand out against.
        spread = np.array([np.sqrt(np.sum((g[grp] * signs[grp]) ** 2) / len(grp)) for grp in part])
        scale = (np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), spread)
                 + (tol.atol + noise) / tol.rtol)
        rel[lo:lo + len(part)] = np.abs(analytic - numeric) / scale
        kinked[lo:lo + len(part)] = perturbed.kinked
    return rel, kinked


def _localise(probe: Probe, g: np.ndarray, signs: np.ndarray, tol, dtype,
              result: Directional) -> None:
    """Group testing: split failing groups in halves until they are small, then compare those
    elements one by one."""
    groups = [np.arange(g.size)]
    leaves: list[np.ndarray] = []
    while groups:
        halves = [h for grp in groups for h in np.array_split(grp, 2) if len(h)]
        rel, kinked = _judge_groups(probe, g, signs, halves, tol, dtype)
        result.evaluations += 2 * len(halves)
        failing = [i for i in np.argsort(-rel) if rel[i] > tol.rtol and not kinked[i]]
        failing = failing[:MAX_GROUPS]
        groups = []
        for i in failing:
            (leaves if len(halves[i]) <= LEAF_SIZE else groups).append(halves[i])
    if not leaves:
        return
    located = np.unique(np.concatenate(leaves))
    perturbed = probe.evaluate(located, tol.eps)
    result.evaluations += 2 * len(located)
    numeric = perturbed.numeric
    noise = tolerance.round_off(dtype, np.maximum(np.abs(perturbed.plus),
                                                  np.abs(perturbed.minus)), perturbed.step)
    rel = tolerance.relative_error(g[located], numeric, tol, noise)
    bad = (rel > tol.rtol) & ~perturbed.kinked
    result.located, result.located_rel, result.located_numeric = located, rel, numeric
    result.located_failing = located[bad]


def estimate_full_seconds(network, batch, cached, eps: float, rng, progress=None) -> float:
    """Seconds a ``full`` check would take: each target's cost per element, timed on a few of
    its elements (fewer elements amortise less overhead, so this errs on the long side)."""
    total = 0.0
    for target in targets(network):
        size = target_array(network, cached, target).size
        if size == 0:
            continue
        probe = Probe(network, batch, cached, target)
        wanted = CALIBRATION_ELEMENTS if target.name == INPUT else CALIBRATION_PARAM_ELEMENTS
        picked = rng.choice(size, size=min(size, wanted), replace=False)
        started = time.perf_counter()
        probe.evaluate(np.sort(picked), eps)
        compared = min(size, INTERMEDIATE_SAMPLES) if is_blame_probe(target) else size
        total += (time.perf_counter() - started) / len(picked) * compared
        if progress is not None:
            progress(0)
    return total


class TimeUp(Exception):
    """Raised from the progress ticker when a check's ``--max-seconds`` deadline has passed; the
    engine's ``finally`` blocks restore every perturbed value on the way out."""


class Ticker:
    """Counts work done for a ``progress(done, total, what)`` callback (None: counts nothing),
    and enforces the deadline (``time.monotonic()`` value, or None) at every step."""

    def __init__(self, progress, total: int, deadline: float | None = None):
        self.progress = progress
        self.total = max(1, int(total))
        self.done = 0
        self.what = ""
        self.deadline = deadline

    def __call__(self, advance: int) -> None:
        self.done = min(self.total, self.done + int(advance))
        if self.progress is not None:
            self.progress(self.done, self.total, self.what)
        self.check_deadline()

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimeUp


def empty_report(name: str, shape: tuple[int, ...], analytic_full: np.ndarray) -> TargetReport:
    """The report of a target no element of which was compared one by one (directional mode)."""
    return TargetReport(target=name, shape=shape, status="skipped", checked=0, failed=0,
                        rel_error=np.full(shape, np.nan),
                        coverage={"elements": 0, "of": int(np.prod(shape, dtype=np.int64))})


def add_directional(report: TargetReport, probe: Probe, grad: np.ndarray,
                    tol: tolerance.Tolerance, dtype, n_directions: int, rng, ticker=None) -> None:
    """Run the directional checks of one target and fold them into its report: a failing
    direction fails the target, and the elements it was localised to are reported."""
    size = int(np.size(grad))
    found = directional_check(probe, grad, tol, dtype, n_directions, rng)
    if ticker is not None:
        ticker(2 * n_directions)
    coverage = dict(report.coverage or {"elements": report.checked, "of": size})
    coverage.update(directions=found.directions, directions_failed=found.failed,
                    directions_kinked=found.kinked, directional_max_rel_error=found.worst_rel_error)
    if len(found.located):
        coverage["localised"] = [_index(i, report.shape) for i in found.located_failing[:10]]
    report.coverage = coverage
    if found.failed:
        bad = found.located_failing
        report.status = "fail"
        report.failed += len(bad)
        report.checked += len(found.located)
        if report.rel_error is not None and len(found.located):
            report.rel_error.reshape(-1)[found.located] = found.located_rel
        if len(bad):
            worst = int(np.argmax(np.where(np.isin(found.located, bad), found.located_rel, -1)))
            i = int(found.located[worst])
            if found.located_rel[worst] >= report.max_rel_error:
                report.max_rel_error = float(found.located_rel[worst])
                report.worst_index = _index(i, report.shape)
                report.analytic = float(np.reshape(grad, -1)[i])
                report.numeric = float(found.located_numeric[worst])
            report.notes.append(f"{found.failed} of {found.directions} random directions disagree;"
                                f" bisection localised {len(bad)} wrong element(s)")
        else:
            report.notes.append(f"{found.failed} of {found.directions} random directions disagree "
                                "(max relative error "
                                f"{found.worst_rel_error:.1e}); no single element stands out: "
                                "the error is spread over many elements")
    elif report.status == "skipped" and found.directions:
        report.status = found.status


def _index(flat: int, shape: tuple[int, ...]) -> list[int]:
    return [int(i) for i in np.unravel_index(int(flat), shape)]


def coverage_warnings(settings, report) -> list[str]:
    """One sentence on what was covered when not every element was compared."""
    if settings.mode == "full":
        return []
    checks = [c for layer in report.layers for c in layer.checks]
    compared = sum(c.checked for c in checks)
    total = sum(int(np.prod(c.shape, dtype=np.int64)) for c in checks)
    parts = []
    if settings.requested_mode == "auto":
        # No measured seconds here: the report must be byte-stable for a given seed.
        parts.append(f"auto mode: a full check would take longer than --max-seconds "
                     f"{settings.max_seconds:g}, so")
    what = []
    if "sample" in settings.mode.split("+"):
        what.append(f"up to {settings.samples} elements per tensor")
    if "directional" in settings.mode.split("+"):
        what.append(f"{settings.directions} random directions per tensor")
    parts.append(f"checked {' and '.join(what)}: {compared:,} of {total:,} elements compared "
                 "one by one (--mode full compares every parameter and network-input element)")
    return [" ".join(parts)]
