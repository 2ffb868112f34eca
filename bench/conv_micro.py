"""Micro-benchmark: conv2d forward/backward strategies at the shapes full mode stacks.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/conv_micro.py [--quick | --stacked]``.

Compares, per shape and batch, the per-kernel-element ("tap") loop against im2col variants (a
sliding-window gather into one column matrix and one 2-D BLAS product), checks every variant
against the tap loop, and prints a Markdown table of milliseconds per call. The ``layer`` column
is ``gradcheck.layers.conv.Conv2D`` itself, i.e. whatever the library currently uses.

``--stacked`` times only forward, float64, at the batch sizes full mode stacks for bench N1/N3/N4:
``previous`` (the layer before it gathered from a reused padded chunk: np.pad of the whole input,
then a per-output-row strided gather), ``shifted_wide`` (the layer's gather, one wide product per
chunk instead of one per row) and ``layer``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from gradcheck.layers.conv import Conv2D

# (label, per-sample input (C, H, W), filters, kernel, padding): the conv layers of bench N3/N4.
SHAPES = [
    ("N3 conv1 1x28x28 -> 6 k5 p2", (1, 28, 28), 6, 5, 2),
    ("N3 conv2 6x14x14 -> 16 k5", (6, 14, 14), 16, 5, 0),
    ("N4 conv1 1x16x16 -> 8 k3 p1", (1, 16, 16), 8, 3, 1),
    ("N4 conv2 8x8x8 -> 8 k3 p1", (8, 8, 8), 8, 3, 1),
    ("8x16x16 -> 8 k3 p1", (8, 16, 16), 8, 3, 1),
]
BATCHES = (4, 256, 1024, 4096)
# (label, stacked input shape, filters, kernel, padding): conv2d at the sizes full mode evaluates.
STACKED = [
    ("N1 1x20x20 -> 1 k3 p1", (25600, 1, 20, 20), 1, 3, 1),
    ("N4 conv1 1x16x16 -> 8 k3 p1", (1024, 1, 16, 16), 8, 3, 1),
    ("N4 conv2 8x8x8 -> 8 k3 p1", (1024, 8, 8, 8), 8, 3, 1),
    ("N3 conv1 1x28x28 -> 6 k5 p2", (512, 1, 28, 28), 6, 5, 2),
    ("N3 conv2 6x14x14 -> 16 k5", (512, 6, 14, 14), 16, 5, 0),
]


# ---------------------------------------------------------------- candidates (stride/dilation 1)

def pad(x, p):
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x


def tap_forward(x, w, p):
    xp = pad(x, p)
    b, c = x.shape[:2]
    f, _, kh, kw = w.shape
    oh, ow = xp.shape[2] - kh + 1, xp.shape[3] - kw + 1
    y = np.zeros((b, f, oh * ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            y += w[:, :, i, j] @ xp[:, :, i:i + oh, j:j + ow].reshape(b, c, -1)
    return y.reshape(b, f, oh, ow)


def cols_rows(xp, kh, kw):
    """(B*P, C*kh*kw) column matrix, rows in (b, oh, ow) order."""
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))  # (B, C, oh, ow, kh, kw)
    b, c, oh, ow = win.shape[:4]
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(b * oh * ow, -1), (oh, ow)


def im2col_rows_forward(x, w, p):
    """cols (B*P, CK) @ W^T (CK, F), then transpose the (B, P, F) result to (B, F, P)."""
    f = w.shape[0]
    cols, (oh, ow) = cols_rows(pad(x, p), *w.shape[2:])
    y = cols @ w.reshape(f, -1).T
    return np.ascontiguousarray(y.reshape(x.shape[0], oh, ow, f).transpose(0, 3, 1, 2))


def im2col_batched_forward(x, w, p):
    """W (F, CK) @ cols (B, CK, P): a stacked matmul, output already (B, F, P)."""
    xp = pad(x, p)
    f, _, kh, kw = w.shape
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))
    b, c, oh, ow = win.shape[:4]
    cols = np.ascontiguousarray(win.transpose(0, 1, 4, 5, 2, 3)).reshape(b, c * kh * kw, -1)
    return (w.reshape(f, -1) @ cols).reshape(b, f, oh, ow)


def im2col_wide_forward(x, w, p):
    """W (F, CK) @ cols (CK, B*P): one wide GEMM, then move F behind B."""
    xp = pad(x, p)
    f, _, kh, kw = w.shape
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))
    b, c, oh, ow = win.shape[:4]
    cols = np.ascontiguousarray(win.transpose(1, 4, 5, 0, 2, 3)).reshape(c * kh * kw, -1)
    y = w.reshape(f, -1) @ cols
    return np.ascontiguousarray(y.reshape(f, b, oh, ow).transpose(1, 0, 2, 3))


def einsum_forward(x, w, p):
    win = sliding_window_view(pad(x, p), w.shape[2:], axis=(2, 3))
    return np.einsum("bchwij,fcij->bfhw", win, w, optimize=True)


def previous_forward(x, w, p, column_bytes=4 * 2**20):
    """Conv2D.forward before the shifted gather: pad everything, strided gather per chunk."""
    f, c, kh, kw = w.shape
    win = sliding_window_view(pad(x, p), (kh, kw), axis=(2, 3)).transpose(0, 1, 4, 5, 2, 3)
    y = np.empty((x.shape[0], f, win.shape[4] * win.shape[5]), dtype=x.dtype)
    rows = max(1, column_bytes // (c * kh * kw * y.shape[2] * x.dtype.itemsize))
    for s in range(0, len(x), rows):
        chunk = win[s:s + rows]
        np.matmul(w.reshape(f, -1), chunk.reshape(len(chunk), c * kh * kw, -1), out=y[s:s + rows])
    return y.reshape(x.shape[0], f, *win.shape[4:])


def shifted_wide_forward(x, w, p, column_bytes=4 * 2**20):
    """The layer's gather, but columns (C*kh*kw, rows*positions) and one wide product a chunk."""
    b, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    hp, wp = h + 2 * p, wd + 2 * p
    oh, ow = hp - kh + 1, wp - kw + 1
    rows = max(1, min(b, column_bytes // (c * kh * kw * oh * wp * x.dtype.itemsize)))
    flat = np.zeros(c * rows * hp * wp + kw - 1, dtype=x.dtype)  # (C, rows, hp, wp) + slack
    grid = flat[:-(kw - 1) or None].reshape(c, rows, hp, wp)
    step = flat.itemsize
    cols = np.empty((c * kh * kw, rows * oh * wp), dtype=x.dtype)
    prod = np.empty((f, rows * oh * wp), dtype=x.dtype)
    y = np.empty((b, f, oh, ow), dtype=x.dtype)
    for s in range(0, b, rows):
        n = min(rows, b - s)
        grid[:, :n, p:p + h, p:p + wd] = x[s:s + n].transpose(1, 0, 2, 3)
        # kernel element (i, j) of channel c: one contiguous run per image of the flat chunk.
        src = np.lib.stride_tricks.as_strided(
            flat, (c, kh, kw, n, oh * wp),
            (rows * hp * wp * step, wp * step, step, hp * wp * step, step))
        np.copyto(cols[:, :n * oh * wp].reshape(c, kh, kw, n, oh * wp), src)
        np.matmul(w.reshape(f, -1), cols[:, :n * oh * wp], out=prod[:, :n * oh * wp])
        y[s:s + n] = prod[:, :n * oh * wp].reshape(f, n, oh, wp)[..., :ow].transpose(1, 0, 2, 3)
    return y


def chunked(fn, rows):
    def run(x, w, p):
        return np.concatenate([fn(x[s:s + rows], w, p) for s in range(0, len(x), rows)])
    run.__name__ = f"{fn.__name__}[{rows}]"
    return run


def tap_backward(x, w, p, g):
    xp = pad(x, p)
    b, c = x.shape[:2]
    f, _, kh, kw = w.shape
    oh, ow = g.shape[2:]
    gf = g.reshape(b, f, -1)
    gw = np.empty_like(w)
    gxp = np.zeros_like(xp)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + oh, j:j + ow].reshape(b, c, -1)
            gw[:, :, i, j] = (gf @ patch.transpose(0, 2, 1)).sum(axis=0)
            gxp[:, :, i:i + oh, j:j + ow] += (w[:, :, i, j].T @ gf).reshape(b, c, oh, ow)
    return gxp[:, :, p:xp.shape[2] - p, p:xp.shape[3] - p], gw


def tap_wide_backward(x, w, p, g):
    """Per tap, but each product is one 2-D GEMM over a (C, B*P)/(F, B*P) layout."""
    xp = pad(x, p)
    b, c = x.shape[:2]
    f, _, kh, kw = w.shape
    oh, ow = g.shape[2:]
    gt = np.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(f, -1)  # (F, B*P)
    xt = np.ascontiguousarray(xp.transpose(1, 0, 2, 3))  # (C, B, Hp, Wp)
    gw = np.empty_like(w)
    gxt = np.zeros_like(xt)
    for i in range(kh):
        for j in range(kw):
            patch = xt[:, :, i:i + oh, j:j + ow].reshape(c, -1)
            gw[:, :, i, j] = gt @ patch.T
            gxt[:, :, i:i + oh, j:j + ow] += (w[:, :, i, j].T @ gt).reshape(c, b, oh, ow)
    gx = gxt.transpose(1, 0, 2, 3)[:, :, p:xp.shape[2] - p, p:xp.shape[3] - p]
    return np.ascontiguousarray(gx), gw


def im2col_backward(x, w, p, g):
    """grad_W = g^T cols (one GEMM); grad_cols = g W, scattered back tap by tap."""
    xp = pad(x, p)
    b, c = x.shape[:2]
    f, _, kh, kw = w.shape
    oh, ow = g.shape[2:]
    cols, _ = cols_rows(xp, kh, kw)  # (B*P, CK)
    grows = np.ascontiguousarray(g.transpose(0, 2, 3, 1)).reshape(-1, f)  # (B*P, F)
    gw = (grows.T @ cols).reshape(w.shape)
    gcols = (grows @ w.reshape(f, -1)).reshape(b, oh, ow, c, kh, kw)
    gxp = np.zeros_like(xp)
    for i in range(kh):
        for j in range(kw):
            gxp[:, :, i:i + oh, j:j + ow] += gcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return gxp[:, :, p:xp.shape[2] - p, p:xp.shape[3] - p], gw


def layer_for(shape, filters, kernel, padding):
    layer = Conv2D(filters, kernel, padding=padding)
    layer.build(shape, np.random.default_rng(0))
    return layer


def layer_forward(layer):
    def run(x, w, p):
        layer.params["W"][...] = w
        return layer.forward(x)
    run.__name__ = "layer"
    return run


def layer_backward(layer):
    seen = []

    def run(x, w, p, g):
        if not seen or seen[0] is not x:  # forward once per input, outside the timed repeats
            layer.params["W"][...] = w
            layer.forward(x)
            seen[:] = [x]
        gx = layer.backward(g)
        return gx, layer.grads["W"]
    run.__name__ = "layer"
    return run


def best_of(fn, args, budget: float) -> float:
    """Best wall time of repeated calls within ``budget`` seconds (at least two calls)."""
    times = []
    started = time.perf_counter()
    while len(times) < 2 or time.perf_counter() - started < budget:
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times)


