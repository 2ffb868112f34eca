"""Sequence models: gradients through time, attention at initialisation, and token ids the data
never use.

- **Through time** (Bengio et al. 1994; Pascanu et al. 2013): a layer that carries its input
  through time sends the last step's loss back to every earlier step, and the part that reaches
  the first step shrinks or grows geometrically with the steps between. Measured on the layer's
  input gradient with the network's upstream gradient kept at the last time step only, so the
  ratio |dL/dx_0| / |dL/dx_{T-1}| is what crosses T - 1 steps, undiluted by the losses of earlier
  steps (which reach x_0 directly); its (T - 1)-th root is the factor per step. A layer that
  works step by step sends nothing to x_0 and is not measured.
- **Attention collapse** (Zhai et al. 2023): at initialisation attention should spread over the
  keys; a head whose weights' entropy is a small share of log(keys it sees) has collapsed onto
  single keys, its softmax saturated, so the gradients of its queries and keys vanish. Read
  through the optional contract method ``Layer.attention_weights``.
- **Unused ids**: an embedding row whose id never occurs in the data gets no gradient, and keeps
  its random initial vector for ever.
"""

from __future__ import annotations

import numpy as np

from gradcheck.contract import Layer
from gradcheck.diagnose import graph
from gradcheck.diagnose import thresholds as T
from gradcheck.diagnose.findings import Finding, finding
from gradcheck.diagnose.measure import measured
from gradcheck.errors import LayerError
from gradcheck.network import Network, Pass
from gradcheck.usercode import invoke


def through_time(network: Network, run: Pass) -> list[Finding]:
    """Vanishing or exploding gradients through time, per layer that carries its input through
    time, on one complete ``run``. Vanishing is judged per step (a gated cell at its default
    init keeps a constant share per step, whatever the length, which training then raises);
    exploding over the whole sequence (what makes the updates huge)."""
    found = []
    for k, layer in enumerate(network.layers):
        ratio = _time_ratio(network, run, k)
        if ratio is None:
            continue
        steps = run.args[k][0].shape[1]
        per_step = ratio ** (1.0 / (steps - 1))
        measured("TIME_VANISH_STEP", per_step)
        measured("TIME_EXPLODE", ratio)
        what = (f"|dL/dx| at the first of {steps} time steps over the last, with the upstream "
                f"gradient at the last step only, is {ratio:.3g}: {per_step:.3g} x per step")
        if per_step < T.TIME_VANISH_STEP:
            found.append(finding(
                "backward", "vanishing-through-time", "warn", layer.name, per_step,
                f"(|g_first step| / |g_last step|)^(1/(T-1)) >= {T.TIME_VANISH_STEP:g}",
                f"gradients vanish through time in {layer.name}: {what}, less than a sigmoid's "
                "steepest slope (1/4), so the loss at a step barely reaches the inputs a few "
                "steps before it and longer dependencies cannot be learnt",
                f"draw {layer.name}'s recurrent weights orthogonal (spectral radius 1), use a "
                "gated cell (lstm with a forget-gate bias of 1, or gru), and keep sigmoid units "
                "out of the recurrence"))
        elif ratio > T.TIME_EXPLODE:
            found.append(finding(
                "backward", "exploding-through-time", "warn", layer.name, ratio,
                f"|g_first step| / |g_last step| <= {T.TIME_EXPLODE:g}",
                f"gradients explode through time in {layer.name}: {what}; the recurrence "
                "amplifies what it carries back, and the longer the sequence the larger the "
                "updates",
                f"draw {layer.name}'s recurrent weights orthogonal or scaled to a spectral radius "
                "<= 1, and clip the gradient norm while training"))
    return found


