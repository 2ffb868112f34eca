"""What the graph layers share: naming their inputs in errors, axes, and per-sample broadcasting.

A layer with several inputs receives a list of per-sample shapes in ``build``; ``input_names``
(set by the network) says which tensors they are, so an error can point at the branch to fix:
``add: inputs 'conv2' (8, 16, 16) and 'skip' (4, 16, 16) differ on axis 0``.
"""

from __future__ import annotations

import numpy as np

from gradcheck.contract import Layer
from gradcheck.errors import LayerError


def input_shapes(input_shape) -> list[tuple[int, ...]]:
    """``build``'s argument as a list of per-sample shapes: one shape for a single-input node, or
    the list of shapes the network passes to a node with several inputs."""
    if isinstance(input_shape, list) and all(isinstance(s, (tuple, list)) for s in input_shape):
        return [tuple(int(d) for d in shape) for shape in input_shape]
    return [tuple(int(d) for d in input_shape)]


def input_label(layer: Layer, index: int, count: int) -> str:
    """How errors name input ``index`` (0-based) of ``count``: its tensor name in quotes when the
    network set ``layer.input_names``, else ``input 1``, ``input 2``, ..."""
    names = layer.input_names
    if names is not None and len(names) == count:
        return f"'{names[index]}'"
    return f"input {index + 1}"


def describe_inputs(layer: Layer, shapes: list[tuple[int, ...]], indices=None) -> str:
    """The inputs at ``indices`` (default: all) with their per-sample shapes, for a message:
    ``inputs 'a' (3, 4) and 'b' (5, 4)``, ``input 'a' (3, 4)``, or ``input 1 (3, 4) and input 2
    (5, 4)`` when the inputs have no names."""
    indices = range(len(shapes)) if indices is None else indices
    parts = [f"{input_label(layer, i, len(shapes))} {shapes[i]}" for i in indices]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if layer.input_names is None or len(layer.input_names) != len(shapes):
        return text
    return ("input " if len(parts) == 1 else "inputs ") + text


def is_int(value) -> bool:
    """An integer option value; YAML's ``true`` parses to a bool, which is never meant as one."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_int_list(value) -> bool:
    """A list option (``sizes``, ``shape``, ``axes``) of integers."""
    return isinstance(value, (list, tuple)) and all(is_int(n) for n in value)


def check_axis_option(layer_type: str, axis) -> int:
    """Validate an ``axis`` option's type (its range depends on the input, see ``resolve_axis``)."""
    if not is_int(axis):
        raise LayerError(f"{layer_type} option 'axis' must be an integer, got {axis!r}.",
                         hint="axes count the per-sample shape (batch excluded); 0 is channels "
                              "for images, features for vectors; -1 is the last axis")
    return int(axis)


def resolve_axis(layer: Layer, axis: int, shapes: list[tuple[int, ...]]) -> int:
    """``axis`` of per-sample shapes of rank ``len(shapes[0])`` as a non-negative index."""
    rank = len(shapes[0])
    if not -rank <= axis < rank:
        allowed = f"0 to {rank - 1}, or -{rank} to -1 from the end" if rank else "none"
        raise LayerError(
            f"{layer.registered_name}: axis {axis} is out of range for "
            f"{describe_inputs(layer, shapes)}, which {'has' if len(shapes) == 1 else 'have'} "
            f"{rank} axes per sample.",
            hint=f"axes count the per-sample shape, batch excluded: use {allowed}")
    return axis % rank


def align(x: np.ndarray, rank: int) -> np.ndarray:
    """View of batched ``x`` (batch, *shape) with 1-axes inserted after the batch axis so that its
    per-sample part has ``rank`` axes: numpy then broadcasts the per-sample shapes (aligned from
    the end), never the batch axis against a per-sample one."""
    missing = rank - (x.ndim - 1)
    return x.reshape(x.shape[:1] + (1,) * missing + x.shape[1:])


def reduce_to(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum the batched gradient ``grad`` (batch, *broadcast shape) over the axes that broadcasting
    added or stretched, giving a fresh array of the batched input ``shape`` (batch, *input)."""
    extra = grad.ndim - len(shape)
    stretched = tuple(extra + i for i, n in enumerate(shape)
                      if i > 0 and n == 1 and grad.shape[extra + i] != 1)
    reduced = tuple(range(1, 1 + extra)) + stretched
    if not reduced:
        # A copy even so: the gradients of several inputs must never be one shared array.
        return grad.reshape(shape).copy()
    return grad.sum(axis=reduced, keepdims=True).reshape(shape)
