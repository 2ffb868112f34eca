"""Normalisation layers: batch normalisation, layer normalisation, local response normalisation."""

from __future__ import annotations

import math

import numpy as np

from gradcheck.errors import LayerError
from gradcheck.contract import Layer
from gradcheck.layers.conv import IMAGE_AXES
from gradcheck.registry import register_layer

# Input bytes per block of groups in BatchNorm.forward_groups (best of 256 KiB - 2 MiB measured with
# bench/layer_micro.py).
NORM_BLOCK_BYTES = 2**20
# Fewest positions per channel for which BatchNorm.forward_replaced_rows writes its copies with one
# small matrix product per (row, channel): below it, per-product call costs outweigh the pass saved.
MATMUL_POSITIONS = 16


def _number(layer: str, option: str, value) -> float:
    """Return ``value`` as a float, or raise LayerError if it is not a finite real number."""
    if isinstance(value, str):
        # PyYAML follows YAML 1.1, which reads `1e-5` (no dot) as a string: a common, baffling trap.
        raise LayerError(f"{layer}: {option} must be a number, got the string {value!r}.",
                         hint="YAML reads 1e-5 as text; write it as 1.0e-5")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LayerError(f"{layer}: {option} must be a finite number, got {value!r}.")
    return float(value)


def _positive(layer: str, option: str, value) -> float:
    number = _number(layer, option, value)
    if number <= 0:
        raise LayerError(f"{layer}: {option} must be positive, got {value!r}.")
    return number


