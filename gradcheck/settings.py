"""How to check: one validated settings object that every entry point builds (the CLI, the YAML
``check:`` block, ``check_network``, ``check_layer``, ``assert_gradients`` and replay), so a bad
value is refused the same way everywhere, naming the argument, and the defaults live here."""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import TYPE_CHECKING

from gradcheck.errors import ConfigError

if TYPE_CHECKING:
    from gradcheck import tolerance

MODES = ("auto", "full", "sample", "directional")
DTYPES = ("float64", "float32")
DEFAULT_SAMPLES = 32
DEFAULT_DIRECTIONS = 4
# auto mode's budget when no --max-seconds is given: full when its estimate fits, else sample.
DEFAULT_BUDGET_SECONDS = 60.0
# jobs="auto": how long the comparison runs in one process before workers start
# (``gradcheck.fanout``). A worker is a fork, and both processes then pay for the pages they
# first write (a forked N3 check runs 1.05x slower, bench/jobs.py): on a short comparison
# that costs more than it gains (at 0.05 s, N1's whole ``gradcheck check``, 0.08 s of
# comparison then, started workers and took 0.36 s instead of about 0.3, bench/startup.py).
JOBS_GAIN_SECONDS = 0.1
STEP_RULE = ("h = eps * max(|x_i|, s) per element, s = the tensor's RMS (1 for an all-zero "
             "tensor); never above max(|x_i|, s) / 10")


def _number(name: str, value, *, positive: bool = False, nonnegative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        what = "a finite number" if isinstance(value, float) else "a number"
        raise ConfigError(f"expected {what}, got {value!r}.", path=name,
                          hint="write floats like 1.0e-6 (YAML reads 1e-6 without a dot as a "
                               "string)" if isinstance(value, str) else None)
    if positive and not value > 0:
        raise ConfigError(f"expected a number > 0, got {value!r}.", path=name)
    if nonnegative and value < 0:
        raise ConfigError(f"expected a number >= 0, got {value!r}.", path=name)
    return float(value)


def _integer(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"expected an integer, got {value!r}.", path=name)
    if value < minimum:
        raise ConfigError(f"expected an integer >= {minimum}, got {value}.", path=name)
    return int(value)


def _choice(name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        raise ConfigError(f"expected one of {', '.join(choices)}; got {value!r}.", path=name,
                          hint=f"did you mean {close[0]!r}?" if close else None)
    return value


def _jobs(value) -> int | str:
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"expected an integer >= 1 or 'auto', got {value!r}.", path="jobs",
                          hint="jobs is how many processes compare gradients: 1 for this "
                               "process alone, 'auto' for every available core")
    return int(value)


# Each option's validator: value -> normalised value, or a ConfigError naming the option.
VALIDATORS = {
    "mode": lambda v: _choice("mode", v, MODES),
    "eps": lambda v: _number("eps", v, positive=True),
    "rtol": lambda v: _number("rtol", v, positive=True),
    "atol": lambda v: _number("atol", v, nonnegative=True),
    "samples": lambda v: _integer("samples", v, 1),
    "directions": lambda v: _integer("directions", v, 1),
    "max_seconds": lambda v: _number("max_seconds", v, positive=True),
    "nondet_tol": lambda v: _number("nondet_tol", v, nonnegative=True),
    "seed": lambda v: _integer("seed", v, 0),
    "dtype": lambda v: _choice("dtype", v, DTYPES),
    "weight_decay": lambda v: _number("weight_decay", v, nonnegative=True),
    "jobs": _jobs,
}
# The options a YAML ``check:`` block may set (seed, dtype and weight_decay live elsewhere).
CHECK_KEYS = ("mode", "eps", "rtol", "atol", "samples", "directions", "max_seconds", "nondet_tol")


def validate(name: str, value):
    """``value`` for option ``name``, normalised; a ConfigError naming it when it is bad."""
    return VALIDATORS[name](value)


@dataclasses.dataclass(frozen=True)
class CheckSettings:
    """How to check. ``eps``/``rtol``/``atol`` None mean the dtype's default (``tol``);
    ``max_seconds``, when given, is a hard stop and auto mode's budget; ``nondet_tol`` is how far
    two forwards on the same input may differ (0: bit for bit). ``mode`` is what is asked for;
    ``resolved`` (set by the check) what auto mode chose, and ``resolved_by`` why when it is not
    ``full``: ``"memory"`` when a full check would not fit (``resources.fit``), else time.
    ``jobs``: how many processes compare gradients (``gradcheck.fanout``; ``"auto"``: every
    available core once the comparison is long enough to gain); it changes how fast a report
    comes, never what it says, so the report's ``settings`` leave it out."""

    mode: str = "auto"
    eps: float | None = None
    rtol: float | None = None
    atol: float | None = None
    samples: int = DEFAULT_SAMPLES
    directions: int = DEFAULT_DIRECTIONS
    max_seconds: float | None = None
    nondet_tol: float = 0.0
    seed: int = 0
    dtype: str = "float64"
    weight_decay: float = 0.0
    jobs: int | str = 1
    resolved: str | None = None
    resolved_by: str | None = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in VALIDATORS and value is not None:
                object.__setattr__(self, field.name, validate(field.name, value))

    @property
    def tol(self) -> tolerance.Tolerance:
        """The step and tolerances in force: the given ones, else the dtype's defaults."""
        # Imported here: the CLI reads MODES and the defaults above to build its options, and
        # `gradcheck --version` must not pay for numpy.
        from gradcheck import tolerance

        return tolerance.resolve(self.dtype, self.eps, self.rtol, self.atol)

    @property
    def effective_mode(self) -> str:
        """The mode being run: what auto resolved to, else what was asked for."""
        return self.resolved or self.mode

    @property
    def budget_seconds(self) -> float:
        return self.max_seconds if self.max_seconds is not None else DEFAULT_BUDGET_SECONDS

    def as_dict(self) -> dict:
        """The report's ``settings``: everything needed to reproduce the run."""
        tol = self.tol
        mode = self.effective_mode
        parts = mode.split("+")
        settings = {"mode": mode, "eps": tol.eps, "rtol": tol.rtol, "atol": tol.atol,
                    "samples": self.samples if "sample" in parts else None,
                    "seed": self.seed, "dtype": self.dtype, "step_rule": STEP_RULE,
                    "directions": self.directions}
        if self.mode != mode:
            settings["requested_mode"] = self.mode
            settings["max_seconds"] = self.budget_seconds
            if self.resolved_by == "memory":
                settings["resolved_by"] = "memory"
        elif self.max_seconds is not None:
            settings["max_seconds"] = self.max_seconds
        if self.weight_decay:
            settings["weight_decay"] = self.weight_decay
        if self.nondet_tol:
            settings["nondet_tol"] = self.nondet_tol
        return settings


def settings_for(spec, **options) -> CheckSettings:
    """The settings of a network ``spec``: its ``check:`` block, seed, dtype and weight decay,
    with every option given explicitly (not None) taking precedence."""
    values = {key: value for key, value in dataclasses.asdict(spec.check).items()
              if value is not None}
    values.update(seed=spec.seed, dtype=spec.dtype,
                  weight_decay=spec.train.weight_decay if spec.train else 0.0)
    unknown = sorted(set(options) - set(VALIDATORS))
    if unknown:
        raise ConfigError(f"unknown check option(s) {', '.join(unknown)}.",
                          hint=f"check options: {', '.join(CHECK_KEYS)}")
    values.update({key: value for key, value in options.items() if value is not None})
    return CheckSettings(**values)
