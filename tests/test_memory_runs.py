"""What the engine does a run of positions at a time (so that no array-sized temporary is held)
equals its whole-array definition: directional checks, the contract probes' comparison, the
largest gradients of sample mode, the step scale, shortcut verification; and the sparse
relative-error map reads, updates and draws like the dense one it replaces."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gradcheck
from conftest import examples
from gradcheck import modes, probes, tolerance
from gradcheck.build import build_network
from gradcheck.compare import element_steps, scale_floor
from gradcheck.config import load_config
from gradcheck.directional import Directions
from gradcheck.engine import base
from gradcheck.engine.base import states_differ
from gradcheck.engine.local import INPUT, LocalProbe
from gradcheck.engine.tail import Move, TailProbe
from gradcheck.engine.verify import VERIFY_ELEMENTS, Verifier
from gradcheck.render.heatmap import grid
from gradcheck.report import ErrorMap

def _network(seed: int, wrong: bool = False):
    """dense 12 -> 9, tanh, dense 9 -> 4, mse; the first weight's gradient doubled if ``wrong``."""
    spec = load_config({"seed": seed, "input": {"shape": [12], "batch": 5}, "layers": [
        {"type": "dense", "units": 9}, "tanh", {"type": "dense", "units": 4}], "loss": "mse"})
    network, batch = build_network(spec)
    clean = network.run(batch)
    if wrong:
        clean.grads[(0, "W")] = 2.0 * clean.grads[(0, "W")]
    return network, batch, clean


def _directions(network, batch, clean):
    """Every parameter and the input of the first layer, moved at once (the safety net's
    shape) and the first weight alone (a target's, with bisection)."""
    arrays, grads, floors = [], [], []
    for k, unit in enumerate(network.units):
        for name, param in unit.params.items():
            arrays.append(param)
            grads.append(clean.grads[(k, name)])
            floors.append(scale_floor(param))
    tol = tolerance.resolve("float64")
    everything = Directions(TailProbe(network, clean, batch.target, arrays,
                                      list(range(len(network.units)))),
                            grads, floors, tol, network.dtype)
    first = TailProbe.for_target(network, clean, batch.target, 0, "W")
    one = Directions(first, [clean.grads[(0, "W")]], [scale_floor(first.arrays[0])], tol,
                     network.dtype)
    return everything, one


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("wrong", [False, True])
def test_directional_checks_in_short_runs_equal_one_run(seed, wrong, monkeypatch):
    network, batch, clean = _network(seed, wrong)
    found = {}
    for run in (base.RUN_ELEMENTS, 7):
        monkeypatch.setattr(base, "RUN_ELEMENTS", run)
        everything, one = _directions(network, batch, clean)
        found[run] = (everything.check(3, np.random.default_rng(seed), localise=False),
                      one.check(3, np.random.default_rng(seed)))
    (whole_all, whole_one), (short_all, short_one) = found[base.RUN_ELEMENTS], found[7]
    for whole, short in ((whole_all, short_all), (whole_one, short_one)):
        assert (short.directions, short.failed, short.kinked) == (
            whole.directions, whole.failed, whole.kinked)
        assert short.worst_rel_error == pytest.approx(whole.worst_rel_error, rel=1e-6, abs=1e-12)
        np.testing.assert_array_equal(short.located_failing, whole.located_failing)
    assert (whole_one.failed > 0) == wrong


def test_a_direction_matches_its_textbook_definition():
    """g . d against (L(x + d) - L(x - d)) / 2, d written out in full as eps * scale * sign /
    sqrt(n): the run-at-a-time check computes the same two numbers."""
    network, batch, clean = _network(3)
    _, one = _directions(network, batch, clean)
    w = one.probe.arrays[0]
    signs = [np.where(np.random.default_rng(1).random(w.size) < 0.5, -1, 1).astype(np.int8)]
    judged = one.judge(signs, [[slice(0, w.size)]])
    analytic, numeric = judged.analytic, judged.numeric
    eps = one.tol.eps
    d = (eps * np.maximum(np.abs(w), scale_floor(w)) * signs[0].reshape(w.shape)
         / np.sqrt(w.size))
    kept = w.copy()
    losses = []
    for sign in (1.0, -1.0):
        w[...] = kept + sign * d
        losses.append(network.loss_value(network.forward(batch.x), batch.target))
    w[...] = kept
    assert analytic[0] == pytest.approx(float(np.sum(clean.grads[(0, "W")] * d)) / eps,
                                        rel=1e-9)
    assert numeric[0] == pytest.approx((losses[0] - losses[1]) / (2 * eps), rel=1e-9)


