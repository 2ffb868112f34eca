"""The report model: what a check found, per layer and per target. Renderers are pure functions
of it, and it alone decides the exit code."""

from __future__ import annotations

import dataclasses

import numpy as np

# Worst first: a layer or report takes the worst status of what it contains. "zero": every
# compared gradient of the target is exactly 0 on both sides, so the check cannot see a bug there.
STATUS_ORDER = ("fail", "inconclusive", "zero", "kink", "pass", "skipped")
EXIT_PASS, EXIT_MISMATCH, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3


class ErrorMap:
    """A target's relative error per element, NaN where an element was not compared.

    Held dense (a flat array of the target's size) when at least half the target was compared,
    else sparse (the compared flat ``indices``, sorted, and their ``values``): a sample of 32
    elements of a 20000 x 20000 weight costs 32 entries, not 3.2 GB."""

    def __init__(self, shape: tuple[int, ...], indices: np.ndarray, values: np.ndarray):
        self.shape = tuple(int(d) for d in shape)
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self._store(np.asarray(indices, dtype=np.intp).reshape(-1),
                    np.asarray(values, dtype=np.float64).reshape(-1))

    def _store(self, indices: np.ndarray, values: np.ndarray) -> None:
        """Keep unique ``indices`` and their ``values``, dense or sparse (see the class)."""
        if 2 * len(indices) >= self.size:
            self.indices, self.values = None, np.full(self.size, np.nan)
            self.values[indices] = values
        else:
            order = np.argsort(indices, kind="stable")
            self.indices, self.values = indices[order], values[order]

    @property
    def sparse(self) -> bool:
        return self.indices is not None

    def dense(self) -> np.ndarray:
        """The map as an array of the target's shape."""
        if not self.sparse:
            return self.values.reshape(self.shape)
        full = np.full(self.size, np.nan)
        full[self.indices] = self.values
        return full.reshape(self.shape)

    def get(self, indices: np.ndarray) -> np.ndarray:
        """The relative errors at flat ``indices`` (NaN where not compared)."""
        indices = np.asarray(indices, dtype=np.intp)
        if not self.sparse:
            return self.values[indices]
        if not len(self.indices):
            return np.full(indices.shape, np.nan)
        pos = np.minimum(np.searchsorted(self.indices, indices), len(self.indices) - 1)
        return np.where(self.indices[pos] == indices, self.values[pos], np.nan)

    def put(self, indices: np.ndarray, values: np.ndarray) -> None:
        """Set the relative errors at flat ``indices`` (elements compared later)."""
        indices = np.asarray(indices, dtype=np.intp).reshape(-1)
        values = np.broadcast_to(np.asarray(values, dtype=np.float64), indices.shape)
        if not self.sparse:
            self.values[indices] = values
            return
        # np.unique keeps each index's first occurrence: the new values come first, so they win.
        unique, first = np.unique(np.concatenate([indices, self.indices]), return_index=True)
        self._store(unique, np.concatenate([values, self.values])[first])


def worst_status(statuses) -> str:
    """The most severe of ``statuses`` ("skipped" when there are none)."""
    present = set(statuses)
    return next((s for s in STATUS_ORDER if s in present), "skipped")


@dataclasses.dataclass
class TargetReport:
    """The comparison for one target (a parameter, or ``input`` = dL/d(unit input)).

    ``worst_index`` indexes the target array (for ``input`` its first axis is the batch).
    ``rel_error`` (an ``ErrorMap``) holds the relative error of every compared element.
    """

    target: str
    shape: tuple[int, ...]
    status: str
    checked: int
    failed: int
    kinks: int = 0
    inconclusive: int = 0
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    worst_index: list[int] | None = None
    analytic: float | None = None
    numeric: float | None = None
    rel_error: ErrorMap | None = dataclasses.field(default=None, repr=False, compare=False)
    # One name per axis of the target (the layer's declared layout, else generic; an input's
    # first is "sample"): for the heat map's labels.
    axis_names: tuple[str, ...] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    # What the mismatch looks like (gradcheck.explain): a code and a sentence, None if it passes.
    pattern: str | None = None
    explanation: str | None = None
    # The worst elements: dicts with index, analytic, numeric, rel_error, status.
    worst_elements: list[dict] = dataclasses.field(default_factory=list)
    # "data" (the network's loss) or "l2" (the weight-decay term, checked separately).
    term: str = "data"
    # What was compared (gradcheck.modes): elements one by one, of how many, directions, and
    # the elements a failing direction was localised to.
    coverage: dict | None = None
    # Everything needed to re-run the worst element (gradcheck.replay); not rendered.
    replay: dict | None = dataclasses.field(default=None, repr=False, compare=False)
    # The rtol the elements were judged at (the configured one unless precision widened it).
    rtol: float | None = None
    # What the numeric side differentiated: "layer" (the unit's own objective, the upstream
    # gradient fixed) or "network" (the loss through everything after the target).
    compared: str = "layer"
    # Elements that fail against the unit's own objective (not through the network): what makes
    # its unit a root cause. Not rendered.
    own_failed: int = dataclasses.field(default=0, repr=False, compare=False)
    # Measured round-off says the unit computes in float32 inside a float64 network (a note says
    # so); checks through it can be no tighter. Not rendered.
    float32_inside: bool = dataclasses.field(default=False, repr=False, compare=False)
    # The relative disagreement the unit's measured round-off leaves unresolved (inconclusive,
    # a note says so), 0 when none; checks through it can be no tighter. Not rendered.
    band: float = dataclasses.field(default=0.0, repr=False, compare=False)


