"""Every error a user can cause with a graph layer is a LayerError with a hint, and a shape error
names the tensors involved: by name when the network set ``input_names``, else as input 1, 2."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gradcheck
from gradcheck.errors import LayerError
from gradcheck.registry import layer_class


def build_error(kind: str, input_shape, names=None, **options) -> LayerError:
    layer = layer_class(kind)(**options)
    layer.input_names = names
    with pytest.raises(LayerError) as info:
        layer.build(input_shape, np.random.default_rng(0))
    assert info.value.hint, "every user-caused error says what to do"
    return info.value


def test_the_residual_mismatch_reads_exactly_as_documented():
    error = build_error("add", [(8, 16, 16), (4, 16, 16)], names=["conv2", "skip"])
    assert error.message == ("add: inputs 'conv2' (8, 16, 16) and 'skip' (4, 16, 16) differ on "
                             "axis 0.")
    assert error.hint == "add a 1x1 conv2d on the skip path"


def test_without_names_inputs_are_numbered():
    error = build_error("add", [(8, 16, 16), (4, 16, 16)])
    assert error.message == "add: input 1 (8, 16, 16) and input 2 (4, 16, 16) differ on axis 0."
    assert error.hint == "add a 1x1 conv2d on the input 2 path"


@pytest.mark.parametrize("kind", ["add", "multiply"])
@pytest.mark.parametrize("shapes, names, expected", [
    ([(3, 4), (3, 4), (2, 4)], ["a", "b", "gate"], "inputs 'a' (3, 4) and 'gate' (2, 4) differ on "
                                                   "axis 0."),
    ([(6,), (5,)], ["feats", "skip"], "inputs 'feats' (6,) and 'skip' (5,) differ on axis 0."),
    ([(2, 3, 4), (5, 4)], ["x", "y"], "inputs 'x' (2, 3, 4) and 'y' (5, 4) differ on axis 1 "
                                      "(counted in the broadcast shape"),
    ([(2, 4, 4), (2, 1, 3)], ["big", "small"], "inputs 'big' (2, 4, 4) and 'small' (2, 1, 3) "
                                               "differ on axis 2."),
])
def test_elementwise_mismatches_name_the_two_inputs_and_the_axis(kind, shapes, names, expected):
    error = build_error(kind, shapes, names=names)
    assert error.message.startswith(f"{kind}: {expected}")


@pytest.mark.parametrize("kind", ["add", "multiply", "concat"])
def test_merges_need_two_inputs(kind):
    error = build_error(kind, (3, 4), names=["only"])
    assert error.message == f"{kind} takes at least 2 inputs, got 1: input 'only' (3, 4)."


@pytest.mark.parametrize("shapes, names, message", [
    ([(2, 3), (4, 5)], ["a", "b"],
     "concat: inputs 'a' (2, 3) and 'b' (4, 5) differ on axis 1, but may differ only on the "
     "concat axis 0."),
    ([(2, 3), (2, 3, 1)], ["a", "b"],
     "concat: inputs 'a' (2, 3) and 'b' (2, 3, 1) have different numbers of axes (2 and 3)."),
    ([(2, 3), (2, 3), (2, 4)], None,
     "concat: input 1 (2, 3) and input 3 (2, 4) differ on axis 1, but may differ only on the "
     "concat axis 0."),
])
def test_concat_shape_errors_name_the_inputs(shapes, names, message):
    assert build_error("concat", shapes, names=names).message == message


@pytest.mark.parametrize("kind, input_shape, options", [
    ("concat", [(2, 3), (2, 3)], {"axis": 2}), ("concat", [(2, 3), (2, 3)], {"axis": -3}),
    ("split", (4, 2), {"sizes": [2, 2], "axis": 5}),
])
def test_an_axis_out_of_range_names_the_inputs_and_the_valid_range(kind, input_shape, options):
    names = ["left", "right"] if isinstance(input_shape, list) else ["feats"]
    error = build_error(kind, input_shape, names=names, **options)
    assert f"axis {options['axis']} is out of range for" in error.message
    assert all(f"'{name}'" in error.message for name in names)
    assert "0 to 1, or -2 to -1" in error.hint


def test_split_sizes_that_do_not_sum_give_both_numbers():
    error = build_error("split", (6, 4), names=["feats"], sizes=[2, 3])
    assert error.message == ("split: sizes [2, 3] sum to 5, but input 'feats' (6, 4) has length 6 "
                             "along axis 0.")
    assert error.hint == "make the sizes add up to 6"
    unnamed = build_error("split", (6, 4), sizes=[1, 1], axis=-1)
    assert "sum to 2, but input 1 (6, 4) has length 4 along axis 1" in unnamed.message


def test_split_takes_one_input():
    error = build_error("split", [(4,), (4,)], names=["a", "b"], sizes=[2, 2])
    assert error.message == "split takes one input, got 2: inputs 'a' (4,) and 'b' (4,)."


@pytest.mark.parametrize("shapes", [[(3, 4)], [(3, 4), (4, 2), (2, 2)]])
def test_matmul_takes_exactly_two_inputs(shapes):
    names = [f"t{i}" for i in range(len(shapes))]
    error = build_error("matmul", shapes if len(shapes) > 1 else shapes[0], names=names)
    assert error.message.startswith(f"matmul takes exactly 2 inputs (a @ b), got {len(shapes)}: ")
    assert all(f"'{name}' {shape}" in error.message for name, shape in zip(names, shapes))


@pytest.mark.parametrize("shapes, fragment", [
    ([(3, 4), (5, 2)], "inputs 'q' (3, 4) and 'k' (5, 2) disagree on the inner size: 'q' has 4 "
                       "columns (last axis), 'k' has 5 rows (axis -2)."),
    ([(2, 3, 4), (3, 4, 2)], "inputs 'q' (2, 3, 4) and 'k' (3, 4, 2) differ on axis 0."),
    ([(4,), (4, 2)], "input 'q' (4,) has 1 axis per sample"),
])
def test_matmul_shape_errors_name_the_inputs(shapes, fragment):
    assert build_error("matmul", shapes, names=["q", "k"]).message.startswith(f"matmul: {fragment}")


@pytest.mark.parametrize("input_shape, shape, need", [
    ((4, 6), [5, 5], "needs 25"), ((4, 6), [5, -1], "needs a multiple of 5"),
])
def test_reshape_to_an_incompatible_shape_names_the_input(input_shape, shape, need):
    error = build_error("reshape", input_shape, names=["conv2"], shape=shape)
    assert error.message == (f"reshape: input 'conv2' {input_shape} has 24 values per sample, but "
                             f"shape {shape} {need}.")
    assert "24" in error.hint


@pytest.mark.parametrize("axes", [[0, 0, 2], [0, 1], [0, 1, 3], [0, -3, 1], [2, 1, 0, 3]])
def test_transpose_with_a_non_permutation_names_the_input(axes):
    error = build_error("transpose", (2, 3, 4), names=["feats"], axes=axes)
    assert error.message == (f"transpose: axes {axes} are not a permutation of the 3 axes of "
                             "input 'feats' (2, 3, 4).")
    assert "0 to 2 exactly once" in error.hint


def test_upsample2d_on_a_non_image_names_the_input():
    error = build_error("upsample2d", (12,), names=["fc1"])
    assert error.message.startswith("upsample2d: input 'fc1' (12,) is not an image")
    assert "input 1 (3, 4)" in build_error("upsample2d", (3, 4)).message


# Option errors are raised by __init__, before the network says what the layer reads, so they
# name the layer and the option (the network adds the layer's name and YAML path).
@pytest.mark.parametrize("kind, options, pattern", [
    ("upsample2d", {"factor": 0}, r"upsample2d option 'factor' must be an integer >= 1, got 0"),
    ("upsample2d", {"factor": 1.5}, r"upsample2d option 'factor' must be an integer >= 1"),
    ("upsample2d", {"factor": True}, r"upsample2d option 'factor' must be an integer >= 1"),
    ("split", {"sizes": [3]}, r"split option 'sizes' must list two or more positive integers"),
    ("split", {"sizes": [2, 0]}, r"split option 'sizes' must list two or more positive integers"),
    ("split", {"sizes": "2, 2"}, r"split option 'sizes'"),
    ("split", {"sizes": [2, 2], "axis": 1.0}, r"split option 'axis' must be an integer"),
    ("concat", {"axis": "channels"}, r"concat option 'axis' must be an integer"),
    ("concat", {"axis": True}, r"concat option 'axis' must be an integer"),
    ("reshape", {"shape": [2, -1, -1]}, r"reshape option 'shape' must list positive integers, "
                                        r"at most one of them -1"),
    ("reshape", {"shape": [2, 0]}, r"reshape option 'shape'"),
    ("reshape", {"shape": []}, r"reshape option 'shape'"),
    ("transpose", {"axes": "1 0"}, r"transpose option 'axes' must list integers"),
    ("transpose", {"axes": []}, r"transpose option 'axes' must list integers"),
])
def test_bad_options_name_the_layer_and_option(kind, options, pattern):
    with pytest.raises(LayerError, match=pattern) as info:
        layer_class(kind)(**options)
    assert info.value.hint


def test_errors_in_a_network_carry_the_layer_name_and_yaml_path():
    config = {"input": {"shape": [6], "batch": 2},
              "layers": [{"type": "reshape", "name": "to_grid", "shape": [4, -1]}], "loss": "mse"}
    with pytest.raises(LayerError) as info:
        gradcheck.check_network(config)
    text = str(info.value)
    assert re.search(r"layers\[0\].*layer 'to_grid' \(reshape\) in build: reshape: input", text)
    assert "needs a multiple of 4" in text
