"""Contract-test cases for the normalisation layers and the losses (see layer_cases.py).

Normalisation is smooth, but its gradient grows like 1 / std, so the inputs are spread out by
construction: finite differences then stay accurate without any filtering of draws.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from layer_cases import LayerCase, LossCase


def spread_over_batch(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Samples offset by 1 from each other plus noise in [-0.25, 0.25]: every channel's batch
    variance is then bounded away from 0, whatever the batch size (>= 2) and spatial size."""
    batch = shape[0]
    offsets = (np.arange(batch) - (batch - 1) / 2).reshape((batch,) + (1,) * (len(shape) - 1))
    return offsets + rng.uniform(-0.25, 0.25, size=shape)


def spread_per_sample(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Each sample a shuffled grid with spacing in [0.5, 1] and a random shift: its variance over
    its own elements is bounded away from 0 (needs at least 2 elements per sample)."""
    batch, size = shape[0], int(np.prod(shape[1:]))
    rows = [rng.permutation(size) * rng.uniform(0.5, 1.0) + rng.normal() for _ in range(batch)]
    return np.stack(rows).reshape(shape)


def positive_probabilities(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Predictions for bce, kept away from 0 and 1 where its gradient blows up."""
    return rng.uniform(0.05, 0.95, size=shape)


_EPS = st.sampled_from([1e-5, 1e-3, 0.1])


@st.composite
def batchnorm_case(draw) -> LayerCase:
    channels = draw(st.integers(1, 3))
    image = draw(st.booleans())
    spatial = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if image else ()
    options = {"eps": draw(_EPS), "momentum": draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))}
    # Batch >= 2: training-mode statistics over a single sample are rejected by the layer.
    return LayerCase(options, (channels, *spatial), batch=draw(st.integers(2, 4)),
                     make_input=spread_over_batch)


@st.composite
def layernorm_case(draw) -> LayerCase:
    # The first axis has >= 2 entries so that every sample has a variance to normalise by (and
    # every axis does for axes: last, whose last axis is then >= 2 whatever the rank).
    axes = draw(st.sampled_from(["all", "last"]))
    tail = draw(st.lists(st.integers(2 if axes == "last" else 1, 3), max_size=2))
    shape = (draw(st.integers(2, 4)), *tail)
    return LayerCase({"eps": draw(_EPS), "axes": axes}, shape, batch=draw(st.integers(1, 3)),
                     make_input=spread_per_sample)


@st.composite
def lrn_case(draw) -> LayerCase:
    options = {"size": draw(st.sampled_from([1, 3, 5, 7])),
               "alpha": draw(st.sampled_from([1e-4, 0.01, 0.3, 1.0])),
               "beta": draw(st.sampled_from([0.5, 0.75, 1.0, 1.5])),
               "k": draw(st.sampled_from([0.5, 1.0, 2.0]))}
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return LayerCase(options, shape, batch=draw(st.integers(1, 3)))


@st.composite
def _values_loss_case(draw, make_pred=None) -> LossCase:
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    return LossCase({}, shape, batch=draw(st.integers(1, 4)), make_pred=make_pred)


@st.composite
def cross_entropy_case(draw) -> LossCase:
    return LossCase({}, (draw(st.integers(1, 5)),), batch=draw(st.integers(1, 4)))


LAYER_CASES = {
    "batchnorm": batchnorm_case(),
    "layernorm": layernorm_case(),
    "lrn": lrn_case(),
}

LOSS_CASES = {
    "mse": _values_loss_case(),
    "cross_entropy": cross_entropy_case(),
    "bce": _values_loss_case(make_pred=positive_probabilities),
    "l2": _values_loss_case(),
}
