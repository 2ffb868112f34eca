"""Before any comparison: does each unit keep the contract a finite-difference check rests on?

A finite difference compares f(x+h) with f(x-h); if two calls of f on the same x differ, the
difference is noise and any verdict — PASS or FAIL — is chance. And the analytic gradient comes
from one call of backward; if a second call with the same upstream gradient gives something
else (a backward that updates its own cache), the network's real training steps get that
something else. So every unit is probed first:

- ``forward`` twice on its input in the network must agree bit for bit (or within
  ``check.nondet_tol``), and must leave the input unchanged;
- ``backward`` twice with the same upstream gradient, after one forward, must return the same
  input gradient and parameter gradients, and must leave the upstream gradient unchanged.

A unit that breaks one of these gets a problem (id, message, fix): its own verdict, exit 1,
naming the unit and the call, and no other unit is blamed for it.
"""

from __future__ import annotations

import numpy as np

from gradcheck.contract import Loss
from gradcheck.engine.base import runs
from gradcheck.network import Batch, Network, Pass
from gradcheck.usercode import invoke


def _problem(id_: str, message: str, fix: str) -> dict:
    return {"id": id_, "message": message, "fix": fix}


def _differ(a: np.ndarray, b: np.ndarray, tol: float) -> tuple[float, list[int]] | None:
    """The largest difference of two results and where it is, when above ``tol`` (a NaN
    difference decides nothing: non-finite values are refused elsewhere). Compared a run at a
    time, so no array-sized temporary is made."""
    a, b = np.atleast_1d(np.asarray(a)), np.atleast_1d(np.asarray(b))
    if a.shape != b.shape:
        return float("inf"), []
    if np.array_equal(a, b):  # the usual answer, in one pass (NaNs are never equal: see below)
        return None
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    worst, at = -1.0, 0
    for run in runs(flat_a.size):
        x, y = flat_a[run].astype(np.float64), flat_b[run].astype(np.float64)
        gap = np.abs(x - y)
        gap[np.isnan(x) & np.isnan(y)] = 0.0
        i = int(np.argmax(gap))
        if np.isnan(gap[i]):
            return None
        if gap[i] > worst:
            worst, at = float(gap[i]), run.start + i
    if not worst > tol:
        return None
    where = [int(i) for i in np.unravel_index(at, a.shape)] if a.size > 1 else []
    return worst, where


def _outputs(out) -> np.ndarray:
    """A unit's outputs (one array, or a tuple of them) as one float64 vector, copied."""
    parts = out if isinstance(out, tuple) else (out,)
    return np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in parts])


def unit_problems(unit, xs: list[np.ndarray], upstream, nondet_tol: float,
                  target: np.ndarray | None = None) -> list[dict]:
    """The broken contract of one unit (a layer given its inputs ``xs`` and the upstream
    gradient of each output, or the loss given its predictions ``[x]`` and ``target``)."""
    is_loss = isinstance(unit, Loss)
    args = (*xs, target) if is_loss else tuple(xs)
    before = [np.array(x, copy=True) for x in xs]
    first = _outputs(invoke(unit, "forward", unit.forward, *args))
    found = []
    if not all(np.array_equal(x, b) for x, b in zip(xs, before)):
        found.append(_problem("forward-writes-input", f"{unit.name}: forward writes into its "
                              "input (the array the previous layer returned changed)",
                              "compute into a new array (y = x * m, not x *= m)"))
        for x, b in zip(xs, before):
            x[...] = b
    buffers = {name: np.array(value, copy=True) for name, value in unit.buffers.items()}
    second = _outputs(invoke(unit, "forward", unit.forward, *args))
    gap = _differ(first, second, nondet_tol)
    if gap is not None:
        drifted = [name for name, value in buffers.items()
                   if not np.array_equal(unit.buffers.get(name), value)]
        found.append(_problem(
            "nondeterministic-forward",
            f"{unit.name}: forward is not deterministic: two calls on the same input differ by "
            f"{gap[0]:.2g}" + (f" at {gap[1]}" if gap[1] else "") +
            (f"; forward changes the buffers {', '.join(drifted)} that it reads" if drifted
             else ""),
            "update running statistics outside forward (or only read them in eval mode)"
            if drifted else "draw random masks from self.rng (set uses_rng = True on the "
            "class), or fix them for the check; for a nondeterministic kernel, set "
            "check.nondet_tol"))
    outputs = []
    for call in range(2):
        given = [] if is_loss else [np.array(g, copy=True) for g in upstream]
        dx = invoke(unit, "backward", unit.backward, *given)
        if not all(np.array_equal(g, u) for g, u in zip(given, upstream or [])):
            found.append(_problem("backward-writes-upstream", f"{unit.name}: backward writes "
                                  "into the upstream gradient it is given",
                                  "compute into a new array (g = grad_out * m, not "
                                  "grad_out *= m)"))
        # The first call's results are copied (the second may write into the same arrays); the
        # second's are compared as they are, so a large layer's gradients are held once more,
        # not twice.
        keep = np.array if call == 0 else np.asarray
        parts = [p for p in (dx if isinstance(dx, tuple) else (dx,)) if p is not None]
        joined = keep(parts[0]) if len(parts) == 1 else np.concatenate(
            [np.asarray(p, dtype=np.float64).reshape(-1) for p in parts] or [np.zeros(0)])
        outputs.append((joined, {k: keep(v) for k, v in unit.grads.items()}))
    (dx1, grads1), (dx2, grads2) = outputs
    for name, a, b in [("the input gradient", dx1, dx2),
                       *((f"grads[{k!r}]", grads1[k], grads2.get(k)) for k in grads1)]:
        gap = None if b is None else _differ(a, b, nondet_tol)
        if gap is not None:
            found.append(_problem(
                "backward-not-idempotent",
                f"{unit.name}: backward is not idempotent: called twice with the same upstream "
                f"gradient after one forward, {name} differs by {gap[0]:.2g}"
                + (f" at {gap[1]}" if gap[1] else ""),
                "do not update cached arrays in place in backward (s = s * g, not s *= g); "
                "backward must only read what forward cached"))
            break
    return found


def contract_problems(network: Network, clean: Pass, batch: Batch,
                      nondet_tol: float) -> dict[int, list[dict]]:
    """Problems per unit index (layers, then the loss), for units that have any."""
    found = {}
    n = len(network.layers)
    for k, unit in enumerate(network.units):
        upstream = None if k == n else [
            g.astype(t.dtype) for g, t in zip(clean.upstream[k],
                                              (clean.tensors[o] for o in network.outputs[k]))]
        xs = [np.array(x, copy=True) for x in clean.args[k]]
        problems = unit_problems(unit, xs, upstream, nondet_tol,
                                 batch.target if k == n else None)
        if problems:
            found[k] = problems
    return found