@dataclasses.dataclass
class LayerReport:
    """All targets of one unit (a layer, or the loss), and whether it is to blame."""

    name: str
    type: str
    index: int
    checks: list[TargetReport]
    is_loss: bool = False
    root_cause: bool = False
    inherited_from: str | None = None
    # The layer checked alone (gradcheck.isolate): its status, None when not needed, and details.
    isolated: str | None = None
    isolated_checks: list[TargetReport] = dataclasses.field(default_factory=list)
    # Broken contract seen before any comparison (gradcheck.probes): dicts with id, message, fix.
    problems: list[dict] = dataclasses.field(default_factory=list)
    # The tensors the unit reads, in order (network inputs, layer names, "layer.k").
    inputs: list[str] = dataclasses.field(default_factory=list)

    @property
    def status(self) -> str:
        # Failing alone is a failure even where the end-to-end samples happened to pass; so is
        # a broken contract (a forward that is not deterministic, a backward that is not
        # idempotent).
        alone = ["fail"] if self.isolated == "fail" or self.problems else []
        return worst_status([*(c.status for c in self.checks), *alone])


@dataclasses.dataclass
class Report:
    """The outcome of checking one network."""

    network: str
    settings: dict
    layers: list[LayerReport]
    warnings: list[str] = dataclasses.field(default_factory=list)
    # Said about the check itself (a speed-up that disagreed with forward and was dropped).
    notes: list[str] = dataclasses.field(default_factory=list)
    # False when a deadline or a resource guard stopped the check before everything selected
    # was compared: the verdict is then INCOMPLETE, never PASS.
    complete: bool = True
    # The network's gradient is wrong end to end, yet every layer passes alone: an interaction
    # between layers (``span``: the smallest run of units that fails together) or a numerical
    # problem of the whole chain.
    unlocalised: bool = False
    span: list[str] | None = None
    # The end-to-end safety net: random directions moving every parameter and the input at once.
    end_to_end: dict | None = None
    # Network inputs that hold integer ids: never perturbed, no gradient.
    not_differentiable: list[str] = dataclasses.field(default_factory=list)
    # What -v prints on stderr (a layer that could not be run on stacked copies); not rendered.
    events: list[str] = dataclasses.field(default_factory=list, repr=False, compare=False)

    @property
    def root_causes(self) -> list[str]:
        """Layers whose own backward is wrong (failures elsewhere are their consequences)."""
        return [layer.name for layer in self.layers if layer.root_cause]

    @property
    def status(self) -> str:
        return worst_status(layer.status for layer in self.layers)

    @property
    def vacuous(self) -> bool:
        """Every compared gradient is exactly 0 on both sides: nothing a bug could show in."""
        compared = [c.status for layer in self.layers for c in layer.checks
                    if c.status not in ("skipped",)]
        return bool(compared) and all(s == "zero" for s in compared)

    @property
    def verdict(self) -> str:
        """``fail`` (a gradient is wrong, a contract is broken, or nothing could be seen),
        ``incomplete`` (stopped before everything selected was compared) or ``pass``."""
        if self.status == "fail" or self.unlocalised or self.vacuous:
            return "fail"
        return "pass" if self.complete else "incomplete"

    @property
    def passed(self) -> bool:
        """Every selected gradient was compared and matched (kinks and inconclusive elements
        do not fail a check)."""
        return self.verdict == "pass"

    def exit_code_for(self, allow_incomplete: bool = False) -> int:
        """0 pass, 1 mismatch, 3 incomplete (0 with ``allow_incomplete``)."""
        verdict = self.verdict
        if verdict == "fail":
            return EXIT_MISMATCH
        if verdict == "incomplete" and not allow_incomplete:
            return EXIT_INCOMPLETE
        return EXIT_PASS

    @property
    def exit_code(self) -> int:
        return self.exit_code_for()

    def counts(self) -> dict[str, int]:
        """Elements checked, failed, at kinks and inconclusive, over all targets."""
        checks = [c for layer in self.layers for c in layer.checks]
        return {"checked": sum(c.checked for c in checks), "failed": sum(c.failed for c in checks),
                "kinks": sum(c.kinks for c in checks),
                "inconclusive": sum(c.inconclusive for c in checks),
                "targets": len(checks), "failed_targets": sum(c.status == "fail" for c in checks),
                "skipped_targets": sum(c.status == "skipped" for c in checks),
                "zero_targets": sum(c.status == "zero" for c in checks),
                "complete": self.complete}
