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


def unit_problems(unit, x: np.ndarray, upstream: np.ndarray, nondet_tol: float,
                  target: np.ndarray | None = None) -> list[dict]:
    """The broken contract of one unit (a layer given its input ``x`` and upstream gradient, or
    the loss given its predictions ``x`` and ``target``)."""
    is_loss = isinstance(unit, Loss)
    args = (x, target) if is_loss else (x,)
    before = np.array(x, copy=True)
    first = np.array(invoke(unit, "forward", unit.forward, *args), dtype=np.float64, copy=True)
    found = []
    if not np.array_equal(x, before):
        found.append(_problem("forward-writes-input", f"{unit.name}: forward writes into its "
                              "input (the array the previous layer returned changed)",
                              "compute into a new array (y = x * m, not x *= m)"))
        x[...] = before
    second = np.asarray(invoke(unit, "forward", unit.forward, *args), dtype=np.float64)
    gap = _differ(first, second, nondet_tol)
    if gap is not None:
        found.append(_problem(
            "nondeterministic-forward",
            f"{unit.name}: forward is not deterministic: two calls on the same input differ by "
            f"{gap[0]:.2g}" + (f" at {gap[1]}" if gap[1] else ""),
            "draw random masks from self.rng (set uses_rng = True on the class), or fix them "
            "for the check; for a nondeterministic kernel, set check.nondet_tol"))
    outputs = []
    for call in range(2):
        given = None if is_loss else np.array(upstream, copy=True)
        dx = invoke(unit, "backward", unit.backward) if is_loss else \
            invoke(unit, "backward", unit.backward, given)
        if given is not None and not np.array_equal(given, upstream):
            found.append(_problem("backward-writes-upstream", f"{unit.name}: backward writes "
                                  "into the upstream gradient it is given",
                                  "compute into a new array (g = grad_out * m, not "
                                  "grad_out *= m)"))
        # The first call's results are copied (the second may write into the same arrays); the
        # second's are compared as they are, so a large layer's gradients are held once more,
        # not twice.
        keep = np.array if call == 0 else np.asarray
        outputs.append((keep(dx), {k: keep(v) for k, v in unit.grads.items()}))
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
        upstream = None if k == n else clean.grad_in[k + 1].astype(network.dtype)
        x = np.array(clean.inputs[k], copy=True)
        problems = unit_problems(unit, x, upstream, nondet_tol,
                                 batch.target if k == n else None)
        if problems:
            found[k] = problems
    return found
