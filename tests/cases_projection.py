"""Contract case for the projection loss (the loss gradcheck.check_layer puts after one layer)."""

from __future__ import annotations

from hypothesis import strategies as st

from layer_cases import LossCase


@st.composite
def projection_case(draw) -> LossCase:
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    return LossCase({}, shape, batch=draw(st.integers(1, 4)))


LOSS_CASES = {"projection": projection_case()}
