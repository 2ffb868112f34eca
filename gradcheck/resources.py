"""Resource guards: refuse a check that would not fit in memory, before it is killed for it;
and keep the allocator from making a check pay page faults for every temporary array.

Memory is guarded twice, with the estimates of ``gradcheck.footprint``:

- while the network is built (``MemoryBudget``): before a built-in initialiser draws a
  parameter, and after every layer, a network that no check could fit even in its cheapest mode
  is refused, before the rest is drawn;
- before the clean pass (``fit``): a check in the mode asked for that would not fit is refused,
  naming the modes that would; auto mode picks the most thorough mode that fits instead.

The budget is the peak resident size the process may reach: ``GRADCHECK_MAX_MEMORY_GB``, or what
it holds now plus half of the memory the OS reports available (the rest is for everything else).
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import dataclasses
import math
import os
import resource
import sys

from gradcheck import footprint
from gradcheck.errors import GradcheckError
from gradcheck.settings import CheckSettings

FALLBACK_AVAILABLE = 8 * 2**30
ENV_BUDGET = "GRADCHECK_MAX_MEMORY_GB"
LIMIT_HINT = f"{ENV_BUDGET} sets the limit (default: half the available memory)"


class ResourceError(GradcheckError):
    """The check would need more memory (or time) than is available."""


def resident_bytes() -> int:
    """The process's resident size now (its peak so far where /proc is not available)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes there, KiB elsewhere


def _available_from_os() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return FALLBACK_AVAILABLE


def available_bytes() -> int:
    """The peak resident size a check may reach: ``GRADCHECK_MAX_MEMORY_GB``, or what the
    process holds now plus half of what the OS reports available."""
    override = os.environ.get(ENV_BUDGET)
    if override:
        try:
            value = float(override)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise ResourceError(f"{ENV_BUDGET}={override!r} is not a positive number of "
                                "gigabytes.", hint=f"e.g. {ENV_BUDGET}=8")
        return int(value * 2**30)
    return resident_bytes() + _available_from_os() // 2


@dataclasses.dataclass(frozen=True)
class Fit:
    """The estimate of every mode (``footprint.MODES``) and the budget they were held to."""

    estimates: dict[str, footprint.Estimate]
    budget: int

    def describe(self, mode: str) -> str:
        """A line for -v: the estimate of the mode that ran."""
        return self.estimates[mode].describe(self.budget)

    def processes(self, mode: str, wanted: int, extra: int = 0) -> tuple[int, str | None]:
        """How many processes (``wanted`` at most, one at least) may check in ``mode`` at once
        within the budget, and why fewer, if fewer: forked workers share the network and what
        this process holds until they write to it, but each has its own working copies (the
        comparison's and the safety net's, ``Estimate.passing_working``) and ``extra`` bytes."""
        estimate = self.estimates[mode]
        each = estimate.passing_working + extra
        fitting = 1 + max(0, self.budget - estimate.total) // max(1, each)
        if fitting >= wanted:
            return wanted, None
        return fitting, (f"each worker holds its own working copies, about {footprint.gib(each)}, "
                         f"and a {mode} check needs {footprint.gib(estimate.total)} of the "
                         f"{footprint.gib(self.budget)} available")


