"""gradcheck.explain on real layers with realistic bugs (tests/plugins/explain_layers.py): each is
checked with check_layer (one layer under a random projection, every element compared) and its
pattern named; with the layer's declared axis names (Layer.axis_names) the sentence uses them,
and so does the heat map."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import TEST_PLUGINS, examples
from fd import analytic_layer_grads, numeric_layer_grads
from gradcheck import LayerError, Layer, check_layer, registry
from gradcheck.explain import classify, declaration_problem, target_axis_names
from gradcheck.explain.axes import noun
from gradcheck.plugins import load_plugin
from gradcheck.render.heatmap import heatmap
from test_contract import BUILTIN_LAYERS, LAYER_CASES

load_plugin(str(TEST_PLUGINS / "explain_layers.py"), TEST_PLUGINS)
SEEDS = range(10)
IDS = [1, 4, 4, 0, 6, 1]  # ids 1 and 4 repeat; 2, 3, 5 and 7 are never looked up

# (buggy layer, per-sample input shape, options, target, pattern, words with the layer's
# declared axis names, which the check passes to the explanation)
BUGS = [
    ("rnn_no_carry", (6, 3), {}, "input", "axis_range",
     "errors only in time steps 0-4 of 6 (axis 1)"),
    ("attention_softmax_diagonal", (5, 4), {}, "W", "axis_range",
     "errors only in q/k/v units 0-7 of 12 (axis 1)"),
    ("position_embedding_overwrite", (6, 3), {"ids": IDS}, "W", "whole_slices",
     "whole slices at ids 1 and 4 of 8 (axis 0)"),
    ("gelu_tanh_forward", (4, 16), {}, "input", "small_relative_error", "relative error"),
    ("box_filter_top_row_skipped", (2, 8, 8), {}, "input", "boundary",
     "the first 2 rows (axis 2, size 8)"),
    ("box_filter_edges_skipped", (2, 8, 8), {}, "input", "boundary",
     "the border ring (first/last 2 rows and columns)"),
    ("conv_kernel_rows_flipped", (2, 6, 6), {}, "W", "axis_flipped",
     "reversing the kernel rows (axis 2, size 3)"),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layer, shape, options, target, kind, words", BUGS,
                         ids=[bug[0] for bug in BUGS])
def test_check_layer_names_the_fingerprint_of_a_real_bug(layer, shape, options, target, kind,
                                                         words, seed):
    report = check_layer(f"explain_{layer}", shape, seed=seed, **options)
    check = next(c for c in report.layers[0].checks if c.target == target)
    assert (check.status, check.pattern) == ("fail", kind), check.explanation
    assert words in check.explanation
    assert f"[all {check.checked:,} elements compared, {check.failed:,} fail" in check.explanation


@pytest.mark.parametrize("layer, shape, options", [
    ("rnn", (6, 3), {}), ("attention", (5, 4), {}), ("position_embedding", (6, 3), {"ids": IDS}),
    ("box_filter", (2, 8, 8), {}), ("conv", (2, 6, 6), {}), ("dense_decay", (4,), {})])
def test_the_correct_twins_pass(layer, shape, options):
    assert check_layer(f"explain_{layer}", shape, **options).passed


def _explained(name, shape, seed=0, **options):
    """{target: Pattern} for the layer's gradients against central differences, classified
    with the layer's declared axis names and parameter values."""
    layer = registry.layer_class(name)(**options)
    rng = np.random.default_rng(seed)
    layer.build(shape, rng)
    x = rng.normal(size=(3, *shape))
    upstream = rng.normal(size=layer.forward(x).shape)
    analytic_x, analytic_p = analytic_layer_grads(layer, x, upstream)
    numeric_x, numeric_p = numeric_layer_grads(layer, x, upstream)
    found = {}
    for target, a, n, param in [("input", analytic_x, numeric_x, None),
                                *((k, analytic_p[k], numeric_p[k], layer.params[k])
                                  for k in layer.params)]:
        rel = np.abs(a - n) / (np.maximum(np.abs(a), np.abs(n)) + 1e-3)
        found[target] = classify(a, n, np.where(rel > 1e-5, "fail", "pass"), rtol=1e-5,
                                 axis_names=target_axis_names(layer, target, a.shape),
                                 param=param)
    return found


