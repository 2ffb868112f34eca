"""Losses: a scalar of the network output and a target, with dL/dpred written by hand.

Each ``forward(pred, target)`` returns a Python float and remembers what ``backward()`` needs;
``backward()`` returns dL/dpred with the shape and dtype of ``pred``.
"""

from __future__ import annotations

import numpy as np

from gradcheck.errors import DataError, LayerError
from gradcheck.contract import Loss
from gradcheck.registry import register_loss


def _values_target(loss: str, pred: np.ndarray, target) -> np.ndarray:
    """Return ``target`` as an array after checking it is numeric and shaped like ``pred``."""
    target = np.asarray(target)
    if target.shape != pred.shape:
        raise DataError(f"{loss} expects targets shaped like the predictions, {pred.shape}, "
                        f"found {target.shape}.")
    if target.dtype.kind not in "biuf":
        raise DataError(f"{loss} expects numeric targets, found dtype {target.dtype}.")
    return target


def _per_copy(values: np.ndarray) -> np.ndarray:
    """(n, batch, *shape) -> (n, batch * prod(shape)): one row per stacked copy (forward_many)."""
    return values.reshape(values.shape[0], -1)


@register_loss("mse")
class MeanSquaredError(Loss):
    """L = 0.5 * mean over the batch of sum((pred - target)**2) over each sample's elements.

    pred, target: (batch, *shape).  dL/dpred = (pred - target) / batch: the 0.5 cancels the 2 of the
    square, and the mean (not a sum) over the batch keeps the scale independent of batch size.
    """

    def forward(self, pred, target):
        target = _values_target("mse", pred, target)
        self.dtype = pred.dtype
        self.diff = pred - target
        return float(0.5 * np.sum(self.diff * self.diff) / pred.shape[0])

    def backward(self):
        return (self.diff / self.diff.shape[0]).astype(self.dtype, copy=False)

    def forward_many(self, preds, target):
        diff = preds - _values_target("mse", preds[0], target)
        return 0.5 * np.sum(_per_copy(diff * diff), axis=1) / preds.shape[1]


@register_loss("l2")
class L2(Loss):
    """MatConvNet-style L2: L = sum over the batch and every element of (pred - target)**2.

    pred, target: (batch, *shape).  dL/dpred = 2 * (pred - target).  Unlike ``mse`` there is no 0.5
    and no mean over the batch, so the loss and its gradient grow with the batch size; use it to
    reproduce MatConvNet networks exactly.
    """

    def forward(self, pred, target):
        target = _values_target("l2", pred, target)
        self.dtype = pred.dtype
        self.diff = pred - target
        return float(np.sum(self.diff * self.diff))

    def backward(self):
        return (2.0 * self.diff).astype(self.dtype, copy=False)

    def forward_many(self, preds, target):
        diff = preds - _values_target("l2", preds[0], target)
        return np.sum(_per_copy(diff * diff), axis=1).astype(np.float64)


@register_loss("bce")
class BinaryCrossEntropy(Loss):
    """Binary cross-entropy on probabilities, for sigmoid outputs.

    pred: (batch, *shape) with every value strictly inside (0, 1); target: same shape, in [0, 1].
    L = -mean over the batch of sum over elements of [t log p + (1 - t) log(1 - p)];
    dL/dpred = (p - t) / (batch * p * (1 - p)).
    It takes probabilities, not logits: at p = 0 or 1 the loss is infinite, so forward refuses them.
    """

    def forward(self, pred, target):
        target = _values_target("bce", pred, target)
        # Written as a negated "inside" test so that NaN counts as outside too.
        outside = ~((pred > 0) & (pred < 1))
        if outside.any():
            raise DataError(
                f"bce expects probabilities strictly between 0 and 1, found "
                f"{pred[outside][0].item()} among the predictions.",
                hint="end the network with a sigmoid layer so that its outputs lie in (0, 1)")
        if ((target < 0) | (target > 1)).any():
            raise DataError(f"bce expects targets in [0, 1], found "
                            f"{target[(target < 0) | (target > 1)][0].item()}.")
        self.dtype = pred.dtype
        self.pred, self.target = pred, target
        log_likelihood = target * np.log(pred) + (1 - target) * np.log1p(-pred)
        return float(-np.sum(log_likelihood) / pred.shape[0])

    def backward(self):
        p, t = self.pred, self.target
        return ((p - t) / (p.shape[0] * p * (1 - p))).astype(self.dtype, copy=False)


