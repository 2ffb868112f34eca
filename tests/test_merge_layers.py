"""add, multiply, concat, split and matmul against explicit loop references and finite
differences, and deliberately wrong variants (the classic hand-written graph bugs) that finite
differences must catch.

The references loop over every output element and work out by hand which input element it reads
(numpy broadcasting: shapes align from the last axis, a size-1 axis repeats), so they share no
code with the layers' align / reduce helpers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import examples
from cases_graph import LAYER_CASES, broadcastable_shapes
from fd import assert_layer_gradients
from gradcheck.layers.merge import Add, Concat, MatMul, Multiply, Split
from gradcheck.registry import layer_class

SMALL = settings(max_examples=examples(25), deadline=None)
SEEDS = range(10)
batches = st.integers(1, 3)


def built(kind: str, input_shape, names=None, **options):
    layer = layer_class(kind)(**options)
    layer.input_names = names
    return layer, layer.build(input_shape, np.random.default_rng(0))


def normal_inputs(rng, shapes, batch: int) -> list[np.ndarray]:
    return [rng.normal(size=(batch, *shape)) for shape in shapes]


def source(out_index: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The element of a per-sample ``shape`` that broadcast output element ``out_index`` reads."""
    offset = len(out_index) - len(shape)
    return tuple(0 if n == 1 else out_index[offset + axis] for axis, n in enumerate(shape))


def ref_elementwise(kind: str, xs, grad_out):
    """y and the input gradients of add / multiply, one output element at a time."""
    batch, out_shape = grad_out.shape[0], grad_out.shape[1:]
    y, grads = np.zeros(grad_out.shape), [np.zeros(x.shape) for x in xs]
    for n in range(batch):
        for index in np.ndindex(*out_shape):
            at = [source(index, x.shape[1:]) for x in xs]
            values = [x[n][a] for x, a in zip(xs, at)]
            y[n][index] = sum(values) if kind == "add" else math.prod(values)
            for i in range(len(xs)):
                partial = 1.0 if kind == "add" else math.prod(values[:i] + values[i + 1:])
                grads[i][n][at[i]] += partial * grad_out[n][index]
    return y, grads


def ref_matmul(a, b, grad_out):
    """y = a @ b and its input gradients by explicit sums over the inner index."""
    (m, k), n_cols = a.shape[-2:], b.shape[-1]
    leading = grad_out.shape[1:-2]
    y, grad_a, grad_b = np.zeros(grad_out.shape), np.zeros(a.shape), np.zeros(b.shape)
    for s in range(grad_out.shape[0]):
        for lead in np.ndindex(*leading):
            ia, ib = source(lead, a.shape[1:-2]), source(lead, b.shape[1:-2])
            for i in range(m):
                for j in range(n_cols):
                    g = grad_out[s][lead][i, j]
                    for p in range(k):
                        y[s][lead][i, j] += a[s][ia][i, p] * b[s][ib][p, j]
                        grad_a[s][ia][i, p] += g * b[s][ib][p, j]
                        grad_b[s][ib][p, j] += g * a[s][ia][i, p]
    return y, grad_a, grad_b


def ref_concat(xs, axis: int):
    """Concatenation by slice assignment into a zero array (axis per sample)."""
    shape = list(xs[0].shape)
    shape[axis + 1] = sum(x.shape[axis + 1] for x in xs)
    y, start = np.zeros(shape), 0
    for x in xs:
        index = [slice(None)] * len(shape)
        index[axis + 1] = slice(start, start + x.shape[axis + 1])
        y[tuple(index)] = x
        start += x.shape[axis + 1]
    return y


def ref_split(x, sizes, axis: int):
    """The pieces of a split, element by element: input position p along ``axis`` goes to the
    piece whose range holds p, at p minus the piece's start."""
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    pieces = []
    for size in sizes:
        shape = list(x.shape)
        shape[axis + 1] = size
        pieces.append(np.zeros(shape))
    for index in np.ndindex(*x.shape):
        p = index[axis + 1]
        k = max(k for k, start in enumerate(starts) if start <= p)
        target = list(index)
        target[axis + 1] = p - starts[k]
        pieces[k][tuple(target)] = x[index]
    return pieces


