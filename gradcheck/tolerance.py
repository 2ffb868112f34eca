"""The one tolerance policy: default steps and tolerances by dtype, and the per-element test.

An element passes when

    |analytic - numeric| <= rtol * max(|analytic|, |numeric|) + atol + noise

where ``noise`` is the round-off a central difference cannot avoid: each loss value carries a
relative error of a few ulps, so (L+ - L-) / (2h) is uncertain by about
``ROUND_OFF_ULPS * finfo.eps * max(|L+|, |L-|) / (2h)``. Without this term a large loss (say a
regression on targets around 50) makes every tiny gradient "fail" on pure round-off.

The relative error reported is ``|a - n| / (max(|a|, |n|) + (atol + noise) / rtol)``: it equals
the usual symmetric relative error for gradients well above the floor, stays finite for tiny ones,
and an element passes exactly when it is <= rtol. One number, one threshold.

Defaults. float64: h = 1e-6 balances truncation (~h^2 |L'''|, 1e-12) against round-off
(~1e-16 |L| / h, 1e-10), leaving ~1e-10 absolute error; rtol = 1e-5 is 100x above that for
gradients of order 1e-3 and more, yet a missing factor, a wrong sign or an off-by-one in a loop
bound is off by far more than 1e-5. float32: round-off is ~1e9 times larger, so h = 1e-3
(near eps^(1/3), the optimum for central differences) and rtol = 1e-2.
"""

from __future__ import annotations

import dataclasses

import numpy as np

ROUND_OFF_ULPS = 32.0


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Finite-difference step and comparison tolerances."""

    eps: float
    rtol: float
    atol: float


DEFAULTS = {
    np.dtype(np.float64): Tolerance(eps=1e-6, rtol=1e-5, atol=1e-8),
    np.dtype(np.float32): Tolerance(eps=1e-3, rtol=1e-2, atol=1e-4),
}


def resolve(dtype, eps: float | None = None, rtol: float | None = None,
            atol: float | None = None) -> Tolerance:
    """The defaults for ``dtype`` with any explicitly given value taking precedence."""
    base = DEFAULTS[np.dtype(dtype)]
    return Tolerance(eps=base.eps if eps is None else eps,
                     rtol=base.rtol if rtol is None else rtol,
                     atol=base.atol if atol is None else atol)


def round_off(dtype, loss_scale: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Round-off bound of a central difference with losses of size ``loss_scale`` and step
    ``step`` (the actual distance between the perturbed values, 2h)."""
    return ROUND_OFF_ULPS * np.finfo(np.dtype(dtype)).eps * loss_scale / step


def relative_error(analytic: np.ndarray, numeric: np.ndarray, tol: Tolerance,
                   noise: np.ndarray | float = 0.0) -> np.ndarray:
    """Floored symmetric relative error; an element passes when it is <= ``tol.rtol``."""
    scale = np.maximum(np.abs(analytic), np.abs(numeric)) + (tol.atol + noise) / tol.rtol
    return np.abs(analytic - numeric) / scale