def fit(network, batch, settings: CheckSettings) -> tuple[CheckSettings, Fit]:
    """``settings`` for a check of ``network`` on ``batch`` that fits in memory, and the
    ``Fit`` they were chosen by. A mode asked for that does not fit raises ResourceError naming the
    modes that would; auto mode keeps ``full`` when it fits (time decides then), else resolves
    to the most thorough mode that fits (``resolved_by="memory"``). Called before the clean
    pass: what the process holds beyond the network's arrays is the estimate's baseline."""
    inputs = list(network.named_inputs(batch.x).values())
    units = footprint.units_of(network, inputs[0].shape[0])
    itemsize = network.dtype.itemsize
    held = (sum(sum(u.params) for u in units) * itemsize + sum(x.nbytes for x in inputs)
            + batch.target.nbytes)
    baseline = max(0, resident_bytes() - held)
    budget = available_bytes()
    estimates = {mode: footprint.estimate(units, itemsize, mode, settings.samples, baseline)
                 for mode in footprint.MODES}
    fitting = [mode for mode in footprint.MODES if estimates[mode].total <= budget]
    if settings.mode != "auto":
        if settings.mode not in fitting:
            raise ResourceError(_too_large(estimates[settings.mode], budget),
                                hint=_alternatives(estimates, fitting))
        return settings, Fit(estimates, budget)
    if not fitting:
        raise ResourceError(_too_large(estimates["directional"], budget, " even"),
                            hint=_alternatives(estimates, fitting))
    if fitting[0] != "full":
        settings = dataclasses.replace(settings, resolved=fitting[0], resolved_by="memory")
    return settings, Fit(estimates, budget)


def _too_large(estimate: footprint.Estimate, budget: int, even: str = "") -> str:
    return (f"the check needs about {footprint.gib(estimate.total)}{even} in {estimate.mode} "
            f"mode ({footprint.gib(estimate.network)} for the network and its clean pass, "
            f"{footprint.gib(estimate.working)} for {estimate.stage}, "
            f"{footprint.gib(estimate.baseline)} already in use), "
            f"{footprint.gib(budget)} available.")


def _alternatives(estimates: dict, fitting: list[str]) -> str:
    cheaper = [mode for mode in ("directional", "sample") if mode in fitting]
    if cheaper:
        sizes = " and ".join(footprint.gib(estimates[mode].total) for mode in cheaper)
        return (f"use --mode {' or '.join(cheaper)} (about {sizes}), or a smaller input.batch; "
                f"{LIMIT_HINT}")
    return f"use a smaller input.batch or smaller layers; {LIMIT_HINT}"


_WATCHING: contextvars.ContextVar = contextvars.ContextVar("gradcheck_memory_budget",
                                                           default=None)


def before_drawing(shape) -> None:
    """Called by the built-in initialisers before they draw a parameter of ``shape``: refuses
    it, while a ``MemoryBudget`` watches a build, when no check could hold it."""
    budget = _WATCHING.get()
    if budget is not None:
        budget.drawing(math.prod(int(d) for d in shape))


