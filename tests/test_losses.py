"""Losses against textbook formulas and central finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import examples
from cases_norm import LOSS_CASES
from fd import numeric_loss_grad
from gradcheck.errors import DataError, LayerError
from gradcheck.layers.losses import L2, BinaryCrossEntropy, MeanSquaredError, SoftmaxCrossEntropy
from gradcheck.registry import loss_class

FEW = settings(max_examples=examples(25), deadline=None)


def draw_target(loss, pred: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A target of the loss's kind, as the engine draws it by default."""
    if loss.target_kind == "labels":
        return rng.integers(0, pred.shape[1], size=pred.shape[0])
    return rng.uniform(size=pred.shape)


def textbook(name: str, pred: np.ndarray, target: np.ndarray) -> float:
    """Each loss as a plain sum over samples and elements."""
    batch = pred.shape[0]
    if name == "cross_entropy":
        return sum(-math.log(math.exp(pred[n, target[n]]) / sum(math.exp(z) for z in pred[n]))
                   for n in range(batch)) / batch
    terms = {
        "mse": lambda p, t: 0.5 * (p - t) ** 2,
        "l2": lambda p, t: (p - t) ** 2,
        "bce": lambda p, t: -(t * math.log(p) + (1 - t) * math.log(1 - p)),
    }[name]
    total = sum(terms(p, t) for p, t in zip(pred.ravel(), target.ravel()))
    return total if name == "l2" else total / batch


def test_registered_names_and_target_kinds():
    expected = {"mse": MeanSquaredError, "cross_entropy": SoftmaxCrossEntropy,
                "bce": BinaryCrossEntropy, "l2": L2}
    for name, cls in expected.items():
        assert loss_class(name) is cls
    assert SoftmaxCrossEntropy.target_kind == "labels"
    for cls in (MeanSquaredError, BinaryCrossEntropy, L2):
        assert cls.target_kind == "values"


@pytest.mark.parametrize("name", sorted(LOSS_CASES))
@FEW
@given(data=st.data())
def test_forward_matches_textbook_and_backward_matches_finite_differences(name, data):
    case = data.draw(LOSS_CASES[name])
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    loss = loss_class(name)(**case.options)
    loss.build(case.input_shape)
    pred = case.draw_pred(rng)
    target = draw_target(loss, pred, rng)
    value = loss.forward(pred, target)
    assert type(value) is float
    assert value == pytest.approx(textbook(name, pred, target), rel=1e-10)
    grad = loss.backward()
    assert grad.shape == pred.shape and grad.dtype == pred.dtype
    np.testing.assert_allclose(grad, numeric_loss_grad(loss, pred, target), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(LOSS_CASES))
def test_backward_keeps_float32(name):
    loss = loss_class(name)()
    pred = np.full((2, 3), 0.25, dtype=np.float32)
    loss.forward(pred, draw_target(loss, pred, np.random.default_rng(0)))
    assert loss.backward().dtype == np.float32


def test_mse_and_l2_scaling_conventions():
    pred, target = np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [0.0, 3.0]])
    # Squared errors: 1 + 4 + 0 + 9 = 14.
    assert MeanSquaredError().forward(pred, target) == pytest.approx(0.5 * 14 / 2)
    assert L2().forward(pred, target) == pytest.approx(14.0)


@pytest.mark.parametrize("name", ["mse", "l2", "bce"])
def test_values_losses_reject_wrongly_shaped_targets(name):
    pred = np.full((2, 3), 0.5)
    with pytest.raises(DataError, match=r"\(2, 3\).*found \(2, 4\)"):
        loss_class(name)().forward(pred, np.zeros((2, 4)))


def test_values_losses_reject_non_numeric_targets():
    with pytest.raises(DataError, match="numeric targets"):
        MeanSquaredError().forward(np.zeros((1, 2)), np.array([["a", "b"]]))


# ---- cross_entropy ------------------------------------------------------------------------------

def test_cross_entropy_is_stable_for_huge_scores():
    loss = SoftmaxCrossEntropy()
    pred = np.array([[1000.0, 0.0, -1000.0], [-800.0, 800.0, 0.0]])
    value = loss.forward(pred, np.array([0, 2]))
    # Sample 0 is certain and right (loss 0); sample 1 puts 0 on a score 800 below the top.
    assert value == pytest.approx(800.0 / 2)
    grad = loss.backward()
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, [[0, 0, 0], [0, 0.5, -0.5]], atol=1e-12)


def test_cross_entropy_single_class_has_zero_loss():
    loss = SoftmaxCrossEntropy()
    loss.build((1,))
    assert loss.forward(np.array([[3.0], [-2.0]]), np.array([0, 0])) == 0.0
    np.testing.assert_array_equal(loss.backward(), np.zeros((2, 1)))


@pytest.mark.parametrize("shape", [(), (0,), (3, 4), (2, 2, 2)])
def test_cross_entropy_build_rejects_non_vector_scores(shape):
    with pytest.raises(LayerError, match=r"per-sample shape \(classes,\)") as info:
        SoftmaxCrossEntropy().build(shape)
    assert "flatten" in info.value.hint


@pytest.mark.parametrize("target, message", [
    (np.array([0, 3]), r"in \[0, 3\) for 3 classes, found 3"),
    (np.array([-1, 0]), "found -1"),
    (np.array([0, 1, 2]), r"shape \(2,\), found \(3,\)"),
    (np.array([[0], [1]]), r"found \(2, 1\)"),
    (np.array([0.0, 1.5]), "non-integral"),
    (np.array([0.0, np.nan]), "non-integral"),
    (np.array(["0", "1"]), "dtype <U1"),
    (np.array([1e30, 0.0]), r"found 1e\+30"),
])
def test_cross_entropy_rejects_bad_labels(target, message):
    with pytest.raises(DataError, match=message):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3)), target)


def test_cross_entropy_hints_at_one_hot_targets():
    with pytest.raises(DataError) as info:
        SoftmaxCrossEntropy().forward(np.zeros((2, 3)), np.eye(3)[[0, 2]])
    assert "one-hot" in info.value.hint


def test_cross_entropy_accepts_whole_float_labels():
    loss = SoftmaxCrossEntropy()
    pred = np.random.default_rng(6).normal(size=(2, 3))
    assert loss.forward(pred, np.array([2.0, 0.0])) == loss.forward(pred, np.array([2, 0]))


# ---- bce ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0.0, 1.0, 1.2, -0.3, np.nan])
def test_bce_rejects_values_that_are_not_probabilities(bad):
    pred = np.array([[0.5, bad]])
    with pytest.raises(DataError, match="probabilities strictly between 0 and 1") as info:
        BinaryCrossEntropy().forward(pred, np.array([[1.0, 0.0]]))
    assert "sigmoid" in info.value.hint


def test_bce_rejects_targets_outside_unit_interval():
    with pytest.raises(DataError, match=r"targets in \[0, 1\], found 2.0"):
        BinaryCrossEntropy().forward(np.array([[0.5, 0.5]]), np.array([[1.0, 2.0]]))


def test_bce_accepts_hard_targets():
    loss = BinaryCrossEntropy()
    value = loss.forward(np.array([[0.8, 0.1]]), np.array([[1, 0]]))
    assert value == pytest.approx(-(math.log(0.8) + math.log(0.9)))
