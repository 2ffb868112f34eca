"""How much memory a check needs, from the network's shapes alone, before anything is compared.

The estimate is the peak resident size of the process, in four parts:

- **baseline**: what the process holds before the check (the interpreter, numpy, gradcheck and
  whatever the caller keeps), measured, never assumed (``resources.resident_bytes``);
- **network**: the parameters, the input and target, and the clean pass, held throughout: each
  unit's output and what it caches for backward, dL/d(input) of every unit as float64, every
  parameter's gradient twice (the layer's own, and the float64 copy that is compared);
- **working**: the largest of the stages, each added to the network while it runs (``STAGES``):
  the contract probes; the per-target comparison (the arrays per compared element, a pass of
  perturbed copies bounded by ``engine.base.CHUNK_BYTES``, the maps a failing target's pattern
  is read from); the directional checks and the end-to-end safety net (a saved copy of what they
  move and a sign per element); the units checked alone; and the relative-error maps reports keep.

The constants below are measured, not derived: ``tracemalloc`` stage by stage on dense, conv and
normalisation networks, each passing and with a wrong gradient (README, "Memory"). Layers are
taken to cache about one copy of their input; a plugin that caches more is underestimated.
"""

from __future__ import annotations

import dataclasses
import math

from gradcheck import compare
from gradcheck.engine import base
from gradcheck.engine.base import own_method

F64 = 8  # analytic gradients, and everything compared, are float64
# What a layer keeps from forward for backward, in copies of its input (a mask, its output).
CACHE_COPIES = 1.0
# float64 arrays per compared element: indices, steps, both sides of every pass, the verdicts,
# and a failing target's kink test and step sweep.
ELEMENT_ARRAYS = 26
# Per element of a failing target (its full size, however few were compared): the numeric and
# status maps its pattern is classified on, and the masks classify derives from them.
PATTERN_BYTES = 30
# Arrays alive per perturbed copy while a pass runs: the copy, its difference from the clean
# output, their product, and the layer's own temporaries (conv2d's im2col columns lead).
PASS_COPIES = 10
# The same for a unit with objective_changes, which builds no copies: what its method moves
# per copy (at most an output's worth, a parameter's moves) and the products with the
# upstream gradient. Measured: lenet and the bench's N3 in full mode peak at 0.7-0.8 of it.
LEAN_COPIES = 3
# A directional check per element it moves: the saved copy (the array's dtype), the signs
# drawn as int64 and kept as int8.
SIGN_BYTES = F64 + 1
# float64 temporaries of one run (engine.base.RUN_ELEMENTS) of a displacement.
RUN_ARRAYS = 6
# The allocator keeps freed blocks for reuse (gradcheck.resources.reuse_freed_memory): what the
# process holds runs ahead of what is live by about this share of the working memory.
ALLOCATOR_SLACK = 0.25
MODES = ("full", "sample+directional", "sample", "directional")


@dataclasses.dataclass(frozen=True)
class UnitShape:
    """One unit (a layer, or the loss) in elements: each parameter, its input and its output
    (batch included; 1 for the loss's value)."""

    params: tuple[int, ...]
    inputs: int
    outputs: int
    is_loss: bool = False
    lean: bool = False  # it has objective_changes: its passes build no copies of its output

    def targets(self) -> list[tuple[int, bool]]:
        """(elements, is the unit's input) for every target of the unit."""
        return [*((p, False) for p in self.params), (self.inputs, True)]


def units_of(network, batch: int) -> list[UnitShape]:
    """The shapes of every unit of a built ``network`` run on ``batch`` samples: its distinct
    parameters (a shared one counts at its owner), the float tensors it reads (token ids are
    no target) and what it writes."""
    def size(tensor: str) -> int:
        return batch * math.prod(network.tensor_shapes[tensor])

    n = len(network.layers)
    units = []
    for k, unit in enumerate(network.units):
        params = tuple(int(p.size) for name, p in unit.params.items()
                       if (k, name) not in network.shared)
        inputs = sum(size(t) for t in network.sources[k] if t not in network.integer)
        outputs = 1 if k == n else sum(size(t) for t in network.outputs[k])
        units.append(UnitShape(params, inputs, outputs, is_loss=k == n, lean=is_lean(unit)))
    return units


