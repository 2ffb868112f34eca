"""Contract-test cases for the activation, shape and dropout layers (see tests/layer_cases.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from layer_cases import LayerCase

# Smallest |x| the rectifier inputs take: far larger than any finite-difference step, so
# x +- h never crosses the kink at 0 and no example needs to be filtered out.
KINK_MARGIN = 0.1


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values with |x| >= KINK_MARGIN and a random sign: off the rectifiers' kink by construction."""
    magnitude = KINK_MARGIN + np.abs(rng.normal(size=shape))
    return np.where(rng.random(shape) < 0.5, -magnitude, magnitude)


dims = st.integers(1, 3)
# Per-sample shapes of rank 1 to 3: elementwise layers must take any of them.
any_shape = st.lists(dims, min_size=1, max_size=3).map(tuple)
# (features,) or (C, H, W): the layouts softmax (and prelu's slopes) are defined for.
feature_or_image = st.one_of(st.tuples(dims), st.tuples(dims, dims, dims))
batches = st.integers(1, 3)
finite_slope = st.floats(-2.0, 2.0, allow_nan=False)


def _cases(options, shapes, make_input=None):
    return st.builds(lambda opts, shape, batch: LayerCase(opts, shape, batch, make_input),
                     options, shapes, batches)


LAYER_CASES = {
    "relu": _cases(st.just({}), any_shape, away_from_zero),
    "leaky_relu": _cases(st.fixed_dictionaries({}, optional={"slope": finite_slope}), any_shape,
                         away_from_zero),
    "prelu": _cases(st.fixed_dictionaries({}, optional={"init": finite_slope}), feature_or_image,
                    away_from_zero),
    "elu": _cases(st.fixed_dictionaries({}, optional={"alpha": st.floats(0.1, 3.0)}), any_shape,
                  away_from_zero),
    "sigmoid": _cases(st.just({}), any_shape),
    "tanh": _cases(st.just({}), any_shape),
    "softmax": _cases(st.just({}), feature_or_image),
    "flatten": _cases(st.just({}), any_shape),
    "dropout": _cases(st.fixed_dictionaries({}, optional={"rate": st.floats(0.0, 0.9)}), any_shape),
}
