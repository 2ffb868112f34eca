"""sequence_cross_entropy against a loop reference and finite differences, with ignored tokens,
an ignore_index that is also a class, and every token ignored; labels drawn by the network."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gradcheck
from conftest import examples
from fd import numeric_loss_grad
from gradcheck.contract import Loss
from gradcheck.errors import DataError, LayerError
from gradcheck.layers.losses import SequenceCrossEntropy
from gradcheck.registry import loss_class


def reference_loss(logits, target, ignore_index=None):
    """Sum over the kept tokens of -log softmax over every class, divided by how many they are."""
    total, count = 0.0, 0
    for n in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            if target[n, t] == ignore_index:
                continue
            row = logits[n, t]
            log_sum = math.log(sum(math.exp(v) for v in row))
            total += log_sum - row[target[n, t]]
            count += 1
    return total / count


def drawn(seed, batch=3, steps=4, classes=5, ignore_index=None, ignored=()):
    """Logits, and targets with the (n, t) positions in ``ignored`` set to ``ignore_index``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, steps, classes))
    target = rng.integers(0, classes, (batch, steps))
    for position in ignored:
        target[position] = ignore_index
    return logits, target


IGNORING = [(None, ()), (-100, ((0, 1), (2, 0), (2, 3))), (2, ((0, 0), (1, 2)))]


@pytest.mark.parametrize("ignore_index, ignored", IGNORING)
@pytest.mark.parametrize("seed", range(10))
def test_loss_and_gradient_match_the_reference(ignore_index, ignored, seed):
    logits, target = drawn(seed, ignore_index=ignore_index, ignored=ignored)
    loss = SequenceCrossEntropy(ignore_index=ignore_index)
    loss.build(logits.shape[1:])
    value = loss.forward(logits, target)
    assert value == pytest.approx(reference_loss(logits, target, ignore_index), rel=1e-12)
    grad = loss.backward()
    np.testing.assert_allclose(grad, numeric_loss_grad(loss, logits, target), rtol=1e-6,
                               atol=1e-9)
    skipped = target == ignore_index
    np.testing.assert_array_equal(grad[skipped], 0.0)


def test_an_ignore_index_that_is_a_class_stays_in_the_softmax():
    logits, target = drawn(0, ignore_index=2, ignored=((0, 0), (1, 2)))
    loss = SequenceCrossEntropy(ignore_index=2)
    value = loss.forward(logits, target)
    # The reference softmax runs over every class, 2 included; dropping class 2 from the
    # denominators would give another number.
    assert value == pytest.approx(reference_loss(logits, target, 2), rel=1e-12)
    kept = target != 2
    others = np.delete(logits, 2, axis=2)
    dropped = np.mean(np.log(np.exp(others).sum(axis=2))[kept]
                      - np.take_along_axis(logits, target[..., None], axis=2)[..., 0][kept])
    assert value != pytest.approx(dropped, rel=1e-3)
    assert np.all(loss.backward()[kept][:, 2] > 0)  # class 2 still gets softmax mass


def test_every_target_ignored_is_a_data_error():
    logits, target = drawn(0, ignore_index=0)
    target[...] = 0
    with pytest.raises(DataError, match="every target is ignore_index 0") as info:
        SequenceCrossEntropy(ignore_index=0).forward(logits, target)
    assert "padding" in info.value.hint
    with pytest.raises(DataError, match="every target is ignore_index 0"):
        SequenceCrossEntropy(ignore_index=0).forward_many(logits[None], target)


class MeanOverAllTokensInBackward(SequenceCrossEntropy):
    """Forward divides by the kept tokens, backward by every token: padding dilutes it."""

    def backward(self):
        grad = self.probs.copy()
        batch, steps = np.indices(self.labels.shape)
        grad[batch, steps, self.labels] -= 1.0
        return grad * (self.kept / self.kept.size)[..., None]  # BUG: / self.kept.sum()


def test_a_backward_that_averages_over_padding_is_caught():
    logits, target = drawn(3, ignore_index=-1, ignored=((0, 0), (1, 1), (2, 2)))
    liar = MeanOverAllTokensInBackward(ignore_index=-1)
    liar.forward(logits, target)
    numeric = numeric_loss_grad(liar, logits, target)
    liar.forward(logits, target)
    assert not np.allclose(liar.backward(), numeric, rtol=1e-5, atol=1e-7)