@register_loss("cross_entropy")
class SoftmaxCrossEntropy(Loss):
    """Softmax over C class scores, then the mean negative log-likelihood of the true labels.

    pred: (batch, C) unnormalised scores (logits); target: (batch,) integer labels in [0, C).
    L = mean over n of [log sum_c exp(pred[n, c]) - pred[n, target[n]]];
    dL/dpred = (softmax(pred) - onehot(target)) / batch.
    Each row's maximum is subtracted before exponentiating (log-sum-exp), so large scores cannot
    overflow and the log never sees an underflowed 0.
    """

    target_kind = "labels"

    def build(self, input_shape):
        if len(input_shape) != 1 or input_shape[0] < 1:
            raise LayerError(
                f"cross_entropy expects one score per class, per-sample shape (classes,), "
                f"got {tuple(input_shape)}.",
                hint="insert a 'flatten' layer (and a dense layer with one unit per class) before "
                     "the loss")

    def forward(self, pred, target):
        batch, classes = pred.shape
        labels = self._labels(np.asarray(target), batch, classes)
        shifted = pred - pred.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self.dtype = pred.dtype
        self.probs, self.labels = np.exp(log_probs), labels
        return float(-log_probs[np.arange(batch), labels].mean())

    def forward_many(self, preds, target):
        _, batch, classes = preds.shape
        labels = self._labels(np.asarray(target), batch, classes)
        shifted = preds - preds.max(axis=2, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))
        return -log_probs[:, np.arange(batch), labels].mean(axis=1).astype(np.float64)

    def backward(self):
        grad = self.probs.copy()
        grad[np.arange(grad.shape[0]), self.labels] -= 1.0
        return (grad / grad.shape[0]).astype(self.dtype, copy=False)

    @staticmethod
    def _labels(target: np.ndarray, batch: int, classes: int) -> np.ndarray:
        """Validate ``target`` as (batch,) integer labels in [0, classes) and return it as int64."""
        if target.shape != (batch,):
            hint = ("the targets look one-hot encoded; pass the class indices (argmax) instead"
                    if target.shape == (batch, classes) else None)
            raise DataError(f"cross_entropy expects one integer label per sample, shape "
                            f"({batch},), found {target.shape}.", hint=hint)
        if target.dtype.kind == "f":
            # Labels read from text or .npy files often arrive as floats; whole numbers are fine.
            if not (np.isfinite(target).all() and (target == np.round(target)).all()):
                raise DataError("cross_entropy expects integer class labels, found non-integral "
                                "values.")
        elif target.dtype.kind not in "iu":
            raise DataError(f"cross_entropy expects integer class labels, found dtype "
                            f"{target.dtype}.")
        # Range first, on the original values: a huge float would not survive the int conversion.
        bad = (target < 0) | (target >= classes)
        if bad.any():
            raise DataError(f"cross_entropy labels must lie in [0, {classes}) for {classes} "
                            f"classes, found {target[bad][0].item()}.")
        return target.astype(np.int64)


@register_loss("projection")
class Projection(Loss):
    """L = sum over the batch and every element of target * pred: a fixed random projection.

    pred, target: (batch, *shape).  dL/dpred = target.  Its gradient is the target itself, so a
    layer under it receives an arbitrary upstream gradient G = target and the check tests the
    layer's backward against every output element at once, without a real loss in the way. It is
    what ``gradcheck.check_layer`` puts after a single layer; in YAML pair it with
    ``target: {data: normal}`` so that G has both signs.
    """

    def forward(self, pred, target):
        target = _values_target("projection", pred, target)
        self.dtype = pred.dtype
        self.target = target
        return float(np.sum(target * pred))

    def backward(self):
        return np.asarray(self.target, dtype=self.dtype).copy()

    def forward_many(self, preds, target):
        target = _values_target("projection", preds[0], target)
        return np.sum(_per_copy(target * preds), axis=1).astype(np.float64)