def _normalise(x: np.ndarray, axes: tuple[int, ...], eps: float):
    """Return (x_hat, inv_std): x standardised over ``axes`` with the biased variance."""
    centred = x - x.mean(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt((centred * centred).mean(axis=axes, keepdims=True) + eps)
    return centred * inv_std, inv_std


def _normalise_backward(grad_x_hat: np.ndarray, x_hat: np.ndarray, inv_std: np.ndarray,
                        axes: tuple[int, ...]) -> np.ndarray:
    """dL/dx given dL/dx_hat when the mean and variance were computed from x itself over ``axes``.

    The two mean terms are the paths through the mean and through the variance (cs231n's compact
    form of Ioffe & Szegedy's equations).
    """
    return inv_std * (grad_x_hat - grad_x_hat.mean(axis=axes, keepdims=True)
                      - x_hat * (grad_x_hat * x_hat).mean(axis=axes, keepdims=True))


@register_layer("batchnorm")
class BatchNorm(Layer):
    """Batch normalisation (Ioffe & Szegedy 2015): y = gamma * (x - mean) / sqrt(var + eps) + beta.

    x, y: (batch, F) with statistics per feature over the batch axis, or (batch, C, H, W) with
    statistics per channel over the batch, height and width axes.  gamma, beta: (F,) or (C,).

    Training mode uses the current batch's mean and biased variance, so each sample's output depends
    on the others (``mixes_batch``).  Eval mode uses the buffers ``running_mean`` and
    ``running_var`` (shape (F,) or (C,), initialised to 0 and 1; state, not parameters: never
    perturbed, never reported) and treats each sample on its own.

    ``forward`` never updates the running statistics: the checker calls it many times on perturbed
    inputs and needs every call to be deterministic and free of side effects.  Call
    ``update_running_stats(x)`` explicitly to apply the usual moving average with ``momentum``.
    """

    # The contract makes this a class attribute, so it cannot follow the mode; declaring eval mode
    # as mixing too is conservative: it can cost the engine speed, never correctness.
    mixes_batch = True

    def __init__(self, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps = _positive("batchnorm", "eps", eps)
        self.momentum = _number("batchnorm", "momentum", momentum)
        if not 0.0 <= self.momentum <= 1.0:
            raise LayerError(f"batchnorm: momentum must lie in [0, 1], got {momentum!r}.",
                             hint="it is the weight of the new batch, as in PyTorch (0.1), "
                                  "not Keras's weight of the old average (0.99)")

    def build(self, input_shape, rng):
        if len(input_shape) not in (1, 3):
            raise LayerError(
                f"batchnorm expects per-sample shape (features,) or (channels, height, width), "
                f"got {tuple(input_shape)}.",
                hint="use 'layernorm' to normalise inputs of other ranks")
        channels = input_shape[0]
        self.params["gamma"] = np.ones(channels)
        self.params["beta"] = np.zeros(channels)
        layout = ("feature",) if len(input_shape) == 1 else IMAGE_AXES
        self.axis_names = {"input": layout, "gamma": layout[:1], "beta": layout[:1]}
        self.buffers["running_mean"] = np.zeros(channels)
        self.buffers["running_var"] = np.ones(channels)
        return tuple(input_shape)

    def _stat_axes(self, x: np.ndarray) -> tuple[int, ...]:
        """Axes of the batch statistics (all but channel axis 1); raise if they hold one value."""
        axes = (0,) + tuple(range(2, x.ndim))
        if x.size // x.shape[1] == 1:
            raise LayerError(
                f"batchnorm in training mode normalises each channel over the batch and spatial "
                f"axes, which hold a single value for input of shape {x.shape}: the variance is 0 "
                f"and the output would be beta whatever the input.",
                hint="use a batch of at least 2 samples, or 'layernorm', which normalises each "
                     "sample on its own")
        return axes

    def forward(self, x):
        # Parameters and running statistics broadcast against x along the channel axis.
        view = (1, -1) + (1,) * (x.ndim - 2)
        self.batch_stats = self.training
        if self.batch_stats:
            self.axes = self._stat_axes(x)
            self.x_hat, self.inv_std = _normalise(x, self.axes, self.eps)
        else:
            self.axes = (0,) + tuple(range(2, x.ndim))
            # astype: buffers assigned after build may not be in the network's dtype.
            mean = self.buffers["running_mean"].reshape(view).astype(x.dtype, copy=False)
            var = self.buffers["running_var"].reshape(view).astype(x.dtype, copy=False)
            self.inv_std = 1.0 / np.sqrt(var + self.eps)
            self.x_hat = (x - mean) * self.inv_std
        return self.params["gamma"].reshape(view) * self.x_hat + self.params["beta"].reshape(view)

    def forward_groups(self, x, group_size):
        """Forward on each consecutive block of ``group_size`` rows as its own batch (the optional
        contract method the engine uses to run many perturbed copies of the batch in one call).
        x: (groups * group_size, *shape). Nothing is cached: no backward follows it."""
        if not self.training:
            return self.forward(x)
        self._stat_axes(x[:group_size])
        channels = x.shape[1]
        # (group, row, channel, position): every statistic reduces the contiguous last axis first
        # (fast), then the short row axis; numpy's multi-axis reductions over (1, 3, 4) are slow.
        grouped = x.reshape(x.shape[0] // group_size, group_size, channels, -1)
        count = group_size * grouped.shape[3]
        y = np.empty_like(grouped)
        gamma, beta = self.params["gamma"], self.params["beta"][:, None]
        # Blocks of groups whose input and output stay in L2 across the five passes below.
        step = max(1, NORM_BLOCK_BYTES // max(1, grouped[:1].nbytes))
        for start in range(0, len(grouped), step):
            block, out = grouped[start:start + step], y[start:start + step]
            mean = np.einsum("gkcp->gc", block) / count
            np.subtract(block, mean[:, None, :, None], out=out)
            # Two-pass variance, from the centred values as forward computes it: the engine's
            # finite differences need it accurate, not sum(x^2) - n * mean^2.
            variance = np.einsum("gkcp,gkcp->gc", out, out) / count
            out *= (gamma / np.sqrt(variance + self.eps))[:, None, :, None]
            out += beta
        return y.reshape(x.shape)

    def forward_replaced_rows(self, x, rows, new_rows):
        """forward(x) with row ``rows[k]`` replaced by ``new_rows[k]``, for each k: (k, *x.shape).

        The optional contract method the engine uses for perturbations that change one sample:
        in training mode each copy's statistics are the clean ones plus that row's change, so a
        copy costs one scale-and-shift of the clean batch instead of a normalisation. Exact to
        rounding when the replaced row carries a small share of the variance (a perturbed row
        does); the engine confirms a copy against ``forward``. Nothing is cached."""
        count_copies = len(rows)
        copies = np.arange(count_copies)
        if not self.training:
            out = np.repeat(self.forward(x)[None], count_copies, axis=0)
            out[copies, rows] = self.forward(new_rows)
            return out
        self._stat_axes(x)
        channels = x.shape[1]
        flat = x.reshape(x.shape[0], channels, -1)  # (batch, C, positions)
        count = flat.shape[0] * flat.shape[2]
        mean = np.einsum("bcp->c", flat) / count
        centred = flat - mean[:, None]
        # Everything is centred on the clean mean: the corrections below are then small terms
        # added to sums of squares, never a difference of large raw moments. The replaced rows'
        # sums are looked up from the clean batch's per-row sums instead of gathered and summed.
        row_sums = np.einsum("bcp->bc", centred)
        row_squares = np.vecdot(centred, centred)  # (batch, C); vecdot is ~3x faster than einsum
        new = new_rows.reshape(count_copies, channels, -1) - mean[:, None]
        mean_shift = (np.einsum("kcp->kc", new) - row_sums[rows]) / count
        squares = row_squares.sum(axis=0) + np.vecdot(new, new) - row_squares[rows]
        variance = squares / count - mean_shift * mean_shift
        scale = self.params["gamma"] / np.sqrt(variance + self.eps)  # (k, C)
        offset = self.params["beta"] - mean_shift * scale
        out = np.empty((count_copies, *flat.shape), dtype=x.dtype)
        if flat.shape[2] >= MATMUL_POSITIONS:
            # out[k, b, c] = scale[k, c] * centred[b, c] + offset[k, c] * 1: per (row, channel)
            # one (k, 2) @ (2, positions) product written straight into place. One pass over the
            # (k, batch, C, positions) output instead of a multiply and an add: ~1.6x faster.
            factors = np.stack([scale, offset], axis=2).astype(x.dtype, copy=False)  # (k, C, 2)
            terms = np.empty((flat.shape[0], channels, 2, flat.shape[2]), dtype=x.dtype)
            terms[:, :, 0] = centred
            terms[:, :, 1] = 1
            np.matmul(factors.transpose(1, 0, 2), terms, out=out.transpose(1, 2, 0, 3))
        else:
            np.multiply(centred, scale[:, None, :, None], out=out)
            out += offset[:, None, :, None]
        np.multiply(new, scale[:, :, None], out=new)
        new += offset[:, :, None]
        out[copies, rows] = new
        return out.reshape(count_copies, *x.shape)

    def objective_changes(self, x, grad_out, name, flat_indices, values):
        """The optional contract speed-up: the change of sum(grad_out * forward(x)) when
        ``x.flat[flat_indices[k]]`` becomes ``values[k]``, from each channel's sums.

        In training mode an element of channel c moves that channel's mean by delta/m and its
        sum of squared deviations by delta * (2 (x_e - mean) + delta (1 - 1/m)) (m values per
        channel), so with P = sum(G * x_hat) and S = sum(G) over the channel, the objective
        gamma (sum(G (x - mean)) / sigma) + beta S changes by
        gamma (delta (G_e - S/m) / sigma' - P q / (sigma' (sigma + sigma'))), q = sigma'^2 -
        sigma^2: every term small, no difference of two large sums. Magnitudes: the channel's
        sum(|G * y|), which every copy changes."""
        if name != "input":
            return None  # gamma and beta: forward's copies
        batch, channels = x.shape[:2]
        flat = x.reshape(batch, channels, -1).astype(np.float64)
        g = grad_out.reshape(flat.shape).astype(np.float64)
        idx = np.asarray(flat_indices, dtype=np.intp)
        channel = (idx // flat.shape[2]) % channels
        delta = np.asarray(values, dtype=np.float64) - x.reshape(-1)[idx].astype(np.float64)
        gamma = self.params["gamma"].astype(np.float64)
        beta = self.params["beta"].astype(np.float64)
        if not self.training:
            sigma = np.sqrt(self.buffers["running_var"].astype(np.float64) + self.eps)
            x_hat = (flat - self.buffers["running_mean"][None, :, None]) / sigma[None, :, None]
            weight = g.reshape(-1)[idx]
            changes = weight * gamma[channel] * delta / sigma[channel]
            new = gamma[channel] * (x_hat.reshape(-1)[idx] + delta / sigma[channel])
            return changes, np.abs(weight * (new + beta[channel])) * (changes != 0), None
        self._stat_axes(x)
        count = flat.shape[0] * flat.shape[2]
        mean = flat.mean(axis=(0, 2))
        centred = flat - mean[None, :, None]
        sigma = np.sqrt((centred * centred).mean(axis=(0, 2)) + self.eps)
        x_hat = centred / sigma[None, :, None]
        total = g.sum(axis=(0, 2))
        projected = np.einsum("bcp,bcp->c", g, x_hat)
        magnitude = np.einsum("bcp,bcp->c", np.abs(g), np.abs(gamma[None, :, None] * x_hat +
                                                               beta[None, :, None]))
        s, c = sigma[channel], channel
        q = delta * (2.0 * centred.reshape(-1)[idx] +
                     delta * (1.0 - 1.0 / count)) / count
        s_new = np.sqrt(s * s + q)
        changes = gamma[c] * (delta * (g.reshape(-1)[idx] - total[c] / count) / s_new
                              - projected[c] * q / (s_new * (s + s_new)))
        return changes, np.where(delta != 0, magnitude[c], 0.0), None

    def backward(self, grad_out):
        view = (1, -1) + (1,) * (grad_out.ndim - 2)
        self.grads["gamma"] = (grad_out * self.x_hat).sum(axis=self.axes)
        self.grads["beta"] = grad_out.sum(axis=self.axes)
        grad_x_hat = grad_out * self.params["gamma"].reshape(view)
        if not self.batch_stats:
            # Running statistics are constants, so the layer is affine in x.
            return grad_x_hat * self.inv_std
        return _normalise_backward(grad_x_hat, self.x_hat, self.inv_std, self.axes)

    def update_running_stats(self, x: np.ndarray) -> None:
        """Blend the statistics of batch ``x`` (laid out as forward's input) into the running ones.

        running = (1 - momentum) * running + momentum * batch statistic, with the unbiased variance
        for ``running_var`` as PyTorch does.  Never called by forward (see the class docstring).
        """
        axes = self._stat_axes(x)
        count = x.size // x.shape[1]
        mean = x.mean(axis=axes)
        var = x.var(axis=axes) * count / (count - 1)
        for name, batch in (("running_mean", mean), ("running_var", var)):
            self.buffers[name] = (1.0 - self.momentum) * self.buffers[name] + self.momentum * batch


@register_layer("layernorm")
class LayerNorm(Layer):
    """Layer normalisation (Ba et al. 2016): each sample standardised over all its non-batch axes,
    or with ``axes: last`` each position over its last axis (features of a time step).

    x, y: (batch, *shape).  y = gamma * (x - mean) / sqrt(var + eps) + beta, with the mean and
    biased variance of each sample (``axes: all``, gamma and beta: shape) or of each position
    over the last axis only (``axes: last``, gamma and beta: (shape[-1],)): a sequence
    (batch, T, F) then normalises every time step over its F features, as transformers do.
    Samples never mix: both modes are the same.
    """

    def __init__(self, eps: float = 1e-5, axes: str = "all"):
        super().__init__()
        self.eps = _positive("layernorm", "eps", eps)
        if axes not in ("all", "last"):
            raise LayerError(f"layernorm: axes must be 'all' or 'last', got {axes!r}.",
                             hint="'last' normalises each time step of a sequence over its "
                                  "features; 'all' each sample over all its values")
        self.over_last = axes == "last"

    def build(self, input_shape, rng):
        normalised = tuple(input_shape[-1:] if self.over_last else input_shape)
        if math.prod(normalised) < 2:
            raise LayerError(
                f"layernorm normalises over {math.prod(normalised)} element(s) (per-sample shape "
                f"{tuple(input_shape)}, axes {'last' if self.over_last else 'all'}): the "
                f"variance is 0 and the output would be beta whatever the input.",
                hint="normalise a layer with at least 2 outputs per sample (per time step)")
        self.params["gamma"] = np.ones(normalised)
        self.params["beta"] = np.zeros(normalised)
        return tuple(input_shape)

    def forward(self, x):
        self.axes = (x.ndim - 1,) if self.over_last else tuple(range(1, x.ndim))
        self.x_hat, self.inv_std = _normalise(x, self.axes, self.eps)
        return self.params["gamma"] * self.x_hat + self.params["beta"]

    def backward(self, grad_out):
        shared = tuple(range(grad_out.ndim - self.params["gamma"].ndim))  # batch (and time)
        self.grads["gamma"] = (grad_out * self.x_hat).sum(axis=shared)
        self.grads["beta"] = grad_out.sum(axis=shared)
        return _normalise_backward(grad_out * self.params["gamma"], self.x_hat, self.inv_std,
                                   self.axes)


@register_layer("lrn")
class LocalResponseNorm(Layer):
    """Local response normalisation across channels (Krizhevsky et al. 2012, section 3.3).

    x, y: (batch, C, H, W).  y_c = x_c / (k + alpha * sum_{c'} x_{c'}^2) ** beta, the sum running
    over the ``size`` channels centred on c, clipped at the first and last channel.

    alpha is *not* divided by ``size``: this is the paper's form (and TensorFlow's).  Caffe and
    PyTorch use alpha / size instead; to reproduce one of their configs, give alpha / size here.
    """

    axis_names = {"input": IMAGE_AXES}

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise LayerError(f"lrn: size must be a positive odd integer, got {size!r}.",
                             hint="the window is centred on each channel, so it needs an odd width")
        self.size = size
        self.alpha = _number("lrn", "alpha", alpha)
        if self.alpha < 0:
            # A negative alpha can drive k + alpha * sum below zero, where the power is undefined.
            raise LayerError(f"lrn: alpha must be non-negative, got {alpha!r}.")
        self.beta = _positive("lrn", "beta", beta)
        # k > 0 keeps the base positive even when every activation in a window is zero.
        self.k = _positive("lrn", "k", k)

    def build(self, input_shape, rng):
        if len(input_shape) != 3:
            raise LayerError(
                f"lrn normalises across the channels of images and expects per-sample shape "
                f"(channels, height, width), got {tuple(input_shape)}.",
                hint="use 'layernorm' or 'batchnorm' for flat inputs")
        return tuple(input_shape)

    def _window_sum(self, a: np.ndarray) -> np.ndarray:
        """out[:, c] = sum of a[:, c'] over the channels c' within size // 2 of c."""
        channels = a.shape[1]
        out = np.zeros_like(a)
        for offset in range(-(self.size // 2), self.size // 2 + 1):
            # Shifted slice addition rather than a cumulative sum: exact, and size is small.
            lo, hi = max(0, -offset), min(channels, channels - offset)
            if lo < hi:
                out[:, lo:hi] += a[:, lo + offset:hi + offset]
        return out

    def forward(self, x):
        self.x = x
        self.denom = self.k + self.alpha * self._window_sum(x * x)
        self.scale = self.denom ** -self.beta
        self.y = x * self.scale
        return self.y

    def backward(self, grad_out):
        # y_c depends on x_j directly (j = c) and through denom_c for every j in c's window.  The
        # window is symmetric, so the channels c whose window holds j are exactly j's own window.
        through_denom = self._window_sum(grad_out * self.y / self.denom)
        return grad_out * self.scale - 2.0 * self.alpha * self.beta * self.x * through_denom