def stacked() -> None:
    rng = np.random.default_rng(0)
    print("| shape | batch | ms per forward call (float64, best of 7), by variant |\n|---|---:|---|")
    for label, shape, filters, kernel, padding in STACKED:
        layer = layer_for(shape[1:], filters, kernel, padding)
        x = rng.normal(size=shape)
        w = rng.normal(size=(filters, shape[1], kernel, kernel))
        reference = previous_forward(x, w, padding)
        row = []
        for fn in (previous_forward, shifted_wide_forward, layer_forward(layer)):
            np.testing.assert_allclose(fn(x, w, padding), reference, rtol=1e-12, atol=1e-12)
            times = []
            for _ in range(7):
                started = time.perf_counter()
                fn(x, w, padding)
                times.append(time.perf_counter() - started)
            row.append(f"{fn.__name__.removesuffix('_forward')}={1e3 * min(times):.2f}")
        print(f"| {label} | {shape[0]} | " + ", ".join(row) + " |", flush=True)


def main() -> None:
    if "--stacked" in sys.argv:
        stacked()
        return
    quick = "--quick" in sys.argv
    batches = (256, 4096) if quick else BATCHES
    dtypes = (np.float64,) if quick else (np.float64, np.float32)
    budget = 0.3 if quick else 1.0
    rng = np.random.default_rng(0)
    print("| shape | batch | dtype | direction | ms per call, by variant |\n|---|---:|---|---|---|")
    for label, shape, filters, kernel, padding in SHAPES:
        layer = layer_for(shape, filters, kernel, padding)
        for dtype in dtypes:
            for batch in batches:
                x = rng.normal(size=(batch, *shape)).astype(dtype)
                w = rng.normal(size=(filters, shape[0], kernel, kernel)).astype(dtype)
                reference = tap_forward(x, w, padding)
                g = rng.normal(size=reference.shape).astype(dtype)
                ref_gx, ref_gw = tap_backward(x, w, padding, g)
                tol = 1e-9 if dtype == np.float64 else 1e-3
                forwards = [tap_forward, im2col_rows_forward, im2col_batched_forward,
                            im2col_wide_forward, einsum_forward, chunked(im2col_rows_forward, 256),
                            chunked(im2col_wide_forward, 256), layer_forward(layer)]
                backwards = [tap_backward, tap_wide_backward, im2col_backward,
                             layer_backward(layer)]
                row = []
                for fn in forwards:
                    np.testing.assert_allclose(fn(x, w, padding), reference, rtol=tol, atol=tol)
                    row.append(f"{fn.__name__}={1e3 * best_of(fn, (x, w, padding), budget):.2f}")
                print(f"| {label} | {batch} | {np.dtype(dtype).name} | forward | "
                      + ", ".join(row) + " |", flush=True)
                row = []
                for fn in backwards:
                    gx, gw = fn(x, w, padding, g)
                    np.testing.assert_allclose(gx, ref_gx, rtol=tol, atol=tol)
                    np.testing.assert_allclose(gw, ref_gw, rtol=tol, atol=tol * batch)
                    row.append(f"{fn.__name__}={1e3 * best_of(fn, (x, w, padding, g), budget):.2f}")
                print(f"| {label} | {batch} | {np.dtype(dtype).name} | backward | "
                      + ", ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
