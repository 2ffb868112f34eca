"""Graph layers that join or part tensors: add, multiply, concat, split and matmul.

The multi-input / multi-output contract these layers follow (plugins may too):

- A layer with several inputs declares them in ``forward``'s signature: ``forward(self, a, b)``
  takes two, ``forward(self, *xs)`` any number. ``build`` then receives a *list* of per-sample
  shapes (no batch axis) and returns the per-sample output shape; ``backward(grad_out)`` returns
  a *tuple* with one gradient per input, in order.
- A layer with several outputs (split) returns a list of per-sample shapes from ``build`` and a
  tuple of arrays from ``forward``, and takes one upstream gradient per output, positionally:
  ``backward(g0, g1, ...)`` (the engine passes zeros for an output nobody reads).
- Axes count the per-sample shape (batch excluded) and may be negative; the default is 0.
- Every input gradient is a fresh array: when one tensor feeds two inputs (``add(x, x)``) the
  engine may sum into one gradient without changing the other.
"""

from __future__ import annotations

import functools

import numpy as np

from gradcheck.contract import Layer
from gradcheck.errors import LayerError
from gradcheck.layers.inputs import (align, check_axis_option, describe_inputs, input_label,
                                     input_shapes, is_int_list, reduce_to, resolve_axis)
from gradcheck.registry import register_layer


def _at_least_two(layer: Layer, shapes: list[tuple[int, ...]]) -> None:
    if len(shapes) < 2:
        given = f": {describe_inputs(layer, shapes)}" if shapes else ""
        raise LayerError(f"{layer.registered_name} takes at least 2 inputs, got {len(shapes)}"
                         f"{given}.", hint="list two or more tensors in the node's inputs")


def _path(layer: Layer, index: int, count: int) -> str:
    """An input named as a path of the graph in a hint: ``skip`` or ``input 2``."""
    return input_label(layer, index, count).strip("'")


def _mismatch_hint(layer: Layer, axis: int, rank: int, other: int, count: int) -> str:
    path = _path(layer, other, count)
    if rank == 3 and axis == 0:
        return f"add a 1x1 conv2d on the {path} path"
    if rank == 3:
        return (f"resize the {path} path (upsample2d, pooling, or conv2d stride and padding) "
                "so heights and widths agree")
    if rank == 1:
        return f"add a dense layer on the {path} path so the feature counts agree"
    return "each axis must be equal or 1 (numpy broadcasting); reshape or project one path"


def _broadcast(layer: Layer, shapes: list[tuple[int, ...]], shown=None,
              hint: str | None = None) -> tuple[int, ...]:
    """numpy's broadcast of per-sample ``shapes``, or a LayerError naming the first two inputs
    that conflict and the axis (of the broadcast shape) where they do. ``shown`` are the shapes
    the message prints (default ``shapes``); ``hint`` replaces the default advice."""
    shown = shapes if shown is None else shown
    rank = max(len(s) for s in shapes)
    out = []
    for axis in range(rank):
        # Shorter shapes align from the last axis: axis `axis` is their axis axis - offset.
        sizes = {i: s[axis - (rank - len(s))] for i, s in enumerate(shapes)
                 if axis >= rank - len(s)}
        stretched = {i: n for i, n in sizes.items() if n != 1}
        if len(set(stretched.values())) > 1:
            first, *rest = stretched
            second = next(i for i in rest if stretched[i] != stretched[first])
            aligned = ("" if len(shapes[first]) == len(shapes[second]) == rank else
                       " (counted in the broadcast shape: shorter shapes align from the last "
                       "axis, as in numpy)")
            raise LayerError(
                f"{layer.registered_name}: {describe_inputs(layer, shown, (first, second))} "
                f"differ on axis {axis}{aligned}.",
                hint=hint or _mismatch_hint(layer, axis, rank, second, len(shapes)))
        out.append(max(sizes.values()))
    return tuple(out)


class _Elementwise(Layer):
    """Shared shape handling of add and multiply: any number (>= 2) of broadcast inputs."""

    def build(self, input_shape, rng):
        shapes = input_shapes(input_shape)
        _at_least_two(self, shapes)
        return _broadcast(self, shapes)

    def _aligned(self, xs) -> list[np.ndarray]:
        # Remember the batched input shapes now: the batch size may differ from call to call.
        self.batched_shapes = [x.shape for x in xs]
        rank = max(x.ndim for x in xs) - 1
        return [align(x, rank) for x in xs]


