"""How the registry-wide contract test instantiates each built-in layer and loss.

Every family contributes a ``tests/cases_<family>.py`` module with ``LAYER_CASES`` and/or
``LOSS_CASES``: dicts from registered name to a hypothesis strategy that draws a case. The
contract test fails if a registered built-in has no case, so new layers cannot skip it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class LayerCase:
    """Options and a per-sample input shape for one layer instance.

    For a layer with several inputs (add, concat, ...), ``input_shape`` is a *list* of per-sample
    shapes, exactly what its ``build`` receives, and ``draw_input`` returns a list of arrays.
    ``make_input(rng, full_shape)`` draws an input away from the layer's kinks and ties; by default
    standard normal values are used (ties and exact zeros then have probability zero). An input it
    returns as integers (token ids) stays integer: it is never perturbed and has no gradient.
    """

    options: dict
    input_shape: tuple[int, ...] | list[tuple[int, ...]]
    batch: int = 2
    make_input: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray] | None = None

    def draw_input(self, rng: np.random.Generator) -> np.ndarray | list[np.ndarray]:
        if isinstance(self.input_shape, list):
            return [self._draw(rng, shape) for shape in self.input_shape]
        return self._draw(rng, self.input_shape)

    def _draw(self, rng: np.random.Generator, input_shape: tuple[int, ...]) -> np.ndarray:
        shape = (self.batch, *input_shape)
        if self.make_input is not None:
            drawn = np.asarray(self.make_input(rng, shape))
            return drawn if is_integer(drawn) else drawn.astype(np.float64)
        return rng.normal(size=shape)


def is_integer(x: np.ndarray) -> bool:
    """Whether ``x`` holds integers (token ids): indices, not values to differentiate."""
    return np.asarray(x).dtype.kind in "iu"


@dataclasses.dataclass(frozen=True)
class LossCase:
    """Options and a per-sample prediction shape for one loss instance.

    ``make_pred`` draws predictions inside the loss's domain (e.g. (0, 1) for bce).
    """

    options: dict
    input_shape: tuple[int, ...]
    batch: int = 3
    make_pred: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray] | None = None

    def draw_pred(self, rng: np.random.Generator) -> np.ndarray:
        shape = (self.batch, *self.input_shape)
        if self.make_pred is not None:
            return np.asarray(self.make_pred(rng, shape), dtype=np.float64)
        return rng.normal(size=shape)
