"""Where a sequence model starts: token ids to vectors (``embedding``), and their positions
(``positional_encoding``)."""

from __future__ import annotations

import numpy as np

from gradcheck.contract import Layer
from gradcheck.errors import LayerError
from gradcheck.registry import register_layer


def _positive_int(layer: str, option: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LayerError(f"{layer}: {option} must be a positive integer, got {value!r}.")
    return value


@register_layer("embedding")
class Embedding(Layer):
    """A lookup table: y[..., :] = W[ids[...], :], for integer token ids of any per-sample shape.

    ids: (batch, *S) integers in [0, vocab) -> y: (batch, *S, dim); W: (vocab, dim), initialised
    N(0, 1) as PyTorch does (unit-variance features, the scale the LeCun-initialised layers after
    it assume).  The ids are indices, not values: they are never perturbed and have no gradient,
    so ``backward`` returns None.  A token id used several times adds each of its gradients to
    its row of dL/dW (``np.add.at``; ``dW[ids] += g`` would keep only one of them).
    """

    axis_names = {"W": ("id", "dimension")}

    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.vocab = _positive_int("embedding", "vocab", vocab)
        self.dim = _positive_int("embedding", "dim", dim)

    def build(self, input_shape, rng):
        self.params["W"] = rng.normal(0.0, 1.0, (self.vocab, self.dim))
        return (*input_shape, self.dim)

    def _checked_ids(self, ids) -> np.ndarray:
        """``ids`` as an intp array, or a LayerError naming the first bad id and its position."""
        ids = np.asarray(ids)
        if ids.dtype.kind == "f":
            # Ids read from text or .npy files often arrive as floats; whole numbers are fine.
            fractional = ~(np.isfinite(ids) & (ids == np.round(ids)))
            if fractional.any():
                position = tuple(int(i) for i in np.argwhere(fractional)[0])
                raise LayerError(
                    f"layer {self.name!r} (embedding): token id {ids[position].item()} at index "
                    f"{position} of the ids (batch first) is not a whole number.",
                    hint="token ids are indices into the table: feed the integer ids, not "
                         "features or one-hot vectors")
        elif ids.dtype.kind not in "iu":
            raise LayerError(f"layer {self.name!r} (embedding): token ids must be integers, "
                             f"found dtype {ids.dtype}.")
        outside = (ids < 0) | (ids >= self.vocab)
        if outside.any():
            position = tuple(int(i) for i in np.argwhere(outside)[0])
            raise LayerError(
                f"layer {self.name!r} (embedding): token id {ids[position].item()} at index "
                f"{position} of the ids (batch first) is outside [0, {self.vocab}).",
                hint="raise vocab to cover every id, or map unknown tokens to an id below it")
        return ids.astype(np.intp)

    def forward(self, ids):
        self.ids = self._checked_ids(ids)
        return self.params["W"][self.ids]

    def backward(self, grad_out):
        grad_w = np.zeros_like(self.params["W"])
        np.add.at(grad_w, self.ids.reshape(-1), grad_out.reshape(-1, self.dim))
        self.grads["W"] = grad_w
        return None

    def perturbed_outputs(self, ids, name, flat_indices, values):
        """forward(ids) with ``W.flat[flat_indices[k]] = values[k]``, per copy k:
        (k, batch, *S, dim). Only the positions holding that row's id change, in one column."""
        ids = self._checked_ids(ids)
        copies = len(flat_indices)
        out = np.repeat(self.params["W"][ids][None], copies, axis=0)
        rows, cols = np.divmod(flat_indices, self.dim)
        copy, position = np.nonzero(ids.reshape(1, -1) == rows[:, None])
        out.reshape(copies, -1, self.dim)[copy, position, cols[copy]] = values[copy]
        return out


@register_layer("positional_encoding")
class PositionalEncoding(Layer):
    """Sinusoidal positions added to a sequence (Vaswani et al. 2017): y = x + PE[:T, :F].

    x, y: (batch, T, F).  PE[t, 2i] = sin(t / 10000^(2i/F)), PE[t, 2i+1] = cos(t / 10000^(2i/F));
    for odd F the last column is a sine.  Fixed: no options, no parameters, dL/dx = dL/dy.
    """

    axis_names = {"input": ("time", "feature")}

    def build(self, input_shape, rng):
        if len(input_shape) != 2:
            raise LayerError(
                f"positional_encoding expects a per-sample sequence (time, features), got shape "
                f"{tuple(input_shape)}.",
                hint="put it after an 'embedding' layer, whose output is (time, dim)")
        steps, features = input_shape
        column = np.arange(features)
        even = column - column % 2  # 2i for both columns 2i and 2i + 1
        angle = np.arange(steps)[:, None] / 10000.0 ** (even / features)
        self.table = np.where(column % 2 == 0, np.sin(angle), np.cos(angle))
        return tuple(input_shape)

    def forward(self, x):
        return x + self.table.astype(x.dtype, copy=False)

    def backward(self, grad_out):
        return grad_out.copy()