@register_layer("add")
class Add(_Elementwise):
    """y = x1 + x2 + ... elementwise, broadcasting per-sample shapes as numpy does (>= 2 inputs).

    ``forward(*xs)``: xi (batch, *shape_i), y (batch, *broadcast(shape_1, shape_2, ...)), e.g. a
    residual (8, 16, 16) + (8, 16, 16) or a per-channel offset (8, 16, 16) + (8, 1, 1).
    ``backward(grad_out)`` returns a tuple (dL/dx1, dL/dx2, ...): grad_out summed over the axes
    each input was broadcast along. ``build`` takes the list of per-sample input shapes.
    """

    def forward(self, *xs):
        return functools.reduce(np.add, self._aligned(xs))

    def backward(self, grad_out):
        return tuple(reduce_to(grad_out, shape) for shape in self.batched_shapes)


@register_layer("multiply")
class Multiply(_Elementwise):
    """y = x1 * x2 * ... elementwise, broadcasting per-sample shapes as numpy does (>= 2 inputs).

    ``forward(*xs)``: xi (batch, *shape_i), y (batch, *broadcast(shape_1, shape_2, ...)), e.g. a
    gate (4,) * (3, 4). ``backward(grad_out)`` returns a tuple whose i-th entry is grad_out times
    the product of the other inputs, summed over the axes input i was broadcast along.
    """

    def forward(self, *xs):
        self.aligned = self._aligned(xs)
        return functools.reduce(np.multiply, self.aligned)

    def backward(self, grad_out):
        grads = []
        for i, shape in enumerate(self.batched_shapes):
            # The product of the others, not y / x_i: exact where x_i is zero.
            others = (x for j, x in enumerate(self.aligned) if j != i)
            grads.append(reduce_to(functools.reduce(np.multiply, others, grad_out), shape))
        return tuple(grads)


@register_layer("concat")
class Concat(Layer):
    """y = [x1, x2, ...] joined along one per-sample axis (>= 2 inputs; e.g. U-Net skip joins).

    ``forward(*xs)``: xi (batch, *shape_i), all shapes equal except along ``axis``;
    y (batch, *shape) with ``shape[axis]`` the sum of the inputs' lengths there. ``axis`` counts
    the per-sample shape (0 = channels of (C, H, W), features of (F,)); negative counts from the
    end. ``backward(grad_out)`` returns a tuple: grad_out cut back into the inputs' pieces.
    """

    def __init__(self, axis: int = 0):
        super().__init__()
        self.axis = check_axis_option("concat", axis)

    def build(self, input_shape, rng):
        shapes = input_shapes(input_shape)
        _at_least_two(self, shapes)
        for i, shape in enumerate(shapes[1:], start=1):
            if len(shape) != len(shapes[0]):
                raise LayerError(
                    f"concat: {describe_inputs(self, shapes, (0, i))} have different numbers "
                    f"of axes ({len(shapes[0])} and {len(shape)}).",
                    hint="reshape one input so both have the same axes apart from the concat "
                         "axis")
        self.resolved_axis = resolve_axis(self, self.axis, shapes)
        for i, shape in enumerate(shapes[1:], start=1):
            axis = next((a for a, (m, n) in enumerate(zip(shapes[0], shape))
                         if m != n and a != self.resolved_axis), None)
            if axis is not None:
                raise LayerError(
                    f"concat: {describe_inputs(self, shapes, (0, i))} differ on axis {axis}, but "
                    f"may differ only on the concat axis {self.resolved_axis}.",
                    hint=f"make axis {axis} agree, or concatenate along it (axis: {axis})")
        self.sizes = [shape[self.resolved_axis] for shape in shapes]
        out = list(shapes[0])
        out[self.resolved_axis] = sum(self.sizes)
        return tuple(out)

    def forward(self, *xs):
        return np.concatenate(xs, axis=self.resolved_axis + 1)

    def backward(self, grad_out):
        seams = np.cumsum(self.sizes)[:-1]
        pieces = np.split(grad_out, seams, axis=self.resolved_axis + 1)
        return tuple(piece.copy() for piece in pieces)


