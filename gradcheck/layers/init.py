"""Fan-in initialisers shared by the built-in layers (plugins may use them too)."""

from __future__ import annotations

import numpy as np


def he_normal(rng: np.random.Generator, fan_in: int, shape: tuple[int, ...]) -> np.ndarray:
    """N(0, 2/fan_in): keeps activation variance constant through rectifiers (He et al. 2015)."""
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
