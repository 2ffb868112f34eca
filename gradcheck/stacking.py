"""Run many perturbed copies of a network's tail in one vectorised pass.

Python overhead, not arithmetic, dominates a finite-difference check of a small network: one
forward per perturbation costs a few microseconds of numpy per layer but tens of microseconds of
interpreter. So the engine stacks perturbed copies along the batch axis and runs the tail once per
*chunk* of copies. Layout: a stacked batch has ``levels * B`` rows, and row ``p`` always stands for
row ``p mod B`` of the real batch (the contract lets a layer that depends on the batch position,
like dropout, rely on that). A layer that mixes the batch (``mixes_batch``) is run on each level's
B rows separately, so it never sees rows of another copy — in one call when it offers
``forward_groups``, else one call per level.

A chunk is bounded by ``max_bytes`` (see ``levels_for``), so memory stays bounded whatever the
network size: at least one +h/-h pair is always evaluated together.
"""

from __future__ import annotations

import numpy as np

from gradcheck.contract import Layer, Loss
from gradcheck.network import Network
from gradcheck.usercode import invoke

# 16 MiB keeps each layer's stacked arrays a few MiB, within L3: measured on N1/N4 ~20% faster
# than 64 MiB and than 4-8 MiB (where per-chunk Python overhead grows).
DEFAULT_MAX_BYTES = 16 * 2**20
# Live copies of the widest activation while a stacked chunk runs: the input of a layer, its
# output and what the layer caches for backward (padded input, masks, argmaxes).
LIVE_COPIES = 4


class Unbatchable(Exception):
    """A layer broke the stacking assumptions (changed the batch size, or returned a branch state
    whose first axis is not the batch); the caller falls back to one evaluation per copy."""


def has_branch_state(unit) -> bool:
    """Whether the unit overrides the contract's default (stateless) ``branch_state``."""
    default = Loss.branch_state if isinstance(unit, Loss) else Layer.branch_state
    return type(unit).branch_state is not default


def mixes_batch(unit) -> bool:
    """Whether one sample's output of ``unit`` depends on other samples (instance or class flag)."""
    return bool(getattr(unit, "mixes_batch", False))