@settings(max_examples=examples(20))
@given(batch=st.integers(1, 3), steps=st.integers(1, 4), classes=st.integers(1, 5),
       copies=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_forward_many_equals_forward_per_copy(batch, steps, classes, copies, seed):
    rng = np.random.default_rng(seed)
    preds = rng.normal(size=(copies, batch, steps, classes))
    target = rng.integers(0, classes, (batch, steps))
    target[0, 0] = -1
    if batch * steps == 1:
        target[0, 0] = 0
    loss = SequenceCrossEntropy(ignore_index=-1)
    np.testing.assert_allclose(loss.forward_many(preds, target),
                               [loss.forward(p, target) for p in preds], rtol=1e-13)


def test_large_logits_do_not_overflow():
    logits = np.array([[[1000.0, 0.0, -1000.0], [0.0, 2000.0, 0.0]]])
    loss = SequenceCrossEntropy()
    assert loss.forward(logits, np.array([[0, 0]])) == pytest.approx(1000.0)
    assert np.isfinite(loss.backward()).all()


@pytest.mark.parametrize("target, message", [
    (np.zeros((2, 3)), r"targets of shape \(2, 4\), found \(2, 3\)"),
    (np.zeros((2, 4, 5)), r"found \(2, 4, 5\)"),
    (np.full((2, 4), 0.5), "non-integral"),
    (np.full((2, 4), 5), r"labels must lie in \[0, 5\) for 5 classes, found 5"),
    (np.full((2, 4), -100), r"found -100"),
])
def test_bad_targets_are_data_errors(target, message):
    logits = np.zeros((2, 4, 5))
    with pytest.raises(DataError, match=message):
        SequenceCrossEntropy(ignore_index=None).forward(logits, target)


def test_options_and_shapes():
    with pytest.raises(LayerError, match="ignore_index must be an integer label"):
        SequenceCrossEntropy(ignore_index=1.0)
    with pytest.raises(LayerError, match=r"expects per-sample logits \(time, classes\)"):
        SequenceCrossEntropy().build((5,))
    assert SequenceCrossEntropy().label_shape((7, 11)) == ((7,), 11)
    assert loss_class("sequence_cross_entropy").target_kind == "labels"


def test_the_default_label_shape_is_one_label_per_sample():
    assert Loss().label_shape((3, 4)) == ((), 12)
    assert loss_class("cross_entropy")().label_shape((10,)) == ((), 10)


# ---- labels the network draws and loads -------------------------------------------------------

def _config(**extra):
    return {"seed": 4, "input": {"shape": [6, 3], "batch": 5},
            "layers": [{"type": "rnn", "units": 4}, {"type": "dense", "units": 7}],
            "loss": "sequence_cross_entropy", **extra}


def test_the_network_draws_one_label_per_time_step():
    network, data = gradcheck.build_network(gradcheck.load_config(_config()))
    assert data.target.shape == (5, 6) and data.target.dtype.kind == "i"
    assert data.target.min() >= 0 and data.target.max() < 7
    assert len(np.unique(data.target)) > 1


def test_labels_loaded_from_a_file_must_have_the_label_shape(tmp_path):
    good = np.random.default_rng(0).integers(0, 7, (5, 6))
    np.save(tmp_path / "good.npy", good)
    np.save(tmp_path / "bad.npy", good[:, 0])
    network, data = gradcheck.build_network(gradcheck.load_config(
        _config(target={"file": str(tmp_path / "good.npy")})))
    np.testing.assert_array_equal(data.target, good)
    with pytest.raises(DataError, match=r"shape \(5,\); the network needs \(5, 6\)"):
        gradcheck.build_network(gradcheck.load_config(
            _config(target={"file": str(tmp_path / "bad.npy")})))


def test_a_recurrent_network_with_the_sequence_loss_passes_a_full_check():
    report = gradcheck.check_network(_config(), mode="full")
    assert report.passed


def test_diagnose_measures_accuracy_per_label():
    """The training probe's accuracy compares argmaxes of the loss's label shape: per time step
    for the sequence loss, where it used to flatten each sample and fail to broadcast."""
    from gradcheck.diagnose.probe import fit

    network, data = gradcheck.build_network(gradcheck.load_config(_config()))
    perfect = np.eye(7)[data.target] * 5.0  # (batch, T, classes) peaked at every label
    assert fit(network, perfect, data.target) == (1.0, True)
    wrong = np.roll(perfect, 1, axis=2)
    assert fit(network, wrong, data.target)[0] == 0.0
