"""Naive cs231n-style layers that fastconv.compat.cs231n is tested against, written from the
assignment's definitions: loops over output positions, NumPy's own dtype promotion, output sizes
``1 + (H + 2 * pad - HH) // stride`` and ``1 + (H - pool_height) // stride`` (floored), and the
naive caches (x, w, b, conv_param), (x, pool_param) and x. Max pooling sends a window's gradient
to its first maximum (np.argmax). Also the affine layer and softmax loss of the small network in
test_compat_cs231n.py.
"""

from __future__ import annotations

import numpy as np


def _conv_sizes(x, w, conv_param):
    stride, pad = conv_param["stride"], conv_param["pad"]
    _, _, height, width = x.shape
    _, _, hh, ww = w.shape
    return stride, pad, 1 + (height + 2 * pad - hh) // stride, 1 + (width + 2 * pad - ww) // stride


def _padded(x, pad):
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def conv_forward_naive(x, w, b, conv_param):
    stride, pad, out_h, out_w = _conv_sizes(x, w, conv_param)
    hh, ww = w.shape[2:]
    xp = _padded(x, pad)
    out = np.empty((x.shape[0], w.shape[0], out_h, out_w), np.result_type(x, w, b))
    for i in range(out_h):
        for j in range(out_w):
            window = xp[:, :, i * stride:i * stride + hh, j * stride:j * stride + ww]
            out[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    x, w, _, conv_param = cache
    stride, pad, out_h, out_w = _conv_sizes(x, w, conv_param)
    hh, ww = w.shape[2:]
    xp = _padded(x, pad)
    dxp = np.zeros(xp.shape, np.result_type(dout, w))
    dw = np.zeros(w.shape, np.result_type(dout, x))
    for i in range(out_h):
        for j in range(out_w):
            rows = slice(i * stride, i * stride + hh)
            cols = slice(j * stride, j * stride + ww)
            g = dout[:, :, i, j]  # (N, F)
            dw += np.tensordot(g, xp[:, :, rows, cols], axes=([0], [0]))
            dxp[:, :, rows, cols] += np.tensordot(g, w, axes=([1], [0]))
    height, width = x.shape[2:]
    return dxp[:, :, pad:pad + height, pad:pad + width], dw, dout.sum(axis=(0, 2, 3))


def _pool_sizes(x, pool_param):
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    _, _, height, width = x.shape
    return ph, pw, stride, 1 + (height - ph) // stride, 1 + (width - pw) // stride


def max_pool_forward_naive(x, pool_param):
    ph, pw, stride, out_h, out_w = _pool_sizes(x, pool_param)
    out = np.empty(x.shape[:2] + (out_h, out_w), x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            window = x[:, :, i * stride:i * stride + ph, j * stride:j * stride + pw]
            out[:, :, i, j] = window.max(axis=(2, 3))
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    ph, pw, stride, out_h, out_w = _pool_sizes(x, pool_param)
    n, c = x.shape[:2]
    dx = np.zeros(x.shape, np.result_type(dout, x))
    image, channel = np.indices((n, c))
    for i in range(out_h):
        for j in range(out_w):
            window = x[:, :, i * stride:i * stride + ph, j * stride:j * stride + pw]
            first = window.reshape(n, c, ph * pw).argmax(axis=2)  # first maximum, row-major
            dx[image, channel, i * stride + first // pw, j * stride + first % pw] += \
                dout[:, :, i, j]
    return dx


def relu_forward(x):
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    return dout * (cache > 0)


def conv_relu_forward(x, w, b, conv_param):
    a, conv_cache = conv_forward_naive(x, w, b, conv_param)
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout, cache):
    conv_cache, relu_cache = cache
    return conv_backward_naive(relu_backward(dout, relu_cache), conv_cache)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    a, conv_cache = conv_forward_naive(x, w, b, conv_param)
    s, relu_cache = relu_forward(a)
    out, pool_cache = max_pool_forward_naive(s, pool_param)
    return out, (conv_cache, relu_cache, pool_cache)


def conv_relu_pool_backward(dout, cache):
    conv_cache, relu_cache, pool_cache = cache
    ds = max_pool_backward_naive(dout, pool_cache)
    return conv_backward_naive(relu_backward(ds, relu_cache), conv_cache)


def affine_forward(x, w, b):
    """(N, d1, ...) @ (D, M) + (M,), with D = d1 * ...: ``(out, (x, w, b))``."""
    return x.reshape(x.shape[0], -1) @ w + b, (x, w, b)


def affine_backward(dout, cache):
    x, w, _ = cache
    return (dout @ w.T).reshape(x.shape), x.reshape(x.shape[0], -1).T @ dout, dout.sum(axis=0)


def softmax_loss(scores, y):
    """Mean cross-entropy of softmax(scores) against labels y, and its gradient."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(y))
    grad = np.exp(log_probs)
    grad[rows, y] -= 1
    return -log_probs[rows, y].mean(), grad / len(y)