@pytest.mark.parametrize("seed", SEEDS)
def test_declared_axis_names_word_the_patterns(seed):
    rnn = _explained("explain_rnn_no_carry", (16, 3), seed)["input"]
    assert rnn.kind == "axis_range"
    assert rnn.text.startswith("errors only in time steps 0-14 of 16 (axis 1)")
    assert "every step but the last" in rnn.text
    attention = _explained("explain_attention_softmax_diagonal", (5, 16), seed)["W"]
    assert attention.text.startswith("errors only in q/k/v units 0-31 of 48 (axis 1)")
    embedding = _explained("explain_position_embedding_overwrite", (6, 3), seed, ids=IDS)["W"]
    assert "whole slices at ids 1 and 4 of 8 (axis 0)" in embedding.text
    assert "4 other ids showed no evidence" in embedding.text
    band = _explained("explain_box_filter_top_row_skipped", (2, 8, 8), seed)["input"]
    assert band.text.startswith("errors only in the first 2 rows (axis 2, size 8)")
    ring = _explained("explain_box_filter_edges_skipped", (2, 8, 8), seed)["input"]
    assert "the border ring (first/last 2 rows and columns)" in ring.text
    flip = _explained("explain_conv_kernel_rows_flipped", (2, 6, 6), seed)["W"]
    assert "reversing the kernel rows (axis 2, size 3)" in flip.text


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("decay, words", [(-0.01, "analytic = numeric - 0.01 x W"),
                                          (0.02, "analytic = numeric + 0.02 x W"),
                                          (-0.02, "analytic = numeric - 0.02 x W")])
def test_a_decay_term_in_a_real_backward_is_fitted(decay, words, seed):
    found = _explained("explain_dense_decay", (4,), seed, decay=decay)
    assert found["W"].kind == "decay_term" and found["W"].text.startswith(words)
    assert found["input"] is None  # dL/dx is right


def test_the_c_example_bug_gets_no_false_pattern():
    """A convolution whose input gradient uses the flipped kernel (the README's C example, in
    numpy): no rearrangement of the numeric gradient gives the analytic one, so the honest
    answer is 'no simple pattern', never a made-up region or factor."""

    class FlippedInputGradient(registry.layer_class("explain_conv")):
        def backward(self, grad_out):
            self.params["W"] = self.params["W"][:, :, ::-1, ::-1]
            try:
                return super().backward(grad_out)
            finally:
                self.params["W"] = self.params["W"][:, :, ::-1, ::-1]

    for seed in SEEDS:
        report = check_layer(FlippedInputGradient, (2, 6, 6), seed=seed)
        check = next(c for c in report.layers[0].checks if c.target == "input")
        assert check.pattern == "widespread", check.explanation


# -- axis names: declared, default, validated --------------------------------------------------

@pytest.mark.parametrize("name, one, many", [
    ("time", "time step", "time steps"), ("axis 2", "index", "indices"), ("row", "row", "rows"),
    ("kernel column", "kernel column", "kernel columns"), ("class", "class", "classes"),
    ("query", "query", "queries"), ("day", "day", "days")])
def test_axis_nouns(name, one, many):
    assert (noun(name, 1), noun(name, 3)) == (one, many)


