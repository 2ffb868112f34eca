"""Course-style function pairs for the function-layer tests: correct ones with awkward habits
(global random draws, writing into their arguments) and deliberately wrong ones.

x: (N, D), w: (D, M), b: (M,) throughout.
"""

import random

import numpy as np

CALLS = []  # appended to by counted_forward: shows which module object a reference reached


def affine_forward(x, w, b):
    return x @ w + b, (x, w)


def affine_backward(dout, cache):
    x, w = cache
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)


def affine_backward_wrong_db(dout, cache):
    """Wrong only for the second parameter: db averaged over the batch instead of summed."""
    x, w = cache
    return dout @ w.T, x.T @ dout, dout.mean(axis=0)


def affine_backward_two_grads(dout, cache):
    """Forgets db: two values where three are due."""
    x, w = cache
    return dout @ w.T, x.T @ dout


def affine_backward_db_shape(dout, cache):
    """db keeps the batch axis: shape (1, M) instead of (M,)."""
    x, w = cache
    return dout @ w.T, x.T @ dout, dout.sum(axis=0, keepdims=True)


def affine_backward_swapped(dout, cache):
    """Returns (dx, db, dw): the order forward does not take them in."""
    x, w = cache
    return dout @ w.T, dout.sum(axis=0), x.T @ dout


def affine_forward_no_cache(x, w, b):
    return x @ w + b


def shifted_forward(x, w, b):
    """Writes into its argument (x -= ...), as much course code does: the result is still
    x @ w + b because the shift is undone in the product's bias term."""
    shift = x.max()
    x -= shift
    return x @ w + b + shift * w.sum(axis=0), (x + shift, w)


def noisy_scale_forward(x):
    """Draws a mask from numpy's global generator and a factor from Python's random, without
    reseeding: deterministic only if every call starts from the same global state."""
    mask = np.random.rand(*x.shape) > 0.3
    factor = 1.0 + random.random()
    return x * mask * factor, mask * factor


def noisy_scale_backward(dout, cache):
    return dout * cache


def counted_forward(x):
    CALLS.append(len(x))
    return x * 2.0, None


def counted_backward(dout, cache):
    return dout * 2.0


def half_square_loss(pred, target):
    """L = 0.5 * sum((pred - target)**2) / N; target_kind values."""
    diff = pred - target
    return 0.5 * np.sum(diff * diff) / len(pred), diff / len(pred)


def softmax_loss_no_mean(x, y):
    """Softmax cross-entropy whose gradient forgets the 1/N of the mean loss."""
    shifted = x - x.max(axis=1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(x)), y]).mean()
    p[np.arange(len(x)), y] -= 1
    return loss, p


def loss_without_gradient(x, y):
    return float(np.sum(x))


_OUT = {}


def reused_forward(x):
    """y = 3x written into one module-level array per shape, reused by every call."""
    out = _OUT.setdefault(x.shape, np.empty_like(x))
    np.multiply(x, 3.0, out=out)
    return out, None


def reused_backward(dout, cache):
    return dout * 3.0
