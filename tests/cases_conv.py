"""Contract-test cases for the convolution and pooling families (see layer_cases.py).

Shapes stay tiny so that element-wise finite differences over every input and weight are cheap.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from layer_cases import LayerCase


def distinct_values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A shuffled, evenly spaced grid: no two entries tie, so max-pool stays off its kinks.

    The spacing (at least ~0.02 for these sizes) dwarfs any finite-difference step, so no
    perturbation can make a window's winner change.
    """
    n = int(np.prod(shape))
    spacing = min(0.1, 6.0 / n)
    return ((rng.permutation(n) - (n - 1) / 2) * spacing).reshape(shape)


def _option(values: st.SearchStrategy) -> st.SearchStrategy:
    """An int or a [height, width] list: both spellings must work, so draw both."""
    return st.one_of(values, st.lists(values, min_size=2, max_size=2))


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


@st.composite
def _spatial_input(draw, window: tuple[int, int], padding: tuple[int, int]):
    """(channels, height, width) just large enough for ``window`` after ``padding``."""
    channels = draw(st.integers(1, 3))
    height, width = (max(1, k - 2 * p) + draw(st.integers(0, 3))
                     for k, p in zip(window, padding))
    return channels, height, width


@st.composite
def conv2d_case(draw) -> LayerCase:
    kernel = draw(_option(st.integers(1, 3)))
    dilation = draw(_option(st.integers(1, 2)))
    padding = draw(_option(st.integers(0, 2)))
    options = {"filters": draw(st.integers(1, 3)), "kernel": kernel,
               "stride": draw(_option(st.integers(1, 2))), "padding": padding,
               "dilation": dilation, "bias": draw(st.booleans())}
    span = tuple(d * (k - 1) + 1 for k, d in zip(_pair(kernel), _pair(dilation)))
    return LayerCase(options, draw(_spatial_input(span, _pair(padding))),
                     batch=draw(st.integers(1, 3)))


@st.composite
def _pool_case(draw, make_input=None) -> LayerCase:
    size = draw(_option(st.integers(1, 3)))
    # Padding may be at most half the window per axis (the layers reject more).
    padding = [draw(st.integers(0, k // 2)) for k in _pair(size)]
    options = {"size": size, "stride": draw(st.one_of(st.none(), _option(st.integers(1, 3)))),
               "padding": padding}
    return LayerCase(options, draw(_spatial_input(_pair(size), _pair(padding))),
                     batch=draw(st.integers(1, 3)), make_input=make_input)


@st.composite
def global_avgpool_case(draw) -> LayerCase:
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return LayerCase({}, shape, batch=draw(st.integers(1, 3)))


LAYER_CASES = {
    "conv2d": conv2d_case(),
    "maxpool2d": _pool_case(make_input=distinct_values),
    "avgpool2d": _pool_case(),
    "global_avgpool": global_avgpool_case(),
}
