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


def _token_nll(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[label] per token: logits (..., V), labels broadcastable to logits'
    leading axes -> (...,). The row maximum is subtracted before exponentiating (log-sum-exp)."""
    top = logits.max(axis=-1, keepdims=True)
    shifted = np.exp(logits - top)
    log_total = np.log(shifted.sum(axis=-1)) + top[..., 0]
    picked = np.take_along_axis(logits, np.broadcast_to(labels[..., None], (*logits.shape[:-1], 1)),
                                axis=-1)[..., 0]
    return log_total - picked


@register_loss("sequence_cross_entropy")
class SequenceCrossEntropy(Loss):
    """Cross-entropy at every time step, averaged over the tokens whose target is not ignored.

    pred: (batch, T, V) logits (softmax inside, over V); target: (batch, T) integer labels in
    [0, V), or ``ignore_index``.  With K = the tokens whose target is not ``ignore_index``,
    L = sum over (n, t) in K of [log sum_c exp(pred[n, t, c]) - pred[n, t, target[n, t]]] / |K|:
    the mean over non-ignored targets, PyTorch's convention (``F.cross_entropy`` with
    ``ignore_index``; cs231n's ``temporal_softmax_loss`` divides by the batch size instead).
    dL/dpred = (softmax(pred) - onehot(target)) / |K| on tokens in K, 0 elsewhere.  An
    ``ignore_index`` that is also a class stays in every softmax denominator: only the tokens
    whose target it is are skipped.  If every target is ignored the mean is 0/0 and forward
    raises DataError (PyTorch returns NaN).  Log-sum-exp keeps large logits from overflowing.
    """

    target_kind = "labels"

    def __init__(self, ignore_index: int | None = None):
        super().__init__()
        if ignore_index is not None and (isinstance(ignore_index, bool)
                                         or not isinstance(ignore_index, int)):
            raise LayerError(f"sequence_cross_entropy: ignore_index must be an integer label, "
                             f"got {ignore_index!r}.",
                             hint="write the padding label, e.g. ignore_index: -100 or 0")
        self.ignore_index = ignore_index

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise LayerError(
                f"sequence_cross_entropy expects per-sample logits (time, classes), got "
                f"{tuple(input_shape)}.",
                hint="end the network with a dense layer of one unit per class, applied at every "
                     "time step of a (time, features) sequence")

    def label_shape(self, input_shape):
        """One label per time step: ((T,), V) for logits of per-sample shape (T, V)."""
        return (input_shape[0],), input_shape[1]

    def forward(self, pred, target):
        labels, kept = self._labels(np.asarray(target), pred.shape)
        top = pred.max(axis=-1, keepdims=True)
        probs = np.exp(pred - top)
        probs /= probs.sum(axis=-1, keepdims=True)
        self.dtype, self.probs, self.labels, self.kept = pred.dtype, probs, labels, kept
        return float(_token_nll(pred, labels)[kept].sum() / kept.sum())

    def forward_many(self, preds, target):
        labels, kept = self._labels(np.asarray(target), preds.shape[1:])
        nll = _token_nll(preds, labels)
        return (nll[:, kept].sum(axis=1) / kept.sum()).astype(np.float64)

    def backward(self):
        grad = self.probs.copy()
        batch, steps = np.indices(self.labels.shape)
        grad[batch, steps, self.labels] -= 1.0
        grad *= (self.kept / self.kept.sum())[..., None]
        return grad.astype(self.dtype, copy=False)

    def _labels(self, target: np.ndarray, shape: tuple[int, ...]):
        """(labels, kept): ``target`` validated as (batch, T) labels of V classes, as int64 with
        ignored tokens set to 0, and the mask of tokens that count."""
        batch, steps, classes = shape
        if target.shape != (batch, steps):
            hint = ("the targets look one-hot encoded; pass the class indices (argmax) instead"
                    if target.shape == shape else "one integer label per time step")
            raise DataError(f"sequence_cross_entropy expects targets of shape ({batch}, {steps}), "
                            f"found {target.shape}.", hint=hint)
        if target.dtype.kind == "f":
            if not (np.isfinite(target).all() and (target == np.round(target)).all()):
                raise DataError("sequence_cross_entropy expects integer class labels, found "
                                "non-integral values.")
        elif target.dtype.kind not in "iu":
            raise DataError(f"sequence_cross_entropy expects integer class labels, found dtype "
                            f"{target.dtype}.")
        kept = np.ones(target.shape, dtype=bool) if self.ignore_index is None else (
            target != self.ignore_index)
        bad = kept & ((target < 0) | (target >= classes))
        if bad.any():
            raise DataError(
                f"sequence_cross_entropy labels must lie in [0, {classes}) for {classes} classes, "
                f"found {target[bad][0].item()}.",
                hint="set ignore_index to the label of the tokens to skip" if self.ignore_index
                is None else f"only ignore_index {self.ignore_index} may lie outside")
        if not kept.any():
            raise DataError(
                f"sequence_cross_entropy: every target is ignore_index {self.ignore_index}, so "
                f"the mean over non-ignored tokens is 0/0.",
                hint="check that the targets are not all padding, and which label ignore_index "
                     "names")
        return np.where(kept, target, 0).astype(np.int64), kept


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
