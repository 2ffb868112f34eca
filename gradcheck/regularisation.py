"""Weight decay, checked apart from the data loss.

When the config declares ``train: {weight_decay: lambda}``, training minimises
L_data + 0.5 * lambda * sum(W**2) over the weight tensors, and the optimiser adds lambda * W to
each weight's data gradient (``gradcheck.diagnose.optim`` does exactly that). Checked together,
a large lambda * W drowns the data gradient: a data gradient off by 10% disappears inside a
relative error of 1e-6. So the two are checked separately: every target's data gradient against
the network's loss alone (the layers' backward returns the data gradient only), and the L2 term
lambda * W against central differences of 0.5 * lambda * W**2 in the network's dtype, as its own
check (``term: "l2"``). A backward that adds the decay itself fails the data check with the
pattern ``includes_weight_decay``.

Weight tensors are parameters with two or more axes (dense matrices, conv kernels): biases and
normalisation scales are not decayed, the usual practice.
"""

from __future__ import annotations

import numpy as np

from gradcheck.compare import element_steps
from gradcheck.engine.base import Perturbed
from gradcheck.engine.local import INPUT
from gradcheck.judge import judge
from gradcheck.outcome import target_report


def is_weight(array: np.ndarray) -> bool:
    """Whether weight decay applies to a parameter: it has two or more axes."""
    return array.ndim >= 2


def decay_term(network, unit: int, name: str, settings) -> np.ndarray | None:
    """lambda * W for a decayed weight tensor (parameter ``name`` of unit ``unit``), else None."""
    decay = getattr(settings, "weight_decay", 0.0)
    if not decay or name == INPUT or unit >= len(network.layers):
        return None
    param = network.units[unit].params[name]
    return decay * np.asarray(param, dtype=np.float64) if is_weight(param) else None


def l2_checks(network, settings) -> dict[int, dict[str, object]]:
    """The L2 term's own check for every weight tensor: {unit: {param name: TargetReport}}."""
    decay = getattr(settings, "weight_decay", 0.0)
    found: dict[int, dict[str, object]] = {}
    if not decay:
        return found
    for k, layer in enumerate(network.layers):
        for name, param in layer.params.items():
            if is_weight(param):
                found.setdefault(k, {})[name] = _l2_check(param, decay, name, settings)
    return found


def _l2_check(param: np.ndarray, decay: float, name: str, settings):
    flat = param.reshape(-1)
    dtype = param.dtype
    decay_cast = dtype.type(decay)

    def evaluate(indices: np.ndarray, steps) -> Perturbed:
        # The sum over other elements cancels exactly between +h and -h, so each element's own
        # term is the whole difference; it is computed in the parameter's dtype.
        value = flat[indices]
        hi = (value.astype(np.float64) + steps).astype(dtype)
        lo = (value.astype(np.float64) - steps).astype(dtype)
        half = dtype.type(0.5)
        plus = (half * decay_cast * hi * hi).astype(np.float64)
        minus = (half * decay_cast * lo * lo).astype(np.float64)
        step = hi.astype(np.float64) - lo.astype(np.float64)
        return Perturbed(plus, minus, step, np.zeros(len(indices), dtype=bool),
                         np.maximum(np.abs(plus), np.abs(minus)))

    indices = np.arange(flat.size)
    analytic = decay * flat.astype(np.float64)
    steps, cap = element_steps(param, indices, settings.tol.eps)
    first = evaluate(indices, steps)
    verdicts = judge(evaluate, analytic, indices, first, steps, cap, settings.tol, dtype)
    report = target_report(name, tuple(param.shape), verdicts, analytic.reshape(param.shape),
                           is_input=False, compared="layer")
    report.term = "l2"
    return report


def masking_note(data_grad: np.ndarray, param: np.ndarray, decay: float) -> str | None:
    """A note when the L2 gradient dwarfs the data gradient (where checking the sum would hide
    a wrong data gradient)."""
    data = float(np.linalg.norm(data_grad))
    l2 = float(decay * np.linalg.norm(param))
    if data == 0.0 or l2 <= data:
        return None
    return (f"the L2 gradient is {l2 / data:.3g}x the data gradient: checked separately "
            "(term l2), so it cannot mask a wrong data gradient")
