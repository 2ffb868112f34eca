"""A zoo of subtly wrong layers, each a bug people really write. Every one must be caught and
blamed by name (tests/test_verdicts.py, bench/detection.py). Shared forward code lives in the
base classes so that each buggy class differs from a correct one only in the line marked BUG."""

import numpy as np

import gradcheck


def _zoo(name):
    return gradcheck.register_layer(f"zoo_{name}")


class _Dense(gradcheck.Layer):
    def __init__(self, units: int = 6):
        super().__init__()
        self.units = units

    def build(self, input_shape, rng):
        (fan_in,) = input_shape
        self.params["W"] = rng.normal(0.0, 1.0 / np.sqrt(fan_in), (fan_in, self.units))
        self.params["b"] = rng.normal(0.0, 0.1, self.units)
        return (self.units,)

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def _correct(self, grad_out):
        self.grads["W"] = self.x.T @ grad_out
        self.grads["b"] = grad_out.sum(axis=0)
        return grad_out @ self.params["W"].T


@_zoo("dense_bias_mean")
class DenseBiasMean(_Dense):
    """Bias gradient averaged over the batch while the forward sums: a wrong 1/N."""

    def backward(self, grad_out):
        dx = self._correct(grad_out)
        self.grads["b"] = grad_out.mean(axis=0)  # BUG
        return dx


@_zoo("dense_bias_first_sample")
class DenseBiasFirstSample(_Dense):
    """Bias gradient taken from the first sample only (not summed over the batch)."""

    def backward(self, grad_out):
        dx = self._correct(grad_out)
        self.grads["b"] = grad_out[0].copy()  # BUG
        return dx


@_zoo("dense_square_transposed")
class DenseSquareTransposed(_Dense):
    """Square weight matrix whose gradient is transposed: grad_out.T @ x."""

    def backward(self, grad_out):
        dx = self._correct(grad_out)
        self.grads["W"] = grad_out.T @ self.x  # BUG: shapes agree only because W is square
        return dx


@_zoo("dense_dx_untransposed")
class DenseDxUntransposed(_Dense):
    """dL/dx = grad_out @ W instead of grad_out @ W.T (square W, so no shape error)."""

    def backward(self, grad_out):
        self._correct(grad_out)
        return grad_out @ self.params["W"]  # BUG


@_zoo("dense_loop_bound")
class DenseLoopBound(_Dense):
    """Weight gradient filled column by column with a loop that stops one column early."""

    def backward(self, grad_out):
        dx = self._correct(grad_out)
        dW = np.zeros_like(self.params["W"])
        for j in range(self.units - 1):  # BUG: range(self.units)
            dW[:, j] = self.x.T @ grad_out[:, j]
        self.grads["W"] = dW
        return dx


@_zoo("dense_batch_loop")
class DenseBatchLoop(_Dense):
    """dL/dx computed per sample in a loop that misses the last sample."""

    def backward(self, grad_out):
        self._correct(grad_out)
        dx = np.zeros_like(self.x)
        for n in range(len(self.x) - 1):  # BUG: range(len(self.x))
            dx[n] = grad_out[n] @ self.params["W"].T
        return dx


@_zoo("dense_weight_decay_inside")
class DenseWeightDecayInside(_Dense):
    """Adds the L2 term 1e-3 * W to its own weight gradient (the optimiser adds it again)."""

    def backward(self, grad_out):
        dx = self._correct(grad_out)
        self.grads["W"] = self.grads["W"] + 1e-3 * self.params["W"]  # BUG
        return dx


@_zoo("sigmoid_on_input")
class SigmoidOnInput(gradcheck.Layer):
    """Sigmoid whose derivative is taken on the input: x (1 - x) instead of y (1 - y)."""

    def forward(self, x):
        self.x = x
        self.y = 1.0 / (1.0 + np.exp(-x))
        return self.y

    def backward(self, grad_out):
        return grad_out * self.x * (1.0 - self.x)  # BUG


@_zoo("tanh_one_minus_y")
class TanhOneMinusY(gradcheck.Layer):
    """tanh with derivative 1 - y instead of 1 - y**2."""

    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, grad_out):
        return grad_out * (1.0 - self.y)  # BUG


@_zoo("leaky_relu_slope_forgotten")
class LeakyReluSlopeForgotten(gradcheck.Layer):
    """Leaky ReLU whose backward passes the full gradient on the negative side."""

    def forward(self, x):
        self.x = x
        return np.where(x > 0, x, 0.1 * x)

    def backward(self, grad_out):
        return np.where(self.x > 0, grad_out, grad_out)  # BUG: 0.1 * grad_out on the left