def test_axis_names_come_from_the_declaration_with_generic_defaults():
    dense = registry.layer_class("dense")(units=3)
    dense.build((4,), np.random.default_rng(0))
    assert target_axis_names(dense, "W", (4, 3)) == ("input feature", "unit")
    assert target_axis_names(dense, "input", (2, 4)) == ("sample", "input feature")
    conv = registry.layer_class("conv2d")(filters=2, kernel=3)
    assert target_axis_names(conv, "W", (2, 1, 3, 3))[2:] == ("kernel row", "kernel column")
    norm = registry.layer_class("batchnorm")()
    norm.build((3, 4, 4), np.random.default_rng(0))
    assert target_axis_names(norm, "input", (2, 3, 4, 4)) == ("sample", "channel", "row",
                                                             "column")
    norm.build((5,), np.random.default_rng(0))
    assert target_axis_names(norm, "gamma", (5,)) == ("feature",)
    tanh = registry.layer_class("tanh")()
    assert target_axis_names(tanh, "input", (2, 3, 4)) == ("sample", "axis 1", "axis 2")
    assert target_axis_names(Layer(), "w", (3, 2)) == ("axis 0", "axis 1")
    assert target_axis_names(Layer(), "b", (3,)) == ("element",)


@pytest.mark.parametrize("name", BUILTIN_LAYERS)
@settings(max_examples=examples(5))
@given(data=st.data())
def test_every_builtin_declares_axis_names_that_fit_its_arrays(name, data):
    case = data.draw(LAYER_CASES[name])
    layer = registry.layer_class(name)(**case.options)
    layer.build(case.input_shape, np.random.default_rng(0))
    assert declaration_problem(layer, case.input_shape) is None


class _Declares(Layer):
    def __init__(self, names=None):
        super().__init__()
        self.declared = names

    def build(self, input_shape, rng):
        self.params["w"] = rng.normal(size=input_shape)
        self.axis_names = self.declared
        return tuple(input_shape)

    def forward(self, x):
        self.x = x
        return x * self.params["w"]

    def backward(self, grad_out):
        self.grads["w"] = (grad_out * self.x).sum(axis=0)
        return grad_out * self.params["w"]


@pytest.mark.parametrize("names, words", [
    ({"w": ("row",)}, "axis_names['w'] gives 1 name(s) ('row',), but params['w'] has 2 axes"),
    ({"input": ("time", "row", "column")}, "gives 3 name(s)"),
    ({"input": ("sample", "column")}, "'sample', the name reserved for the batch axis"),
    ({"input": "rows"}, "must be a tuple of non-empty strings"),
    (["row", "column"], "axis_names must be a dict"),
])
def test_a_wrong_declaration_is_refused_when_the_layer_is_built(names, words):
    with pytest.raises(LayerError, match="declare one name per axis") as info:
        check_layer(_Declares(names), (3, 4))
    assert words in info.value.message


def test_a_fitting_declaration_is_accepted():
    report = check_layer(_Declares({"input": ("row", "column"), "w": ("row", "column")}), (3, 4))
    assert report.passed


# -- the heat map's legend -----------------------------------------------------------------

def test_the_heat_map_legend_names_rows_columns_and_the_axes_it_reduces():
    rel = np.full((2, 6, 4), 1e-9)
    rel[:, :5] = 0.5
    drawn = heatmap(rel, 1e-5, ("sample", "time", "feature")).plain
    assert "rows: time, columns: feature; max over sample;" in drawn
    rows = [line.strip() for line in drawn.splitlines()[:-1]]
    assert len(rows) == 6 and rows[-1] == "····" and all(set(r) == {"█"} for r in rows[:-1])
    assert "rows: axis 0, columns: axis 1;" in heatmap(np.zeros((3, 3)), 1e-5).plain
    assert "one row: element;" in heatmap(np.zeros(5), 1e-5, ("element",)).plain


def test_the_text_report_labels_its_heat_map_with_the_targets_axis_names():
    from gradcheck.render.textparts import details

    report = check_layer("explain_box_filter_top_row_skipped", (2, 8, 8))
    check = report.layers[0].checks[0]
    names = check.axis_names
    assert len(names) == 4 and names[0] == "sample"
    text = "".join(part.plain for part in details(report))
    assert f"rows: {names[2]}, columns: {names[3]}; max over {names[0]}, {names[1]};" in text
