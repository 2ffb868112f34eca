"""A realistic bug in a course-style conv backward, for `net_buggy.yaml`: the weight gradient's
window is indexed with the loop variables swapped, so dw is wrong while dx and db stay right.

gradcheck check examples/course/net_buggy.yaml exits 1 and blames conv1's dL/dw alone.
"""

import numpy as np


def conv_backward_naive(dout, cache):
    """dout: (N, F, H', W') -> dx: (N, C, H, W), dw: (F, C, HH, WW), db: (F,)."""
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
            # The bug: the window of output (j, i), not (i, j).
            window = xpad[:, :, j * stride:j * stride + kernel_h, i * stride:i * stride + kernel_w]
            dw += np.tensordot(dout[:, :, i, j], window, axes=([0], [0]))
    dx = dxpad[:, :, pad:pad + x.shape[2], pad:pad + x.shape[3]]
    db = dout.sum(axis=(0, 2, 3))
    return dx, dw, db
