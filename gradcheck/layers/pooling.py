"""Spatial pooling, NCHW: max and average over sliding windows, and global average."""

from __future__ import annotations

import numpy as np

from gradcheck.errors import LayerError
from gradcheck.contract import Layer
from gradcheck.layers.conv import (IMAGE_AXES, as_pair, crop_spatial, output_size, pad_spatial, spatial_input,
                                   tap_slices, taps)
from gradcheck.registry import register_layer

# Output bytes per block of rows in MaxPool2D.forward: the block's running maximum, its spare and
# its input fit in L2 (measured best between 256 KiB and 1 MiB on bench/layer_micro.py shapes).
POOL_BLOCK_BYTES = 512 * 2**10


class _Pool2D(Layer):
    """Shared option handling for windowed pooling: size, stride (None = size) and padding."""

    axis_names = {"input": IMAGE_AXES}

    def __init__(self, size=2, stride=None, padding=0):
        super().__init__()
        name = self.registered_name
        self.size = as_pair(size, "size", name)
        self.stride = self.size if stride is None else as_pair(stride, "stride", name)
        self.padding = as_pair(padding, "padding", name, minimum=0)
        for axis, k, p in zip(("height", "width"), self.size, self.padding):
            # Beyond half a window, some windows would lie entirely in the padding: their
            # output would be a constant (-inf for max) carrying no gradient. PyTorch's rule.
            if p > k // 2:
                raise LayerError(
                    f"{name} padding along {axis} must be at most half the window "
                    f"({k} // 2 = {k // 2}), got {p}.",
                    hint="reduce padding or enlarge the window size")

    def build(self, input_shape, rng):
        name = self.registered_name
        channels, height, width = spatial_input(name, input_shape)
        out_h, out_w = output_size(name, (height, width), self.size, self.stride, self.padding)
        return (channels, out_h, out_w)

    def _out_shape(self, x: np.ndarray) -> tuple[int, int]:
        return output_size(self.registered_name, x.shape[2:], self.size, self.stride, self.padding)

    def _covering_windows(self, x: np.ndarray, flat_indices):
        """For input elements at ``flat_indices``: yield (positions among them, their
        (n, c, out_i, out_j) window, their row and column within it) for every window that
        covers them, one window offset at a time (one offset when stride >= size)."""
        idx = np.asarray(flat_indices, dtype=np.intp)
        n, c, i, j = np.unravel_index(idx, x.shape)
        out_h, out_w = self._out_shape(x)
        (ph, pw), (kh, kw), (sh, sw) = self.padding, self.size, self.stride
        for a in range(-(-kh // sh)):
            oi = (i + ph) // sh - a
            ri = i + ph - oi * sh
            for b in range(-(-kw // sw)):
                oj = (j + pw) // sw - b
                rj = j + pw - oj * sw
                at = np.flatnonzero((oi >= 0) & (oi < out_h) & (ri < kh) &
                                    (oj >= 0) & (oj < out_w) & (rj < kw))
                yield at, (n[at], c[at], oi[at], oj[at]), ri[at], rj[at]

    def _tap_views(self, x_padded: np.ndarray, out_shape: tuple[int, int]):
        """Yield (tap index, (batch, C, out_h, out_w) view) for each window element, row-major."""
        for index, tap in enumerate(taps(self.size)):
            rows, cols = tap_slices(tap, out_shape, self.stride)
            yield index, x_padded[:, :, rows, cols]


@register_layer("maxpool2d")
class MaxPool2D(_Pool2D):
    """y[n, c, i, j] = max of x[n, c] over window (i, j); padding is -inf so it never wins.

    x: (batch, C, H, W), y: (batch, C, out_h, out_w) with
    out = (H + 2*padding - size) // stride + 1 per spatial axis (floor mode).
    On exact ties the first maximum in row-major window order takes the whole gradient.
    """

    def forward(self, x):
        batch, channels = x.shape[:2]
        (ph, pw), (kh, kw) = self.padding, self.size
        self.padded_shape = (batch, channels, x.shape[2] + 2 * ph, x.shape[3] + 2 * pw)
        out_shape = self._out_shape(x)
        y = np.empty((batch, channels, *out_shape), dtype=x.dtype)
        # The smallest integer type that holds every tap index: int8 for any window up to 11x11.
        # Narrow indices make the bookkeeping nearly free and the engine's state comparisons cheap.
        self.argmax = np.zeros(y.shape, dtype=np.min_scalar_type(-(kh * kw)))
        index_type = self.argmax.dtype.type
        # Blocks of rows whose running maximum stays in cache across the kh*kw passes: on the
        # engine's stacked batches (1,000+ rows) that is 3x faster than whole-array passes.
        rows = max(1, POOL_BLOCK_BYTES // max(1, y[:1].nbytes))
        spare = np.empty((min(rows, batch), channels, *out_shape), dtype=x.dtype)
        wins = np.empty(spare.shape, dtype=bool)
        for start in range(0, batch, rows):
            block = pad_spatial(x[start:start + rows], self.padding, value=-np.inf)
            target, argmax = y[start:start + rows], self.argmax[start:start + rows]
            best = target
            other, won = spare[:len(block)], wins[:len(block)]
            for index, tap in enumerate(taps(self.size)):
                view = block[(slice(None), slice(None)) + tap_slices(tap, out_shape, self.stride)]
                if index == 0:
                    np.copyto(best, view)
                    continue
                # max(best, view) > best exactly when view > best (NaN and -0.0 included), and it
                # compares two contiguous arrays instead of re-reading the strided tap. Strictly
                # greater: on a tie the earlier element keeps the win, in forward, in backward
                # and in branch_state alike.
                np.maximum(best, view, out=other)
                np.greater(other, best, out=won)
                best, other = other, best
                # Branch-free select: masked writes are several times slower on random masks.
                argmax += won * (index_type(index) - argmax)
            if best is not target:  # an odd number of swaps left the maximum in the spare
                np.copyto(target, best)
        return y

    def objective_changes(self, x, grad_out, name, flat_indices, values):
        """The optional contract speed-up: each copy changes only the windows that cover its
        element, whose maximum is taken again with the new value; the branch is the winning
        tap of each of them."""
        values = np.asarray(values, dtype=x.dtype)
        padded = pad_spatial(x, self.padding, value=-np.inf)
        y = self.forward(x)
        (kh, kw), (sh, sw) = self.size, self.stride
        changes, magnitudes = np.zeros(len(values)), np.zeros(len(values))
        branches = np.zeros(len(values), dtype=np.int64)
        for at, window, ri, rj in self._covering_windows(x, flat_indices):
            n, c, oi, oj = window
            rows = (oi * sh)[:, None, None] + np.arange(kh)[None, :, None]
            cols = (oj * sw)[:, None, None] + np.arange(kw)[None, None, :]
            window_values = padded[n[:, None, None], c[:, None, None], rows, cols]  # a copy
            window_values[np.arange(len(at)), ri, rj] = values[at]
            window_values = window_values.reshape(len(at), kh * kw)
            winner = np.argmax(window_values, axis=1)  # the first maximum, as forward breaks ties
            new = window_values[np.arange(len(at)), winner].astype(np.float64)
            weight = grad_out[window].astype(np.float64)
            change = new - y[window].astype(np.float64)
            changes[at] += weight * change
            magnitudes[at] += np.abs(weight * new) * (change != 0)
            branches[at] = branches[at] * (kh * kw) + winner
        return changes, magnitudes, branches

    def backward(self, grad_out):
        batch, channels, height, width = self.padded_shape
        out_h, out_w = self.argmax.shape[2:]
        (sh, sw), (_, kw) = self.stride, self.size
        rows = np.arange(out_h)[:, None] * sh + self.argmax // kw
        cols = np.arange(out_w)[None, :] * sw + self.argmax % kw
        planes = np.arange(batch * channels).reshape(batch, channels, 1, 1)
        flat_index = (planes * height + rows) * width + cols
        # bincount sums repeated indices, which is what overlapping windows (stride < size) need.
        grad = np.bincount(flat_index.ravel(), weights=grad_out.ravel(),
                           minlength=batch * channels * height * width)
        grad = grad.reshape(self.padded_shape).astype(grad_out.dtype, copy=False)
        return crop_spatial(grad, self.padding)

    def branch_state(self):
        """Index of the winning element within each window: (batch, C, out_h, out_w) ints."""
        return getattr(self, "argmax", None)


@register_layer("avgpool2d")
class AvgPool2D(_Pool2D):
    """y[n, c, i, j] = sum of x[n, c] over window (i, j) / (size_h * size_w).

    Padding is zeros and counts in the divisor (count_include_pad), so the map is one fixed
    linear operator. x: (batch, C, H, W), y: (batch, C, out_h, out_w), sizes as for maxpool2d.
    """

    def forward(self, x):
        x_padded = pad_spatial(x, self.padding)
        self.padded_shape = x_padded.shape
        total = sum(view for _, view in self._tap_views(x_padded, self._out_shape(x)))
        return total / (self.size[0] * self.size[1])

    def objective_changes(self, x, grad_out, name, flat_indices, values):
        """The optional contract speed-up: a copy changes the average of every window that
        covers its element by (new - old) / window size."""
        idx = np.asarray(flat_indices, dtype=np.intp)
        delta = (np.asarray(values, dtype=np.float64) - x.reshape(-1)[idx].astype(np.float64)) / (
            self.size[0] * self.size[1])
        y = self.forward(x)
        changes, magnitudes = np.zeros(len(idx)), np.zeros(len(idx))
        for at, window, _, _ in self._covering_windows(x, idx):
            weight = grad_out[window].astype(np.float64)
            changes[at] += weight * delta[at]
            magnitudes[at] += np.abs(weight * (y[window].astype(np.float64) + delta[at]))
        return changes, magnitudes * (delta != 0), None

    def backward(self, grad_out):
        share = grad_out / (self.size[0] * self.size[1])
        grad = np.zeros(self.padded_shape, dtype=share.dtype)
        for _, view in self._tap_views(grad, grad_out.shape[2:]):
            view += share  # a view into grad: overlapping windows accumulate
        return crop_spatial(grad, self.padding)


@register_layer("global_avgpool")
class GlobalAvgPool(Layer):
    """y[n, c] = mean of x[n, c] over all H*W positions.  x: (batch, C, H, W), y: (batch, C)."""

    axis_names = {"input": IMAGE_AXES}

    def build(self, input_shape, rng):
        channels, _, _ = spatial_input("global_avgpool", input_shape)
        return (channels,)

    def forward(self, x):
        self.input_shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, grad_out):
        height, width = self.input_shape[2:]
        share = (grad_out / (height * width))[:, :, None, None]
        # A real array, not a read-only broadcast view: callers may write into gradients.
        return np.broadcast_to(share, self.input_shape).copy()
