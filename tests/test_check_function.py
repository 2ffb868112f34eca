"""gradcheck.check_function: a course-style pair of Python functions checked from a test."""

from __future__ import annotations

import numpy as np
import pytest

import gradcheck
from conftest import ROOT, TEST_PLUGINS
from gradcheck.errors import ConfigError, LayerError
from gradcheck.plugins import load_reference

PAIRS = TEST_PLUGINS / "function_pairs.py"
COURSE = ROOT / "examples" / "course" / "layers.py"


def pairs(name: str):
    return load_reference(f"{PAIRS}:{name}", None, name)


def course(name: str):
    return load_reference(f"{COURSE}:{name}", None, name)


def affine_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(4, 5)), rng.normal(size=(5, 3)), rng.normal(size=3)


def statuses(report) -> dict:
    return {check.target: check.status for check in report.layers[0].checks}


@pytest.mark.parametrize("seed", range(10))
def test_the_correct_pair_passes_and_the_wrong_one_is_blamed_on_its_second_param(seed):
    x, w, b = affine_data(seed)
    good = gradcheck.check_function(pairs("affine_forward"), pairs("affine_backward"), x, [w, b],
                                    seed=seed)
    assert good.passed and set(statuses(good)) == {"w", "b", "input"}
    bad = gradcheck.check_function(pairs("affine_forward"), pairs("affine_backward_wrong_db"), x,
                                   [w, b], seed=seed)
    assert not bad.passed and bad.root_causes == ["affine_forward"]
    assert statuses(bad) == {"w": "pass", "b": "fail", "input": "pass"}


def test_list_params_are_named_after_forwards_arguments_and_a_dict_keeps_its_names():
    x, w, b = affine_data()
    report = gradcheck.check_function(pairs("affine_forward"), pairs("affine_backward"), x,
                                      {"weight": w, "bias": b}, name="fc")
    assert report.layers[0].name == "fc" and list(statuses(report)) == ["weight", "bias", "input"]
    report = gradcheck.check_function(lambda x, *p: pairs("affine_forward")(x, *p),
                                      pairs("affine_backward"), x, (w, b))
    assert list(statuses(report)) == ["param0", "param1", "input"]
    assert report.layers[0].name == "function"  # a lambda's "<lambda>" cannot name a layer


def test_the_users_arrays_are_restored_after_the_check():
    x, w, b = affine_data()
    before = [a.copy() for a in (x, w, b)]
    gradcheck.check_function(pairs("affine_forward"), pairs("affine_backward"), x, [w, b])
    for array, saved in zip((x, w, b), before):
        np.testing.assert_array_equal(array, saved)


def test_course_conv_with_args_and_the_buggy_twin():
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(2, 3, 5, 5)), rng.normal(size=(2, 3, 3, 3)), rng.normal(size=2)
    conv_param = {"stride": 2, "pad": 1}
    report = gradcheck.check_function(course("conv_forward_naive"), course("conv_backward_naive"),
                                      x, [w, b], args=[conv_param], mixes_batch=False)
    assert report.passed
    buggy = load_reference(f"{COURSE.parent / 'layers_buggy.py'}:conv_backward_naive", None, "b")
    report = gradcheck.check_function(course("conv_forward_naive"), buggy, x, [w, b],
                                      args=[conv_param])
    assert statuses(report) == {"w": "fail", "b": "pass", "input": "pass"}


def test_kwargs_and_check_options_are_passed():
    x, w, b = affine_data()
    received = []

    def forward(x, w, b, scale=1.0):
        received.append(scale)
        return x @ w * scale + b, (x, w, scale)

    def backward(dout, cache):
        x, w, scale = cache
        return dout @ w.T * scale, x.T @ dout * scale, dout.sum(axis=0)

    report = gradcheck.check_function(forward, backward, x, [w, b], kwargs={"scale": 3.0},
                                      mode="sample", samples=4, rtol=1e-4, dtype="float32")
    assert report.passed and set(received) == {3.0}
    assert report.settings["mode"] == "sample" and report.settings["dtype"] == "float32"


def test_bad_arguments_are_clear_errors():
    x, w, b = affine_data()
    forward, backward = pairs("affine_forward"), pairs("affine_backward")
    with pytest.raises(ConfigError, match=r"x must be a numeric array of shape \(batch"):
        gradcheck.check_function(forward, backward, x[0], [w, b])
    with pytest.raises(ConfigError, match="params must be a dict"):
        gradcheck.check_function(forward, backward, x, w)
    with pytest.raises(LayerError, match=r"expected 3 gradient\(s\) \(dx, dw, db\)"):
        gradcheck.check_function(forward, pairs("affine_backward_two_grads"), x, [w, b])
    with pytest.raises(ConfigError,
                       match=r"counted_forward\(x\) cannot be called as \(x, param0, param1\)"):
        gradcheck.check_function(pairs("counted_forward"), backward, x, [w, b])
