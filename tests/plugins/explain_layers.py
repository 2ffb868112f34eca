"""Layers with realistic bugs whose fingerprints gradcheck.explain must name (tests/test_explain.py).

Each family has a correct base; a buggy class differs from it only in the line marked BUG. The
bases declare ``axis_names`` the way a sequence or image layer would.
"""

import math

import numpy as np

import gradcheck


def _layer(name):
    return gradcheck.register_layer(f"explain_{name}")


@_layer("rnn")
class RNN(gradcheck.Layer):
    """Elman RNN over a sequence: h_t = tanh(x_t W_x + h_{t-1} W_h + b), h_{-1} = 0, y_t = h_t.
    x: (batch, T, F), W_x: (F, H), W_h: (H, H), b: (H,), y: (batch, T, H)."""

    axis_names = {"input": ("time", "feature"), "W_x": ("feature", "unit"),
                  "W_h": ("previous unit", "unit"), "b": ("unit",)}

    def __init__(self, units: int = 4):
        super().__init__()
        self.units = units

    def build(self, input_shape, rng):
        steps, features = input_shape
        self.params["W_x"] = rng.normal(0.0, 0.5, (features, self.units))
        self.params["W_h"] = rng.normal(0.0, 0.5, (self.units, self.units))
        self.params["b"] = rng.normal(0.0, 0.1, self.units)
        return (steps, self.units)

    def forward(self, x):
        self.x = x
        h = np.zeros((len(x), self.units))
        states = []
        for t in range(x.shape[1]):
            h = np.tanh(x[:, t] @ self.params["W_x"] + h @ self.params["W_h"] + self.params["b"])
            states.append(h)
        self.h = np.stack(states, axis=1)
        return self.h

    def _carried(self, carry):
        """The gradient step t receives from step t+1 (through the recurrent state)."""
        return carry

    def backward(self, grad_out):
        W_x, W_h = self.params["W_x"], self.params["W_h"]
        grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        dx = np.zeros_like(self.x)
        carry = np.zeros((len(self.x), self.units))
        for t in reversed(range(self.x.shape[1])):
            dz = (grad_out[:, t] + self._carried(carry)) * (1.0 - self.h[:, t] ** 2)
            previous = self.h[:, t - 1] if t > 0 else np.zeros_like(self.h[:, 0])
            grads["W_x"] += self.x[:, t].T @ dz
            grads["W_h"] += previous.T @ dz
            grads["b"] += dz.sum(axis=0)
            dx[:, t] = dz @ W_x.T
            carry = dz @ W_h.T
        self.grads = grads
        return dx


@_layer("rnn_no_carry")
class RNNNoCarry(RNN):
    """Backpropagation through time that forgets what later steps pass back."""

    def _carried(self, carry):
        return 0.0 * carry  # BUG: carry


@_layer("attention")
class Attention(gradcheck.Layer):
    """Single-head self-attention with a fused projection: [Q K V] = x W (W: (D, 3D)),
    y = softmax(Q K^T / sqrt(D)) V. x, y: (batch, T, D)."""

    axis_names = {"input": ("time", "feature"), "W": ("feature", "q/k/v unit")}

    def build(self, input_shape, rng):
        _, self.d = input_shape
        self.params["W"] = rng.normal(0.0, 1.0 / np.sqrt(self.d), (self.d, 3 * self.d))
        return tuple(input_shape)

    def forward(self, x):
        self.x = x
        qkv = x @ self.params["W"]
        self.q, self.k, self.v = np.split(qkv, 3, axis=-1)
        scores = self.q @ self.k.transpose(0, 2, 1) / np.sqrt(self.d)
        e = np.exp(scores - scores.max(axis=-1, keepdims=True))
        self.p = e / e.sum(axis=-1, keepdims=True)
        return self.p @ self.v

    def _softmax_backward(self, grad_p):
        return self.p * (grad_p - np.sum(grad_p * self.p, axis=-1, keepdims=True))

    def backward(self, grad_out):
        grad_v = self.p.transpose(0, 2, 1) @ grad_out
        grad_scores = self._softmax_backward(grad_out @ self.v.transpose(0, 2, 1)) / np.sqrt(self.d)
        grad_q = grad_scores @ self.k
        grad_k = grad_scores.transpose(0, 2, 1) @ self.q
        grad_qkv = np.concatenate([grad_q, grad_k, grad_v], axis=-1)
        self.grads["W"] = np.einsum("ntd,nte->de", self.x, grad_qkv)
        return grad_qkv @ self.params["W"].T


@_layer("attention_softmax_diagonal")
class AttentionSoftmaxDiagonal(Attention):
    """Softmax backward without its off-diagonal term: the Q and K gradients are wrong, V's right."""

    def _softmax_backward(self, grad_p):
        return self.p * grad_p  # BUG: self.p * (grad_p - sum(grad_p * self.p))


@_layer("position_embedding")
class PositionEmbedding(gradcheck.Layer):
    """y[n, t] = x[n, t] + W[ids[t]]: a learned embedding looked up by a fixed id per time step
    (ids repeat). x, y: (batch, T, D), W: (vocabulary, D)."""

    axis_names = {"input": ("time", "dimension"), "W": ("id", "dimension")}

    def __init__(self, ids: list, vocabulary: int = 8):
        super().__init__()
        self.ids, self.vocabulary = np.array(ids), vocabulary

    def build(self, input_shape, rng):
        self.params["W"] = rng.normal(0.0, 1.0, (self.vocabulary, input_shape[1]))
        return tuple(input_shape)

    def forward(self, x):
        return x + self.params["W"][self.ids]

    def _scatter(self, grad_rows):
        grad = np.zeros_like(self.params["W"])
        np.add.at(grad, self.ids, grad_rows)
        return grad

    def backward(self, grad_out):
        self.grads["W"] = self._scatter(grad_out.sum(axis=0))
        return grad_out


