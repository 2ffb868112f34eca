"""Plugin layers with several inputs or outputs, as users write them: right, and each with one
realistic mistake (tests/test_graph.py)."""

import numpy as np

import gradcheck


def _graph(name):
    return gradcheck.register_layer(f"graph_{name}")


@_graph("gate")
class Gate(gradcheck.Layer):
    """y = tanh(x) * skip: two inputs of one shape, a tuple of two gradients back."""

    def build(self, input_shapes, rng):
        return tuple(input_shapes[0])

    def forward(self, x, skip):
        self.t, self.skip = np.tanh(x), skip
        return self.t * skip

    def backward(self, grad_out):
        return grad_out * self.skip * (1.0 - self.t ** 2), self.skip_gradient(grad_out)

    def skip_gradient(self, grad_out):
        return grad_out * self.t


@_graph("gate_wrong_skip")
class GateWrongSkip(Gate):
    """The same gate whose gradient for the skip input uses tanh' instead of tanh."""

    def skip_gradient(self, grad_out):
        return grad_out * (1.0 - self.t ** 2)  # BUG


@_graph("sum_all")
class SumAll(gradcheck.Layer):
    """y = x1 + x2 + ...: forward(self, *xs) takes any number of inputs."""

    def build(self, input_shapes, rng):
        return tuple(input_shapes[0])

    def forward(self, *xs):
        self.count = len(xs)
        return sum(xs)

    def backward(self, grad_out):
        return tuple(np.array(grad_out, copy=True) for _ in range(self.count))


@_graph("split_first_only")
class SplitFirstOnly(gradcheck.Layer):
    """Splits the features in two, but backward forgets the second output's gradient."""

    def __init__(self, sizes):
        super().__init__()
        self.sizes = list(sizes)

    def build(self, input_shape, rng):
        return [(self.sizes[0],), (self.sizes[1],)]

    def forward(self, x):
        return x[:, :self.sizes[0]], x[:, self.sizes[0]:]

    def backward(self, first, second):
        return np.concatenate([first, np.zeros_like(second)], axis=1)  # BUG: second dropped