def levels_for(network: Network, start: int, batch: int, max_bytes: int | None) -> int:
    """How many copies of the batch (levels) one stacked pass may hold from unit ``start`` on.

    Always even and at least 2: a +h/-h pair must fit, or no central difference could be taken.
    """
    budget = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    widest = max(int(np.prod(shape, dtype=np.int64)) for shape in network.shapes[start:])
    itemsize = max(network.dtype.itemsize, 8)
    per_level = max(1, batch * widest * itemsize * LIVE_COPIES)
    levels = int(budget // per_level)
    return max(2, levels - levels % 2)


def run_tail(network: Network, x: np.ndarray, start: int, levels: int, batch: int,
             end: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run layers ``start`` to ``end`` (exclusive; default: the last layer) on ``x`` of
    ``levels * batch`` stacked rows.

    Returns the prediction (same row layout) and the branch state of every stateful layer run,
    each with the stacked rows as first axis.
    """
    rows = levels * batch
    states: list[np.ndarray] = []
    for layer in network.layers[start:end]:
        want_state = has_branch_state(layer)
        grouped = getattr(layer, "forward_groups", None)
        if mixes_batch(layer) and levels > 1 and callable(grouped) and not want_state:
            x = invoke(layer, "forward", grouped, x, batch)
            state = None
        elif mixes_batch(layer) and levels > 1:
            outs, parts = [], []
            for level in range(levels):
                outs.append(invoke(layer, "forward", layer.forward,
                                   x[level * batch:(level + 1) * batch]))
                if want_state:
                    parts.append(invoke(layer, "branch_state", layer.branch_state))
            x = np.concatenate(outs)
            state = _join_states(parts) if want_state else None
        else:
            x = invoke(layer, "forward", layer.forward, x)
            state = invoke(layer, "branch_state", layer.branch_state) if want_state else None
        if not isinstance(x, np.ndarray) or x.ndim == 0 or x.shape[0] != rows:
            raise Unbatchable(f"layer {layer.name!r} did not keep the batch size")
        if state is not None:
            state = np.asarray(state)
            if state.ndim == 0 or state.shape[0] != rows:
                raise Unbatchable(f"layer {layer.name!r} has a branch state without a batch axis")
            states.append(state)
    return x, states


def _join_states(parts: list) -> np.ndarray | None:
    if all(p is None for p in parts):
        return None
    if any(p is None for p in parts):
        raise Unbatchable("a branch state is None for some copies only")
    return np.concatenate([np.asarray(p) for p in parts])


def copy_losses(network: Network, preds: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, list]:
    """The loss of each copy ``preds[c]`` (a whole batch), and the loss's branch state per copy
    (empty when the loss has none).

    A stateless loss evaluates all copies in one ``forward_many`` call; a loss with a branch
    state is run copy by copy, since the state describes only its most recent forward.
    """
    loss = network.loss
    many = getattr(loss, "forward_many", None)
    if not has_branch_state(loss) and callable(many):
        values = invoke(loss, "forward", many, preds, target)
        values = np.asarray(values, dtype=np.float64)
        if values.shape == (len(preds),):
            return values, []
    values = np.empty(len(preds))
    states = []
    for c, pred in enumerate(preds):
        values[c] = network.loss_value(pred, target)
        if has_branch_state(loss):
            states.append(invoke(loss, "branch_state", loss.branch_state))
    return values, states


def pair_kinks(states: list[np.ndarray], levels: int, plus_rows, minus_rows) -> np.ndarray:
    """For each pair j, whether any state differs between its +h rows and its -h rows.

    ``states`` hold stacked rows (levels * B first). ``plus_rows``/``minus_rows`` index the rows
    of the reshaped (levels, B, -1) state: tuples of index arrays, e.g. (level, column) for single
    rows or (level,) for whole copies.
    """
    n = len(plus_rows[0])
    kinked = np.zeros(n, dtype=bool)
    for state in states:
        grouped = _as_words(state.reshape(levels, state.shape[0] // levels, -1))
        a, b = grouped[plus_rows], grouped[minus_rows]
        kinked |= np.any(a != b, axis=tuple(range(1, a.ndim)))
    return kinked


def adjacent_pair_kinks(states: list[np.ndarray], copies: int) -> np.ndarray:
    """``pair_kinks`` for whole copies ordered +h, -h, +h, ...: pair j is copies 2j and 2j + 1,
    compared through views instead of gathered copies."""
    kinked = np.zeros(copies // 2, dtype=bool)
    for state in states:
        grouped = _as_words(state.reshape(copies // 2, 2, -1))
        kinked |= np.any(grouped[:, 0] != grouped[:, 1], axis=1)
    return kinked


def _as_words(grouped: np.ndarray) -> np.ndarray:
    """Masks and argmaxes viewed as 8-byte words, so they compare 8 bytes at a time: equal bytes
    are equal values for bools and integers (not for floats: -0.0 == 0.0)."""
    if (grouped.dtype.kind in "biu" and grouped.flags.c_contiguous
            and grouped.shape[-1] * grouped.itemsize % 8 == 0):
        return grouped.view(np.uint64)
    return grouped


def copy_state_kinks(per_copy: list, plus: np.ndarray, minus: np.ndarray) -> np.ndarray:
    """Kinks from branch states recorded once per copy (a list over copies, possibly None)."""
    kinked = np.zeros(len(plus), dtype=bool)
    if not per_copy:
        return kinked
    for j, (p, m) in enumerate(zip(plus, minus)):
        sp, sm = per_copy[p], per_copy[m]
        if sp is None and sm is None:
            continue
        kinked[j] = (sp is None or sm is None or np.shape(sp) != np.shape(sm)
                     or not np.array_equal(sp, sm))
    return kinked
