"""What built-in layers share to offer the optional contract method ``objective_changes``:
the change of their objective sum(grad_out * forward(x)) when one input element is replaced,
per copy, in a few operations instead of a forward per copy (see ``gradcheck.contract``)."""

from __future__ import annotations

import numpy as np


def elementwise_changes(f, x: np.ndarray, grad_out: np.ndarray, flat_indices, values,
                        branch=None):
    """For a layer whose output element i is ``f(x_i, i)`` (the same shape as x, nothing else
    read): each copy changes one output element. ``f(values, flat_indices)`` maps values at flat
    positions; ``branch(values, flat_indices)`` gives the branch each takes (rectifiers)."""
    flat_indices = np.asarray(flat_indices, dtype=np.intp)
    values = np.asarray(values, dtype=x.dtype)
    old = f(x.reshape(-1)[flat_indices], flat_indices)
    new = f(values, flat_indices)
    weight = grad_out.reshape(-1)[flat_indices].astype(np.float64)
    change = new.astype(np.float64) - old.astype(np.float64)
    magnitudes = np.abs(weight * new) * (change != 0)
    branches = None if branch is None else np.asarray(branch(values, flat_indices), dtype=np.int8)
    return weight * change, magnitudes, branches
