"""How the layers of a network connect: the tensors each reads, the parameters it shares, and
the order they run in.

A tensor is named like the thing that makes it: a network input (``x``, or the names under
``inputs:``), a layer (its ``name``), or ``layer.k`` for the k-th output of a layer with several
(``split``). A layer reads ``inputs: [conv2, skip]``, or, without it, the previous layer (the
first layer reads the network's only input); the loss reads ``loss: {..., input: name}`` or the
last layer. Layers may be listed in any order that has no cycle; they run in topological order,
ties kept in the order of the file.
"""

from __future__ import annotations

import dataclasses
import difflib

def is_reference(ref) -> bool:
    """Whether ``ref`` can name a tensor: an identifier (as layer and input names are), with
    ``.k`` for the k-th output of a layer with several."""
    if not isinstance(ref, str):
        return False
    base, dot, output = ref.partition(".")
    return base.isidentifier() and (not dot or (output.isascii() and output.isdigit()))


def split_reference(ref: str) -> tuple[str, int | None]:
    """``"split1.0"`` -> ("split1", 0); ``"conv2"`` -> ("conv2", None)."""
    if not is_reference(ref):
        raise ValueError(ref)
    base, dot, output = ref.partition(".")
    return base, int(output) if dot else None


def read_inputs(r, entry: dict, path: str, is_loss: bool) -> tuple[str, ...] | None:
    """The ``inputs:`` of a layer entry (``input:`` of the loss), validated for syntax."""
    key = "input" if is_loss else "inputs"
    if key not in entry:
        return None
    value = entry[key]
    where = f"{path}.{key}"
    if is_loss and not isinstance(value, str):
        r.fail(where, "the loss reads one tensor: 'input:' takes a single name.",
               "write e.g. loss: {type: mse, input: decoder}")
    refs = [value] if isinstance(value, str) else value
    if not isinstance(refs, list) or not refs:
        r.fail(where, "expected a list of tensor names such as [conv2, skip].")
    for i, ref in enumerate(refs):
        if not is_reference(ref):
            r.fail(f"{where}[{i}]" if not isinstance(value, str) else where,
                   f"{ref!r} is not a tensor name: a network input, a layer name, or "
                   "'layer.k' for the k-th output of a layer with several.")
    return tuple(refs)


def read_share(r, entry: dict, path: str) -> dict[str, tuple[str, str, bool]]:
    """The ``share:`` of a layer entry: parameter -> (layer, its parameter, transposed)."""
    value = entry.get("share", {})
    where = f"{path}.share"
    if not isinstance(value, dict):
        r.fail(where, "expected a mapping such as {W: encoder.W} (or encoder.W.T, transposed).")
    found = {}
    for name, ref in value.items():
        parts = ref.split(".") if isinstance(ref, str) else []
        transposed = len(parts) == 3 and parts[2] == "T"
        if not (isinstance(name, str) and len(parts) in (2, 3) and (len(parts) == 2 or transposed)
                and all(p.isidentifier() for p in parts[:2])):
            r.fail(f"{where}.{name}", f"{ref!r} does not name a parameter as 'layer.param' or "
                   "'layer.param.T'.", "write e.g. share: {W: encoder.W.T}")
        found[name] = (parts[0], parts[1], transposed)
    return found


@dataclasses.dataclass(frozen=True)
class Wiring:
    """``order``: indices of ``spec.layers`` in the order they run; ``sources``: the tensors each
    layer reads, by layer name; ``loss_source``: the tensor the loss reads."""

    order: tuple[int, ...]
    sources: dict[str, tuple[str, ...]]
    loss_source: str


