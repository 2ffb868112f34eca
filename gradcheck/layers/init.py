"""Parameter initialisers, named in YAML by ``init:`` / ``bias_init:`` (plugins may use them too).

A spec is a name or a one-key mapping::

    he | glorot | lecun | zeros | ones
    {normal: {std: 0.01}}            # N(0, std^2); mean: ... too
    {uniform: {low: -0.1, high: 0.1}}

``he`` is N(0, 2/fan_in) (He et al. 2015: keeps activation variance through rectifiers), ``lecun``
N(0, 1/fan_in) (LeCun et al. 1998: for tanh/sigmoid, and the output layer), ``glorot`` uniform on
+-sqrt(6/(fan_in + fan_out)) (Glorot & Bengio 2010).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck.errors import LayerError
from gradcheck.resources import before_drawing

NAMES = ("he", "glorot", "lecun", "zeros", "ones", "normal", "uniform")
_ARGUMENTS = {"normal": ("mean", "std"), "uniform": ("low", "high")}


@dataclasses.dataclass(frozen=True)
class Init:
    """A validated initialiser: ``kind`` one of NAMES, with its arguments."""

    kind: str
    args: tuple[tuple[str, float], ...] = ()

    def __call__(self, rng: np.random.Generator, shape: tuple[int, ...], fan_in: int,
                 fan_out: int) -> np.ndarray:
        """An array of ``shape`` drawn from ``rng`` (fans as the layer defines them); refused
        before it is drawn when no check could hold it (``resources.before_drawing``)."""
        before_drawing(shape)
        args = dict(self.args)
        if self.kind == "he":
            return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        if self.kind == "lecun":
            return rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)
        if self.kind == "glorot":
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            return rng.uniform(-limit, limit, shape)
        if self.kind == "zeros":
            return np.zeros(shape)
        if self.kind == "ones":
            return np.ones(shape)
        if self.kind == "normal":
            return rng.normal(args.get("mean", 0.0), args["std"], shape)
        return rng.uniform(args["low"], args["high"], shape)


def parse_init(spec, option: str, layer: str) -> Init:
    """Validate an ``init:``-style ``spec`` (see the module docstring); ``option``/``layer`` name
    it in the error a bad spec raises."""
    hint = ("write one of he, glorot, lecun, zeros, ones, {normal: {std: 0.01}} or "
            "{uniform: {low: -0.1, high: 0.1}}")
    if isinstance(spec, str):
        if spec in _ARGUMENTS:
            raise LayerError(f"{layer} option {option!r}: {spec} needs arguments.", hint=hint)
        if spec not in NAMES:
            raise LayerError(f"{layer} option {option!r}: unknown initialiser {spec!r}.", hint=hint)
        return Init(spec)
    if not (isinstance(spec, dict) and len(spec) == 1):
        raise LayerError(f"{layer} option {option!r} must be an initialiser name or a one-key "
                         f"mapping, got {spec!r}.", hint=hint)
    ((kind, args),) = spec.items()
    if kind not in _ARGUMENTS:
        raise LayerError(f"{layer} option {option!r}: {kind!r} takes no arguments; only normal "
                         "and uniform do.", hint=hint)
    allowed = _ARGUMENTS[kind]
    if not isinstance(args, dict) or any(k not in allowed for k in args):
        raise LayerError(f"{layer} option {option!r}: {kind} takes {' and '.join(allowed)}, "
                         f"got {args!r}.", hint=hint)
    values = {}
    for key, value in args.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise LayerError(f"{layer} option {option!r}: {kind}.{key} must be a finite number, "
                             f"got {value!r}.", hint=hint)
        values[key] = float(value)
    if kind == "normal" and not values.get("std", 0.0) > 0:
        raise LayerError(f"{layer} option {option!r}: normal needs std > 0, got {args!r}.",
                         hint=hint)
    if kind == "uniform" and not ("low" in values and "high" in values
                                  and values["low"] < values["high"]):
        raise LayerError(f"{layer} option {option!r}: uniform needs low < high, got {args!r}.",
                         hint=hint)
    return Init(kind, tuple(sorted(values.items())))

