"""gradcheck.explain on synthetic comparisons built from each bug: every pattern is named with its
place and its evidence, a pattern is never claimed from elements that cannot show an error, and
the fingerprints are tried from the most specific (a constant factor is never a "range")."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import examples
from gradcheck.explain import PATTERN_CODES, Evidence, classify

RTOL = 1e-5
SEEDS = range(10)


def status_of(failing: np.ndarray, compared: np.ndarray | None = None) -> np.ndarray:
    """"fail"/"pass" where compared (everywhere by default), "" elsewhere."""
    compared = np.ones(failing.shape, bool) if compared is None else compared
    return np.where(compared, np.where(failing, "fail", "pass"), "")


def broken(numeric: np.ndarray, wrong: np.ndarray, rng) -> np.ndarray:
    """The analytic gradient of a bug that spoils exactly the elements ``wrong``."""
    return np.where(wrong, numeric + rng.normal(size=numeric.shape) + 2.0, numeric)


def run(analytic, numeric, wrong, names, compared=None, **extra):
    compared = np.ones(numeric.shape, bool) if compared is None else compared
    return classify(analytic, np.where(compared, numeric, np.nan), status_of(wrong, compared),
                    rtol=RTOL, axis_names=names, **extra)


# -- a contiguous range along one axis -----------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_every_time_step_but_the_last_is_named_as_a_range(seed):
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(3, 16, 5))
    wrong = np.zeros(numeric.shape, bool)
    wrong[:, :15] = True
    found = run(broken(numeric, wrong, rng), numeric, wrong, ("sample", "time", "feature"))
    assert found.kind == "axis_range"
    assert found.text.startswith("errors only in time steps 0-14 of 16 (axis 1)")
    assert "every step but the last" in found.text
    assert found.evidence == Evidence(240, 240, 240, 225, 0)
    assert "[all 240 elements compared, 225 fail]" in found.text


@pytest.mark.parametrize("seed", SEEDS)
def test_q_and_k_columns_of_a_fused_projection_are_a_range(seed):
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(16, 48))
    wrong = np.zeros(numeric.shape, bool)
    wrong[:, :32] = True
    found = run(broken(numeric, wrong, rng), numeric, wrong, ("feature", "q/k/v unit"))
    assert found.kind == "axis_range" and "q/k/v units 0-31 of 48 (axis 1)" in found.text


@settings(max_examples=examples(40))
@given(shape=st.lists(st.integers(2, 7), min_size=1, max_size=4), data=st.data(),
       seed=st.integers(0, 2**16))
def test_a_spoiled_range_of_any_axis_is_named_with_its_exact_bounds(shape, data, seed):
    axis = data.draw(st.integers(0, len(shape) - 1))
    size = shape[axis]
    lo = data.draw(st.integers(0, size - 1))
    hi = data.draw(st.integers(lo, size - 1))
    if hi - lo + 1 == size:
        hi -= 1 if lo == 0 else 0
        lo += 1 if hi == size - 1 else 0
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=shape)
    wrong = np.zeros(shape, bool)
    np.moveaxis(wrong, axis, 0)[lo:hi + 1] = True
    names = tuple(f"axis {i}" for i in range(len(shape))) if len(shape) > 1 else ("element",)
    found = run(broken(numeric, wrong, rng), numeric, wrong, names)
    width = hi - lo + 1
    at_edge = lo == 0 or hi == size - 1
    assert found.evidence.failing == wrong.sum() and found.evidence.compared == numeric.size
    if at_edge and width <= 3:
        assert found.kind == "boundary", found.text
        assert f"the {'first' if lo == 0 else 'last'}" in found.text
    else:
        assert found.kind == "axis_range", found.text
        assert (f" {lo}-{hi} of {size}" if width > 1 else f" {lo} of {size}") in found.text
    assert found.text.startswith("errors only in")


def test_a_constant_factor_on_every_element_is_a_factor_not_a_range():
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(6, 8))
    everywhere = np.ones(numeric.shape, bool)
    found = run(2.0 * numeric, numeric, everywhere, ("axis 0", "axis 1"))
    assert found.kind == "constant_ratio" and "2x too large" in found.text
    # The same factor on a range only is no longer a relation at every element: a range.
    part = np.zeros(numeric.shape, bool)
    part[:, 2:6] = True
    found = run(np.where(part, 2.0 * numeric, numeric), numeric, part, ("axis 0", "axis 1"))
    assert found.kind == "axis_range" and "indices 2-5 of 8 along axis 1" in found.text


# -- whole slices ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_embedding_rows_of_repeated_ids_are_whole_slices_and_unused_rows_prove_nothing(seed):
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(8, 6))
    unused = np.isin(np.arange(8), [2, 3, 5, 7])[:, None] & np.ones((8, 6), bool)
    numeric[unused] = 0.0
    wrong = np.isin(np.arange(8), [1, 4])[:, None] & np.ones((8, 6), bool)
    analytic = broken(numeric, wrong, rng)
    found = run(analytic, numeric, wrong, ("id", "dimension"))
    assert found.kind == "whole_slices"
    # Rows 2, 3, 5, 7 had no gradient at all: the claim stays about the compared elements.
    assert found.text.startswith("the failing elements all lie in whole slices at ids 1 and 4 "
                                 "of 8 (axis 0); 4 other ids showed no evidence")
    assert found.evidence == Evidence(48, 48, 48, 12, 24)
    every_row_used = rng.normal(size=(8, 6))
    wrong = np.isin(np.arange(8), [1, 5, 6])[:, None] & np.ones((8, 6), bool)
    found = run(broken(every_row_used, wrong, rng), every_row_used, wrong, ("id", "dimension"))
    assert found.kind == "whole_slices"
    assert found.text.startswith("errors only in whole slices at ids 1, 5 and 6 of 8 (axis 0)")


def test_scattered_failures_in_a_few_rows_are_not_whole_slices():
    rng = np.random.default_rng(3)
    numeric = rng.normal(size=(8, 10))
    wrong = np.zeros(numeric.shape, bool)
    wrong[1, :4] = wrong[5, 6:] = True  # under half of each row
    found = run(broken(numeric, wrong, rng), numeric, wrong, ("id", "dimension"))
    assert found.kind not in ("whole_slices", "axis_range")


# -- a small relative error ------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_a_consistent_small_relative_error_is_told_from_a_wrong_factor(seed):
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(4, 32))
    everywhere = np.ones(numeric.shape, bool)
    found = run(numeric * (1.0 + 1e-3), numeric, everywhere, ("sample", "axis 1"))
    assert found.kind == "small_relative_error"
    assert "a consistent 1.0e-03 relative error" in found.text and "always larger" in found.text
    # Approximation errors of both signs and varying size (a tanh-GELU forward) are one too.
    wobble = numeric * (1.0 + 3e-4 * rng.choice([-1.0, 1.0], numeric.shape) *
                        rng.uniform(0.5, 2.0, numeric.shape))
    found = run(wobble, numeric, everywhere, ("sample", "axis 1"))
    assert found.kind == "small_relative_error" and "of both signs" in found.text
    # A factor 1.5 is not small: a constant ratio, as before.
    assert run(1.5 * numeric, numeric, everywhere, ("sample", "axis 1")).kind == "constant_ratio"


def test_an_error_large_at_a_few_elements_is_not_a_small_relative_error():
    rng = np.random.default_rng(1)
    numeric = rng.normal(size=(4, 32))
    analytic = numeric * (1.0 + 1e-3)
    analytic[2, 5] += 3.0  # one element off by the gradient's own size
    found = run(analytic, numeric, np.ones(numeric.shape, bool), ("sample", "axis 1"))
    assert found.kind == "widespread"


# -- decay terms -----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("c, words", [(-0.01, "analytic = numeric - 0.01 x W"),
                                      (0.02, "analytic = numeric + 0.02 x W"),
                                      (-0.02, "analytic = numeric - 0.02 x W")])
def test_a_decay_term_inside_backward_is_fitted_from_the_parameter(seed, c, words):
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(6, 5))
    numeric = rng.normal(size=(6, 5))
    everywhere = np.ones(numeric.shape, bool)
    found = run(numeric + c * weights, numeric, everywhere, ("input feature", "unit"),
                param=weights)
    assert found.kind == "decay_term" and found.text.startswith(words)
    # Without the parameter's values nothing can be fitted: no decay claim.
    assert run(numeric + c * weights, numeric, everywhere,
               ("input feature", "unit")).kind != "decay_term"


def test_a_decay_term_is_related_to_the_configured_weight_decay():
    rng = np.random.default_rng(0)
    weights, numeric = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    everywhere = np.ones(numeric.shape, bool)
    configured = 1e-2 * weights
    exact = run(numeric + configured, numeric, everywhere, ("axis 0", "axis 1"), param=weights,
                weight_decay_term=configured)
    assert exact.kind == "includes_weight_decay"
    doubled = run(numeric + 2.0 * configured, numeric, everywhere, ("axis 0", "axis 1"),
                  param=weights, weight_decay_term=configured)
    assert doubled.kind == "decay_term" and "2x the configured weight_decay 0.01" in doubled.text


# -- boundary bands and rings ----------------------------------------------------------------

IMAGE = ("sample", "channel", "row", "column")


@pytest.mark.parametrize("seed", SEEDS)
def test_bands_wider_than_one_and_border_rings_are_boundaries(seed):
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(2, 3, 8, 9))
    top = np.zeros(numeric.shape, bool)
    top[:, :, :2] = True
    found = run(broken(numeric, top, rng), numeric, top, IMAGE)
    assert found.kind == "boundary"
    assert found.text.startswith("errors only in the first 2 rows (axis 2, size 8)")
    right = np.zeros(numeric.shape, bool)
    right[..., -3:] = True
    found = run(broken(numeric, right, rng), numeric, right, IMAGE)
    assert found.kind == "boundary" and "the last 3 columns (axis 3, size 9)" in found.text
    ring = np.ones(numeric.shape, bool)
    ring[..., 2:-2, 2:-2] = False
    found = run(broken(numeric, ring, rng), numeric, ring, IMAGE)
    assert found.kind == "boundary"
    assert "the border ring (first/last 2 rows and columns)" in found.text
    assert found.evidence.failing == ring.sum()


def test_four_rows_at_an_edge_are_a_range_not_a_band():
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(2, 3, 10, 6))
    wrong = np.zeros(numeric.shape, bool)
    wrong[:, :, :4] = True
    found = run(broken(numeric, wrong, rng), numeric, wrong, IMAGE)
    assert found.kind == "axis_range" and "rows 0-3 of 10 (axis 2)" in found.text


# -- flips ---------------------------------------------------------------------------------

KERNEL = ("filter", "channel", "kernel row", "kernel column")


@pytest.mark.parametrize("seed", SEEDS)
def test_a_kernel_flipped_along_one_axis_matches_after_reversing_that_axis(seed):
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(4, 3, 3, 3))
    for axis, words in ((2, "reversing the kernel rows (axis 2, size 3)"),
                        (3, "reversing the kernel columns (axis 3, size 3)")):
        analytic = np.flip(numeric, axis)
        wrong = ~np.isclose(analytic, numeric)
        found = run(analytic, numeric, wrong, KERNEL)
        assert found.kind == "axis_flipped" and words in found.text
    # Both axes: the 180-degree rotation keeps its own code.
    analytic = numeric[..., ::-1, ::-1]
    assert run(analytic, numeric, ~np.isclose(analytic, numeric), KERNEL).kind == "kernel_flipped"


def test_a_flip_is_found_from_a_sample_of_elements():
    """The analytic gradient is known everywhere: the flipped one needs no mirrored pair."""
    rng = np.random.default_rng(4)
    numeric = rng.normal(size=(4, 3, 5, 5))
    analytic = np.flip(numeric, 3)
    compared = rng.random(numeric.shape) < 0.3
    found = run(analytic, numeric, compared & ~np.isclose(analytic, numeric), KERNEL, compared)
    assert found.kind == "axis_flipped"
    assert f"{compared.sum()} of 300 elements compared" in found.text


# -- evidence, coverage and uninformative elements --------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_no_sample_claim_from_elements_behind_a_max_pool(seed):
    """An elementwise bug wrong at every element, compared at 64 sampled elements behind a 2x2
    max-pool: where the pool routed no gradient, analytic and numeric are both exactly 0, and
    those elements cannot show the bug; a sample with only such elements is not 'right'."""
    rng = np.random.default_rng(seed)
    shape = (4, 2, 8, 8)
    routed = np.zeros(shape, bool)
    blocks = routed.reshape(4, 2, 4, 2, 4, 2)
    pick = rng.integers(0, 2, (4, 2, 4, 4, 2))
    n, c, i, j = np.indices((4, 2, 4, 4))
    blocks[n, c, i, pick[..., 0], j, pick[..., 1]] = True
    numeric = np.where(routed, rng.normal(size=shape), 0.0)
    analytic = numeric * rng.uniform(1.2, 3.0, shape)  # wrong wherever there is a gradient
    compared = np.zeros(shape, bool)
    flat = rng.choice(routed[:3].size, 48, replace=False)  # samples 0-2 anywhere...
    compared[:3].reshape(-1)[flat] = True
    compared[3] = ~routed[3] & (rng.random(shape[1:]) < 0.15)  # ...sample 3 only where unrouted
    wrong = compared & routed
    found = run(analytic, numeric, wrong, IMAGE, compared)
    assert found.kind == "widespread", found.text
    assert "only" not in found.text
    assert found.evidence.uninformative == int((compared & ~routed).sum())
    assert "uninformative (both gradients exactly 0)" in found.text


@pytest.mark.parametrize("seed", SEEDS)
def test_a_mishandled_sample_is_still_named_with_the_right_scope(seed):
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(4, 6, 6))
    wrong = np.zeros(numeric.shape, bool)
    wrong[3] = True
    analytic = np.where(wrong, 0.0, numeric)  # the loop over samples stops one short
    names = ("sample", "row", "column")
    found = run(analytic, numeric, wrong, names)
    assert found.kind == "some_samples" and found.text.startswith("errors only in sample 3 of 4")
    compared = rng.random(numeric.shape) < 0.4
    found = run(analytic, numeric, wrong & compared, names, compared)
    assert found.kind == "some_samples"
    assert found.text.startswith("the failing elements all lie in sample 3 of 4")
    assert f"[{compared.sum()} of 144 elements compared, {(wrong & compared).sum()} fail]" \
        in found.text


def test_a_region_claim_needs_enough_informative_elements_outside_it():
    rng = np.random.default_rng(2)
    numeric = rng.normal(size=(6, 8))
    wrong = np.zeros(numeric.shape, bool)
    wrong[:, :7] = rng.random((6, 7)) < 0.6  # a bug that spoils 60% of the elements it touches
    analytic = broken(numeric, wrong, rng)
    # One passing informative element in column 7 proves little: (1 - 0.6)^1 > CHANCE.
    numeric[:, 7] = analytic[:, 7] = 0.0
    numeric[0, 7] = analytic[0, 7] = 1.0
    assert run(analytic, numeric, wrong, ("axis 0", "axis 1")).kind == "widespread"


def test_every_pattern_code_is_in_the_json_schema():
    from gradcheck.schema import load_schema

    description = load_schema()["$defs"]["check"]["properties"]["pattern"]["description"]
    assert all(code in description for code in PATTERN_CODES)