def is_lean(unit) -> bool:
    """Whether ``unit`` offers ``objective_changes`` (the engine's copy-free route)."""
    return own_method(unit, "objective_changes") is not None


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The estimated peak resident size of a check in ``mode``: ``baseline`` + ``network`` +
    ``working`` bytes, ``working`` being that of its largest stage, ``stage``."""

    mode: str
    baseline: int
    network: int
    working: int
    stage: str
    passing_working: int = 0  # the largest stage of a check in which nothing fails

    @property
    def passing(self) -> int:
        """The estimate for a check in which nothing fails (no layer is checked alone, no
        wrong gradient followed along directions): what a healthy network needs."""
        return self.baseline + self.network + self.passing_working

    @property
    def total(self) -> int:
        return self.baseline + self.network + self.working

    def describe(self, budget: int) -> str:
        """One line for -v: the total, its parts and the budget."""
        return (f"memory: a {self.mode} check needs about {gib(self.total)} ({gib(self.baseline)} "
                f"already in use, {gib(self.network)} for the network and its clean pass, "
                f"{gib(self.working)} for {self.stage}; about {gib(self.passing)} if nothing "
                f"fails); {gib(budget)} available")


def gib(n: float) -> str:
    """Bytes for a message: in GB (2**30 bytes, as GRADCHECK_MAX_MEMORY_GB), MB below 1 GB."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GB"
    return f"{n / 2**20:.0f} MB" if n >= 10 * 2**20 else f"{n / 2**20:.1f} MB"


def estimate(units: list[UnitShape], itemsize: int, mode: str, samples: int,
             baseline: int) -> Estimate:
    """The memory a check of a network of ``units`` (arrays of ``itemsize`` bytes) needs in
    ``mode`` (one of MODES), ``samples`` elements per target in sample mode, on top of a
    process already holding ``baseline`` bytes."""
    stages = {name: int(cost(units, itemsize, mode, samples)) for name, cost in STAGES.items()}
    stage = max(stages, key=stages.get)
    working = int(stages[stage] * (1.0 + ALLOCATOR_SLACK))
    healthy = PASSING_STAGES + (("the directional checks",) if "directional" in mode else ())
    passing = int(max(stages[name] for name in healthy) * (1.0 + ALLOCATOR_SLACK))
    return Estimate(mode, int(baseline), int(network_bytes(units, itemsize)), working, stage,
                    passing)


def network_bytes(units: list[UnitShape], itemsize: int) -> float:
    """The arrays a check holds from its clean pass to its end."""
    params = sum(sum(u.params) for u in units)
    activations = sum(u.inputs for u in units)
    target = units[-1].inputs * F64  # labels (int64) or values shaped like the output
    held = params * itemsize + units[0].inputs * itemsize + target
    clean = (activations - units[0].inputs) * itemsize + CACHE_COPIES * activations * itemsize
    grads = activations * F64 + params * (itemsize + F64)
    return held + clean + grads


# -- the stages -----------------------------------------------------------------------------------

def _probes(units, itemsize, mode, samples) -> float:
    """A unit's forward twice and backward twice: its input copied, both outputs as float64,
    the first backward's results kept and the second's made while the layer's old ones live."""
    return max(3 * u.inputs * itemsize + 2 * u.outputs * F64 + 2 * (u.inputs + sum(u.params)) * F64
               for u in units)


def _compare(units, itemsize, mode, samples) -> float:
    """The largest target compared element by element (none in directional mode), with the
    error maps the reports keep of every target so far."""
    if mode == "directional":
        return 0.0
    return _maps(units, mode) + max(_target(u, size, is_input, itemsize, _compared(size, mode,
                                                                                  samples))
                                    for u in units for size, is_input in u.targets())


def _directions(units, itemsize, mode, samples) -> float:
    """The largest target checked along random directions through the rest of the network:
    directional mode, and in every mode the targets a wrong gradient reaches."""
    tails = _tails(units, itemsize)
    return _maps(units, mode) + max(_moved(size, itemsize) + tails[k]
                                    + (size * itemsize if is_input else 0)
                                    for k, u in enumerate(units) for size, is_input in u.targets())


