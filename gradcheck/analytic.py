"""The clean pass a check starts from: each unit's input, the loss and every analytic gradient,
with what each layer returns validated; and the *targets*, the arrays whose gradients are checked
(a parameter of a layer, or the input a unit — layer or loss — receives in the network)."""

from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck.network import Batch, Network

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
    """Run forward and backward once (``Network.run``, which validates what every unit
    returns) and key the gradients by target."""
    done = network.run(batch)
    grads = {Target(k, INPUT): grad for k, grad in done.grad_in.items()}
    grads.update({Target(k, name): grad for (k, name), grad in done.grads.items()})
    return AnalyticPass(done.inputs, done.loss, grads)


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