def _time_ratio(network: Network, run: Pass, k: int) -> float | None:
    """|dL/dx_0| / |dL/dx_{T-1}| of layer ``k``'s real-valued sequence inputs, from the
    network's upstream gradient at the last step alone; None when the layer does not read a
    sequence, or does not carry it through time."""
    args, layer = run.args[k], network.layers[k]
    slots = [j for j, t in enumerate(network.sources[k])
             if t not in network.integer and args[j].ndim == 3 and args[j].shape[1] >= 2]
    if not slots:
        return None
    steps = args[slots[0]].shape[1]
    upstream = []
    for g, t in zip(run.upstream[k], network.outputs[k]):
        g = np.array(g, dtype=run.tensors[t].dtype)
        if g.ndim >= 3 and g.shape[1] == steps:
            g[:, :-1] = 0
        upstream.append(g)
    grads = graph.input_gradients(layer, args, upstream)
    if grads is None:
        return None
    same = [np.asarray(grads[j], dtype=np.float64) for j in slots
            if grads[j] is not None and args[j].shape[1] == steps]
    first = float(np.sqrt(sum(np.sum(g[:, 0] ** 2) for g in same)))
    last = float(np.sqrt(sum(np.sum(g[:, -1] ** 2) for g in same)))
    if not (first > 0 and last > 0 and np.isfinite(first) and np.isfinite(last)):
        return None  # step by step (nothing reaches x_0), or nothing reaches the last step
    return first / last


def attention_collapse(network: Network, run: Pass) -> list[Finding]:
    """Heads whose attention, at the current weights on ``run``'s inputs, has collapsed onto
    single keys."""
    found = []
    for k, layer in enumerate(network.layers):
        if type(layer).attention_weights is Layer.attention_weights:
            continue  # the contract's default: it does not attend
        with np.errstate(all="ignore"):
            # Again on the batch: the probes since may have left another input's weights.
            invoke(layer, "forward", layer.forward, *run.args[k])
            got = invoke(layer, "attention_weights", layer.attention_weights)
        if got is None:
            continue
        weights, allowed = _attention(layer, got, len(run.args[k][0]))
        shares = head_entropy(weights, allowed)
        if shares is None:
            continue
        low = float(np.min(shares))
        measured("ATTENTION_ENTROPY", low)
        if low >= T.ATTENTION_ENTROPY:
            continue
        heads = [h for h, s in enumerate(shares) if s < T.ATTENTION_ENTROPY]
        named = ", ".join(f"{h} ({shares[h]:.2g})" for h in heads)
        found.append(finding(
            "forward", "attention-collapse", "warn", layer.name, low,
            f"entropy >= {T.ATTENTION_ENTROPY:g} x log(keys)",
            f"{len(heads)} of {len(shares)} heads of {layer.name} put (almost) all their weight "
            f"on single keys at initialisation: the entropy of their attention is a small share "
            f"of log(keys they see), head {named}, against about 1 for attention spread over the "
            "keys; their softmax is saturated, so the gradients of their queries and keys "
            "vanish and they cannot learn where to attend",
            f"scale {layer.name}'s query and key weights down to N(0, 1/features) and divide the "
            "scores by sqrt(head size), or normalise its input (layernorm)"))
    return found


