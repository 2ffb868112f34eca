"""Hand-written sequence layers with the two classic backprop bugs, each next to its correct twin.

- ``rnn_no_bptt``: an Elman RNN whose backward does not carry dL/dh_t from step t + 1 back to
  step t, so dL/dx (and every weight gradient) misses the paths through later time steps: the
  bug behind "gradient check passes for one step, fails for several".
- ``attention_unscaled_backward``: self-attention whose forward divides the scores by sqrt(d)
  but whose backward forgets to, so dL/dWq, dL/dWk and dL/dx are sqrt(d) times too large.

The correct twins, ``scratch_rnn`` and ``scratch_attention``, differ from them in one method.
"""

import numpy as np

import gradcheck


@gradcheck.register_layer("scratch_rnn")
class ScratchRNN(gradcheck.Layer):
    """h_t = tanh(x_t Wx + h_{t-1} Wh + b), h_{-1} = 0.  x: (batch, T, F) -> (batch, T, units)."""

    # What each axis means, so a mismatch is explained in time steps and units.
    axis_names = {"input": ("time", "feature"), "Wx": ("feature", "unit"),
                  "Wh": ("previous unit", "unit"), "b": ("unit",)}

    def __init__(self, units: int):
        super().__init__()
        self.units = units

    def build(self, input_shape, rng):
        steps, features = input_shape
        self.params["Wx"] = rng.normal(0.0, 1.0 / np.sqrt(features), (features, self.units))
        self.params["Wh"] = rng.normal(0.0, 1.0 / np.sqrt(self.units), (self.units, self.units))
        self.params["b"] = rng.normal(0.0, 0.1, self.units)
        return (steps, self.units)

    def forward(self, x):
        self.x = x
        h = np.zeros((x.shape[0], self.units))
        self.hs = [h]
        for t in range(x.shape[1]):
            h = np.tanh(x[:, t] @ self.params["Wx"] + h @ self.params["Wh"] + self.params["b"])
            self.hs.append(h)
        return np.stack(self.hs[1:], axis=1)

    def from_later_steps(self, grad_h_next):
        """dL/dh_t through h_{t+1}: the path backpropagation through time must keep."""
        return grad_h_next

    def backward(self, grad_out):
        wx, wh = self.params["Wx"], self.params["Wh"]
        grad_x = np.zeros_like(self.x)
        for name in ("Wx", "Wh", "b"):
            self.grads[name] = np.zeros_like(self.params[name])
        grad_h_next = np.zeros((self.x.shape[0], self.units))
        for t in reversed(range(self.x.shape[1])):
            grad_h = grad_out[:, t] + self.from_later_steps(grad_h_next)
            grad_pre = grad_h * (1.0 - self.hs[t + 1] ** 2)
            self.grads["Wx"] += self.x[:, t].T @ grad_pre
            self.grads["Wh"] += self.hs[t].T @ grad_pre
            self.grads["b"] += grad_pre.sum(axis=0)
            grad_x[:, t] = grad_pre @ wx.T
            grad_h_next = grad_pre @ wh.T
        return grad_x


@gradcheck.register_layer("rnn_no_bptt")
class RNNNoBPTT(ScratchRNN):
    """ScratchRNN whose backward drops dL/dh_t from later steps."""

    def from_later_steps(self, grad_h_next):
        return np.zeros_like(grad_h_next)  # BUG: should be grad_h_next


@gradcheck.register_layer("scratch_attention")
class ScratchAttention(gradcheck.Layer):
    """Multi-head self-attention without biases or masks: softmax(q k^T / sqrt(d)) v, then Wo.

    x: (batch, T, F) -> (batch, T, F); Wq, Wk, Wv, Wo: (F, F); F = heads * d.
    """

    axis_names = {"input": ("time", "feature"),
                  **{w: ("feature", "head unit") for w in ("Wq", "Wk", "Wv", "Wo")}}

    def __init__(self, heads: int = 2):
        super().__init__()
        self.heads = heads

    def build(self, input_shape, rng):
        features = input_shape[1]
        for name in ("Wq", "Wk", "Wv", "Wo"):
            self.params[name] = rng.normal(0.0, 1.0 / np.sqrt(features), (features, features))
        self.scale = 1.0 / np.sqrt(features // self.heads)
        return tuple(input_shape)

    def _split(self, a):
        n, t, f = a.shape
        return a.reshape(n, t, self.heads, f // self.heads).transpose(0, 2, 1, 3)

    def forward(self, x):
        self.x = x
        self.q, self.k, self.v = (self._split(x @ self.params[w]) for w in ("Wq", "Wk", "Wv"))
        scores = self.q @ self.k.transpose(0, 1, 3, 2) * self.scale
        e = np.exp(scores - scores.max(axis=-1, keepdims=True))
        self.a = e / e.sum(axis=-1, keepdims=True)
        self.o = (self.a @ self.v).transpose(0, 2, 1, 3).reshape(x.shape)
        return self.o @ self.params["Wo"]

    def scores_scale_in_backward(self):
        """dL/d(q k^T) = scale * dL/dscores: the forward's scale, once more."""
        return self.scale

    def backward(self, grad_out):
        n, t, f = self.x.shape
        self.grads["Wo"] = self.o.reshape(-1, f).T @ grad_out.reshape(-1, f)
        grad_o = self._split(grad_out @ self.params["Wo"].T)
        grad_a = grad_o @ self.v.transpose(0, 1, 3, 2)
        grad_scores = self.a * (grad_a - (grad_a * self.a).sum(axis=-1, keepdims=True))
        grad_scores = grad_scores * self.scores_scale_in_backward()
        grads = {"Wq": grad_scores @ self.k, "Wk": grad_scores.transpose(0, 1, 3, 2) @ self.q,
                 "Wv": self.a.transpose(0, 1, 3, 2) @ grad_o}
        grad_x = np.zeros_like(self.x)
        for name, grad in grads.items():
            merged = grad.transpose(0, 2, 1, 3).reshape(n * t, f)
            self.grads[name] = self.x.reshape(-1, f).T @ merged
            grad_x += (merged @ self.params[name].T).reshape(n, t, f)
        return grad_x


@gradcheck.register_layer("attention_unscaled_backward")
class AttentionUnscaledBackward(ScratchAttention):
    """ScratchAttention whose backward forgets the 1/sqrt(d) of the scores."""

    def scores_scale_in_backward(self):
        return 1.0  # BUG: should be self.scale, as in forward
