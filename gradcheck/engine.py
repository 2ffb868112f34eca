"""The finite-difference engine: analytic gradients, and the loss under element perturbations.

A *target* is one array whose gradient is checked: a parameter of a layer, or the input a unit
(layer or loss) receives in the network. Perturbing a target of unit k only changes what units
k..end compute, so the engine keeps every unit's input from one clean forward pass and re-runs
only the tail. Every perturbation is undone in a ``finally``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck.errors import LayerError
from gradcheck.layers.base import Layer, Loss
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


def _expect_array(unit, phase: str, value, shape, dtype) -> None:
    where = f"layer {unit.name!r} ({getattr(type(unit), 'registered_name', type(unit).__name__)})"
    if not isinstance(value, np.ndarray):
        raise LayerError(f"{where}: {phase} returned {type(value).__name__}, expected a numpy array.")
    if value.shape != tuple(shape):
        hint = ("backward must return dL/dx with the shape of the forward input"
                if phase == "backward" else "build must return the shape forward produces")
        raise LayerError(f"{where}: {phase} returned shape {value.shape}, expected {tuple(shape)}.",
                         hint=hint)
    if not np.issubdtype(value.dtype, np.floating):
        raise LayerError(f"{where}: {phase} returned dtype {value.dtype}, expected {dtype}.")
    if not np.all(np.isfinite(value)):
        raise LayerError(f"{where}: {phase} produced NaN/Inf values.",
                         hint="run 'gradcheck diagnose' for the first layer that goes non-finite")


def _collect_param_grads(unit, k: int, grads: dict) -> None:
    missing = [name for name in unit.params if name not in unit.grads]
    if missing:
        raise LayerError(f"layer {unit.name!r}: backward set no gradient for parameter(s) "
                         f"{', '.join(map(repr, missing))}.", hint="store dL/dparam in self.grads[name]")
    for name, param in unit.params.items():
        grad = np.asarray(unit.grads[name])
        if grad.shape != param.shape:
            raise LayerError(f"layer {unit.name!r}: grads[{name!r}] has shape {grad.shape}, "
                             f"expected the parameter's shape {param.shape}.")
        if not np.all(np.isfinite(grad)):
            raise LayerError(f"layer {unit.name!r}: grads[{name!r}] holds NaN/Inf values.")
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


@dataclasses.dataclass
class Perturbed:
    """Losses at +h and -h for a set of elements, the actual step, and kink crossings."""

    plus: np.ndarray
    minus: np.ndarray
    step: np.ndarray
    kinked: np.ndarray

    @property
    def numeric(self) -> np.ndarray:
        """Central-difference estimate of the gradient for each element."""
        return (self.plus - self.minus) / self.step


class Probe:
    """Evaluates the loss with elements of one target perturbed, re-running only the tail."""

    def __init__(self, network: Network, batch: Batch, cached: AnalyticPass, target: Target):
        self.network = network
        self.batch = batch
        self.target = target
        self.start = target.unit
        self.start_input = cached.inputs[target.unit]
        if target.name == INPUT:
            # A private copy: the cached input is shared by every other probe.
            self.array = np.array(self.start_input, copy=True)
        else:
            self.array = network.units[target.unit].params[target.name]
        self._tail_has_state = any(_has_branch_state(u) for u in network.units[self.start:])

    def loss(self) -> tuple[float, list]:
        """The loss with the target array as it is now, and the tail's branch states."""
        net = self.network
        if self.target.name == INPUT and self.start == len(net.layers):
            pred = self.array
        else:
            x = self.array if self.target.name == INPUT else self.start_input
            pred = net.forward(x, start=self.start)
        value = net.loss_value(pred, self.batch.target)
        states = [u.branch_state() for u in net.units[self.start:]] if self._tail_has_state else []
        return value, states

    def evaluate(self, flat_indices: np.ndarray, eps: float) -> Perturbed:
        """Central differences for the elements at ``flat_indices`` with step ``eps``."""
        n = len(flat_indices)
        plus, minus, step = np.empty(n), np.empty(n), np.empty(n)
        kinked = np.zeros(n, dtype=bool)
        flat = self.array.reshape(-1)
        for j, i in enumerate(flat_indices):
            saved = flat[i]
            try:
                flat[i] = saved + eps
                hi = flat[i]
                plus[j], states_plus = self.loss()
                flat[i] = saved - eps
                lo = flat[i]
                minus[j], states_minus = self.loss()
            finally:
                flat[i] = saved
            # The stored values, not saved +- eps: in float32 they differ noticeably.
            step[j] = float(hi) - float(lo)
            kinked[j] = _states_differ(states_plus, states_minus)
        return Perturbed(plus, minus, step, kinked)


def _has_branch_state(unit) -> bool:
    """Whether the unit overrides the contract's default (stateless) ``branch_state``."""
    default = Loss.branch_state if isinstance(unit, Loss) else Layer.branch_state
    return type(unit).branch_state is not default


def _states_differ(a: list, b: list) -> bool:
    for sa, sb in zip(a, b):
        if sa is None and sb is None:
            continue
        if sa is None or sb is None or np.shape(sa) != np.shape(sb) or not np.array_equal(sa, sb):
            return True
    return False
