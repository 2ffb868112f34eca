"""The memory model's shape (gradcheck.footprint), from shapes alone: the modes auto mode tries
need memory in the order it tries them, a larger network holds more, the baseline adds exactly,
and a wide dense layer is held three times by the clean pass."""

from __future__ import annotations

import math

from hypothesis import given, settings, strategies as st

from conftest import examples
from gradcheck import footprint

MB = 2**20

units_strategy = st.lists(st.tuples(st.lists(st.integers(1, 10**6), max_size=3),
                                    st.integers(1, 10**6)), min_size=1, max_size=5)


def _units(drawn, loss_input: int) -> list[footprint.UnitShape]:
    inputs = [i for _, i in drawn] + [loss_input]
    units = [footprint.UnitShape(tuple(p), inputs[k], inputs[k + 1])
             for k, (p, _) in enumerate(drawn)]
    return [*units, footprint.UnitShape((), loss_input, 1, is_loss=True)]


@settings(max_examples=examples(50))
@given(units_strategy, st.integers(1, 10**6), st.integers(1, 64), st.sampled_from([4, 8]))
def test_full_needs_most_and_directional_least(drawn, loss_input, samples, itemsize):
    """Auto mode tries them in this order (footprint.MODES): sample runs every stage
    sample+directional runs, plus the safety net; directional compares no element."""
    units = _units(drawn, loss_input)
    need = {mode: footprint.estimate(units, itemsize, mode, samples, 0).total
            for mode in footprint.MODES}
    assert need["full"] >= need["sample"] >= need["sample+directional"] >= need["directional"]


@settings(max_examples=examples(50))
@given(units_strategy, st.integers(1, 10**6), st.sampled_from(footprint.MODES),
       st.integers(2, 4))
def test_a_larger_network_holds_more_and_the_baseline_adds_exactly(drawn, loss_input, mode,
                                                                    factor):
    units = _units(drawn, loss_input)
    wider = [_scaled(u, factor) for u in units]
    assert footprint.network_bytes(wider, 8) >= factor * footprint.network_bytes(units, 8) * 0.99
    base = footprint.estimate(units, 8, mode, 32, 0).total
    assert footprint.estimate(units, 8, mode, 32, 10 * MB).total == base + 10 * MB


def _scaled(u: footprint.UnitShape, factor: int) -> footprint.UnitShape:
    return footprint.UnitShape(tuple(p * factor for p in u.params), u.inputs * factor,
                               u.outputs if u.is_loss else u.outputs * factor, u.is_loss)


def test_the_parameters_dominate_a_wide_dense_network_as_measured():
    """20000 x 20000 float64: weights 3.2 GB; the clean pass holds them three times (the
    weights, the layer's gradient, its float64 copy)."""
    units = [footprint.UnitShape((20000 * 20000, 20000), 8 * 20000, 8 * 20000),
             footprint.UnitShape((), 8 * 20000, 1, is_loss=True)]
    weights = 20000 * 20000 * 8
    network = footprint.network_bytes(units, 8)
    assert 3 * weights <= network < 3.01 * weights
    assert math.isclose(footprint.estimate(units, 8, "directional", 32, 0).network, network,
                        rel_tol=1e-9)
