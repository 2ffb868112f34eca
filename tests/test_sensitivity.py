"""How small a bug gradcheck catches (bench/detection.py --sensitivity, and the README's "How
sensitive is it"): a backward off by a relative r, everywhere or in three elements, is caught
with the right layer blamed at every seed from 2-3 times the dtype's rtol up, and its correct
twin passes."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import ROOT
from gradcheck import check_network
from zoo_cases import GRADED, graded_case

SEEDS = range(10)
# (dtype, relative error caught at every seed): twice the dtype's rtol in float64; in float32
# three elements need 3e-2 (bench/detection.py --sensitivity measures 1.5e-2 for a factor).
CAUGHT = [("float64", 2e-5), ("float64", 1e-3), ("float32", 3e-2), ("float32", 1e-1)]


@pytest.mark.parametrize("kind", GRADED)
@pytest.mark.parametrize("dtype, rel", CAUGHT)
def test_a_bug_of_twice_the_tolerance_is_caught_at_every_seed(kind, dtype, rel):
    config, culprit = graded_case(kind, rel, dtype)
    for seed in SEEDS:
        report = check_network({**config, "seed": seed})
        assert report.exit_code == 1 and report.root_causes == [culprit], (seed, report.status)


@pytest.mark.parametrize("kind", GRADED)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_correct_twin_passes_at_every_seed(kind, dtype):
    config, _ = graded_case(kind, 0.0, dtype)
    for seed in SEEDS:
        assert check_network({**config, "seed": seed}).exit_code == 0, seed


@pytest.mark.parametrize("kind", GRADED)
def test_a_bug_below_the_tolerance_is_not_claimed(kind):
    """r = rtol / 2 lies within the tolerance: passing it is the tolerance policy, not a miss."""
    config, _ = graded_case(kind, 5e-6)
    assert check_network(config).exit_code == 0


def _bench():
    spec = importlib.util.spec_from_file_location("detection", ROOT / "bench" / "detection.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_detection_limit_is_the_smallest_error_caught_at_every_seed_above_which_all_are():
    limit = _bench().detection_limit
    assert limit({1e-1: 10, 1e-2: 10, 1e-3: 9, 1e-4: 10}, 10) == 1e-2
    assert limit({1e-1: 10, 1e-2: 10}, 10) == 1e-2
    assert limit({1e-1: 9, 1e-2: 10}, 10) is None
