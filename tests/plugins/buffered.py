"""Layers with buffers (non-trainable state): one that keeps running statistics beside a
trainable scale, one whose output reads a fixed buffer, and one whose forward drifts a buffer
its output reads, so that no two forwards agree."""

import numpy as np

import gradcheck


@gradcheck.register_layer("tracked_scale")
class TrackedScale(gradcheck.Layer):
    """y = x * s; forward also blends the batch mean into buffers['running_mean'] as frameworks
    do in training mode (the output never reads it)."""

    def build(self, input_shape, rng):
        self.params["s"] = rng.normal(size=input_shape)
        self.buffers["running_mean"] = np.zeros(input_shape)
        return tuple(input_shape)

    def forward(self, x):
        self.x = x
        self.buffers["running_mean"] = 0.9 * self.buffers["running_mean"] + 0.1 * x.mean(axis=0)
        return x * self.params["s"]

    def backward(self, grad_out):
        self.grads["s"] = (grad_out * self.x).sum(axis=0)
        return grad_out * self.params["s"]


@gradcheck.register_layer("fixed_shift")
class FixedShift(gradcheck.Layer):
    """y = (x - shift) * s with a fixed buffer shift (a frozen running mean)."""

    def build(self, input_shape, rng):
        self.params["s"] = rng.normal(size=input_shape)
        self.buffers["shift"] = rng.normal(size=input_shape)
        return tuple(input_shape)

    def forward(self, x):
        self.centred = x - self.buffers["shift"]
        return self.centred * self.params["s"]

    def backward(self, grad_out):
        self.grads["s"] = (grad_out * self.centred).sum(axis=0)
        return grad_out * self.params["s"]


@gradcheck.register_layer("drifting_scale")
class DriftingScale(gradcheck.Layer):
    """y = x * scale * s, where every forward grows the buffer scale: backward is right for the
    most recent forward, but no finite difference compares like with like."""

    def build(self, input_shape, rng):
        self.params["s"] = rng.normal(size=input_shape)
        self.buffers["scale"] = np.ones(input_shape)
        return tuple(input_shape)

    def forward(self, x):
        self.buffers["scale"] = self.buffers["scale"] * 1.01
        self.x = x
        return x * self.buffers["scale"] * self.params["s"]

    def backward(self, grad_out):
        self.grads["s"] = (grad_out * self.x * self.buffers["scale"]).sum(axis=0)
        return grad_out * self.buffers["scale"] * self.params["s"]


@gradcheck.register_layer("scalar_buffer")
class ScalarBuffer(gradcheck.Layer):
    """Keeps a step counter as a Python int in buffers, which the contract does not allow."""

    def build(self, input_shape, rng):
        self.buffers["steps"] = 0
        return tuple(input_shape)

    def forward(self, x):
        return x

    def backward(self, grad_out):
        return grad_out