@_layer("position_embedding_overwrite")
class PositionEmbeddingOverwrite(PositionEmbedding):
    """Scatters with an indexed assignment: a repeated id keeps only its last row's gradient."""

    def _scatter(self, grad_rows):
        grad = np.zeros_like(self.params["W"])
        grad[self.ids] = grad_rows  # BUG: np.add.at(grad, self.ids, grad_rows)
        return grad


@_layer("gelu_tanh_forward")
class GeluTanhForward(gradcheck.Layer):
    """GELU whose forward is the tanh approximation while backward is the exact derivative."""

    def forward(self, x):
        self.x = x
        inner = np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)
        return 0.5 * x * (1.0 + np.tanh(inner))  # BUG: exact x * Phi(x) in backward below

    def backward(self, grad_out):
        x = self.x
        cdf = 0.5 * (1.0 + np.vectorize(math.erf)(x / np.sqrt(2.0)))
        return grad_out * (cdf + x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi))


@_layer("box_filter")
class BoxFilter(gradcheck.Layer):
    """3x3 box sum with zero padding 1 on (batch, C, H, W); backward scatters each output's
    gradient over its window, looping over the output rows and columns."""

    axis_names = {"input": ("channel", "row", "column")}

    def forward(self, x):
        self.shape = x.shape
        padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        h, w = x.shape[2:]
        return sum(padded[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3))

    def _rows_and_columns(self):
        h, w = self.shape[2:]
        return range(h), range(w)

    def backward(self, grad_out):
        rows, columns = self._rows_and_columns()
        padded = np.zeros((*self.shape[:2], self.shape[2] + 2, self.shape[3] + 2))
        for i in rows:
            for j in columns:
                padded[:, :, i:i + 3, j:j + 3] += grad_out[:, :, i, j][:, :, None, None]
        return padded[:, :, 1:-1, 1:-1]


@_layer("box_filter_top_row_skipped")
class BoxFilterTopRowSkipped(BoxFilter):
    """Starts the output-row loop at 1 (as if row 0 were padding): input rows 0-1 lose gradient."""

    def _rows_and_columns(self):
        h, w = self.shape[2:]
        return range(1, h), range(w)  # BUG: range(h)


@_layer("box_filter_edges_skipped")
class BoxFilterEdgesSkipped(BoxFilter):
    """Loops over the interior outputs only: a border ring two pixels wide loses gradient."""

    def _rows_and_columns(self):
        h, w = self.shape[2:]
        return range(1, h - 1), range(1, w - 1)  # BUG: range(h), range(w)


@_layer("conv")
class Conv(gradcheck.Layer):
    """Cross-correlation without padding, written out per kernel element.
    x: (batch, C, H, W), W: (F, C, K, K), y: (batch, F, H-K+1, W-K+1)."""

    axis_names = {"input": ("channel", "row", "column"),
                  "W": ("filter", "channel", "kernel row", "kernel column")}

    def __init__(self, filters: int = 2, kernel: int = 3):
        super().__init__()
        self.filters, self.kernel = filters, kernel

    def build(self, input_shape, rng):
        channels, h, w = input_shape
        k = self.kernel
        self.params["W"] = rng.normal(0.0, 0.5, (self.filters, channels, k, k))
        return (self.filters, h - k + 1, w - k + 1)

    def _patch(self, u, v):
        h, w = self.x.shape[2] - self.kernel + 1, self.x.shape[3] - self.kernel + 1
        return self.x[:, :, u:u + h, v:v + w]

    def forward(self, x):
        self.x = x
        k = self.kernel
        return sum(np.einsum("nchw,fc->nfhw", self._patch(u, v), self.params["W"][:, :, u, v])
                   for u in range(k) for v in range(k))

    def _kernel_row(self, u):
        return u

    def backward(self, grad_out):
        k = self.kernel
        grad_w = np.zeros_like(self.params["W"])
        grad_x = np.zeros_like(self.x)
        h, w = grad_out.shape[2:]
        for u in range(k):
            for v in range(k):
                grad_w[:, :, self._kernel_row(u), v] = np.einsum("nfhw,nchw->fc", grad_out,
                                                                 self._patch(u, v))
                grad_x[:, :, u:u + h, v:v + w] += np.einsum("nfhw,fc->nchw", grad_out,
                                                            self.params["W"][:, :, u, v])
        self.grads["W"] = grad_w
        return grad_x


@_layer("conv_kernel_rows_flipped")
class ConvKernelRowsFlipped(Conv):
    """Writes the weight gradient of kernel row u into row K-1-u (a flip on one axis only)."""

    def _kernel_row(self, u):
        return self.kernel - 1 - u  # BUG: u


@_layer("dense_decay")
class DenseDecay(gradcheck.Layer):
    """y = x @ W; backward adds ``decay`` x W to the weight gradient (0: correct)."""

    axis_names = {"input": ("input feature",), "W": ("input feature", "unit")}

    def __init__(self, units: int = 5, decay: float = 0.0):
        super().__init__()
        self.units, self.decay = units, decay

    def build(self, input_shape, rng):
        self.params["W"] = rng.normal(0.0, 1.0, (input_shape[0], self.units))
        return (self.units,)

    def forward(self, x):
        self.x = x
        return x @ self.params["W"]

    def backward(self, grad_out):
        self.grads["W"] = self.x.T @ grad_out + self.decay * self.params["W"]  # BUG if decay
        return grad_out @ self.params["W"].T
