"""2-D convolution (cross-correlation, as in every deep-learning library), NCHW.

Also home to the small window helpers that the pooling layers share: option pairs, output size,
padding, and the per-kernel-element slices both families compute with.
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from gradcheck.errors import LayerError
from gradcheck.contract import Layer
from gradcheck.layers.init import parse_init
from gradcheck.registry import register_layer


def as_pair(value, option: str, layer: str, minimum: int = 1) -> tuple[int, int]:
    """Normalise an int or a 2-list ``[height, width]`` to ``(h, w)``, each >= ``minimum``."""
    pair = (value, value) if _is_int(value) else value
    if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(_is_int(v) for v in pair)
            and min(pair) >= minimum):
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise LayerError(
            f"{layer} option {option!r} must be {kind} or a list [height, width] of such "
            f"integers, got {value!r}.")
    return int(pair[0]), int(pair[1])


def _is_int(value) -> bool:
    # YAML `true` parses to a bool, which is an int subclass; it is never meant as a size.
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


# The axis names (Layer.axis_names) of a per-sample image (channels, height, width).
IMAGE_AXES = ("channel", "row", "column")


def spatial_input(layer: str, input_shape) -> tuple[int, int, int]:
    """Check a per-sample shape is (channels, height, width) and return it."""
    if len(input_shape) != 3:
        raise LayerError(
            f"{layer} expects a per-sample input (channels, height, width), got shape "
            f"{tuple(input_shape)}.",
            hint="images are NCHW; reshape flat data to (channels, height, width) first")
    return tuple(int(n) for n in input_shape)


def output_size(layer: str, size: tuple[int, int], window: tuple[int, int],
                stride: tuple[int, int], padding: tuple[int, int]) -> tuple[int, int]:
    """Output (height, width) of sliding ``window`` (already dilated) over a padded input.

    Floor mode: a window that would hang over the padded edge is dropped.
    """
    out = []
    for axis, n, k, s, p in zip(("height", "width"), size, window, stride, padding):
        if k > n + 2 * p:
            # This is exactly the case where the output would have size < 1.
            raise LayerError(
                f"{layer} window spans {k} along {axis} but the input is only {n} "
                f"(+{2 * p} padding = {n + 2 * p}), so the output would be empty.",
                hint="shrink the window (kernel, dilation or pool size), add padding, or remove "
                     "a downsampling layer before this one")
        out.append((n + 2 * p - k) // s + 1)
    return out[0], out[1]


def tap_slices(tap: tuple[int, int], out_shape: tuple[int, int], stride: tuple[int, int],
               dilation: tuple[int, int] = (1, 1)) -> tuple[slice, slice]:
    """Where kernel element ``tap`` = (i, j) lands in the padded input, for every output position.

    ``x_padded[:, :, rows, cols]`` is (batch, C, out_h, out_w): the input values that all output
    positions see through that one kernel element. Pooling and conv2d's backward loop over the
    kh*kw taps, each a whole-batch array operation that never materialises a kh*kw times larger
    copy of the input (conv2d's forward does, in bounded chunks: see ``Conv2D.forward``).
    """
    rows, cols = (slice(t * d, t * d + s * (n - 1) + 1, s)
                  for t, n, s, d in zip(tap, out_shape, stride, dilation))
    return rows, cols


def taps(kernel: tuple[int, int]):
    """Kernel elements (i, j) in row-major order, the order ties are broken in."""
    return itertools.product(range(kernel[0]), range(kernel[1]))


def pad_spatial(x: np.ndarray, padding: tuple[int, int], value: float = 0.0) -> np.ndarray:
    """Pad the last two axes of (batch, C, H, W) by ``padding`` on both sides."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def crop_spatial(grad_padded: np.ndarray, padding: tuple[int, int]) -> np.ndarray:
    """Inverse of ``pad_spatial`` for gradients: drop the padded border."""
    ph, pw = padding
    height, width = grad_padded.shape[2:]
    return grad_padded[:, :, ph:height - ph, pw:width - pw]


# Cap on one chunk of conv2d's im2col columns (rows x (C*kh*kw + 1) x positions). 2-4 MiB chunks
# were fastest at every bench/conv_micro.py shape (2 MiB L2, 32 MiB L3); 8 MiB ones run up to 25%
# slower, 512 KiB ones up to 20% slower from per-chunk call costs.
COLUMN_BYTES = 4 * 2**20
# float64 (taps, elements, filters) arrays alive at once in objective_changes for input elements
# (7.2 measured with tracemalloc).
BLOCK_ARRAYS = 8


@register_layer("conv2d")
class Conv2D(Layer):
    """Cross-correlation y[n, f] = sum_c W[f, c] * x[n, c] + b[f] over dilated, strided windows.

    x: (batch, C, H, W), W: (filters, C, kh, kw), b: (filters,), y: (batch, filters, out_h, out_w)
    with out = (H + 2*padding - dilation*(kernel-1) - 1) // stride + 1 per spatial axis.
    ``init`` draws W (default he, with fan_in = C*kh*kw and fan_out = filters*kh*kw),
    ``bias_init`` draws b (default zeros); see ``gradcheck.layers.init`` for the names.
    """

    axis_names = {"input": IMAGE_AXES, "W": ("filter", "channel", "kernel row", "kernel column"),
                  "b": ("filter",)}

    def __init__(self, filters: int, kernel, stride=1, padding=0, dilation=1, bias: bool = True,
                 init="he", bias_init="zeros"):
        super().__init__()
        if not _is_int(filters) or filters < 1:
            raise LayerError(
                f"conv2d option 'filters' must be a positive integer, got {filters!r}.")
        if not isinstance(bias, bool):
            raise LayerError(f"conv2d option 'bias' must be true or false, got {bias!r}.")
        self.filters = int(filters)
        self.kernel = as_pair(kernel, "kernel", "conv2d")
        self.stride = as_pair(stride, "stride", "conv2d")
        self.padding = as_pair(padding, "padding", "conv2d", minimum=0)
        self.dilation = as_pair(dilation, "dilation", "conv2d")
        self.bias = bias
        self.init = parse_init(init, "init", "conv2d")
        self.bias_init = parse_init(bias_init, "bias_init", "conv2d")

    def build(self, input_shape, rng):
        channels, height, width = spatial_input("conv2d", input_shape)
        kh, kw = self.kernel
        out_h, out_w = output_size("conv2d", (height, width), self._span(), self.stride,
                                   self.padding)
        fan_in, fan_out = channels * kh * kw, self.filters * kh * kw
        self.params["W"] = self.init(rng, (self.filters, channels, kh, kw), fan_in, fan_out)
        if self.bias:
            self.params["b"] = self.bias_init(rng, (self.filters,), fan_in, fan_out)
        return (self.filters, out_h, out_w)

    def forward(self, x):
        batch, channels, height, width = x.shape
        (kh, kw), (sh, sw), (dh, dw), (ph, pw) = self.kernel, self.stride, self.dilation, self.padding
        self.x, self._x_padded = x, None  # backward pads x when it needs to (x_padded)
        self.out_shape = out_h, out_w = output_size("conv2d", (height, width), self._span(),
                                                    self.stride, self.padding)
        padded_h, padded_w = height + 2 * ph, width + 2 * pw
        # At stride 1 each output row is computed over the whole padded width (the last
        # dilation*(kw-1) positions are garbage, dropped at the end): every kernel element then
        # reads one contiguous run of the flattened padded image, so the im2col gather below is a
        # few long copies instead of one short copy per output row. Strided windows are gathered
        # as they are.
        grid_w = padded_w if sw == 1 else out_w
        positions = out_h * grid_w
        depth = channels * kh * kw
        rows = max(1, min(batch, COLUMN_BYTES // ((depth + 1) * positions * x.dtype.itemsize)))

        # Parameters are read afresh on every call: the engine perturbs them in place. Casting
        # them to x's dtype keeps float32 runs in float32 instead of silently upcasting. The bias
        # rides along as one more weight column against a constant row of ones in the columns.
        weight = np.zeros((self.filters, depth + 1), dtype=x.dtype)
        weight[:, :depth] = self.params["W"].reshape(self.filters, -1)
        if self.bias:
            weight[:, depth] = self.params["b"]
        # Zero-padded chunk of the input, flat, plus slack so that the garbage positions of the
        # last row may read past the last image. Only the interior is rewritten per chunk.
        image = channels * padded_h * padded_w
        flat = np.zeros(rows * image + dw * (kw - 1), dtype=x.dtype)
        interior = flat[:rows * image].reshape(rows, channels, padded_h, padded_w)[
            :, :, ph:ph + height, pw:pw + width]
        step = flat.itemsize
        # (rows, C, kh, kw, out_h, grid_w) view of the chunk: what every kernel element sees.
        windows = np.lib.stride_tricks.as_strided(
            flat, (rows, channels, kh, kw, out_h, grid_w),
            (image * step, padded_h * padded_w * step, dh * padded_w * step, dw * step,
             sh * padded_w * step, sw * step), writeable=False)
        columns = np.empty((rows, depth + 1, positions), dtype=x.dtype)
        columns[:, depth] = 1
        product = np.empty((rows, self.filters, positions), dtype=x.dtype)
        y = np.empty((batch, self.filters, out_h, out_w), dtype=x.dtype)
        # im2col per chunk, then one (filters, C*kh*kw + 1) @ (C*kh*kw + 1, positions) product per
        # row: the deep product beats kh*kw shallow ones and a single wide one (bench/conv_micro.py).
        for start in range(0, batch, rows):
            n = min(rows, batch - start)
            interior[:n] = x[start:start + n]
            np.copyto(columns[:n, :depth].reshape(n, channels, kh, kw, out_h, grid_w), windows[:n])
            np.matmul(weight, columns[:n], out=product[:n])
            y[start:start + n] = product[:n].reshape(n, self.filters, out_h, grid_w)[..., :out_w]
        return y

    @property
    def x_padded(self) -> np.ndarray:
        """(batch, C, H + 2*ph, W + 2*pw): the last forward's input, zero-padded on first use."""
        if self._x_padded is None:
            self._x_padded = pad_spatial(self.x, self.padding)
        return self._x_padded

    def backward(self, grad_out):
        dtype = self.x_padded.dtype
        batch = grad_out.shape[0]
        weight = self.params["W"].astype(dtype, copy=False)
        grad_flat = grad_out.astype(dtype, copy=False).reshape(batch, self.filters, -1)
        grad_w = np.empty(weight.shape, dtype=dtype)
        grad_padded = np.zeros(self.x_padded.shape, dtype=dtype)
        for i, j in taps(self.kernel):
            patch = self._patch(i, j)
            # sum over batch and positions of grad_out (filters, P) times patch^T (P, C).
            grad_w[:, :, i, j] = (grad_flat @ patch.transpose(0, 2, 1)).sum(axis=0)
            rows, cols = tap_slices((i, j), self.out_shape, self.stride, self.dilation)
            # += accumulates where windows overlap (stride < dilated kernel).
            grad_padded[:, :, rows, cols] += (weight[:, :, i, j].T @ grad_flat).reshape(
                batch, -1, *self.out_shape)
        self.grads["W"] = grad_w.astype(self.params["W"].dtype, copy=False)
        if self.bias:
            self.grads["b"] = grad_flat.sum(axis=(0, 2)).astype(self.params["b"].dtype,
                                                               copy=False)
        return crop_spatial(grad_padded, self.padding)

    def perturbed_outputs(self, x, name, flat_indices, values):
        """forward(x) with one element of W or b replaced, per copy: (n, batch, filters, oh, ow).

        y is affine in W and b: W[f, c, i, j] -> v adds (v - W[f, c, i, j]) times the input seen
        through kernel element (i, j) of channel c to output channel f only."""
        y = self.forward(x)
        copies = np.arange(len(flat_indices))
        delta = (values - self.params[name].reshape(-1)[flat_indices]).astype(y.dtype)
        out = np.repeat(y[None], len(copies), axis=0)
        if name == "W":
            f, c, i, j = np.unravel_index(flat_indices, self.params["W"].shape)
            patches = self._windows()[:, c, i, j]  # (batch, n, out_h, out_w)
            out[copies, :, f] += delta[:, None, None, None] * patches.transpose(1, 0, 2, 3)
        else:
            out[copies, :, flat_indices] += delta[:, None, None, None]
        return out

    def perturbed_input_rows(self, x, flat_indices, values):
        """Row n of forward(x) with x[n, c, i, j] replaced by ``values[k]``, per k: (k, filters,
        out_h, out_w). y is affine in x: the change d adds d * W[:, c, ti, tj] at every output
        position that sees input (i, j) through kernel element (ti, tj)."""
        y = self.forward(x)
        n, c, i, j = np.unravel_index(flat_indices, x.shape)
        delta = (values - x.reshape(-1)[flat_indices]).astype(y.dtype)
        out = y[n]
        weight = self.params["W"].astype(y.dtype, copy=False)
        for hit, a, b, ti, tj in self._outputs_seeing(i, j, y.shape[2:]):
            # One hit per copy and element: plain fancy-index += never meets a repeated index.
            out[hit, :, a, b] += delta[hit, None] * weight[:, c[hit], ti, tj].T
        return out

    def objective_changes(self, x, grad_out, name, flat_indices, values):
        """The optional contract speed-up: the change of sum(grad_out * forward(x)) when one
        element of x, W or b becomes ``values[k]``, per k, from the outputs it moves (y is
        affine in each): x[n, c, i, j] moves row n by delta * W[:, c, ti, tj] wherever kernel
        element (ti, tj) sees it; W[f, c, ti, tj] moves filter f by delta times the input that
        kernel element sees; b[f] moves filter f by delta. Magnitudes: sum |grad_out * y| over
        what moved."""
        idx = np.asarray(flat_indices, dtype=np.intp)
        y = self.forward(x).astype(np.float64)
        g = grad_out.astype(np.float64)
        if name == "input":
            changes, magnitudes = np.zeros(len(idx)), np.zeros(len(idx))
            values = np.asarray(values, np.float64)
            # Elements per block: the (taps, elements, filters) arrays it holds at once stay
            # within COLUMN_BYTES together.
            filters, _, kh, kw = self.params["W"].shape
            per_block = max(1, COLUMN_BYTES // (BLOCK_ARRAYS * 8 * filters * kh * kw))
            for lo in range(0, len(idx), per_block):
                part = slice(lo, lo + per_block)
                changes[part], magnitudes[part] = self._input_changes(x, g, y, idx[part],
                                                                      values[part])
            return changes, magnitudes, None
        delta = np.asarray(values, np.float64) - self.params[name].astype(np.float64).reshape(
            -1)[idx]
        if name == "W":
            f, c, ti, tj = np.unravel_index(idx, self.params["W"].shape)
            moved = delta[:, None, None, None] * self._windows()[:, c, ti, tj].transpose(
                1, 0, 2, 3)  # (k, batch, out_h, out_w)
        else:
            f = idx
            moved = np.broadcast_to(delta[:, None, None, None], (len(idx), *y[:, 0].shape))
        seen = g[:, f].transpose(1, 0, 2, 3)
        return (np.einsum("knij,knij->k", seen, moved),
                np.einsum("knij,knij->k", np.abs(seen), np.abs(y[:, f].transpose(1, 0, 2, 3) +
                                                              moved) * (moved != 0)), None)

    def _input_changes(self, x, g, y, idx, values):
        """``objective_changes`` for input elements ``idx`` (g, y: grad_out and forward(x) in
        float64), every kernel element (tap) at once: (taps, k) arrays of what each tap adds,
        exactly 0 where it reaches no output, then summed tap after tap, so that an element's
        change is the same to the bit whatever else is computed with it."""
        n, c, i, j = np.unravel_index(idx, x.shape)
        delta = values - x.reshape(-1)[idx].astype(np.float64)
        filters, channels, kh, kw = self.params["W"].shape
        out_h, out_w = y.shape[2:]
        hit, a, b, tap = self._tap_outputs(i, j, (out_h, out_w))
        # Flat positions in y and g, (taps, k, filters): a tap that misses reads position 0.
        plane = out_h * out_w
        at = (np.where(hit, n * (filters * plane) + a * out_w + b, 0)[..., None]
              + np.arange(filters) * plane)
        seen = g.reshape(-1).take(at).reshape(-1, filters)
        weight = self.params["W"].astype(np.float64).reshape(-1).take(
            (c * (kh * kw) + tap)[..., None] + np.arange(filters) * (channels * kh * kw))
        moved = (delta[:, None] * weight).reshape(-1, filters)
        terms = np.where(hit, np.einsum("kf,kf->k", seen, moved).reshape(hit.shape), 0.0)
        sizes = np.where(hit, np.einsum("kf,kf->k", np.abs(seen), np.abs(
            y.reshape(-1).take(at).reshape(-1, filters) + moved) * (moved != 0)).reshape(
            hit.shape), 0.0)
        changes, magnitudes = np.zeros(len(idx)), np.zeros(len(idx))
        for t in range(len(tap)):
            changes += terms[t]
            magnitudes += sizes[t]
        return changes, magnitudes

    def _tap_outputs(self, i, j, out_shape):
        """For input positions (i, j) (k of them), per kernel element (``tap``, (taps, 1), in
        ``taps`` order: tap = ti * kw + tj): whether it reaches an output, and at which output
        position (a, b): (taps, k) arrays, a and b meaningless where it does not."""
        out_h, out_w = out_shape
        (sh, sw), (dh, dw), (ph, pw) = self.stride, self.dilation, self.padding
        tap = np.arange(self.kernel[0] * self.kernel[1])[:, None]
        ti, tj = np.divmod(tap, self.kernel[1])
        # Output (a, b) sees padded input (a*sh + ti*dh, b*sw + tj*dw) through tap (ti, tj).
        row, col = i + (ph - ti * dh), j + (pw - tj * dw)
        # The stride's division and remainder only where there is a stride: this runs for every
        # pass of a conv input.
        a, b = row if sh == 1 else row // sh, col if sw == 1 else col // sw
        hit = (row >= 0) & (col >= 0) & (a < out_h) & (b < out_w)
        if sh > 1 or sw > 1:
            hit &= (row % sh == 0) & (col % sw == 0)
        return hit, a, b, tap

    def _outputs_seeing(self, i, j, out_shape):
        """For input positions (i, j): per kernel element (ti, tj), which of them it reaches
        (``hit``) and at which output position (a, b)."""
        hits, a, b, tap = self._tap_outputs(i, j, out_shape)
        for t, (ti, tj) in zip(tap[:, 0], taps(self.kernel)):
            hit = np.flatnonzero(hits[t])
            yield hit, a[t, hit], b[t, hit], ti, tj

    def _span(self) -> tuple[int, int]:
        """Extent of the dilated kernel: dilation * (kernel - 1) + 1 per axis."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    def _windows(self) -> np.ndarray:
        """(batch, C, kh, kw, out_h, out_w) read-only view: the input under every kernel element."""
        (sh, sw), (dh, dw) = self.stride, self.dilation
        # (batch, C, positions_h, positions_w, span_h, span_w) at stride 1, then every stride-th
        # position and every dilation-th element of each window.
        view = sliding_window_view(self.x_padded, self._span(), axis=(2, 3))
        view = view[:, :, ::sh, ::sw, ::dh, ::dw]
        return view.transpose(0, 1, 4, 5, 2, 3)

    def _patch(self, i: int, j: int) -> np.ndarray:
        """(batch, C, out_h * out_w) input seen through kernel element (i, j)."""
        rows, cols = tap_slices((i, j), self.out_shape, self.stride, self.dilation)
        batch, channels = self.x_padded.shape[:2]
        return self.x_padded[:, :, rows, cols].reshape(batch, channels, -1)