def _attention(layer, got, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The weights and the allowed mask (broadcast to them) that ``attention_weights``
    returned, checked."""
    weights, allowed = got if isinstance(got, tuple) and len(got) == 2 else (got, None)
    problem = None
    if not isinstance(weights, np.ndarray) or weights.ndim != 4 or len(weights) != rows:
        problem = (f"returned {type(weights).__name__} of shape {np.shape(weights)}, expected "
                   f"an array (batch={rows}, heads, queries, keys)")
    elif allowed is not None:
        try:
            allowed = np.broadcast_to(np.asarray(allowed, dtype=bool), weights.shape)
        except ValueError:
            problem = (f"returned a mask of shape {np.shape(allowed)} that does not broadcast "
                       f"to the weights' {weights.shape}")
    if problem is None and not (np.all(np.isfinite(weights)) and np.all(weights >= 0)):
        problem = "returned weights that are negative or not finite"
    if problem is not None:
        raise LayerError(f"layer {layer.name!r}: attention_weights() {problem}.",
                         hint="return the softmax weights of the last forward, (batch, heads, "
                              "queries, keys), optionally with a boolean mask of the keys each "
                              "query may see", path=getattr(layer, "yaml_path", None),
                         where=getattr(layer, "yaml_where", None))
    if allowed is None:
        allowed = np.ones(weights.shape, dtype=bool)
    return np.asarray(weights, dtype=np.float64), allowed


def head_entropy(weights: np.ndarray, allowed: np.ndarray) -> np.ndarray | None:
    """Per head, the mean over samples and queries of the entropy of a query's attention over
    log(the number of keys it sees), among queries that see two keys or more; None if none
    does. 1 is attention spread evenly, 0 all of it on one key."""
    keys = allowed.sum(axis=-1)
    rows = (keys >= 2) & (weights.sum(axis=-1) > 0)  # a query that sees nothing has all 0
    if not rows.any():
        return None
    with np.errstate(all="ignore"):
        terms = np.where(allowed & (weights > 0), weights * np.log(weights), 0.0)
    share = -terms.sum(axis=-1) / np.log(np.maximum(keys, 2))
    per_head = np.moveaxis(share, 1, 0).reshape(weights.shape[1], -1)
    counted = np.moveaxis(rows, 1, 0).reshape(weights.shape[1], -1)
    return np.array([float(np.mean(s[c])) if c.any() else 1.0
                     for s, c in zip(per_head, counted)])


def unused_ids(network: Network, run: Pass, loaded: set[str]) -> list[Finding]:
    """Embedding rows that get no gradient because their id never occurs in the batch's ids.

    A lookup table is found by behaviour: a parameter of a layer reading the ids with a row for
    every id that occurs (its first axis longer than the largest), whose total gradient is
    exactly zero on the rows of the ids that never occur, and not on all of them (a tied output
    layer gives every row a gradient: nothing is said then). ``loaded``: the integer inputs
    read from a file (the user's data: a warning); for ids drawn from the seed the finding is
    ``info``, saying that the draw leaves them out.
    """
    found = []
    totals = dict(zip([(k, n) for k, n, _ in graph.parameters(network)],
                      graph.total_gradients(network, run.grads)))
    for name in sorted(network.integer):
        ids = run.tensors[name]
        for k in sorted({unit for unit, _ in network.readers(name) if unit < len(network.layers)}):
            for pname in network.layers[k].params:
                grad = totals.get((k, pname))
                if grad is None or grad.ndim < 1 or grad.shape[0] <= int(np.max(ids)):
                    continue
                size = grad.shape[0]
                missing = np.setdiff1d(np.arange(size), ids)
                silent = ~np.any(grad.reshape(size, -1), axis=1)
                if missing.size and silent[missing].all() and not silent.all():
                    found.append(_unused(network, k, pname, name, missing, size,
                                         name in loaded))
    return found


def _unused(network: Network, k: int, pname: str, name: str, missing: np.ndarray, size: int,
            loaded: bool) -> Finding:
    label = graph.param_label(network, k, pname)
    shown = ", ".join(str(i) for i in missing[:8]) + (", ..." if missing.size > 8 else "")
    where = graph.words(network, name)
    if loaded:
        return finding(
            "backward", "unused-ids", "warn", network.layers[k].name, float(missing.size),
            "every id in [0, vocab) occurs in the data",
            f"{missing.size} of the {size} ids never occur in {where} ({shown}): their rows of "
            f"{label} get no gradient and keep their random initial values, which is what those "
            "tokens will map to at inference",
            "add data in which those ids occur, map rare tokens to one shared unknown-token id, "
            "or lower vocab to the ids the data use")
    return finding(
        "backward", "unused-ids", "info", network.layers[k].name, float(missing.size),
        "every id in [0, vocab) occurs in the data",
        f"the ids drawn for {where} leave out {missing.size} of the {size} ids ({shown}), so "
        f"their rows of {label} get no gradient on this batch",
        "load your own ids (input: {file: ids.npy}) to see whether your data cover the "
        "vocabulary")
