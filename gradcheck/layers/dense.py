"""Fully connected layer."""

from __future__ import annotations

import numpy as np

from gradcheck.errors import LayerError
from gradcheck.contract import Layer
from gradcheck.layers.init import parse_init
from gradcheck.registry import register_layer


@register_layer("dense")
class Dense(Layer):
    """y = x @ W + b.  x: (batch, [T,] fan_in) -> y: (batch, [T,] units); W: (fan_in, units).

    A sequence x: (batch, T, fan_in) gives y: (batch, T, units), the same W and b applied at every
    time step ("time distributed").  ``init`` draws W (default he: N(0, 2/fan_in)), ``bias_init``
    draws b (default zeros); see ``gradcheck.layers.init`` for the names.
    """

    # The input's names follow its rank (set in build): features, or time steps of features.
    axis_names = {"input": ("input feature",), "W": ("input feature", "unit"), "b": ("unit",)}

    def __init__(self, units: int, bias: bool = True, init="he", bias_init="zeros"):
        super().__init__()
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise LayerError(f"units must be a positive integer, got {units!r}.")
        if not isinstance(bias, bool):
            raise LayerError(f"bias must be true or false, got {bias!r}.")
        self.units = units
        self.bias = bias
        self.init = parse_init(init, "init", "dense")
        self.bias_init = parse_init(bias_init, "bias_init", "dense")

    def build(self, input_shape, rng):
        if len(input_shape) not in (1, 2):
            raise LayerError(
                f"dense expects a flat input (features,) or a sequence (time, features), got "
                f"per-sample shape {tuple(input_shape)}.",
                hint="insert a 'flatten' layer before it")
        fan_in = input_shape[-1]
        self.axis_names = {**type(self).axis_names,
                           "input": ("time", "input feature")[-len(input_shape):]}
        self.params["W"] = self.init(rng, (fan_in, self.units), fan_in, self.units)
        if self.bias:
            self.params["b"] = self.bias_init(rng, (self.units,), fan_in, self.units)
        return (*input_shape[:-1], self.units)

    def forward(self, x):
        self.x = x
        y = x @ self.params["W"]
        return y + self.params["b"] if self.bias else y

    def perturbed_outputs(self, x, name, flat_indices, values):
        """forward(x) with one element of W or b replaced, per copy: (n, batch, [T,] units).

        y is affine in W and b, so W[i, j] -> v adds (v - W[i, j]) * x[..., i] to column j only."""
        y = x @ self.params["W"] + self.params["b"] if self.bias else x @ self.params["W"]
        copies = np.arange(len(flat_indices))
        delta = (values - self.params[name].reshape(-1)[flat_indices]).astype(y.dtype)
        out = np.repeat(y[None], len(copies), axis=0)
        per_copy = delta.reshape(-1, *(1,) * (x.ndim - 1))  # against (k, batch[, T])
        if name == "W":
            rows, cols = np.divmod(flat_indices, self.units)
            out[copies, ..., cols] += per_copy * np.moveaxis(x[..., rows], -1, 0)
        else:
            out[copies, ..., flat_indices] += per_copy
        return out

    def perturbed_input_rows(self, x, flat_indices, values):
        """Row ``flat_indices[k] // (x.size // batch)`` of forward(x) with that element of x
        replaced by ``values[k]``, per k: (k, [T,] units). x[n, (t,) i] -> v adds
        (v - x[n, (t,) i]) * W[i] to row n (at step t)."""
        n, within = np.divmod(flat_indices, x.size // x.shape[0])
        step, i = np.divmod(within, x.shape[-1])
        delta = (values - x.reshape(-1)[flat_indices]).astype(x.dtype)
        clean = x @ self.params["W"] + self.params["b"] if self.bias else x @ self.params["W"]
        change = delta[:, None] * self.params["W"][i]
        if x.ndim == 2:
            return clean[n] + change
        out = clean[n]
        out[np.arange(len(n)), step] += change
        return out

    def objective_changes(self, x, grad_out, name, flat_indices, values):
        """The optional contract speed-up: the change of sum(grad_out * forward(x)) when one
        element of x, W or b becomes ``values[k]``, per k. y is affine in each: x[n, (t,) i]
        changes row n (step t) by delta * W[i]; W[i, j] changes column j by delta * x[..., i];
        b[j] changes column j by delta. Magnitudes: sum |grad_out * y| over what changed."""
        idx = np.asarray(flat_indices, dtype=np.intp)
        g = grad_out.astype(np.float64).reshape(-1, self.units)
        clean = self.forward(x).astype(np.float64).reshape(-1, self.units)
        weight = self.params["W"].astype(np.float64)
        inputs = x.astype(np.float64).reshape(-1, weight.shape[0])  # (batch [* T], fan_in)
        if name == "input":
            delta = np.asarray(values, np.float64) - inputs.reshape(-1)[idx]
            row, i = np.divmod(idx, weight.shape[0])
            moved = delta[:, None] * weight[i]  # (k, units)
            return (np.einsum("ku,ku->k", g[row], moved),
                    np.einsum("ku,ku->k", np.abs(g[row]), np.abs(clean[row] + moved) *
                              (moved != 0)), None)
        delta = np.asarray(values, np.float64) - self.params[name].astype(np.float64).reshape(
            -1)[idx]
        if name == "W":
            i, j = np.divmod(idx, self.units)
            moved = delta * inputs[:, i]  # (batch [* T], k)
        else:
            j = idx
            moved = np.broadcast_to(delta, (len(g), len(idx)))
        return (np.einsum("mk,mk->k", g[:, j], moved),
                np.einsum("mk,mk->k", np.abs(g[:, j]), np.abs(clean[:, j] + moved) *
                          (moved != 0)), None)

    def backward(self, grad_out):
        fan_in = self.x.shape[-1]
        self.grads["W"] = self.x.reshape(-1, fan_in).T @ grad_out.reshape(-1, self.units)
        if self.bias:
            self.grads["b"] = grad_out.reshape(-1, self.units).sum(axis=0)
        return grad_out @ self.params["W"].T
