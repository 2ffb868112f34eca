"""Forward and backward passes that tolerate NaN/Inf, so the diagnosis can say where they start.

The checker's own pass (``Network.run``) refuses non-finite values; the diagnosis needs
to see them. Shapes are still validated: a wrong shape is the layer's contract broken, a user error.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck.errors import GradcheckError, LayerError
from gradcheck.network import Network
from gradcheck.usercode import invoke


@dataclasses.dataclass
class Pass:
    """``acts[0]`` is the input, ``acts[k + 1]`` layer k's output; ``grad_in[k]`` is dL/d(input of
    unit k) (the loss is unit ``len(layers)``); ``grads[(k, name)]`` dL/dparam. ``loss_error`` holds
    the loss's own complaint when it refused the predictions."""

    acts: list[np.ndarray]
    loss: float
    grad_in: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    grads: dict[tuple[int, str], np.ndarray] = dataclasses.field(default_factory=dict)
    loss_error: str | None = None

    @property
    def pred(self) -> np.ndarray:
        return self.acts[-1]


def _checked(unit, phase: str, value, shape) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.shape != tuple(shape):
        got = value.shape if isinstance(value, np.ndarray) else type(value).__name__
        raise LayerError(f"layer {unit.name!r}: {phase} returned {got}, expected shape "
                         f"{tuple(shape)}.")
    return value


def forward(network: Network, x: np.ndarray, target) -> Pass:
    """Every layer's output and the loss; stops at the first layer whose output is non-finite."""
    acts = [x]
    with np.errstate(all="ignore"):
        for layer, shape in zip(network.layers, network.shapes[1:]):
            y = invoke(layer, "forward", layer.forward, acts[-1])
            acts.append(_checked(layer, "forward", y, (len(x), *shape)))
            if not np.all(np.isfinite(y)):
                return Pass(acts, float("nan"))
        try:
            loss = network.loss_value(acts[-1], target)
        except GradcheckError as exc:
            return Pass(acts, float("nan"), loss_error=exc.message)
    return Pass(acts, loss)


def complete(network: Network, x: np.ndarray, target) -> Pass:
    """Forward, then backward through every unit (when the forward stayed finite)."""
    result = forward(network, x, target)
    if len(result.acts) != len(network.layers) + 1 or not np.isfinite(result.loss):
        return result
    with np.errstate(all="ignore"):
        n = len(network.layers)
        grad = _checked(network.loss, "backward",
                        invoke(network.loss, "backward", network.loss.backward), result.pred.shape)
        result.grad_in[n] = grad
        for k in range(n - 1, -1, -1):
            layer = network.layers[k]
            grad = _checked(layer, "backward", invoke(layer, "backward", layer.backward, grad),
                            result.acts[k].shape)
            result.grad_in[k] = grad
            for name, param in layer.params.items():
                if name not in layer.grads:
                    raise LayerError(f"layer {layer.name!r}: backward set no gradient for "
                                     f"parameter {name!r}.", hint="store dL/dparam in self.grads[name]")
                result.grads[(k, name)] = _checked(layer, f"grads[{name!r}]",
                                                   np.asarray(layer.grads[name]), param.shape)
    return result


def param_list(network: Network) -> list[tuple[int, str, np.ndarray]]:
    """(layer index, name, array) of every non-empty parameter, in forward order."""
    return [(k, name, p) for k, layer in enumerate(network.layers)
            for name, p in layer.params.items() if p.size]
