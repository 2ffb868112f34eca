"""The course-style pairs users copy (examples/course/layers.py) against plain-loop references
written from the formulas, and their backwards against central differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import ROOT, examples
from fd import assert_layer_gradients, numeric_loss_grad
from gradcheck.layers.function import Function, FunctionLoss
from gradcheck.plugins import load_reference

COURSE = ROOT / "examples" / "course" / "layers.py"


def course(name: str):
    return load_reference(f"{COURSE}:{name}", None, name)


def conv_reference(x, w, b, stride, pad):
    n_, c_, h, wd = x.shape
    f_, _, kh, kw = w.shape
    out_h, out_w = 1 + (h + 2 * pad - kh) // stride, 1 + (wd + 2 * pad - kw) // stride
    out = np.zeros((n_, f_, out_h, out_w))
    for n in range(n_):
        for f in range(f_):
            for i in range(out_h):
                for j in range(out_w):
                    total = b[f]
                    for c in range(c_):
                        for p in range(kh):
                            for q in range(kw):
                                row, col = i * stride + p - pad, j * stride + q - pad
                                if 0 <= row < h and 0 <= col < wd:
                                    total += w[f, c, p, q] * x[n, c, row, col]
                    out[n, f, i, j] = total
    return out


def pool_reference(x, size_h, size_w, stride):
    n_, c_, h, wd = x.shape
    out = np.zeros((n_, c_, 1 + (h - size_h) // stride, 1 + (wd - size_w) // stride))
    for n, c, i, j in np.ndindex(*out.shape):
        out[n, c, i, j] = max(x[n, c, i * stride + p, j * stride + q]
                              for p in range(size_h) for q in range(size_w))
    return out


def batchnorm_reference(x, gamma, beta, eps):
    n_, d_ = x.shape
    out = np.zeros_like(x)
    for d in range(d_):
        mean = sum(x[n, d] for n in range(n_)) / n_
        var = sum((x[n, d] - mean) ** 2 for n in range(n_)) / n_
        for n in range(n_):
            out[n, d] = gamma[d] * (x[n, d] - mean) / np.sqrt(var + eps) + beta[d]
    return out


def softmax_loss_reference(x, y):
    total = 0.0
    for n in range(len(x)):
        top = max(x[n])
        log_sum = top + np.log(sum(np.exp(v - top) for v in x[n]))
        total += log_sum - x[n, y[n]]
    return total / len(x)


def layer(name, suffix="", **options) -> Function:
    return Function(f"{COURSE}:{name}_forward{suffix}", f"{COURSE}:{name}_backward{suffix}",
                    **options)


@settings(max_examples=examples(15))
@given(batch=st.integers(1, 2), channels=st.integers(1, 2), filters=st.integers(1, 3),
       size=st.integers(3, 6), kernel=st.integers(1, 3), stride=st.integers(1, 2),
       pad=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_conv_matches_the_loops_and_central_differences(batch, channels, filters, size, kernel,
                                                        stride, pad, seed):
    rng = np.random.default_rng(seed)
    conv = layer("conv", "_naive", params={"w": {"shape": [filters, channels, kernel, kernel]},
                                           "b": {"shape": [filters], "init": "lecun"}},
                 args=[{"stride": stride, "pad": pad}], mixes_batch=False)
    conv.build((channels, size, size), rng)
    x = rng.normal(size=(batch, channels, size, size))
    np.testing.assert_allclose(conv.forward(x), conv_reference(x, conv.params["w"],
                                                               conv.params["b"], stride, pad),
                               rtol=1e-12, atol=1e-12)
    assert_layer_gradients(conv, x, rng)


@settings(max_examples=examples(15))
@given(batch=st.integers(1, 2), channels=st.integers(1, 2), size=st.integers(2, 6),
       pool=st.integers(1, 3), stride=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_max_pool_matches_the_loops_and_central_differences(batch, channels, size, pool, stride,
                                                            seed):
    pool = min(pool, size)
    rng = np.random.default_rng(seed)
    # Distinct values a grid step apart: no ties, and no maximum within a step h of another.
    x = rng.permutation(batch * channels * size * size).reshape(batch, channels, size, size)
    x = x.astype(float) * 0.1
    pooling = layer("max_pool", "_naive", args=[{"pool_height": pool, "pool_width": pool,
                                                 "stride": stride}])
    pooling.build((channels, size, size), rng)
    np.testing.assert_array_equal(pooling.forward(x), pool_reference(x, pool, pool, stride))
    assert_layer_gradients(pooling, x, rng)


@settings(max_examples=examples(15))
@given(batch=st.integers(2, 5), features=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_batchnorm_matches_the_formula_and_central_differences(batch, features, seed):
    rng = np.random.default_rng(seed)
    generic = {"shape": [features], "init": {"normal": {"std": 1.0}}}
    norm = layer("batchnorm", params={"gamma": generic, "beta": generic},
                 args=[{"mode": "train", "eps": 1e-5}])
    norm.build((features,), rng)
    x = rng.normal(size=(batch, features))
    np.testing.assert_allclose(norm.forward(x), batchnorm_reference(
        x, norm.params["gamma"], norm.params["beta"], 1e-5), rtol=1e-10, atol=1e-12)
    assert_layer_gradients(norm, x, rng)


def test_batchnorm_running_statistics_and_test_mode():
    forward = course("batchnorm_forward")
    rng = np.random.default_rng(0)
    x, gamma, beta = rng.normal(size=(6, 3)), rng.normal(size=3), rng.normal(size=3)
    bn_param = {"mode": "train", "momentum": 0.8}
    forward(x, gamma, beta, bn_param)
    np.testing.assert_allclose(bn_param["running_mean"], 0.2 * x.mean(axis=0))
    np.testing.assert_allclose(bn_param["running_var"], 0.8 + 0.2 * x.var(axis=0))
    bn_param["mode"] = "test"
    out, _ = forward(x, gamma, beta, bn_param)
    expected = gamma * (x - bn_param["running_mean"]) / np.sqrt(bn_param["running_var"] + 1e-5)
    np.testing.assert_allclose(out, expected + beta)


@settings(max_examples=examples(10))
@given(shape=st.lists(st.integers(1, 3), min_size=1, max_size=3), units=st.integers(1, 3),
       batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_affine_and_relu_match_the_formulas_and_central_differences(shape, units, batch, seed):
    rng = np.random.default_rng(seed)
    fan_in = int(np.prod(shape))
    affine = layer("affine", params={"w": {"shape": [fan_in, units]},
                                     "b": {"shape": [units], "init": {"normal": {"std": 1.0}}}})
    affine.build(tuple(shape), rng)
    x = rng.normal(size=(batch, *shape))
    w, b = affine.params["w"], affine.params["b"]
    expected = [[sum(x[n].reshape(-1)[i] * w[i, j] for i in range(fan_in)) + b[j]
                 for j in range(units)] for n in range(batch)]
    np.testing.assert_allclose(affine.forward(x), expected, rtol=1e-12, atol=1e-12)
    assert_layer_gradients(affine, x, rng)
    relu = layer("relu")
    relu.build(tuple(shape), rng)
    np.testing.assert_array_equal(relu.forward(x), np.where(x > 0, x, 0.0))
    assert_layer_gradients(relu, x, rng)


@pytest.mark.parametrize("seed", range(10))
def test_dropout_mask_is_fixed_by_its_seed_and_drops_the_rate(seed):
    forward = course("dropout_forward")
    x = np.ones((50, 40))
    param = {"rate": 0.3, "mode": "train", "seed": seed}
    out, mask = forward(x, param)
    np.testing.assert_array_equal(forward(x, param)[0], out)
    assert set(np.unique(out)) <= {0.0, 1 / 0.7}
    assert abs(np.mean(out == 0) - 0.3) < 0.05  # 2000 draws: 4.7 standard errors
    assert forward(x, {**param, "mode": "test"})[0] is x
    dropout = layer("dropout", args=[param])
    dropout.build((40,), np.random.default_rng(seed))
    assert_layer_gradients(dropout, np.random.default_rng(seed).normal(size=(3, 40)),
                           np.random.default_rng(seed))


@settings(max_examples=examples(15))
@given(batch=st.integers(1, 4), classes=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_softmax_loss_matches_the_formula_and_central_differences(batch, classes, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(batch, classes)) * 3, rng.integers(0, classes, batch)
    loss = FunctionLoss(f"{COURSE}:softmax_loss")
    loss.build((classes,))
    assert loss.forward(x, y) == pytest.approx(softmax_loss_reference(x, y), rel=1e-12)
    np.testing.assert_allclose(loss.backward(), numeric_loss_grad(loss, x, y), rtol=1e-6,
                               atol=1e-9)


def test_the_buggy_twin_differs_only_in_dw():
    buggy = load_reference(f"{COURSE.parent / 'layers_buggy.py'}:conv_backward_naive", None, "b")
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(2, 3, 5, 5)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    out, cache = course("conv_forward_naive")(x, w, b, {"stride": 1, "pad": 1})
    dout = rng.normal(size=out.shape)
    right, wrong = course("conv_backward_naive")(dout, cache), buggy(dout, cache)
    np.testing.assert_array_equal(right[0], wrong[0])
    np.testing.assert_array_equal(right[2], wrong[2])
    assert not np.allclose(right[1], wrong[1])