class MemoryBudget:
    """Refuses a network that no check could fit in memory as it is built: the estimate of its
    cheapest mode, directional (``footprint.MODES`` is ordered by need), for what is built so
    far, against the budget. Checked for the input, before a built-in initialiser draws a
    parameter and after a layer is built, whenever what is built has grown by ``GROWTH`` since
    the last estimate: a parameter that alone would not fit is refused before it is drawn, and a
    deep network costs a few estimates, not one per layer (the check itself fits every mode
    again before its clean pass, ``fit``)."""

    GROWTH = 0.125

    def __init__(self, itemsize: int, budget: int | None = None):
        self.itemsize = itemsize
        self.baseline = resident_bytes()  # before the input and the layers exist
        self.budget = available_bytes() if budget is None else budget
        self.batch = 1
        self.inputs: dict[str, int] = {}  # elements of each network input
        self.units: list[footprint.UnitShape] = []
        self.next_input = 0
        self.drawn: list[int] = []
        self.elements = 0   # parameters and activations built so far
        self.estimated = 0  # ... when last estimated

    def admit_input(self, name: str, shape: tuple[int, ...]) -> None:
        """Network input ``name`` (batch, *shape), with those admitted before: refused when
        even the inputs do not fit."""
        self.batch = int(shape[0])
        self.inputs[name] = math.prod(int(d) for d in shape)
        self.next_input = self.elements = sum(self.inputs.values())
        self.estimated = 0
        self._check([], f"the input {name!r}", self.elements)

    @contextlib.contextmanager
    def watching(self):
        """While the network is built: the initialisers report what they draw."""
        token = _WATCHING.set(self)
        try:
            yield self
        finally:
            _WATCHING.reset(token)

    def drawing(self, size: int) -> None:
        """A parameter of ``size`` elements is about to be drawn for the layer being built."""
        self.drawn.append(size)
        building = footprint.UnitShape(tuple(self.drawn), self.next_input, 0)
        self._check([building], "a parameter of the layer being built",
                    self.elements + sum(self.drawn))

    def built(self, layer, out_shapes: list[tuple[int, ...]], where: str) -> None:
        """``assemble``'s ``on_built``: account for ``layer`` (its parameters and outputs) and
        refuse the network if no check of what is built so far fits. (As a chain: the next
        layer is taken to read these outputs, a fair size for a graph's too.)"""
        self.drawn = []
        outputs = self.batch * sum(math.prod(int(d) for d in shape) for shape in out_shapes)
        params = tuple(int(getattr(p, "size", 0)) for p in layer.params.values())
        self.units.append(footprint.UnitShape(params, self.next_input, outputs,
                                              lean=footprint.is_lean(layer)))
        self.next_input = outputs
        self.elements += sum(params) + outputs
        self._check([], where, self.elements)

    def _check(self, building: list, where: str, elements: int) -> None:
        if elements <= self.estimated * (1.0 + self.GROWTH):
            return
        self.estimated = elements
        loss = footprint.UnitShape((), self.next_input, 1, is_loss=True)
        cheapest = footprint.estimate([*self.units, *building, loss], self.itemsize,
                                      "directional", 1, self.baseline)
        if cheapest.total > self.budget:
            raise ResourceError(
                f"no check of this network fits in memory: even in directional mode, its "
                f"cheapest, it needs about {footprint.gib(cheapest.total)} with what is built "
                f"so far (up to {where}: {footprint.gib(cheapest.network)} for the parameters, "
                f"data and clean pass, {footprint.gib(cheapest.working)} for {cheapest.stage}, "
                f"{footprint.gib(cheapest.baseline)} already in use), "
                f"{footprint.gib(self.budget)} available.",
                hint=f"use a smaller input.batch or smaller layers; {LIMIT_HINT}")


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# A pass's perturbed copies are capped at 16 MiB (engine.base.CHUNK_BYTES), so their arrays stay
# below this.
REUSED_BLOCK_BYTES = 32 * 2**20
RETAINED_BYTES = 256 * 2**20


def reuse_freed_memory() -> bool:
    """Ask glibc's malloc to serve large arrays from memory it has already mapped.

    A check allocates and frees thousands of multi-MiB numpy temporaries. By default glibc maps
    each of them afresh and returns it to the OS when it is freed, so every first write page
    faults: bench N1's full check takes 0.17 s that way and 0.10 s with freed blocks reused
    (single-threaded, this project's 2-core VM). Process-wide, so the CLI calls it and the library does not; the
    memory kept is at most what the process already used. Returns False (and changes nothing)
    where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, REUSED_BLOCK_BYTES)
                and mallopt(_M_TRIM_THRESHOLD, RETAINED_BYTES))


def hand_back_freed_pages() -> bool:
    """Hand the pages of the heap's free blocks back to the system (glibc's ``malloc_trim``).

    For a forked worker, first thing: after a fork every page is shared until one process
    writes it, then copied, and a check's temporaries are written into the same freed blocks in
    both processes. Handed back, they are the worker's own fresh pages when it writes them, and
    the parent's alone again, so its writes to them copy nothing: each still faults once after
    the fork, as every page either process writes does, but a fault without a copy costs about
    a third as much (0.8 against 2.1-2.5 µs a page on this project's VM, bench/page_costs.py;
    the README's ``--jobs`` section has the figures). Measured on N3, each process of a fork
    checking alone: the fork cost 20-25 ms of a 0.25 s check, 8-13 ms with the worker's freed
    pages handed back.
    Returns False (and does nothing) where the C library is not glibc.
    """
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True
