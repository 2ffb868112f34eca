"""The diagnosis model: findings with a severity, and the outcome of the training probe.

Renderers (``gradcheck.render.findings``) are pure functions of a ``Diagnosis``; it alone decides
the exit code, exactly as ``Report`` does for ``gradcheck check``.
"""

from __future__ import annotations

import dataclasses

from gradcheck.report import EXIT_MISMATCH, EXIT_PASS

# Worst first: the text report groups findings in this order.
SEVERITIES = ("error", "warn", "info")
# Stages in the order they run; a failing gradient check sorts first among equals.
STAGES = ("gradcheck", "lint", "forward", "backward", "probe")
# Every rule that can fire, in the order of the README's rule table (a test keeps the two equal).
FINDING_IDS = (
    "softmax-axis-1", "zero-jacobian", "loss-output-mismatch", "bounded-output-regression",
    "no-nonlinearity", "double-activation", "init-constant", "init-scale", "init-not-centred",
    "init-bias", "decay-flips-weights", "decay-large", "lr-range", "dropout-high",
    "nonfinite-forward", "loss-rejects-output", "sample-collapse", "dead-units", "saturation",
    "activation-scale", "attention-collapse", "initial-loss", "loss-reduction",
    "gradient-mismatch", "nonfinite-backward", "zero-gradient", "grad-profile", "dead-branch",
    "exploding-branch", "vanishing-through-time", "exploding-through-time", "unused-ids",
    "update-ratio", "reg-dominates", "batch-mixing",
    "hyperparameter-problem", "cannot-fit-one-batch", "slow-fit", "input-independent",
    "nonfinite-training", "loss-diverging", "loss-stagnating", "weights-diverging",
    "weights-crushed", "weights-one-sign", "collapse-to-mean", "collapse-to-constant",
)


@dataclasses.dataclass(frozen=True)
class Spread:
    """A finding looked for at every probe seed: at ``seeds[i]`` it fired when ``fired[i]``, with
    the measured ``values[i]`` (None for a plain fact, or where it did not fire)."""

    seeds: tuple[int, ...]
    fired: tuple[bool, ...]
    values: tuple[float | None, ...]

    @property
    def count(self) -> int:
        """At how many probe seeds the finding fired."""
        return sum(self.fired)

    def as_dict(self) -> dict:
        measured = [v for v in map(_finite, self.values) if v is not None]
        return {"seeds": list(self.seeds), "fired": list(self.fired),
                "values": [_finite(v) for v in self.values],
                "min": min(measured, default=None), "max": max(measured, default=None)}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One thing the diagnosis found.

    ``value`` is the measured number (None when the finding is a plain fact); ``threshold`` says
    what it was compared with (``">= 1"``); ``cause`` explains it and ``fix`` says what to change.
    ``layer`` is the YAML name of the layer concerned, ``"train"`` for optimizer settings, or None
    for the network as a whole. ``spread`` is set for findings measured at every probe seed (None
    for those that do not depend on the seed: config lints, the gradient check).
    """

    id: str
    severity: str
    stage: str
    layer: str | None
    value: float | None
    threshold: str | None
    cause: str
    fix: str
    spread: Spread | None = None

    def __post_init__(self):
        if self.id not in FINDING_IDS:
            raise ValueError(f"unknown finding id {self.id!r}: add it to FINDING_IDS and to the "
                             "README's rule table")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}")


def finding(stage: str, id_: str, severity: str, layer: str | None, value: float | None,
            threshold: str | None, cause: str, fix: str) -> Finding:
    """A Finding of ``stage``: the one constructor every diagnosis stage uses."""
    return Finding(id_, severity, stage, layer, value, threshold, cause, fix)


@dataclasses.dataclass
class ProbeRun:
    """One run of the training probe: its settings, loss per step and how it ended.

    ``losses[k]`` is the loss before update k (so ``losses[0]`` is the loss at initialisation).
    ``fit`` is the final accuracy (labels) or R^2 (values); ``stopped`` says why the run ended:
    ``"passed"`` (fitted the batch, early exit), ``"steps"`` (ran every step), ``"nonfinite"``,
    or early, once failing clearly: ``"stalled"`` (no progress) or ``"diverging"``; a reference
    run also stops once the fit is out of reach within its budget (``"unreachable"``). ``outcome``
    is the run's class (``verdict.OUTCOMES``); ``seed`` the probe seed it ran at. ``loss_floor``
    is the least loss the targets allow (the loss of predicting them exactly: 0 for mse, their
    entropy for bce on soft targets); progress is measured above it.
    """

    label: str
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    steps: int
    losses: list[float]
    passed: bool
    fit: float
    fit_metric: str
    stopped: str
    nonfinite_step: int | None = None
    seed: int = 0
    outcome: str | None = None
    loss_floor: float = 0.0

    @property
    def steps_run(self) -> int:
        return max(len(self.losses) - 1, 0)

    def as_dict(self) -> dict:
        return {"label": self.label, "optimizer": self.optimizer, "lr": self.lr,
                "momentum": self.momentum, "weight_decay": self.weight_decay,
                "steps": self.steps, "steps_run": self.steps_run,
                "passed": self.passed, "fit": _finite(self.fit), "fit_metric": self.fit_metric,
                "stopped": self.stopped, "nonfinite_step": self.nonfinite_step,
                "seed": self.seed, "outcome": self.outcome, "loss_floor": self.loss_floor,
                "losses": [_finite(v) for v in self.losses]}


def _finite(value: float | None) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)


@dataclasses.dataclass
class Diagnosis:
    """Everything ``gradcheck diagnose`` found about one network."""

    network: str
    findings: list[Finding]
    gradcheck: dict | None = None
    runs: list[ProbeRun] = dataclasses.field(default_factory=list)
    verdict: str | None = None
    # The probe seeds every seed-dependent check ran at, and per run label the spread of its fit
    # and steps over them (``{"configured": {"fit": [...], "steps_run": [...]}, ...}``).
    seeds: list[int] = dataclasses.field(default_factory=list)
    spread: dict = dataclasses.field(default_factory=dict)

    def sorted_findings(self) -> list[Finding]:
        """Worst severity first; within a severity, in the order the stages ran."""
        ranked = sorted(enumerate(self.findings), key=lambda item: (
            SEVERITIES.index(item[1].severity), STAGES.index(item[1].stage), item[0]))
        return [finding for _, finding in ranked]

    def counts(self) -> dict[str, int]:
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}

    @property
    def status(self) -> str:
        """The worst severity found, or ``"ok"``."""
        counts = self.counts()
        return next((s for s in SEVERITIES if counts[s]), "ok")

    @property
    def exit_code(self) -> int:
        """1 when an error-severity finding exists, else 0 (usage errors never get this far)."""
        return EXIT_MISMATCH if self.counts()["error"] else EXIT_PASS