def resolve(spec) -> Wiring:
    """The wiring of ``spec``, refusing unknown names, a clash of names and cycles."""
    input_names = [i.name for i in spec.inputs]
    layer_names = [layer.name for layer in spec.layers]
    for layer in spec.layers:
        if layer.name in input_names:
            raise spec.error(f"layer name {layer.name!r} is also the name of a network input.",
                             f"{layer.path}.name", "give every layer and input a distinct name")
    sources = {}
    for i, layer in enumerate(spec.layers):
        if layer.inputs is not None:
            refs = layer.inputs
        elif i > 0:
            refs = (spec.layers[i - 1].name,)
        elif len(input_names) == 1:
            refs = (input_names[0],)
        else:
            raise spec.error(f"layer {layer.name!r} is the first of several with no 'inputs:', "
                             f"but the network has inputs {', '.join(input_names)}.", layer.path,
                             "say which it reads, e.g. inputs: [left]")
        for j, ref in enumerate(refs):
            where = f"{layer.path}.inputs[{j}]" if layer.inputs is not None else layer.path
            _check_reference(spec, ref, where, input_names, layer_names, itself=layer.name)
        sources[layer.name] = tuple(refs)
        for name, (owner, _, _) in layer.share.items():
            if owner not in layer_names or owner == layer.name:
                close = difflib.get_close_matches(owner, layer_names, n=1)
                raise spec.error(f"layer {layer.name!r} shares {name!r} with {owner!r}, which is "
                                 "not another layer of the network.", f"{layer.path}.share.{name}",
                                 f"did you mean {close[0]!r}?" if close else None)
    loss_source = spec.loss.inputs[0] if spec.loss.inputs else spec.layers[-1].name
    if spec.loss.inputs:
        _check_reference(spec, loss_source, f"{spec.loss.path}.input", input_names, layer_names)
    return Wiring(_order(spec, sources), sources, loss_source)


def _check_reference(spec, ref: str, where: str, input_names, layer_names, itself=None):
    base, output = split_reference(ref)
    if base == itself:
        raise spec.error(f"layer {itself!r} reads its own output.", where,
                         "a network is acyclic: read an earlier layer or a network input")
    if base in input_names and output is not None:
        raise spec.error(f"{ref!r}: network input {base!r} is one tensor; it has no outputs to "
                         "number.", where, f"write {base!r}")
    if base not in input_names and base not in layer_names:
        close = difflib.get_close_matches(base, [*input_names, *layer_names], n=1)
        raise spec.error(f"unknown tensor {ref!r}: no network input or layer is named "
                         f"{base!r}.", where, f"did you mean {close[0]!r}?" if close else
                         f"known names: {', '.join([*input_names, *layer_names])}")


def _order(spec, sources: dict[str, tuple[str, ...]]) -> tuple[int, ...]:
    """Topological order (Kahn), ties broken by position in the file; a cycle is an error."""
    index = {layer.name: i for i, layer in enumerate(spec.layers)}
    needs = {name: {split_reference(ref)[0] for ref in refs} & set(index)
             for name, refs in sources.items()}
    done: list[int] = []
    ready = sorted(index[name] for name, deps in needs.items() if not deps)
    finished: set[str] = set()
    while ready:
        i = ready.pop(0)
        done.append(i)
        finished.add(spec.layers[i].name)
        for name, deps in needs.items():
            if index[name] not in done and index[name] not in ready and deps <= finished:
                ready.append(index[name])
        ready.sort()
    if len(done) < len(spec.layers):
        cycle = _a_cycle({n: d for n, d in needs.items() if n not in finished})
        # Point at a layer of the loop that names its inputs: that is where the loop is written.
        wired = [spec.layers[index[n]] for n in cycle if spec.layers[index[n]].inputs]
        at = f"{wired[0].path}.inputs" if wired else spec.layers[index[cycle[0]]].path
        raise spec.error(f"layers {' -> '.join([*cycle, cycle[0]])} form a cycle: each feeds the "
                         "next.", at,
                         "a network is a directed acyclic graph: break the loop")
    return tuple(done)


def _a_cycle(needs: dict[str, set[str]]) -> list[str]:
    """One cycle among ``needs`` (every node left has a predecessor left)."""
    node = next(iter(needs))
    seen: list[str] = []
    while node not in seen:
        seen.append(node)
        node = next(iter(sorted(needs[node])))
    cycle = seen[seen.index(node):]
    cycle.reverse()  # a layer reads the next one's output: print in data-flow order
    return cycle

