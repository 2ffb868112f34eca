"""Layers that only rearrange values: flatten, reshape and transpose."""

from __future__ import annotations

import math

import numpy as np

from gradcheck.contract import Layer
from gradcheck.errors import LayerError
from gradcheck.layers.changes import elementwise_changes
from gradcheck.layers.inputs import describe_inputs, is_int_list
from gradcheck.registry import register_layer


@register_layer("flatten")
class Flatten(Layer):
    """Row-major flattening of each sample.  x: (batch, *shape) -> y: (batch, prod(shape))."""

    def build(self, input_shape, rng):
        return (math.prod(input_shape),)

    def forward(self, x):
        # Remember the full input shape: the batch size may differ from call to call. The explicit
        # width (not -1) keeps an empty batch reshapeable.
        self.input_shape = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def objective_changes(self, x, grad_out, name, flat_indices, values):
        """The optional contract speed-up: input element i is output element i, flat."""
        return elementwise_changes(lambda v, _: v, x, grad_out, flat_indices, values)

    def backward(self, grad_out):
        return grad_out.reshape(self.input_shape)


@register_layer("reshape")
class Reshape(Layer):
    """Row-major reshape of each sample to the given per-sample shape (one entry may be -1).

    x: (batch, *input_shape) -> y: (batch, *shape), same values in the same row-major order;
    a -1 takes whatever length makes the sizes agree. backward reshapes dL/dy back.
    """

    def __init__(self, shape: list):
        super().__init__()
        if (not is_int_list(shape) or not shape or any(n < 1 and n != -1 for n in shape)
                or list(shape).count(-1) > 1):
            raise LayerError(
                f"reshape option 'shape' must list positive integers, at most one of them -1, "
                f"got {shape!r}.",
                hint="give the per-sample shape without the batch axis, e.g. shape: [4, -1]")
        self.shape = [int(n) for n in shape]

    def build(self, input_shape, rng):
        self.input_shape = tuple(input_shape)
        size, known = math.prod(self.input_shape), math.prod(n for n in self.shape if n != -1)
        fits = size % known == 0 if -1 in self.shape else size == known
        if not fits:
            need = f"a multiple of {known}" if -1 in self.shape else f"{known}"
            raise LayerError(
                f"reshape: {describe_inputs(self, [self.input_shape])} has {size} values per "
                f"sample, but shape {self.shape} needs {need}.",
                hint=f"choose a shape whose sizes multiply to {size}, or put -1 on one axis")
        self.output_shape = tuple(size // known if n == -1 else n for n in self.shape)
        return self.output_shape

    def forward(self, x):
        # Explicit sizes (no -1) keep an empty batch reshapeable.
        return x.reshape((x.shape[0], *self.output_shape))

    def objective_changes(self, x, grad_out, name, flat_indices, values):
        """The optional contract speed-up: row-major, input element i is output element i."""
        return elementwise_changes(lambda v, _: v, x, grad_out, flat_indices, values)

    def backward(self, grad_out):
        return grad_out.reshape((grad_out.shape[0], *self.input_shape))


@register_layer("transpose")
class Transpose(Layer):
    """Permute each sample's axes: y[n] = x[n].transpose(axes).

    x: (batch, *input_shape) -> y: (batch, *[input_shape[a] for a in axes]). ``axes`` is a
    permutation of the per-sample axes (batch excluded; negative counts from the end), e.g.
    [1, 2, 0] turns (C, H, W) into (H, W, C). backward applies the inverse permutation.
    """

    def __init__(self, axes: list):
        super().__init__()
        if not is_int_list(axes) or not axes:
            raise LayerError(f"transpose option 'axes' must list integers, got {axes!r}.",
                             hint="list every per-sample axis once in its new order, e.g. "
                                  "axes: [1, 2, 0] for (C, H, W) -> (H, W, C)")
        self.axes = [int(a) for a in axes]

    def build(self, input_shape, rng):
        rank = len(input_shape)
        resolved = [a % rank if -rank <= a < rank else None for a in self.axes]
        if sorted(a for a in resolved if a is not None) != list(range(rank)) or None in resolved:
            raise LayerError(
                f"transpose: axes {self.axes} are not a permutation of the {rank} axes of "
                f"{describe_inputs(self, [tuple(input_shape)])}.",
                hint=f"list each of 0 to {rank - 1} exactly once (batch excluded; -1 is the "
                     "last axis)")
        self.permutation = (0, *(a + 1 for a in resolved))
        self.inverse = tuple(int(i) for i in np.argsort(self.permutation))
        return tuple(input_shape[a] for a in resolved)

    def forward(self, x):
        return x.transpose(self.permutation)

    def backward(self, grad_out):
        return grad_out.transpose(self.inverse)