def test_displacements_are_undone_even_when_the_loss_raises(monkeypatch):
    network, batch, clean = _network(0)
    probe = TailProbe.for_target(network, clean, batch.target, 0, "W")
    kept = probe.arrays[0].copy()
    calls = []

    def loss_that_fails_on_its_second_call():
        calls.append(1)
        if len(calls) == 2:
            raise gradcheck.LayerError("boom")
        return 0.0, []

    monkeypatch.setattr(probe, "loss", loss_that_fails_on_its_second_call)
    monkeypatch.setattr(base, "RUN_ELEMENTS", 5)
    move = Move([slice(0, kept.size)], lambda a, run, keep: np.full(len(keep), 0.5))
    with pytest.raises(gradcheck.LayerError, match="boom"):
        probe.evaluate_displaced([move])
    np.testing.assert_array_equal(probe.arrays[0], kept)


def test_a_directional_check_holds_a_copy_and_a_sign_per_element_not_a_displacement():
    """The safety net of a network with one large weight: the saved copy (8 bytes an element)
    and the signs (drawn as int64, kept as int8) are all it holds per element."""
    spec = load_config({"input": {"shape": [1000], "batch": 2},
                        "layers": [{"type": "dense", "units": 1000}], "loss": "mse"})
    network, batch = build_network(spec)
    clean = network.run(batch)
    everything, _ = _directions(network, batch, clean)
    size = sum(a.size for a in everything.probe.arrays)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        everything.check(2, np.random.default_rng(0), localise=False)
        held = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    run_temporaries = 8 * base.RUN_ELEMENTS * 6
    assert held <= 17.5 * size + min(size * 8 * 6, run_temporaries), held / size


def _differ_whole(a, b, tol):
    """The probes' comparison as it was written over whole arrays."""
    a, b = np.atleast_1d(np.asarray(a, float)), np.atleast_1d(np.asarray(b, float))
    gap = np.abs(a - b)
    gap[np.isnan(a) & np.isnan(b)] = 0.0
    if gap.size == 0 or not np.max(gap) > tol:
        return None
    at = int(np.argmax(gap))
    return float(gap.reshape(-1)[at]), ([int(i) for i in np.unravel_index(at, gap.shape)]
                                        if gap.size > 1 else [])


values = st.sampled_from([0.0, 1.0, -2.5, 3.0, np.nan, 1e-9])


@settings(max_examples=examples(60))
@given(st.lists(st.tuples(values, values), min_size=1, max_size=40), st.integers(1, 6),
       st.sampled_from([0.0, 1e-6, 2.0]), st.sampled_from([(-1,), (2, -1)]))
def test_the_probes_compare_in_runs_as_over_whole_arrays(pairs, run, tol, shape):
    if len(shape) == 2 and len(pairs) % 2:
        pairs = pairs[:-1] or [(0.0, 0.0), (0.0, 0.0)]
    a = np.array([p[0] for p in pairs]).reshape(shape)
    b = np.array([p[1] for p in pairs]).reshape(shape)
    saved = base.RUN_ELEMENTS
    base.RUN_ELEMENTS = run
    try:
        assert probes._differ(a, b, tol) == _differ_whole(a, b, tol)
    finally:
        base.RUN_ELEMENTS = saved


@settings(max_examples=examples(40))
@given(st.integers(1, 300), st.integers(1, 16), st.integers(1, 50), st.integers(0, 9))
def test_the_largest_gradients_are_found_run_by_run(size, n, run, seed):
    magnitudes = np.random.default_rng(seed).permutation(size) + 1.0  # distinct: no ties
    grad = magnitudes * np.where(np.arange(size) % 3 == 0, -1.0, 1.0)
    n = min(n, size)
    saved = base.RUN_ELEMENTS
    base.RUN_ELEMENTS = run
    try:
        found = modes._largest(grad, n)
    finally:
        base.RUN_ELEMENTS = saved
    assert sorted(found) == sorted(np.argsort(-np.abs(grad))[:n])