def _safety_net(units, itemsize, mode, samples) -> float:
    """Every parameter and the network input moved at once (full and sample modes)."""
    if mode not in ("full", "sample"):
        return 0.0
    moved = [p for u in units for p in u.params] + [units[0].inputs]
    largest = max(moved)
    return (_maps(units, mode) + sum(moved) * (itemsize + 1) + largest * F64
            + min(largest, base.RUN_ELEMENTS) * F64 * RUN_ARRAYS + units[0].inputs * itemsize
            + _tails(units, itemsize)[0])


def _isolation(units, itemsize, mode, samples) -> float:
    """Once anything fails, every layer checked alone under a random upstream gradient:
    exhaustively in full mode, a sample otherwise; the reports of those before it are kept."""
    alone = "full" if mode == "full" else "sample"
    layers = [u for u in units if not u.is_loss]
    worst = 0.0
    for u in layers:
        copies = 2 * (u.inputs + u.outputs) * itemsize + (u.inputs + sum(u.params)) * F64
        worst = max(worst, copies + max(_target(u, size, is_input, itemsize,
                                                _compared(size, alone, samples))
                                        for size, is_input in u.targets()))
    return 2 * _maps(units, mode) + worst


STAGES = {"the contract probes": _probes, "the element comparison": _compare,
          "the directional checks": _directions, "the end-to-end safety net": _safety_net,
          "the layers checked alone": _isolation}
# What runs when nothing fails (and, in the modes that have them, the directional checks).
PASSING_STAGES = ("the contract probes", "the element comparison", "the end-to-end safety net")


# -- pieces ---------------------------------------------------------------------------------------

def _compared(size: int, mode: str, samples: int) -> int:
    """Elements of a target of ``size`` compared one by one in ``mode``."""
    if mode == "directional":
        return 0
    return size if mode == "full" else min(size, samples)


def _target(u: UnitShape, size: int, is_input: bool, itemsize: int, compared: int) -> float:
    """One target of unit ``u`` compared at ``compared`` of its ``size`` elements: the probe's
    copies (its clean output as float64, a private input), the per-element arrays, a pass of
    perturbed copies, and the maps a failing target's pattern is read from."""
    if compared == 0:
        return 0.0
    probe = u.outputs * F64 + (u.inputs * itemsize if is_input else 0)
    return (probe + compared * F64 * ELEMENT_ARRAYS + _pass(u, compared, itemsize)
            + size * PATTERN_BYTES)


def _pass(u: UnitShape, compared: int, itemsize: int) -> float:
    """The perturbed copies of one pass (``LocalProbe._passes``): whole copies of the unit's
    output or input, as many pairs as ``engine.base.pairs_per_chunk`` allows."""
    copy = max(u.outputs * F64, u.inputs * itemsize)
    per_pass = min(compared, max(compare.MIN_PASS_ELEMENTS,
                                 -(-compared // compare.PASSES_PER_TARGET)))
    pairs = min(per_pass, base.pairs_per_chunk(copy))
    return 2 * pairs * copy * (LEAN_COPIES if u.lean else PASS_COPIES)


def _moved(size: int, itemsize: int) -> float:
    """A directional check of one array of ``size`` elements: its saved copy, its signs, and
    the float64 temporaries of a run."""
    return size * (itemsize + SIGN_BYTES) + min(size, base.RUN_ELEMENTS) * F64 * RUN_ARRAYS


def _tails(units: list[UnitShape], itemsize: int) -> list[float]:
    """Per unit k, a forward from it to the loss: the outputs and caches of units k onwards."""
    tails, total = [], 0.0
    for u in reversed(units):
        total += u.outputs * itemsize * (1.0 + CACHE_COPIES)
        tails.append(total)
    return tails[::-1]


def _maps(units: list[UnitShape], mode: str) -> float:
    """The relative-error maps reports keep: dense (float64 per element) in full mode, a few
    entries per target otherwise (``report.ErrorMap``)."""
    if mode != "full":
        return 0.0
    return sum(size for u in units for size, _ in u.targets()) * F64
