"""Course-style layers: each a forward returning (out, cache) and a backward taking (dout, cache).

Written from the textbook formulas in the style deep-learning courses teach (cs231n's function
pairs), with no gradcheck import: `net.yaml` checks them through `type: function` as they are.
Hyperparameters and state travel in a dict, as in those courses; `batchnorm_forward` writes its
running statistics back into `bn_param` and `dropout_forward` reseeds numpy's global generator.
"""

import numpy as np


def affine_forward(x, w, b):
    """out = x.reshape(N, D) @ w + b.  x: (N, d1, ..., dk) with D = d1 * ... * dk; w: (D, M);
    b: (M,); out: (N, M)."""
    out = x.reshape(x.shape[0], -1) @ w + b
    return out, (x, w)


def affine_backward(dout, cache):
    """dout: (N, M) -> dx: (N, d1, ..., dk), dw: (D, M), db: (M,)."""
    x, w = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x):
    """out = max(x, 0), elementwise.  x, out: any shape."""
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    """dx = dout where x > 0, else 0."""
    x = cache
    return dout * (x > 0)


def conv_forward_naive(x, w, b, conv_param):
    """Cross-correlation out[n, f, i, j] = sum_{c, p, q} w[f, c, p, q] *
    xpad[n, c, i * stride + p, j * stride + q] + b[f].

    x: (N, C, H, W); w: (F, C, HH, WW); b: (F,); conv_param: {stride, pad} (zero padding on
    each side); out: (N, F, H', W') with H' = 1 + (H + 2 pad - HH) // stride, likewise W'.
    """
    stride, pad = conv_param["stride"], conv_param["pad"]
    num_filters, _, kernel_h, kernel_w = w.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out_h = 1 + (xpad.shape[2] - kernel_h) // stride
    out_w = 1 + (xpad.shape[3] - kernel_w) // stride
    out = np.empty((x.shape[0], num_filters, out_h, out_w), dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            window = xpad[:, :, i * stride:i * stride + kernel_h, j * stride:j * stride + kernel_w]
            out[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out, (x, w, conv_param)


def conv_backward_naive(dout, cache):
    """dout: (N, F, H', W') -> dx: (N, C, H, W), dw: (F, C, HH, WW), db: (F,).

    Each output position (i, j) took the window of xpad at (i * stride, j * stride): its dout
    flows back into that window through w (dx) and into w through that window (dw).
    """
    x, w, conv_param = cache
    stride, pad = conv_param["stride"], conv_param["pad"]
    _, _, kernel_h, kernel_w = w.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxpad = np.zeros_like(xpad)
    dw = np.zeros_like(w)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            rows = slice(i * stride, i * stride + kernel_h)
            cols = slice(j * stride, j * stride + kernel_w)
            dxpad[:, :, rows, cols] += np.tensordot(dout[:, :, i, j], w, axes=([1], [0]))
            dw += np.tensordot(dout[:, :, i, j], xpad[:, :, rows, cols], axes=([0], [0]))
    dx = dxpad[:, :, pad:pad + x.shape[2], pad:pad + x.shape[3]]
    db = dout.sum(axis=(0, 2, 3))
    return dx, dw, db


def max_pool_forward_naive(x, pool_param):
    """out[n, c, i, j] = max of x[n, c] over the window at (i * stride, j * stride).

    x: (N, C, H, W); pool_param: {pool_height, pool_width, stride}; out: (N, C, H', W') with
    H' = 1 + (H - pool_height) // stride, likewise W'.
    """
    pool_h, pool_w = pool_param["pool_height"], pool_param["pool_width"]
    stride = pool_param["stride"]
    out_h = 1 + (x.shape[2] - pool_h) // stride
    out_w = 1 + (x.shape[3] - pool_w) // stride
    out = np.empty((*x.shape[:2], out_h, out_w), dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            window = x[:, :, i * stride:i * stride + pool_h, j * stride:j * stride + pool_w]
            out[:, :, i, j] = window.max(axis=(2, 3))
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    """dout: (N, C, H', W') -> dx: (N, C, H, W): each window's dout goes to its maximum."""
    x, pool_param = cache
    pool_h, pool_w = pool_param["pool_height"], pool_param["pool_width"]
    stride = pool_param["stride"]
    dx = np.zeros_like(x)
    n_idx, c_idx = np.indices(x.shape[:2])
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            window = x[:, :, i * stride:i * stride + pool_h, j * stride:j * stride + pool_w]
            flat = window.reshape(*x.shape[:2], -1).argmax(axis=2)
            p, q = np.unravel_index(flat, (pool_h, pool_w))
            dx[n_idx, c_idx, i * stride + p, j * stride + q] += dout[:, :, i, j]
    return dx


def batchnorm_forward(x, gamma, beta, bn_param):
    """out = gamma * (x - mean) / sqrt(var + eps) + beta, statistics over the batch axis.

    x: (N, D); gamma, beta: (D,); bn_param: {mode: train|test, eps, momentum, running_mean,
    running_var} (running statistics start at 0 and 1). In train mode the batch's mean and
    (biased) variance are used and the running statistics move towards them; in test mode the
    running statistics are used.
    """
    eps, momentum = bn_param.get("eps", 1e-5), bn_param.get("momentum", 0.9)
    running_mean = bn_param.get("running_mean", np.zeros(x.shape[1]))
    running_var = bn_param.get("running_var", np.ones(x.shape[1]))
    if bn_param["mode"] == "train":
        mean, var = x.mean(axis=0), x.var(axis=0)
        bn_param["running_mean"] = momentum * running_mean + (1 - momentum) * mean
        bn_param["running_var"] = momentum * running_var + (1 - momentum) * var
    else:
        mean, var = running_mean, running_var
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean) * inv_std
    return gamma * x_hat + beta, (x_hat, gamma, inv_std)


def batchnorm_backward(dout, cache):
    """Train mode.  dout: (N, D) -> dx: (N, D), dgamma: (D,), dbeta: (D,).

    With x_hat = (x - mean) * inv_std, the mean and the variance depending on every sample:
    dx = gamma * inv_std / N * (N * dout - sum_n dout - x_hat * sum_n (dout * x_hat)).
    """
    x_hat, gamma, inv_std = cache
    n = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_hat).sum(axis=0)
    dx = gamma * inv_std / n * (n * dout - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta


def dropout_forward(x, dropout_param):
    """Inverted dropout: out = x * mask, mask = (u >= rate) / (1 - rate) with u uniform [0, 1).

    x, out: any shape; dropout_param: {rate, mode: train|test, seed}. The mask is drawn after
    reseeding numpy's global generator with `seed`, so every call draws the same mask, as
    gradient checking needs. Test mode is the identity.
    """
    if dropout_param["mode"] != "train":
        return x, None
    np.random.seed(dropout_param["seed"])
    rate = dropout_param["rate"]
    mask = (np.random.rand(*x.shape) >= rate) / (1 - rate)
    return x * mask, mask


def dropout_backward(dout, cache):
    """dx = dout * mask (the identity in test mode)."""
    mask = cache
    return dout if mask is None else dout * mask


def softmax_loss(x, y):
    """Mean cross-entropy of softmax(x) against the labels y, and its gradient.

    x: (N, C) class scores; y: (N,) integer labels in [0, C). loss = -mean_n log p[n, y[n]] with
    p = softmax over each row; dx = (p - onehot(y)) / N.
    """
    shifted = x - x.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = x.shape[0]
    loss = -log_p[np.arange(n), y].mean()
    dx = np.exp(log_p)
    dx[np.arange(n), y] -= 1
    return loss, dx / n
