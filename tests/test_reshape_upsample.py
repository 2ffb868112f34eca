"""reshape, transpose and upsample2d against element-by-element references and finite differences,
through gradcheck.check_layer, and in the shipped example network that uses them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck
from cases_graph import LAYER_CASES
from conftest import CONFIGS, examples
from fd import assert_layer_gradients
from gradcheck.layers.shape import Reshape, Transpose
from gradcheck.layers.upsample import Upsample2D
from gradcheck.registry import layer_class

SMALL = settings(max_examples=examples(25), deadline=None)
SEEDS = range(10)


def built(kind: str, input_shape, **options):
    layer = layer_class(kind)(**options)
    return layer, layer.build(tuple(input_shape), np.random.default_rng(0))


def test_registered_under_their_yaml_names():
    assert layer_class("reshape") is Reshape
    assert layer_class("transpose") is Transpose
    assert layer_class("upsample2d") is Upsample2D


# --- reshape -------------------------------------------------------------------------------------

def row_major_position(index: tuple[int, ...], shape: tuple[int, ...]) -> int:
    """Where ``index`` falls when ``shape`` is read in row-major order, by Horner's rule."""
    position = 0
    for i, n in zip(index, shape):
        position = position * n + i
    return position


@SMALL
@given(case=LAYER_CASES["reshape"], seed=st.integers(0, 9))
def test_reshape_keeps_row_major_order_and_matches_fd(case, seed):
    rng = np.random.default_rng(seed)
    layer, out_shape = built("reshape", case.input_shape, **case.options)
    target = case.options["shape"]
    size = math.prod(case.input_shape)
    assert math.prod(out_shape) == size
    assert all(n == t for n, t in zip(out_shape, target) if t != -1)
    x = case.draw_input(rng)
    y = layer.forward(x)
    assert y.shape == (case.batch, *out_shape)
    # Every output element holds the input element at the same row-major position.
    for n in range(case.batch):
        flat = {row_major_position(i, case.input_shape): x[n][i]
                for i in np.ndindex(*case.input_shape)}
        for index in np.ndindex(*out_shape):
            assert y[n][index] == flat[row_major_position(index, out_shape)]
    np.testing.assert_array_equal(layer.backward(y), x)
    assert_layer_gradients(layer, x, rng)


def test_reshape_resolves_minus_one_and_follows_the_batch_size():
    layer, out_shape = built("reshape", (4, 6), shape=[3, -1, 2])
    assert out_shape == (3, 4, 2)
    for batch in (5, 1, 0):
        y = layer.forward(np.zeros((batch, 4, 6)))
        assert y.shape == (batch, 3, 4, 2)
        assert layer.backward(y).shape == (batch, 4, 6)


# --- transpose -----------------------------------------------------------------------------------

@SMALL
@given(case=LAYER_CASES["transpose"], seed=st.integers(0, 9))
def test_transpose_moves_each_element_and_matches_fd(case, seed):
    rng = np.random.default_rng(seed)
    layer, out_shape = built("transpose", case.input_shape, **case.options)
    rank = len(case.input_shape)
    axes = [a % rank for a in case.options["axes"]]
    assert out_shape == tuple(case.input_shape[a] for a in axes)
    x = case.draw_input(rng)
    y = layer.forward(x)
    # Output axis k is input axis axes[k]: y[n][i] = x[n][j] with j[axes[k]] = i[k].
    for n in range(case.batch):
        for index in np.ndindex(*out_shape):
            source = [0] * rank
            for k, i in enumerate(index):
                source[axes[k]] = i
            assert y[n][index] == x[n][tuple(source)]
    np.testing.assert_array_equal(layer.backward(y), x)
    assert_layer_gradients(layer, x, rng)


def test_transpose_turns_channels_first_into_channels_last():
    layer, out_shape = built("transpose", (3, 4, 5), axes=[1, 2, 0])
    assert out_shape == (4, 5, 3)
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
    np.testing.assert_array_equal(layer.forward(x)[1, 2, 3], x[1, :, 2, 3])
    assert layer.forward(np.zeros((7, 3, 4, 5))).shape == (7, 4, 5, 3)


# --- upsample2d ----------------------------------------------------------------------------------

def ref_upsample(x, factor: int, grad_out):
    """Nearest-neighbour upsampling and its input gradient by loops over output pixels."""
    batch, channels, height, width = x.shape
    y = np.zeros((batch, channels, height * factor, width * factor))
    grad_x = np.zeros(x.shape)
    for n, c, i, j in np.ndindex(*y.shape):
        y[n, c, i, j] = x[n, c, i // factor, j // factor]
        grad_x[n, c, i // factor, j // factor] += grad_out[n, c, i, j]
    return y, grad_x


@SMALL
@given(case=LAYER_CASES["upsample2d"], seed=st.integers(0, 9))
def test_upsample2d_matches_the_pixel_loop_and_fd(case, seed):
    rng = np.random.default_rng(seed)
    layer, out_shape = built("upsample2d", case.input_shape, **case.options)
    factor = case.options.get("factor", 2)
    channels, height, width = case.input_shape
    assert out_shape == (channels, height * factor, width * factor)
    x = case.draw_input(rng)
    grad_out = rng.normal(size=(case.batch, *out_shape))
    y_ref, grad_ref = ref_upsample(x, factor, grad_out)
    np.testing.assert_array_equal(layer.forward(x), y_ref)
    np.testing.assert_allclose(layer.backward(grad_out), grad_ref, rtol=1e-12, atol=1e-12)
    assert_layer_gradients(layer, x, rng)


def test_upsample2d_follows_the_batch_size_of_each_forward():
    layer, _ = built("upsample2d", (2, 3, 4), factor=3)
    for batch in (5, 1, 0):
        y = layer.forward(np.ones((batch, 2, 3, 4)))
        assert y.shape == (batch, 2, 9, 12)
        np.testing.assert_array_equal(layer.backward(y), np.full((batch, 2, 3, 4), 9.0))


# --- through the checker -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name, shape, options", [
    ("reshape", (4, 6), {"shape": [2, -1, 3]}),
    ("transpose", (2, 3, 4), {"axes": [2, 0, 1]}),
    ("upsample2d", (2, 3, 3), {"factor": 2}),
])
def test_check_layer_passes_them(name, shape, options, seed):
    report = gradcheck.check_layer(name, shape, seed=seed, **options)
    assert report.passed
    assert report.layers[0].type == name and report.layers[0].checks[-1].target == "input"


class UpsampleMissingOneTap(Upsample2D):
    """upsample2d whose backward sums each block but the last output pixel of it."""

    def backward(self, grad_out):
        f = self.factor
        blocks = grad_out.reshape(*grad_out.shape[:2], grad_out.shape[2] // f, f,
                                  grad_out.shape[3] // f, f)
        return blocks.sum(axis=(3, 5)) - blocks[:, :, :, f - 1, :, f - 1]


@pytest.mark.parametrize("seed", SEEDS)
def test_check_layer_blames_an_upsample_that_drops_a_tap(seed):
    report = gradcheck.check_layer(UpsampleMissingOneTap, (2, 3, 3), seed=seed, factor=2)
    assert not report.passed
    assert report.root_causes == ["UpsampleMissingOneTap"]


def test_shipped_example_uses_them(run_cli):
    text = (CONFIGS / "upsample_reshape.yaml").read_text()
    for kind in ("reshape", "transpose", "upsample2d"):
        assert f"type: {kind}" in text
    assert run_cli("check", CONFIGS / "upsample_reshape.yaml").exit_code == 0
