"""What a pattern rests on, and the one comparison every fingerprint uses.

A pattern is only as good as the elements behind it. ``Evidence`` counts them: how many were
compared (judged pass or fail) of the target's size, how many fail, and how many were
*uninformative*: both gradients exactly 0. Those are elements whose upstream gradient was 0 (behind
a max-pool, a ReLU, a sampled loss): a wrong backward shows nothing there, so they never count
as proof that part of the tensor is right.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Fingerprints must hold on every compared element to within this many rtol (the numeric side
# carries its own error, a few rtol at most; bugs are off by orders of magnitude more).
MATCH_RTOL_FACTOR = 10.0


@dataclasses.dataclass(frozen=True)
class Evidence:
    """The elements a pattern rests on: ``size`` of the target, ``checked`` (given a verdict),
    ``compared`` (judged pass or fail: not a kink, not inconclusive), ``failing``, and
    ``uninformative`` (compared, with analytic and numeric both exactly 0)."""

    size: int
    checked: int
    compared: int
    failing: int
    uninformative: int

    @property
    def complete(self) -> bool:
        """Every element of the target was checked, so a claim may be about the whole tensor."""
        return self.checked == self.size

    def clause(self) -> str:
        """In words: "all 1,536 elements compared, 1,200 fail" or "64 of 1,536 elements
        compared, 20 fail, 40 of them uninformative (...)"."""
        if self.compared == self.size:
            text = f"all {self.size:,} elements compared"
        else:
            text = f"{self.compared:,} of {self.size:,} elements compared"
        text += f", {self.failing:,} fail"
        if self.uninformative:
            text += f", {self.uninformative:,} uninformative (both gradients exactly 0)"
        return text


@dataclasses.dataclass(frozen=True)
class Pattern:
    """``kind``: a stable code for machines (the JSON report's ``pattern``); ``text``: the
    pattern in words, with the elements it rests on; ``evidence``: those elements, counted."""

    kind: str
    text: str
    evidence: Evidence


@dataclasses.dataclass
class Mismatch:
    """One target's comparison, prepared for the fingerprints.

    ``analytic``: the analytic gradient, known everywhere; ``numeric``: NaN where not checked;
    ``checked``/``compared``/``failing``/``informative``: boolean masks; all of the target's
    shape. ``names``: its axis names. ``param``: the parameter's values (None for an input);
    ``decay_term``: weight_decay x W when the config declares weight decay; ``upstream``: the
    upstream gradient of an input target whose layer's output has the input's shape.
    """

    analytic: np.ndarray
    numeric: np.ndarray
    checked: np.ndarray
    compared: np.ndarray
    failing: np.ndarray
    informative: np.ndarray
    rtol: float
    names: tuple[str, ...]
    param: np.ndarray | None
    decay_term: np.ndarray | None
    # For an input whose layer's output has its shape: the upstream gradient the check used.
    upstream: np.ndarray | None = None
    evidence: Evidence = dataclasses.field(init=False)
    floor: float = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.evidence = Evidence(size=int(self.analytic.size), checked=int(self.checked.sum()),
                                 compared=int(self.compared.sum()),
                                 failing=int(self.failing.sum()),
                                 uninformative=int((self.compared & ~self.informative).sum()))
        # Below this, a gradient is zero for the purpose of a fingerprint.
        self.floor = 1e-6 * float(np.max(np.abs(self.n), initial=0.0)) + 1e-300

    @property
    def a(self) -> np.ndarray:
        """The analytic gradient at the compared elements (flat)."""
        return self.analytic[self.compared]

    @property
    def n(self) -> np.ndarray:
        """The numeric gradient at the compared elements (flat)."""
        return self.numeric[self.compared]

    def close(self, x: np.ndarray, y: np.ndarray) -> bool:
        """Whether ``x`` and ``y`` agree at every element, as a fingerprint must."""
        scale = np.maximum(np.abs(x), np.abs(y)) + self.floor
        return bool(np.all(np.abs(x - y) <= MATCH_RTOL_FACTOR * self.rtol * scale))

    def pattern(self, kind: str, claim: str, hint: str) -> Pattern:
        """The Pattern "<claim> [<evidence>]: <hint>"."""
        return Pattern(kind, f"{claim} [{self.evidence.clause()}]: {hint}", self.evidence)


def index_list(indices) -> str:
    """Indices in words, runs shortened: [0, 1, 2, 5] -> "0-2 and 5"."""
    runs: list[list[int]] = []
    for i in map(int, indices):
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    parts = [f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs]
    text = ", ".join(parts)
    if len(runs) > 1 or (len(runs[0]) == 2):
        head, _, tail = text.rpartition(", ")
        text = f"{head} and {tail}"
    return text
