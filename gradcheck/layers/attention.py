"""Multi-head self-attention over batch-first sequences, with causal and key-padding masks."""

from __future__ import annotations

import math
import types

import numpy as np

from gradcheck.contract import Layer
from gradcheck.errors import LayerError
from gradcheck.registry import register_layer

PROJECTIONS = ("q", "k", "v", "o")


def masked_softmax(scores: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """Softmax over the last axis among the ``allowed`` entries (broadcast against ``scores``);
    the rest get weight 0, and a row with no allowed entry is all 0 rather than 0/0 = NaN."""
    if allowed is None:
        weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
        return weights / weights.sum(axis=-1, keepdims=True)
    filled = np.where(allowed, scores, -np.inf)
    top = filled.max(axis=-1, keepdims=True)
    top[top == -np.inf] = 0.0  # a fully masked row: exp(-inf - 0) = 0 everywhere, no NaN
    weights = np.exp(filled - top)
    total = weights.sum(axis=-1, keepdims=True)
    return weights / np.where(total > 0, total, 1.0)


@register_layer("attention")
class SelfAttention(Layer):
    """Multi-head self-attention (Vaswani et al. 2017): softmax(q k^T / sqrt(d)) v per head.

    x: (batch, T, F) -> y: (batch, T, F), F = heads * d.  q = x Wq + bq, k = x Wk + bk,
    v = x Wv + bv; head h takes columns h*d:(h+1)*d of each.  Per head, A = softmax over the
    keys of q_h k_h^T / sqrt(d) with masked keys left out, o_h = A v_h, and
    y = [o_0 ... o_{heads-1}] Wo + bo.  Wq, Wk, Wv, Wo: (F, F); bq, bk, bv, bo: (F,).

    ``causal``: query t sees keys s <= t.  ``pad_id``: the layer takes the token ids (batch, T)
    as a second input, ``forward(x, ids)``, and masks the keys whose id is ``pad_id`` for every
    query; ``backward`` then returns (dL/dx, None), the ids being integers without a gradient.
    A query that sees no key (all of them padding) attends to nothing: its weights are all 0,
    its row of every o_h is 0 (so its output is bo) and no gradient flows through its scores;
    forward and backward stay finite (where a plain softmax of -inf scores gives NaN).

    Init: Wq, Wk, Wv, Wo LeCun normal N(0, 1/F), biases zeros: scores are then of order 1, so the
    softmax is neither uniform nor saturated, either of which would hide a wrong Jacobian.
    """

    axis_names = {"input": ("time", "feature"),
                  **{f"W{p}": ("feature", "unit") for p in "qkvo"},
                  **{f"b{p}": ("unit",) for p in "qkvo"}}

    def __init__(self, heads: int, causal: bool = False, pad_id: int | None = None):
        super().__init__()
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise LayerError(f"attention: heads must be a positive integer, got {heads!r}.")
        if not isinstance(causal, bool):
            raise LayerError(f"attention: causal must be true or false, got {causal!r}.")
        if pad_id is not None and (isinstance(pad_id, bool) or not isinstance(pad_id, int)):
            raise LayerError(f"attention: pad_id must be an integer token id, got {pad_id!r}.",
                             hint="leave it out when the sequences have no padding")
        self.heads, self.causal, self.pad_id = heads, causal, pad_id

    def _input_name(self, index: int) -> str:
        names = self.input_names
        return repr(names[index]) if names and index < len(names) else f"input {index + 1}"

    def build(self, input_shape, rng):
        several = len(input_shape) > 0 and isinstance(input_shape[0], (tuple, list))
        shapes = [tuple(s) for s in input_shape] if several else [tuple(input_shape)]
        if len(shapes) > 2 or (len(shapes) == 2) != (self.pad_id is not None):
            raise LayerError(
                f"attention takes the sequence, plus the token ids when pad_id is set; it has "
                f"pad_id {self.pad_id!r} and {len(shapes)} input(s).",
                hint="wire the ids as the second input together with pad_id, or neither")
        if len(shapes[0]) != 2:
            raise LayerError(
                f"attention expects a per-sample sequence (time, features) as "
                f"{self._input_name(0)}, got shape {shapes[0]}.",
                hint="token ids go through an 'embedding' layer first")
        steps, features = shapes[0]
        if len(shapes) == 2 and shapes[1] != (steps,):
            raise LayerError(
                f"attention: the token ids {self._input_name(1)} have per-sample shape "
                f"{shapes[1]}, but the padding mask needs one id per time step of "
                f"{self._input_name(0)}: ({steps},).",
                hint="wire the ids the embedding read, not its output")
        if features % self.heads:
            raise LayerError(
                f"attention: the {features} features of {self._input_name(0)} do not split "
                f"into {self.heads} heads.",
                hint=f"choose heads dividing {features}, or a feature size divisible by "
                     f"{self.heads}")
        for p in PROJECTIONS:
            self.params[f"W{p}"] = rng.normal(0.0, np.sqrt(1.0 / features), (features, features))
            self.params[f"b{p}"] = np.zeros(features)
        return (steps, features)

    # -- the computation, shared by forward and perturbed_outputs --------------------------------

    def _split(self, a: np.ndarray) -> np.ndarray:
        """(batch, T, F) -> (batch, heads, T, d)."""
        batch, steps, features = a.shape
        return a.reshape(batch, steps, self.heads, features // self.heads).transpose(0, 2, 1, 3)

    @staticmethod
    def _merge(a: np.ndarray) -> np.ndarray:
        """(batch, heads, T, d) -> (batch, T, F)."""
        batch, heads, steps, size = a.shape
        return a.transpose(0, 2, 1, 3).reshape(batch, steps, heads * size)

    def _allowed(self, steps: int, ids) -> np.ndarray | None:
        """Which (query, key) pairs count, broadcastable to (batch, T, T); None when all do."""
        if self.pad_id is not None and ids is None:
            raise LayerError(f"layer {self.name!r} (attention) has pad_id {self.pad_id} but was "
                             "called without the token ids.", hint="call forward(x, ids)")
        if self.pad_id is None and ids is not None:
            raise LayerError(f"layer {self.name!r} (attention) got token ids but has no pad_id.",
                             hint="set pad_id, or call forward(x) alone")
        allowed = np.tri(steps, dtype=bool) if self.causal else None  # [t, s] = s <= t
        if ids is not None:
            keys = (np.asarray(ids) != self.pad_id)[:, None, :]
            allowed = keys if allowed is None else allowed & keys
        return allowed

    def _attend(self, x: np.ndarray, ids) -> types.SimpleNamespace:
        """Every intermediate of forward(x, ids)."""
        p = self.params
        c = types.SimpleNamespace(x=x, ids=ids, scale=1.0 / math.sqrt(x.shape[2] // self.heads))
        c.q, c.k, c.v = (self._split(x @ p[f"W{n}"] + p[f"b{n}"]) for n in "qkv")
        c.allowed = self._allowed(x.shape[1], ids)
        per_head = None if c.allowed is None else (
            c.allowed[:, None] if c.allowed.ndim == 3 else c.allowed)
        c.weights = masked_softmax((c.q @ c.k.transpose(0, 1, 3, 2)) * c.scale, per_head)
        c.heads_out = c.weights @ c.v
        c.merged = self._merge(c.heads_out)
        c.y = c.merged @ p["Wo"] + p["bo"]
        return c

    def forward(self, x, ids=None):
        self.cache = self._attend(x, ids)
        return self.cache.y

    def attention_weights(self):
        """A (batch, heads, T, T) of the last forward; with a mask, paired with which keys each
        query may see (the causal and padding masks, broadcastable to A)."""
        allowed = self.cache.allowed
        if allowed is None:
            return self.cache.weights
        return self.cache.weights, allowed[:, None] if allowed.ndim == 3 else allowed

    def backward(self, grad_out):
        c, p = self.cache, self.params
        features = grad_out.shape[2]
        self.grads["Wo"] = c.merged.reshape(-1, features).T @ grad_out.reshape(-1, features)
        self.grads["bo"] = grad_out.sum(axis=(0, 1))
        grad_heads = self._split(grad_out @ p["Wo"].T)
        grad_weights = grad_heads @ c.v.transpose(0, 1, 3, 2)
        # Softmax Jacobian: dS = A * (dA - sum_s dA * A); masked entries have A = 0, so dS = 0.
        grad_scores = c.weights * (grad_weights
                                   - (grad_weights * c.weights).sum(axis=-1, keepdims=True))
        grad_scores *= c.scale
        grads = {"q": grad_scores @ c.k, "k": grad_scores.transpose(0, 1, 3, 2) @ c.q,
                 "v": c.weights.transpose(0, 1, 3, 2) @ grad_heads}
        grad_x = np.zeros_like(c.x, dtype=grad_out.dtype)
        flat_x = c.x.reshape(-1, features)
        for n, grad in grads.items():
            merged = self._merge(grad)
            self.grads[f"W{n}"] = flat_x.T @ merged.reshape(-1, features)
            self.grads[f"b{n}"] = merged.sum(axis=(0, 1))
            grad_x += merged @ p[f"W{n}"].T
        return grad_x if c.ids is None else (grad_x, None)

    def perturbed_outputs(self, x, name, flat_indices, values, ids=None):
        """forward(x, ids) with ``params[name].flat[flat_indices[k]] = values[k]``, per copy k:
        (k, batch, T, F).

        A changed element (i, j) of a projection changes its column j by (value - old) times
        x[..., i] (or 1, for a bias). Through Wo/bo that is the output's column j; through Wv/bv
        column j of one head's o, times Wo's row j; through Wq/Wk/bq/bk one head's scores, so
        each copy recomputes that single head's softmax, never the whole layer."""
        c, p = self._attend(x, ids), self.params
        copies = np.arange(len(flat_indices))
        delta = (values - p[name].reshape(-1)[flat_indices]).astype(c.y.dtype)
        rows, cols = np.divmod(flat_indices, x.shape[2]) if name[0] == "W" else (None, flat_indices)
        source = c.merged if name[1] == "o" else x
        # (k, batch, T): the change of column cols[k] of the perturbed projection, per copy
        change = np.broadcast_to(delta[:, None, None] * (
            np.moveaxis(source[:, :, rows], -1, 0) if rows is not None else 1.0),
            (len(copies), *x.shape[:2]))
        out = np.repeat(c.y[None], len(copies), axis=0)
        if name[1] == "o":
            out[copies, :, :, cols] += change
            return out
        head, within = np.divmod(cols, x.shape[2] // self.heads)
        if name[1] == "v":
            weights = np.moveaxis(c.weights[:, head], 1, 0)  # (k, batch, T, T)
            head_change = (weights @ change[..., None])[..., 0]  # (k, batch, T)
            out += head_change[..., None] * p["Wo"][cols][:, None, None, :]
            return out
        q, k = (np.moveaxis(a[:, head], 1, 0) for a in (c.q, c.k))  # (k, batch, T, d) copies
        (q if name[1] == "q" else k)[copies, :, :, within] += change
        weights = masked_softmax((q @ k.transpose(0, 1, 3, 2)) * c.scale, c.allowed)
        head_change = weights @ np.moveaxis(c.v[:, head], 1, 0) - np.moveaxis(
            c.heads_out[:, head], 1, 0)
        blocks = p["Wo"].reshape(self.heads, -1, x.shape[2])[head]  # (k, d, F)
        out += head_change @ blocks[:, None]
        return out
