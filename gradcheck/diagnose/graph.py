"""The network as the diagnosis reads it: units that read and make named tensors.

Who reads a layer's output (``readers``: "the layer after k" of a chain), the layers nearest the
loss (``output_layers``: "the output layer"), the parameter-free tail the loss reads through
(``tail``), every distinct parameter (a shared array once, with the gradient of all its uses),
and the graph's branches (``forks``): the paths from a tensor read by several units to the unit
where they merge again, such as a residual block's skip and residual paths.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gradcheck.errors import GradcheckError
from gradcheck.network import Network
from gradcheck.usercode import invoke


def maker(network: Network, tensor: str) -> int | None:
    """The layer that makes ``tensor``, or None for a network input."""
    return next((k for k, outs in enumerate(network.outputs) if tensor in outs), None)


def label(network: Network, tensor: str) -> str:
    """What a finding calls ``tensor``: "input" for a network's only input, an input's name, or
    the layer that makes it."""
    k = maker(network, tensor)
    if k is not None:
        return network.layers[k].name
    return "input" if len(network.input_names) == 1 else tensor


def words(network: Network, tensor: str) -> str:
    """``tensor`` in a sentence: "the input", "the input left" or "conv1 outputs"."""
    name = label(network, tensor)
    if tensor not in network.input_names:
        return f"{name} outputs"
    return "the input" if name == "input" else f"the input {name}"


def float_inputs(network: Network) -> list[str]:
    """The network inputs that hold real values (not token ids)."""
    return [t for t in network.input_names if t not in network.integer]


def readers(network: Network, k: int) -> list[int]:
    """The units (layers, or the loss: ``len(layers)``) that read an output of layer ``k``."""
    return sorted({unit for t in network.outputs[k] for unit, _ in network.readers(t)})


def loss_source(network: Network) -> int | None:
    """The layer whose output the loss reads (None when it reads a network input)."""
    return maker(network, network.sources[len(network.layers)][0])


def output_layers(network: Network, parametric: set[int]) -> set[int]:
    """The layers among ``parametric`` nearest the loss: reached from it, backwards, through
    parameter-free layers only ("the output layer" of a chain)."""
    found, frontier, seen = set(), [len(network.layers)], set()
    while frontier:
        for t in network.sources[frontier.pop()]:
            k = maker(network, t)
            if k is None or k in seen:
                continue
            seen.add(k)
            (found.add if k in parametric else frontier.append)(k)
    return found


def tail(network: Network) -> list[int]:
    """The parameter-free layers the loss reads through, in order: each reads one tensor, made
    by the one before (the first reads whatever feeds the tail). Empty when the loss reads a
    parametric layer."""
    units: list[int] = []
    k = loss_source(network)
    while k is not None and len(network.sources[k]) == 1 and len(network.outputs[k]) == 1 \
            and not any(np.size(p) for p in network.layers[k].params.values()):
        units.insert(0, k)
        k = maker(network, network.sources[k][0])
    return units


def parameters(network: Network) -> list[tuple[int, str, np.ndarray]]:
    """(owning layer, name, array) of every distinct non-empty parameter, in the order
    ``Network.parameters`` gives them: a shared array once, under the layer that owns it."""
    return [(k, name, array) for k, name, array, _ in network.named_parameters()
            if array.size and k < len(network.layers)]


def total_gradients(network: Network, grads: dict) -> list[np.ndarray]:
    """The gradient of every array of ``parameters(network)``, summed over its uses."""
    totals = {(k, name): g for k, name, _, g in network.named_parameters(grads)}
    return [totals[(k, name)] for k, name, _ in parameters(network)]


def param_label(network: Network, k: int, name: str) -> str:
    """``layer.param`` for parameter ``name`` of layer ``k``."""
    return f"{network.layers[k].name}.{name}"


@dataclasses.dataclass(frozen=True)
class Branch:
    """One path from a fork to its merge: the layers on it (``units``, in the order they run;
    empty for a skip that goes straight to the merge), the (unit, slot) that reads the fork's
    tensor (its gradient there is what the branch sends back) and the merge's input slots that
    the branch feeds."""

    units: tuple[int, ...]
    reader: tuple[int, int]
    slots: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Fork:
    """A real-valued tensor read by several units, the unit where their paths join again
    (``merge``: the first unit that depends on every reader), and one branch per reader."""

    tensor: str
    merge: int
    branches: tuple[Branch, ...]


def forks(network: Network) -> list[Fork]:
    """Every fork of the graph whose branches merge again (a chain has none)."""
    found = []
    tensors = [*float_inputs(network), *(t for outs in network.outputs for t in outs)]
    for tensor in tensors:
        reads = network.readers(tensor)
        if len(reads) < 2:
            continue
        reach = [set(network.descendants(unit)) for unit, _ in reads]
        common = set.intersection(*reach)
        if not common:
            continue
        merge = min(common)
        before_merge = set(network.ancestors(merge))
        branches = []
        for (unit, slot), reached in zip(reads, reach):
            if unit == merge:
                branches.append(Branch((), (unit, slot), (slot,)))
                continue
            units = tuple(sorted(reached & before_merge))
            made = {t for u in units for t in network.outputs[u]}
            slots = tuple(j for j, t in enumerate(network.sources[merge]) if t in made)
            branches.append(Branch(units, (unit, slot), slots))
        found.append(Fork(tensor, merge, tuple(branches)))
    return found


def branch_name(network: Network, fork: Fork, branch: Branch) -> str:
    """"conv1 -> bn1 -> relu1" for a branch with layers, "the skip" for one without."""
    if not branch.units:
        return f"the skip from {label(network, fork.tensor)}"
    return " -> ".join(network.layers[k].name for k in branch.units)


def input_gradients(layer, args: list, upstream: list) -> list | None:
    """The gradients ``layer`` hands back for each of its inputs ``args`` under the upstream
    gradients ``upstream`` (one per output), after a forward on ``args``: a list, one per input;
    None if the layer raises (a probe of a broken layer reports nothing, the check reports it)."""
    with np.errstate(all="ignore"):
        try:
            invoke(layer, "forward", layer.forward, *args)
            got = invoke(layer, "backward", layer.backward, *upstream)
        except GradcheckError:
            return None
    return list(got) if len(args) > 1 else [got]