@settings(max_examples=examples(40))
@given(st.integers(1, 200), st.integers(1, 30), st.integers(0, 9), st.booleans())
def test_the_step_scale_is_the_rms_whatever_the_runs(size, run, seed, zero):
    array = np.zeros(size) if zero else np.random.default_rng(seed).normal(size=size)
    saved = base.RUN_ELEMENTS
    base.RUN_ELEMENTS = run
    try:
        floor = scale_floor(array)
    finally:
        base.RUN_ELEMENTS = saved
    expected = float(np.sqrt(np.mean(array ** 2)))
    assert floor == (1.0 if zero else pytest.approx(expected, rel=1e-12))


ROW_LIAR = """
import gradcheck


@gradcheck.register_layer("row_liar")
class RowLiar(gradcheck.Layer):
    \"\"\"y = 2x, with a backward of 3g and a perturbed_input_rows that lies the same way.\"\"\"

    def forward(self, x):
        return 2.0 * x

    def backward(self, grad_out):
        return 3.0 * grad_out

    def perturbed_input_rows(self, x, flat_indices, values):
        n, i = divmod(flat_indices, x.size // x.shape[0])
        rows = 2.0 * x.reshape(x.shape[0], -1)[n]
        rows[range(len(n)), i] += 3.0 * (values - x.reshape(-1)[flat_indices])
        return rows.reshape(len(n), *x.shape[1:])
"""