def test_registered_under_their_yaml_names():
    assert [layer_class(n) for n in ("add", "multiply", "concat", "split", "matmul")] == [
        Add, Multiply, Concat, Split, MatMul]


# --- add and multiply ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["add", "multiply"])
@SMALL
@given(shapes=broadcastable_shapes(), batch=batches, seed=st.integers(0, 9))
def test_elementwise_matches_the_loop_reference_and_fd(kind, shapes, batch, seed):
    rng = np.random.default_rng(seed)
    layer, out_shape = built(kind, shapes)
    assert out_shape == np.broadcast_shapes(*shapes)
    xs = normal_inputs(rng, shapes, batch)
    grad_out = rng.normal(size=(batch, *out_shape))
    y_ref, grads_ref = ref_elementwise(kind, xs, grad_out)
    np.testing.assert_allclose(layer.forward(*xs), y_ref, rtol=1e-12, atol=1e-12)
    grads = layer.backward(grad_out)
    assert isinstance(grads, tuple) and len(grads) == len(xs)
    for grad, ref in zip(grads, grads_ref):
        np.testing.assert_allclose(grad, ref, rtol=1e-12, atol=1e-12)
    assert_layer_gradients(layer, xs, rng)


@pytest.mark.parametrize("seed", SEEDS)
def test_add_sums_the_gradient_over_a_per_channel_broadcast(seed):
    # (8, 16, 16) + (8, 1, 1): the offset's gradient is grad_out summed over each channel's
    # 16 x 16 pixels (the textbook formula), not one pixel of it.
    rng = np.random.default_rng(seed)
    layer, out_shape = built("add", [(8, 16, 16), (8, 1, 1)])
    assert out_shape == (8, 16, 16)
    x, offset = normal_inputs(rng, [(8, 16, 16), (8, 1, 1)], batch=2)
    np.testing.assert_array_equal(layer.forward(x, offset), x + offset)
    grad_out = rng.normal(size=(2, 8, 16, 16))
    grad_x, grad_offset = layer.backward(grad_out)
    np.testing.assert_array_equal(grad_x, grad_out)
    expected = np.array([[[[grad_out[n, c].sum()]] for c in range(8)] for n in range(2)])
    np.testing.assert_allclose(grad_offset, expected, rtol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch", [1, 3, 4])
def test_multiply_broadcasts_per_sample_never_against_the_batch(seed, batch):
    # (4,) * (3, 4): with batch 3 or 4, numpy applied to the batched arrays (batch, 4) and
    # (batch, 3, 4) would pair the batch axis with a per-sample axis.
    rng = np.random.default_rng(seed)
    layer, out_shape = built("multiply", [(4,), (3, 4)])
    assert out_shape == (3, 4)
    gate, x = normal_inputs(rng, [(4,), (3, 4)], batch)
    y = layer.forward(gate, x)
    for n, i, j in np.ndindex(batch, 3, 4):
        assert y[n, i, j] == gate[n, j] * x[n, i, j]
    grad_out = rng.normal(size=(batch, 3, 4))
    grad_gate, grad_x = layer.backward(grad_out)
    np.testing.assert_allclose(grad_gate, [[sum(grad_out[n, i, j] * x[n, i, j] for i in range(3))
                                            for j in range(4)] for n in range(batch)], rtol=1e-12)
    np.testing.assert_allclose(grad_x, grad_out * gate[:, None, :], rtol=1e-12)
    assert_layer_gradients(layer, [gate, x], rng)


def test_multiply_gradient_is_exact_where_an_input_is_zero():
    layer, _ = built("multiply", [(3,), (3,), (3,)])
    xs = [np.array([[0.0, 2.0, 3.0]]), np.array([[5.0, 0.0, 7.0]]), np.array([[2.0, 3.0, 0.0]])]
    layer.forward(*xs)
    grads = layer.backward(np.ones((1, 3)))
    np.testing.assert_array_equal(grads[0], [[10.0, 0.0, 0.0]])
    np.testing.assert_array_equal(grads[1], [[0.0, 6.0, 0.0]])
    np.testing.assert_array_equal(grads[2], [[0.0, 0.0, 21.0]])


@pytest.mark.parametrize("kind, shapes", [
    ("add", [(2, 3), (2, 3)]), ("add", [(2, 3), (3,), (2, 1)]), ("multiply", [(2, 3), (1, 3)]),
    ("concat", [(2, 3), (4, 3)]), ("matmul", [(2, 3), (3, 3)]),
])
def test_input_gradients_are_fresh_arrays(kind, shapes):
    # One tensor feeding two inputs: the engine may sum the second gradient into the first.
    # That must change neither the other gradient nor the caller's grad_out.
    rng = np.random.default_rng(0)
    layer, out_shape = built(kind, shapes)
    layer.forward(*normal_inputs(rng, shapes, batch=2))
    grad_out = rng.normal(size=(2, *out_shape))
    grads = layer.backward(grad_out)
    for i, grad in enumerate(grads):
        assert not np.shares_memory(grad, grad_out)
        assert not any(np.shares_memory(grad, other) for other in grads[i + 1:])


@pytest.mark.parametrize("seed", SEEDS)
def test_add_of_a_tensor_with_itself_has_gradient_two_g(seed):
    # The fan-out bug (= instead of +=) in miniature: y = x + x, so dL/dx = 2 g once the two
    # input gradients are accumulated.
    rng = np.random.default_rng(seed)
    layer, _ = built("add", [(3, 2), (3, 2)])
    x = rng.normal(size=(2, 3, 2))
    np.testing.assert_array_equal(layer.forward(x, x), 2 * x)
    grad_out = rng.normal(size=(2, 3, 2))
    first, second = layer.backward(grad_out)
    first += second
    np.testing.assert_array_equal(first, 2 * grad_out)
    np.testing.assert_array_equal(second, grad_out)


# --- concat and split ----------------------------------------------------------------------------

@SMALL
@given(case=LAYER_CASES["concat"], seed=st.integers(0, 9))
def test_concat_matches_slice_assignment_and_fd(case, seed):
    rng = np.random.default_rng(seed)
    layer, out_shape = built("concat", case.input_shape, **case.options)
    axis = case.options.get("axis", 0) % len(out_shape)
    xs = case.draw_input(rng)
    y = layer.forward(*xs)
    np.testing.assert_array_equal(y, ref_concat(xs, axis))
    assert y.shape[1:] == out_shape
    grad_out = rng.normal(size=y.shape)
    grads = layer.backward(grad_out)
    assert isinstance(grads, tuple)
    # The gradient pieces put back by slice assignment must rebuild grad_out exactly.
    np.testing.assert_array_equal(ref_concat(list(grads), axis), grad_out)
    assert [g.shape for g in grads] == [x.shape for x in xs]
    assert_layer_gradients(layer, xs, rng)


@SMALL
@given(case=LAYER_CASES["split"], seed=st.integers(0, 9))
def test_split_matches_the_element_reference_and_fd(case, seed):
    rng = np.random.default_rng(seed)
    layer, out_shapes = built("split", case.input_shape, **case.options)
    sizes, axis = case.options["sizes"], case.options.get("axis", 0) % len(case.input_shape)
    x = case.draw_input(rng)
    pieces = layer.forward(x)
    assert isinstance(pieces, tuple) and isinstance(out_shapes, list)
    assert [p.shape[1:] for p in pieces] == out_shapes
    for piece, ref in zip(pieces, ref_split(x, sizes, axis), strict=True):
        np.testing.assert_array_equal(piece, ref)
    grads_out = [rng.normal(size=p.shape) for p in pieces]
    np.testing.assert_array_equal(layer.backward(*grads_out), ref_concat(grads_out, axis))
    assert_layer_gradients(layer, x, rng)


def test_split_backward_takes_zeros_for_an_output_nobody_reads():
    layer, _ = built("split", (5, 2), sizes=[2, 3])
    x = np.arange(20.0).reshape(2, 5, 2)
    first, second = layer.forward(x)
    grad = layer.backward(np.ones_like(first), np.zeros_like(second))
    np.testing.assert_array_equal(grad[:, :2], 1.0)
    np.testing.assert_array_equal(grad[:, 2:], 0.0)


# --- matmul --------------------------------------------------------------------------------------

@SMALL
@given(case=LAYER_CASES["matmul"], seed=st.integers(0, 9))
def test_matmul_matches_explicit_sums_and_fd(case, seed):
    rng = np.random.default_rng(seed)
    layer, out_shape = built("matmul", case.input_shape)
    a, b = case.draw_input(rng)
    y = layer.forward(a, b)
    assert y.shape == (case.batch, *out_shape)
    grad_out = rng.normal(size=y.shape)
    y_ref, grad_a_ref, grad_b_ref = ref_matmul(a, b, grad_out)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    grad_a, grad_b = layer.backward(grad_out)
    np.testing.assert_allclose(grad_a, grad_a_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_b, grad_b_ref, rtol=1e-12, atol=1e-12)
    assert_layer_gradients(layer, [a, b], rng)


@pytest.mark.parametrize("seed", SEEDS)
def test_matmul_shares_b_across_a_leading_axis_the_size_of_the_batch(seed):
    # a (2, 3, 4) @ b (4, 5) with batch 2: b must pair with every a[n, h], never with a[h].
    rng = np.random.default_rng(seed)
    layer, out_shape = built("matmul", [(2, 3, 4), (4, 5)])
    assert out_shape == (2, 3, 5)
    a, b = normal_inputs(rng, [(2, 3, 4), (4, 5)], batch=2)
    grad_out = rng.normal(size=(2, 2, 3, 5))
    y_ref, grad_a_ref, grad_b_ref = ref_matmul(a, b, grad_out)
    np.testing.assert_allclose(layer.forward(a, b), y_ref, rtol=1e-12)
    grad_a, grad_b = layer.backward(grad_out)
    np.testing.assert_allclose(grad_a, grad_a_ref, rtol=1e-12)
    np.testing.assert_allclose(grad_b, grad_b_ref, rtol=1e-12)
    assert_layer_gradients(layer, [a, b], rng)


@pytest.mark.parametrize("kind, shapes, options", [
    ("add", [(3, 1), (4,)], {}), ("multiply", [(2, 3), (3,)], {}),
    ("concat", [(2, 3), (2, 1)], {"axis": -1}), ("matmul", [(2, 3, 4), (4, 2)], {}),
])
def test_merges_follow_the_batch_size_of_each_forward(kind, shapes, options):
    layer, out_shape = built(kind, shapes, **options)
    for batch in (4, 1, 0, 6):
        xs = [np.ones((batch, *shape)) for shape in shapes]
        assert layer.forward(*xs).shape == (batch, *out_shape)
        grads = layer.backward(np.ones((batch, *out_shape)))
        assert [g.shape for g in grads] == [x.shape for x in xs]


def test_split_follows_the_batch_size_of_each_forward():
    layer, out_shapes = built("split", (2, 5), sizes=[1, 4], axis=1)
    for batch in (4, 1, 0):
        pieces = layer.forward(np.ones((batch, 2, 5)))
        assert [p.shape for p in pieces] == [(batch, *s) for s in out_shapes]
        assert layer.backward(*[np.ones_like(p) for p in pieces]).shape == (batch, 2, 5)


# --- deliberately wrong layers: finite differences must catch each -------------------------------

class AddWithoutBroadcastSum(Add):
    """add whose backward forgets to sum over broadcast axes: it cuts grad_out down to each
    input's shape by keeping the first element of every broadcast axis (shapes still fit)."""

    def backward(self, grad_out):
        grads = []
        for shape in self.batched_shapes:
            kept = grad_out[(slice(None),) + (0,) * (grad_out.ndim - len(shape))]
            index = tuple(slice(0, n) for n in shape)
            grads.append(kept[index].copy())
        return tuple(grads)


class SplitIgnoringLastOutput(Split):
    """split whose backward drops the gradient of its last output (treats it as unread)."""

    def backward(self, *grads_out):
        return super().backward(*grads_out[:-1], np.zeros_like(grads_out[-1]))


class ConcatOffByOneAtTheSeam(Concat):
    """concat whose backward starts every piece after the first one element early."""

    def backward(self, grad_out):
        pieces, start = [], 0
        for i, size in enumerate(self.sizes):
            begin = start - 1 if i else 0
            pieces.append(np.take(grad_out, range(begin, begin + size),
                                  axis=self.resolved_axis + 1))
            start += size
        return tuple(pieces)


def _wrong_and_right(wrong_cls, right_cls, input_shape, **options):
    layers = []
    for cls in (wrong_cls, right_cls):
        layer = cls(**options)
        layer.build(input_shape, np.random.default_rng(0))
        layers.append(layer)
    return layers


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shapes", [[(8, 16, 16), (8, 1, 1)], [(4,), (3, 4)], [(2, 3), (1, 3)]])
def test_fd_catches_an_add_that_does_not_reduce_over_broadcast_axes(seed, shapes):
    wrong, right = _wrong_and_right(AddWithoutBroadcastSum, Add, shapes)
    rng = np.random.default_rng(seed)
    xs = normal_inputs(rng, shapes, batch=2)
    # add is linear, so a large step is exact and keeps the rounding of a 4096-term objective
    # far below the tolerance.
    assert_layer_gradients(right, xs, np.random.default_rng(seed), eps=1e-3)
    with pytest.raises(AssertionError, match="dL/dx"):
        assert_layer_gradients(wrong, xs, np.random.default_rng(seed), eps=1e-3)


def test_the_wrong_add_passes_without_broadcasting_which_is_why_cases_broadcast():
    wrong, _ = _wrong_and_right(AddWithoutBroadcastSum, Add, [(3, 4), (3, 4)])
    rng = np.random.default_rng(0)
    assert_layer_gradients(wrong, normal_inputs(rng, [(3, 4), (3, 4)], batch=2), rng)


@pytest.mark.parametrize("seed", SEEDS)
def test_fd_catches_a_split_that_ignores_one_outputs_gradient(seed):
    wrong, right = _wrong_and_right(SplitIgnoringLastOutput, Split, (6, 2), sizes=[2, 4])
    x = np.random.default_rng(seed).normal(size=(2, 6, 2))
    assert_layer_gradients(right, x, np.random.default_rng(seed))
    with pytest.raises(AssertionError, match="dL/dx"):
        assert_layer_gradients(wrong, x, np.random.default_rng(seed))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_fd_catches_a_concat_off_by_one_at_the_seam(seed, axis):
    shapes = [(3, 4), (3, 4), (3, 4)]
    wrong, right = _wrong_and_right(ConcatOffByOneAtTheSeam, Concat, shapes, axis=axis)
    rng = np.random.default_rng(seed)
    xs = normal_inputs(rng, shapes, batch=2)
    np.testing.assert_array_equal(wrong.forward(*xs), right.forward(*xs))
    assert_layer_gradients(right, xs, np.random.default_rng(seed))
    with pytest.raises(AssertionError, match=r"input 2"):
        assert_layer_gradients(wrong, xs, np.random.default_rng(seed))