@_zoo("elu_missing_alpha")
class EluMissingAlpha(gradcheck.Layer):
    """ELU (alpha = 1.5) whose negative-side derivative is y instead of y + alpha."""

    def forward(self, x):
        self.x = x
        self.y = np.where(x > 0, x, 1.5 * (np.exp(np.minimum(x, 0.0)) - 1.0))
        return self.y

    def backward(self, grad_out):
        return grad_out * np.where(self.x > 0, 1.0, self.y)  # BUG: self.y + 1.5


@_zoo("abs_no_sign")
class AbsNoSign(gradcheck.Layer):
    """|x| whose backward forgets the sign: dL/dx = grad_out everywhere."""

    def forward(self, x):
        self.x = x
        return np.abs(x)

    def backward(self, grad_out):
        return grad_out.copy()  # BUG: grad_out * sign(x)


@_zoo("clip_passes_everything")
class ClipPassesEverything(gradcheck.Layer):
    """clip(x, -0.5, 0.5) whose backward lets the gradient through where the value was clipped."""

    def forward(self, x):
        self.x = x
        return np.clip(x, -0.5, 0.5)

    def backward(self, grad_out):
        return grad_out.copy()  # BUG: zero outside [-0.5, 0.5]


@_zoo("softmax_diagonal_only")
class SoftmaxDiagonalOnly(gradcheck.Layer):
    """Softmax whose backward keeps only the diagonal of the Jacobian: y * g."""

    def forward(self, x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        self.y = e / e.sum(axis=1, keepdims=True)
        return self.y

    def backward(self, grad_out):
        return self.y * grad_out  # BUG: y * (g - sum(g * y))


@_zoo("layernorm_no_mean_term")
class LayerNormNoMeanTerm(gradcheck.Layer):
    """Layer normalisation that forgets the gradient through the mean."""

    def forward(self, x):
        self.mu = x.mean(axis=1, keepdims=True)
        self.inv = 1.0 / np.sqrt(x.var(axis=1, keepdims=True) + 1e-5)
        self.xhat = (x - self.mu) * self.inv
        return self.xhat

    def backward(self, grad_out):
        # BUG: the full form is inv * (g - mean(g) - xhat * mean(g * xhat))
        return self.inv * (grad_out - self.xhat * np.mean(grad_out * self.xhat, axis=1, keepdims=True))


@_zoo("batchnorm_constant_variance")
class BatchNormConstantVariance(gradcheck.Layer):
    """Batch normalisation (training mode) whose backward treats the variance as a constant."""

    mixes_batch = True

    def forward(self, x):
        self.mu = x.mean(axis=0)
        self.inv = 1.0 / np.sqrt(x.var(axis=0) + 1e-5)
        self.xhat = (x - self.mu) * self.inv
        return self.xhat

    def backward(self, grad_out):
        return self.inv * (grad_out - grad_out.mean(axis=0))  # BUG: - xhat * mean(g * xhat)


@_zoo("scale_gamma_unweighted")
class ScaleGammaUnweighted(gradcheck.Layer):
    """y = gamma * x per feature; dL/dgamma forgets to multiply by x."""

    def build(self, input_shape, rng):
        self.params["gamma"] = rng.normal(1.0, 0.2, input_shape)
        return tuple(input_shape)

    def forward(self, x):
        self.x = x
        return self.params["gamma"] * x

    def backward(self, grad_out):
        self.grads["gamma"] = grad_out.sum(axis=0)  # BUG: (grad_out * x).sum(axis=0)
        return grad_out * self.params["gamma"]


@_zoo("scale_first_feature_skipped")
class ScaleFirstFeatureSkipped(ScaleGammaUnweighted):
    """y = gamma * x; dL/dgamma filled by a loop that starts at 1."""

    def backward(self, grad_out):
        dgamma = np.zeros_like(self.params["gamma"])
        for i in range(1, dgamma.size):  # BUG: range(dgamma.size)
            dgamma[i] = np.sum(grad_out[:, i] * self.x[:, i])
        self.grads["gamma"] = dgamma
        return grad_out * self.params["gamma"]


@_zoo("dropout_unscaled")
class DropoutUnscaled(gradcheck.Layer):
    """Inverted dropout (rate 0.5, one feature mask fixed at build) whose backward forgets
    1 / (1 - rate)."""

    def build(self, input_shape, rng):
        self.keep = rng.random(input_shape) >= 0.5
        return tuple(input_shape)

    def forward(self, x):
        return x * self.keep / 0.5

    def backward(self, grad_out):
        return grad_out * self.keep  # BUG: / 0.5


class _Conv(gradcheck.Layer):
    """3x3 cross-correlation, 2 filters, padding 1, stride 1 (written out per kernel element)."""

    def __init__(self, filters: int = 2):
        super().__init__()
        self.filters = filters

    def build(self, input_shape, rng):
        c, self.h, self.w = input_shape
        self.params["W"] = rng.normal(0.0, 0.3, (self.filters, c, 3, 3))
        self.params["b"] = rng.normal(0.0, 0.1, self.filters)
        return (self.filters, self.h, self.w)

    def forward(self, x):
        self.xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        W = self.params["W"]
        y = np.zeros((len(x), self.filters, self.h, self.w))
        for i in range(3):
            for j in range(3):
                patch = self.xp[:, :, i:i + self.h, j:j + self.w]
                y += np.einsum("nchw,fc->nfhw", patch, W[:, :, i, j])
        return y + self.params["b"][None, :, None, None]

    def _grads(self, grad_out):
        W = self.params["W"]
        dW = np.zeros_like(W)
        dxp = np.zeros_like(self.xp)
        for i in range(3):
            for j in range(3):
                patch = self.xp[:, :, i:i + self.h, j:j + self.w]
                dW[:, :, i, j] = np.einsum("nchw,nfhw->fc", patch, grad_out)
                dxp[:, :, i:i + self.h, j:j + self.w] += np.einsum("nfhw,fc->nchw", grad_out,
                                                                    W[:, :, i, j])
        return dW, grad_out.sum(axis=(0, 2, 3)), dxp


@_zoo("conv_padding_offset")
class ConvPaddingOffset(_Conv):
    """dL/dx cut out of the padded gradient at offset 0 instead of the padding width 1."""

    def backward(self, grad_out):
        dW, db, dxp = self._grads(grad_out)
        self.grads["W"], self.grads["b"] = dW, db
        return dxp[:, :, :self.h, :self.w].copy()  # BUG: [1:1 + h, 1:1 + w]


@_zoo("conv_flipped_kernel_grad")
class ConvFlippedKernelGrad(_Conv):
    """Weight gradient of a convolution (kernel rotated 180 degrees) for a cross-correlation."""

    def backward(self, grad_out):
        dW, db, dxp = self._grads(grad_out)
        self.grads["W"], self.grads["b"] = dW[:, :, ::-1, ::-1].copy(), db  # BUG
        return dxp[:, :, 1:1 + self.h, 1:1 + self.w].copy()


@_zoo("conv_bias_last_row_missed")
class ConvBiasLastRowMissed(_Conv):
    """Bias gradient summed over rows 0..h-2: the last output row is missed."""

    def backward(self, grad_out):
        dW, db, dxp = self._grads(grad_out)
        self.grads["W"] = dW
        self.grads["b"] = grad_out[:, :, :-1, :].sum(axis=(0, 2, 3))  # BUG
        return dxp[:, :, 1:1 + self.h, 1:1 + self.w].copy()


class _Pool(gradcheck.Layer):
    """2x2 pooling with stride 2 over (batch, C, H, W), H and W even."""

    def build(self, input_shape, rng):
        c, h, w = input_shape
        return (c, h // 2, w // 2)

    def _windows(self, x):
        n, c, h, w = x.shape
        return x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
            n, c, h // 2, w // 2, 4)

    def _scatter(self, per_window):
        n, c, h2, w2, _ = per_window.shape
        return per_window.reshape(n, c, h2, w2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
            n, c, 2 * h2, 2 * w2)


@_zoo("maxpool_route_first")
class MaxPoolRouteFirst(_Pool):
    """Max-pool whose backward sends the gradient to the first element of each window."""

    def forward(self, x):
        windows = self._windows(x)
        self.arg = windows.argmax(axis=-1)
        return windows.max(axis=-1)

    def backward(self, grad_out):
        routed = np.zeros((*grad_out.shape, 4))
        routed[..., 0] = grad_out  # BUG: at self.arg
        return self._scatter(routed)


@_zoo("avgpool_divides_by_side")
class AvgPoolDividesBySide(_Pool):
    """Average pool whose backward divides by the window side (2) instead of its area (4)."""

    def forward(self, x):
        return self._windows(x).mean(axis=-1)

    def backward(self, grad_out):
        return self._scatter(np.repeat(grad_out[..., None] / 2.0, 4, axis=-1))  # BUG: / 4.0


@gradcheck.register_loss("zoo_mse_sign_flipped")
class MseSignFlipped(gradcheck.Loss):
    """0.5 * mean over the batch of the squared error, with backward target - pred."""

    def forward(self, pred, target):
        self.diff = pred - target
        return float(0.5 * np.sum(self.diff ** 2) / len(pred))

    def backward(self):
        return -self.diff / len(self.diff)  # BUG: + diff / N


@gradcheck.register_loss("zoo_mse_wrong_mean")
class MseWrongMean(MseSignFlipped):
    """Forward averages over every element, backward only over the batch."""

    def forward(self, pred, target):
        self.diff = pred - target
        return float(0.5 * np.mean(self.diff ** 2))

    def backward(self):
        return self.diff / len(self.diff)  # BUG: / self.diff.size
