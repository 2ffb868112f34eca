"""The clean pass a check starts from: each unit's input, the loss and every analytic gradient,
with what each layer returns validated; and the *targets*, the arrays whose gradients are checked
(a parameter of a layer, or the input a unit — layer or loss — receives in the network)."""

from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck.errors import LayerError
from gradcheck.network import Batch, Network, invoke

INPUT = "input"


@dataclasses.dataclass(frozen=True)
class Target:
    """Parameter ``name`` (or ``"input"``) of unit ``unit`` (layers first, then the loss)."""

    unit: int
    name: str


@dataclasses.dataclass
class AnalyticPass:
    """One clean forward and backward: each unit's input, the loss, and every analytic gradient."""

    inputs: list[np.ndarray]
    loss: float
    grads: dict[Target, np.ndarray]


def analytic_pass(network: Network, batch: Batch) -> AnalyticPass:
    """Run forward and backward once, validating what every layer returns."""
    inputs: list[np.ndarray] = []
    x = batch.x
    for layer, shape in zip(network.layers, network.shapes[1:]):
        inputs.append(x)
        x = invoke(layer, "forward", layer.forward, x)
        _expect_array(layer, "forward", x, (batch.x.shape[0], *shape), network.dtype)
    inputs.append(x)
    loss = network.loss_value(x, batch.target)
    if not np.isfinite(loss):
        raise LayerError(f"the loss {network.loss.name!r} is {loss} on the check's data.",
                         hint="run 'gradcheck diagnose' to find the first layer producing NaN/Inf")
    grads: dict[Target, np.ndarray] = {}
    grad = invoke(network.loss, "backward", network.loss.backward)
    _expect_array(network.loss, "backward", grad, x.shape, network.dtype)
    units = network.units
    grads[Target(len(network.layers), INPUT)] = np.array(grad, dtype=np.float64)
    _collect_param_grads(network.loss, len(network.layers), grads)
    for k in range(len(network.layers) - 1, -1, -1):
        layer = units[k]
        grad = invoke(layer, "backward", layer.backward, grad)
        _expect_array(layer, "backward", grad, inputs[k].shape, network.dtype)
        grads[Target(k, INPUT)] = np.array(grad, dtype=np.float64)
        _collect_param_grads(layer, k, grads)
    return AnalyticPass(inputs, loss, grads)


def _unit_error(unit, message: str, hint: str | None = None) -> LayerError:
    """A LayerError located at the unit's YAML entry (when it was built from a config)."""
    return LayerError(message, hint=hint, path=getattr(unit, "yaml_path", None),
                      where=getattr(unit, "yaml_where", None))


def _expect_array(unit, phase: str, value, shape, dtype) -> None:
    where = f"layer {unit.name!r} ({getattr(type(unit), 'registered_name', type(unit).__name__)})"
    if not isinstance(value, np.ndarray):
        raise _unit_error(unit, f"{where}: {phase} returned {type(value).__name__}, expected a numpy array.")
    if value.shape != tuple(shape):
        hint = ("backward must return dL/dx with the shape of the forward input"
                if phase == "backward" else "build must return the shape forward produces")
        raise _unit_error(unit, f"{where}: {phase} returned shape {value.shape}, expected {tuple(shape)}.",
                         hint=hint)
    if not np.issubdtype(value.dtype, np.floating):
        raise _unit_error(unit, f"{where}: {phase} returned dtype {value.dtype}, expected {dtype}.")
    if not np.all(np.isfinite(value)):
        raise _unit_error(unit, f"{where}: {phase} produced NaN/Inf values.",
                         hint="run 'gradcheck diagnose' for the first layer that goes non-finite")


def _collect_param_grads(unit, k: int, grads: dict) -> None:
    missing = [name for name in unit.params if name not in unit.grads]
    if missing:
        raise _unit_error(unit, f"layer {unit.name!r}: backward set no gradient for parameter(s) "
                         f"{', '.join(map(repr, missing))}.", hint="store dL/dparam in self.grads[name]")
    for name, param in unit.params.items():
        grad = np.asarray(unit.grads[name])
        if grad.shape != param.shape:
            raise _unit_error(unit, f"layer {unit.name!r}: grads[{name!r}] has shape {grad.shape}, "
                             f"expected the parameter's shape {param.shape}.")
        if not np.all(np.isfinite(grad)):
            raise _unit_error(unit, f"layer {unit.name!r}: grads[{name!r}] holds NaN/Inf values.")
        grads[Target(k, name)] = np.array(grad, dtype=np.float64)


def targets(network: Network) -> list[Target]:
    """Every checkable target, in forward order: each unit's parameters, then its input."""
    found = []
    for k, unit in enumerate(network.units):
        found.extend(Target(k, name) for name in unit.params)
        found.append(Target(k, INPUT))
    return found


def target_array(network: Network, cached: AnalyticPass, target: Target) -> np.ndarray:
    """The array ``target`` refers to (a parameter, or the cached input of the unit)."""
    if target.name == INPUT:
        return cached.inputs[target.unit]
    return network.units[target.unit].params[target.name]