@pytest.fixture(scope="module")
def row_liar(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("plugins") / "row_liar.py"
    path.write_text(ROW_LIAR)
    return str(path)


@pytest.mark.parametrize("seed", range(10))
def test_a_lying_shortcut_is_caught_when_a_pass_holds_one_pair_of_whole_copies(seed, row_liar,
                                                                              monkeypatch):
    """Rows of 64 bytes, a whole batch of 1 kB and a chunk that holds one pair of whole
    copies: every pass of rows is still verified against forward, both signs of each element."""
    monkeypatch.setattr(base, "CHUNK_BYTES", 8000)
    verified = []
    forward_changes = LocalProbe.forward_changes

    def recording(self, idx, values):
        verified.append(len(idx))
        return forward_changes(self, idx, values)

    monkeypatch.setattr(LocalProbe, "forward_changes", recording)
    report = gradcheck.check_network({"seed": seed, "plugins": [row_liar],
                                      "input": {"shape": [8], "batch": 16},
                                      "layers": [{"type": "row_liar", "name": "liar"}],
                                      "loss": "mse"}, mode="full")
    assert not report.passed and report.root_causes == ["liar"]
    assert any("'liar': perturbed_input_rows disagrees with forward" in n for n in report.notes)
    assert verified and all(n % 2 == 0 and 2 <= n <= 2 * VERIFY_ELEMENTS for n in verified)


# Every kind of unit verification meets: convolution, batch-mixing batchnorm, relu and max-pool
# with branch states, flatten (a view of its input), dense, an elementwise squasher, the loss.
VERIFIED = {"input": {"shape": [2, 6, 6], "batch": 3}, "layers": [
    {"type": "conv2d", "filters": 3, "kernel": 3, "padding": 1}, "batchnorm", "relu",
    "maxpool2d", "flatten", {"type": "dense", "units": 5}, "tanh"], "loss": "cross_entropy"}


def _whole_batch_changes(probe: LocalProbe, idx, values):
    """Verification's reference as written over whole copies: each copy's objective change and
    its terms' size, summed over the whole batch, and a bound on rounding by another order."""
    copies = probe.plain_copies(idx, values)
    change, scale = probe.change(copies)
    if probe.is_loss:
        return change, scale, copies, 4 * np.finfo(float).eps * scale
    terms = sum(np.sum(np.abs(g * (np.asarray(d, float) - c)), axis=tuple(range(1, d.ndim)))
                for d, c, g in zip(copies.data, probe.clean, probe.upstream))
    return change, scale, copies, 64 * np.finfo(float).eps * terms


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_verification_reduced_copy_by_copy_equals_the_whole_batch_definition(seed, dtype):
    """What a shortcut is verified against, each copy reduced over the outputs it moved as soon
    as forward computes it, is the whole batch's sum of G * (y - clean) to rounding, with the
    same terms' size and the same branch states."""
    network, batch = build_network(load_config({**VERIFIED, "seed": seed, "dtype": dtype}))
    network.set_training(True)
    clean = network.run(batch)
    rng = np.random.default_rng(seed)
    verifier = Verifier(network.dtype, 1e-5, seed)
    n = len(network.layers)
    for k, unit in enumerate(network.units):
        upstream = (batch.target if k == n
                    else [g.astype(network.dtype) for g in clean.upstream[k]])
        for name in [*unit.params, INPUT]:
            probe = LocalProbe(unit, clean.args[k], upstream, name, network.dtype, verifier,
                               f"{unit.name}.{name}")
            idx = np.repeat(rng.choice(probe.array.size, size=min(6, probe.array.size),
                                       replace=False), 2)
            steps, _ = element_steps(probe.array, idx, 1e-3)
            values = (probe.array.reshape(-1)[idx] + steps * np.tile([1.0, -1.0], len(idx) // 2)
                      ).astype(probe.array.dtype)
            expected, scale, copies, rounding = _whole_batch_changes(probe, idx, values)
            got = probe.forward_changes(idx, values)
            assert np.all(np.abs(got.changes - expected) <= rounding), (unit.name, name)
            np.testing.assert_allclose(got.scales, scale, rtol=1e-13, atol=0)
            assert len(got.states) == len(copies.states)
            assert all(not states_differ(a, b) for a, b in zip(got.states, copies.states))


def test_verification_holds_one_whole_batch_copy_at_a_time():
    """16 verified copies of a 640 kB batch: forward's output, its difference from the clean
    output and a mask are alive at once, never the 16 copies (nor a stack of them)."""
    network, batch = build_network(load_config({"input": {"shape": [20000], "batch": 4},
                                                "layers": ["tanh"], "loss": "mse"}))
    clean = network.run(batch)
    probe = LocalProbe(network.units[0], clean.args[0], [clean.upstream[0][0]], INPUT,
                       network.dtype, Verifier(network.dtype, 1e-5, 0), "tanh.input")
    copy = 8 * batch.x.size
    idx = np.repeat(np.arange(0, 80000, 5000), 2)[:16]
    values = probe.array.reshape(-1)[idx] + np.tile([1e-3, -1e-3], 8)
    _ = probe.clean
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        probe.forward_changes(idx, values)
        held = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert held <= 4 * copy, held / copy


# -- the relative-error map -------------------------------------------------------------------------

shapes = st.lists(st.integers(1, 40), min_size=0, max_size=4).filter(
    lambda s: int(np.prod(s, dtype=np.int64)) <= 5000)


@settings(max_examples=examples(60))
@given(shapes, st.floats(0.0, 1.0), st.floats(0.0, 0.3), st.integers(0, 9))
def test_an_error_map_reads_updates_and_draws_like_a_dense_array(shape, share, later, seed):
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape, dtype=np.int64))
    first = rng.choice(size, int(share * size), replace=False)
    reference = np.full(size, np.nan)
    reference[first] = rng.random(len(first)) * 10.0 ** rng.integers(-9, 1, len(first))
    error_map = ErrorMap(tuple(shape), first, reference[first])
    assert error_map.sparse == (2 * len(first) < size)
    more = rng.choice(size, int(later * size), replace=False)
    reference[more] = rng.random(len(more))
    error_map.put(more, reference[more])
    np.testing.assert_array_equal(error_map.dense(), reference.reshape(shape))
    probe = rng.integers(0, size, 20)
    np.testing.assert_array_equal(error_map.get(probe), reference[probe])
    cells, what = grid(error_map)
    dense_cells, dense_what = grid(reference.reshape(shape))
    assert what == dense_what
    np.testing.assert_array_equal(cells, dense_cells)


def test_a_sampled_target_keeps_only_its_compared_elements():
    report = gradcheck.check_network({"input": {"shape": [400], "batch": 2}, "layers": [
        {"type": "dense", "units": 300}], "loss": "mse"}, mode="sample", samples=16)
    weight = next(c for c in report.layers[0].checks if c.target == "W")
    assert weight.rel_error.sparse and len(weight.rel_error.values) == weight.checked == 16
    assert weight.rel_error.shape == (400, 300)
