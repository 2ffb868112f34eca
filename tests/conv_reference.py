"""Independent references for the convolution clients of examples/external: the convolution and
its gradients as plain loops, and the initial weights each client's comments say it draws.

Deliberately naive, sharing no code with gradcheck's conv2d or with the clients."""

from __future__ import annotations

import itertools
import math

import numpy as np


def reference_conv(x, weights, bias, padding):
    """y[n, f, i, j] = b[f] + sum over c, u, v of W[f, c, u, v] * x[n, c, i + u - P, j + v - P],
    x being zero outside its bounds. x (N, C, H, W), W (F, C, K, K) -> y (N, F, HO, WO)."""
    (batch, channels, height, width), (filters, _, kernel, _) = x.shape, weights.shape
    out_height, out_width = height + 2 * padding - kernel + 1, width + 2 * padding - kernel + 1
    y = np.zeros((batch, filters, out_height, out_width))
    for n, f, i, j in itertools.product(*map(range, y.shape)):
        total = bias[f]
        for c, u, v in itertools.product(range(channels), range(kernel), range(kernel)):
            row, col = i + u - padding, j + v - padding
            if 0 <= row < height and 0 <= col < width:
                total += weights[f, c, u, v] * x[n, c, row, col]
        y[n, f, i, j] = total
    return y


def reference_conv_backward(x, weights, grad_out, padding):
    """(dL/dx, dL/dW, dL/db) of reference_conv for dL/dy = grad_out: each product's two partial
    derivatives, accumulated term by term."""
    (_, channels, height, width), kernel = x.shape, weights.shape[2]
    grad_x, grad_w, grad_b = np.zeros_like(x), np.zeros_like(weights), np.zeros(weights.shape[0])
    for n, f, i, j in itertools.product(*map(range, grad_out.shape)):
        g = grad_out[n, f, i, j]
        grad_b[f] += g
        for c, u, v in itertools.product(range(channels), range(kernel), range(kernel)):
            row, col = i + u - padding, j + v - padding
            if 0 <= row < height and 0 <= col < width:
                grad_x[n, c, row, col] += g * weights[f, c, u, v]
                grad_w[f, c, u, v] += g * x[n, c, row, col]
    return grad_x, grad_w, grad_b


def _park_miller_normals(state: int, count: int) -> tuple[list[float], int]:
    """count Box-Muller normals from Park and Miller's minimal standard generator, and the state
    it ends in."""
    values = []
    for _ in range(count):
        state = 16807 * state % 2147483647
        u1 = state / 2147483647
        state = 16807 * state % 2147483647
        values.append(math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * state / 2147483647))
    return values, state


def _splitmix_normals(state: int, count: int) -> list[float]:
    """count Box-Muller normals from splitmix64's uniforms in (0, 1)."""
    mask, values = 2**64 - 1, []

    def uniform():
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return ((z ^ (z >> 31)) >> 11) / 2.0**53 + 0.5 / 2.0**53

    for _ in range(count):
        u1, u2 = uniform(), uniform()
        values.append(math.sqrt(-2 * math.log(u1)) * math.cos(6.283185307179586 * u2))
    return values


def initial_weights(client: str, seed: int, filters: int, channels: int, kernel: int):
    """(W, b) as the 'octave' or the 'cpp' client draws them from a build request's seed:
    W normal / sqrt(fan_in), b 0.1 * normal, from the generator its source names."""
    fan_in = channels * kernel * kernel
    if client == "octave":
        weights, state = _park_miller_normals(seed % 2147483646 + 1, filters * fan_in)
        bias, _ = _park_miller_normals(state, filters)
        # MATLAB's reshape fills the first index fastest.
        weights = np.reshape(weights, (filters, channels, kernel, kernel), order="F")
    else:
        values = _splitmix_normals(seed, filters * fan_in + filters)
        weights = np.reshape(values[:filters * fan_in], (filters, channels, kernel, kernel))
        bias = values[filters * fan_in:]
    return np.asarray(weights) / math.sqrt(fan_in), 0.1 * np.asarray(bias)