@register_layer("split")
class Split(Layer):
    """(y0, y1, ...) = x cut along one per-sample axis into pieces of the given sizes.

    x (batch, *shape) with ``shape[axis] == sum(sizes)``; output k (batch, *shape) with
    ``sizes[k]`` along ``axis``. Several outputs: YAML addresses them as ``name.0``, ``name.1``;
    ``build`` returns the list of their per-sample shapes, ``forward`` a tuple of arrays, and
    ``backward(g0, g1, ...)`` takes one upstream gradient per output and joins them into dL/dx.
    """

    def __init__(self, sizes: list, axis: int = 0):
        super().__init__()
        if not is_int_list(sizes) or len(sizes) < 2 or min(sizes) < 1:
            raise LayerError(f"split option 'sizes' must list two or more positive integers, "
                             f"got {sizes!r}.",
                             hint="give the length of each piece along the axis, e.g. sizes: "
                                  "[4, 4]")
        self.sizes = [int(n) for n in sizes]
        self.axis = check_axis_option("split", axis)

    def build(self, input_shape, rng):
        shapes = input_shapes(input_shape)
        if len(shapes) != 1:
            raise LayerError(f"split takes one input, got {len(shapes)}: "
                             f"{describe_inputs(self, shapes)}.",
                             hint="join the inputs first (concat), then split the result")
        self.resolved_axis = resolve_axis(self, self.axis, shapes)
        (shape,) = shapes
        length, total = shape[self.resolved_axis], sum(self.sizes)
        if total != length:
            raise LayerError(
                f"split: sizes {self.sizes} sum to {total}, but {describe_inputs(self, shapes)} "
                f"has length {length} along axis {self.resolved_axis}.",
                hint=f"make the sizes add up to {length}")
        return [shape[:self.resolved_axis] + (n,) + shape[self.resolved_axis + 1:]
                for n in self.sizes]

    def forward(self, x):
        seams = np.cumsum(self.sizes)[:-1]
        return tuple(np.split(x, seams, axis=self.resolved_axis + 1))

    def backward(self, *grads_out):
        return np.concatenate(grads_out, axis=self.resolved_axis + 1)


@register_layer("matmul")
class MatMul(Layer):
    """y = a @ b per sample: a (..., m, k) @ b (..., k, n) -> (..., m, n), exactly two inputs.

    ``forward(a, b)``: a (batch, ..., m, k), b (batch, ..., k, n); the leading per-sample axes
    broadcast as in numpy (a (2, 3, 4) @ b (4, 5) -> (2, 3, 5)). ``backward(grad_out)`` returns
    (grad_out @ b^T, a^T @ grad_out), each summed over the axes its input was broadcast along.
    """

    def build(self, input_shape, rng):
        shapes = input_shapes(input_shape)
        if len(shapes) != 2:
            raise LayerError(f"matmul takes exactly 2 inputs (a @ b), got {len(shapes)}: "
                             f"{describe_inputs(self, shapes)}.",
                             hint="list the two tensors to multiply, a then b")
        for i, shape in enumerate(shapes):
            if len(shape) < 2:
                raise LayerError(
                    f"matmul: {describe_inputs(self, shapes, (i,))} has "
                    f"{'1 axis' if len(shape) == 1 else f'{len(shape)} axes'} per sample, but "
                    "matmul multiplies matrices (..., rows, columns).",
                    hint="reshape a vector to a row [1, k] or a column [k, 1] first")
        a, b = shapes
        if a[-1] != b[-2]:
            raise LayerError(
                f"matmul: {describe_inputs(self, shapes)} disagree on the inner size: "
                f"{input_label(self, 0, 2)} has {a[-1]} columns (last axis), "
                f"{input_label(self, 1, 2)} has {b[-2]} rows (axis -2).",
                hint="a (..., m, k) @ b (..., k, n) needs a's last axis to equal b's "
                     "second-to-last: transpose one input or swap their order")
        leading = _broadcast(self, [a[:-2], b[:-2]], shown=shapes,
                            hint="the leading (batch-like) axes must be equal or 1")
        return (*leading, a[-2], b[-1])

    def forward(self, a, b):
        # Remember the batched input shapes now: the batch size may differ from call to call.
        self.batched_shapes = (a.shape, b.shape)
        rank = max(a.ndim, b.ndim) - 1
        self.a, self.b = align(a, rank), align(b, rank)
        return self.a @ self.b

    def backward(self, grad_out):
        grad_a = grad_out @ np.swapaxes(self.b, -1, -2)
        grad_b = np.swapaxes(self.a, -1, -2) @ grad_out
        shape_a, shape_b = self.batched_shapes
        return reduce_to(grad_a, shape_a), reduce_to(grad_b, shape_b)
