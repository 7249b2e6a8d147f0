"""Pure-NumPy reference implementation of every fastconv op (forward and backward).

This module is the executable specification that the compiled kernels are tested
against.  It favours obviousness over speed: every op is written as an explicit
Python loop over kernel offsets ``(ki, kj)``, vectorised with NumPy over batch,
channels and output pixels.  Arrays are NCHW; computations stay in the
input's dtype (float32 or float64).  Convolution and pooling also take
``data_format="NHWC"`` (and convolution ``weight_format="HWIO"``), defined as the
NCHW op on the transposed arrays, the result transposed back.  Arguments are assumed to be already
normalised and valid (``stride``, ``dilation``, ``kernel_size`` are ``(h, w)``
tuples; ``padding`` is ``(top, bottom, left, right)``).  Semantics follow PyTorch's
CPU kernels.
"""

from __future__ import annotations

import numpy as np

Pair = tuple[int, int]
Pad4 = tuple[int, int, int, int]  # (top, bottom, left, right)


def _nchw(a: np.ndarray, data_format: str) -> np.ndarray:
    """An activation array in data_format ('NCHW' or 'NHWC') as NCHW (a view)."""
    return a if data_format == "NCHW" else a.transpose(0, 3, 1, 2)


def _in_format(a: np.ndarray, data_format: str) -> np.ndarray:
    """An NCHW array in data_format (a copy for NHWC)."""
    return a if data_format == "NCHW" else np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _oihw(w: np.ndarray, weight_format: str) -> np.ndarray:
    """Weights in weight_format ('OIHW' or 'HWIO') as (K, C/groups, kH, kW) (a view)."""
    return w if weight_format == "OIHW" else w.transpose(3, 2, 0, 1)


def _window(start: int, step: int, count: int) -> slice:
    """Slice selecting ``count`` elements ``start, start+step, ...``."""
    return slice(start, start + step * (count - 1) + 1, step)


# --------------------------------------------------------------------------- conv


def _conv_out_size(size: int, pad_lo: int, pad_hi: int, k: int, s: int, d: int) -> int:
    return (size + pad_lo + pad_hi - d * (k - 1) - 1) // s + 1


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: Pair,
    padding: tuple[int, int, int, int],
    dilation: Pair,
    groups: int,
    data_format: str = "NCHW",
    weight_format: str = "OIHW",
) -> np.ndarray:
    """2-D cross-correlation (PyTorch ``conv2d``).

    Parameters
    ----------
    x : (N, C, H, W) array ((N, H, W, C) for data_format 'NHWC')
    weight : (K, C // groups, kH, kW) array ((kH, kW, C // groups, K) for weight_format 'HWIO')
    bias : (K,) array or None
    stride, dilation : (h, w)
    padding : (top, bottom, left, right), zero padding
    groups : int

    Returns
    -------
    out : (N, K, OH, OW) array ((N, OH, OW, K) for NHWC), same dtype as ``x``
    """
    if (data_format, weight_format) != ("NCHW", "OIHW"):
        out = conv2d(_nchw(x, data_format), _oihw(weight, weight_format), bias, stride, padding,
                     dilation, groups)
        return _in_format(out, data_format)
    N, C, H, W = x.shape
    K, Cg, kH, kW = weight.shape
    sH, sW = stride
    dH, dW = dilation
    top, bottom, left, right = padding
    assert Cg * groups == C and K % groups == 0
    Kg = K // groups
    OH = _conv_out_size(H, top, bottom, kH, sH, dH)
    OW = _conv_out_size(W, left, right, kW, sW, dW)

    xpad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    out = np.zeros((N, K, OH, OW), dtype=x.dtype)
    for g in range(groups):
        cs = slice(g * Cg, (g + 1) * Cg)
        ks = slice(g * Kg, (g + 1) * Kg)
        for ki in range(kH):
            for kj in range(kW):
                # patch[n, c, oh, ow] = xpad[n, c, oh*sH + ki*dH, ow*sW + kj*dW]
                patch = xpad[:, cs, _window(ki * dH, sH, OH), _window(kj * dW, sW, OW)]
                w = weight[ks, :, ki, kj]  # (Kg, Cg)
                out[:, ks] += np.einsum("nchw,kc->nkhw", patch, w)
    if bias is not None:
        out += bias.reshape(1, K, 1, 1)
    return out


def conv2d_backward(
    grad_output: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    stride: Pair,
    padding: tuple[int, int, int, int],
    dilation: Pair,
    groups: int,
    data_format: str = "NCHW",
    weight_format: str = "OIHW",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv2d`.

    Returns
    -------
    grad_input : like ``x``
    grad_weight : like ``weight``
    grad_bias : (K,) array, ``grad_output.sum((0, 2, 3))`` (over N, OH, OW in either layout)
    """
    if (data_format, weight_format) != ("NCHW", "OIHW"):
        gx, gw, gb = conv2d_backward(_nchw(grad_output, data_format), _nchw(x, data_format),
                                     _oihw(weight, weight_format), stride, padding, dilation,
                                     groups)
        if weight_format == "HWIO":
            gw = np.ascontiguousarray(gw.transpose(2, 3, 1, 0))
        return _in_format(gx, data_format), gw, gb
    N, C, H, W = x.shape
    K, Cg, kH, kW = weight.shape
    sH, sW = stride
    dH, dW = dilation
    top, bottom, left, right = padding
    assert Cg * groups == C and K % groups == 0
    Kg = K // groups
    _, _, OH, OW = grad_output.shape

    xpad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    grad_xpad = np.zeros_like(xpad)
    grad_weight = np.zeros_like(weight)
    for g in range(groups):
        cs = slice(g * Cg, (g + 1) * Cg)
        ks = slice(g * Kg, (g + 1) * Kg)
        go = grad_output[:, ks]  # (N, Kg, OH, OW)
        for ki in range(kH):
            for kj in range(kW):
                hs = _window(ki * dH, sH, OH)
                ws = _window(kj * dW, sW, OW)
                patch = xpad[:, cs, hs, ws]
                grad_weight[ks, :, ki, kj] += np.einsum("nkhw,nchw->kc", go, patch)
                grad_xpad[:, cs, hs, ws] += np.einsum("nkhw,kc->nchw", go, weight[ks, :, ki, kj])
    grad_input = grad_xpad[:, :, top:top + H, left:left + W].copy()
    grad_bias = grad_output.sum(axis=(0, 2, 3))
    return grad_input, grad_weight, grad_bias


def conv_transpose_out_size(size: int, pad_lo: int, pad_hi: int, k: int, s: int, d: int,
                            output_padding: int) -> int:
    """Output length of a transposed convolution along one dimension (PyTorch's rule)."""
    return (size - 1) * s - pad_lo - pad_hi + d * (k - 1) + output_padding + 1


def _transpose_canvas(x_shape, weight_shape, stride, padding, output_padding, dilation):
    """(OH, OW, canvas height, canvas width): the output's size and that of an uncropped plane
    holding every tap's contribution and the whole output (its top-left at (top, left))."""
    _, _, H, W = x_shape
    _, _, kH, kW = weight_shape
    top, bottom, left, right = padding
    OH = conv_transpose_out_size(H, top, bottom, kH, stride[0], dilation[0], output_padding[0])
    OW = conv_transpose_out_size(W, left, right, kW, stride[1], dilation[1], output_padding[1])
    reach_h = (H - 1) * stride[0] + dilation[0] * (kH - 1) + 1
    reach_w = (W - 1) * stride[1] + dilation[1] * (kW - 1) + 1
    return OH, OW, max(reach_h, top + OH), max(reach_w, left + OW)


def conv_transpose2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: Pair,
    padding: tuple[int, int, int, int],
    output_padding: Pair,
    groups: int,
    dilation: Pair,
) -> np.ndarray:
    """2-D transposed convolution (PyTorch ``conv_transpose2d``), by its scatter definition.

    Every input pixel ``(h, w)`` of channel ``c`` adds ``x[n, c, h, w] * weight[c, k, i, j]`` to
    the uncropped output at ``(h*sH + i*dH, w*sW + j*dW)``; the output is that plane cropped by
    ``padding`` (``top`` rows off the top, ``left`` columns off the left), ``OH`` by ``OW``,
    plus bias. Output padding only makes the output larger: its extra rows and columns at the
    bottom and right receive no tap (bias only).

    Parameters
    ----------
    x : (N, C, H, W) array
    weight : (C, K // groups, kH, kW) array
    bias : (K,) array or None
    stride, output_padding, dilation : (h, w)
    padding : (top, bottom, left, right)
    groups : int

    Returns
    -------
    out : (N, K, OH, OW) array, ``OH = (H-1)*sH - top - bottom + dH*(kH-1) + output_padding + 1``
    """
    N, C, H, W = x.shape
    _, Kg, kH, kW = weight.shape
    sH, sW = stride
    dH, dW = dilation
    top, _, left, _ = padding
    assert weight.shape[0] == C and C % groups == 0
    Cg = C // groups
    OH, OW, canvas_h, canvas_w = _transpose_canvas(x.shape, weight.shape, stride, padding,
                                                   output_padding, dilation)
    canvas = np.zeros((N, Kg * groups, canvas_h, canvas_w), dtype=x.dtype)
    for g in range(groups):
        cs = slice(g * Cg, (g + 1) * Cg)
        ks = slice(g * Kg, (g + 1) * Kg)
        for ki in range(kH):
            for kj in range(kW):
                # canvas[n, k, h*sH + ki*dH, w*sW + kj*dW] += x[n, c, h, w] * weight[c, k, ki, kj]
                taps = canvas[:, ks, _window(ki * dH, sH, H), _window(kj * dW, sW, W)]
                taps += np.einsum("nchw,ck->nkhw", x[:, cs], weight[cs, :, ki, kj])
    out = canvas[:, :, top:top + OH, left:left + OW].copy()
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out


def conv_transpose2d_backward(
    grad_output: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    stride: Pair,
    padding: tuple[int, int, int, int],
    output_padding: Pair,
    groups: int,
    dilation: Pair,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv_transpose2d`: each tap of the scatter read back.

    Returns
    -------
    grad_input : like ``x``
    grad_weight : like ``weight``
    grad_bias : (K,) array, ``grad_output.sum((0, 2, 3))``
    """
    N, C, H, W = x.shape
    _, Kg, kH, kW = weight.shape
    sH, sW = stride
    dH, dW = dilation
    top, _, left, _ = padding
    Cg = C // groups
    OH, OW, canvas_h, canvas_w = _transpose_canvas(x.shape, weight.shape, stride, padding,
                                                   output_padding, dilation)
    grad_canvas = np.zeros((N, Kg * groups, canvas_h, canvas_w), dtype=grad_output.dtype)
    grad_canvas[:, :, top:top + OH, left:left + OW] = grad_output
    grad_input = np.zeros_like(x)
    grad_weight = np.zeros_like(weight)
    for g in range(groups):
        cs = slice(g * Cg, (g + 1) * Cg)
        ks = slice(g * Kg, (g + 1) * Kg)
        for ki in range(kH):
            for kj in range(kW):
                taps = grad_canvas[:, ks, _window(ki * dH, sH, H), _window(kj * dW, sW, W)]
                grad_input[:, cs] += np.einsum("nkhw,ck->nchw", taps, weight[cs, :, ki, kj])
                grad_weight[cs, :, ki, kj] += np.einsum("nkhw,nchw->ck", taps, x[:, cs])
    return grad_input, grad_weight, grad_output.sum(axis=(0, 2, 3))


# --------------------------------------------------------------------------- pooling


def pool_output_size(
    size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int,
    ceil_mode: bool,
) -> int:
    """Output length of a pooling op along one dimension (PyTorch's rule, each side's pad).

    ``floor((size + pad_begin + pad_end - d(k-1) - 1 + (s-1 if ceil_mode else 0)) / s) + 1``,
    and in ceil mode the last window is dropped if it would start in the end's padding.
    """
    numer = (size + pad_begin + pad_end - dilation * (kernel - 1) - 1
             + (stride - 1 if ceil_mode else 0))
    out = numer // stride + 1  # Python // floors, like PyTorch's div_rtn
    if ceil_mode and (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


def _pool_sizes(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pad4,
                dilation: Pair, ceil_mode: bool) -> tuple[int, int]:
    _, _, H, W = x.shape
    top, bottom, left, right = padding
    OH = pool_output_size(H, kernel_size[0], stride[0], top, bottom, dilation[0], ceil_mode)
    OW = pool_output_size(W, kernel_size[1], stride[1], left, right, dilation[1], ceil_mode)
    return OH, OW


def _pad_for_pool(a: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pad4,
                  dilation: Pair, out_hw: tuple[int, int], value) -> np.ndarray:
    """Pad the last two axes of ``a`` with ``value``: the top/left ``padding`` before, and
    after as much as needed for every window of the ``out_hw`` output to fit."""
    H, W = a.shape[-2:]
    pads = [(0, 0)] * (a.ndim - 2)
    for size, k, s, p, d, o in zip((H, W), kernel_size, stride, padding[::2], dilation, out_hw):
        needed = (o - 1) * s + d * (k - 1) + 1  # extent covered by the windows
        pads.append((p, max(0, needed - size - p)))
    return np.pad(a, pads, constant_values=value)


def _unpad(a: np.ndarray, padding: Pad4, H: int, W: int) -> np.ndarray:
    """The input's part of a padded array (a copy)."""
    top, _, left, _ = padding
    return a[..., top:top + H, left:left + W].copy()


def max_pool2d(
    x: np.ndarray,
    kernel_size: Pair,
    stride: Pair,
    padding: Pad4,
    dilation: Pair,
    ceil_mode: bool,
    data_format: str = "NCHW",
) -> tuple[np.ndarray, np.ndarray]:
    """2-D max pooling with indices (PyTorch CPU semantics).

    Padding acts as ``-inf`` and is never selected.  The window is scanned in
    row-major order and the running max is replaced when ``val > max or
    isnan(val)``: ties keep the first maximum, NaN propagates (index of the last
    NaN).  An all ``-inf`` window keeps the index of its first in-bounds element;
    a window with no in-bounds element gives ``-inf`` and index ``-1``.

    Returns
    -------
    out : (N, C, OH, OW) array, dtype of ``x`` ((N, OH, OW, C) for data_format 'NHWC')
    indices : (N, C, OH, OW) int64, flat ``h * W + w`` within each (n, c) plane (NHWC: alike)
    """
    if data_format != "NCHW":
        out, idx = max_pool2d(_nchw(x, data_format), kernel_size, stride, padding, dilation,
                              ceil_mode)
        return _in_format(out, data_format), _in_format(idx, data_format)
    N, C, H, W = x.shape
    kH, kW = kernel_size
    sH, sW = stride
    dH, dW = dilation
    OH, OW = _pool_sizes(x, kernel_size, stride, padding, dilation, ceil_mode)

    xpad = _pad_for_pool(x, kernel_size, stride, padding, dilation, (OH, OW), -np.inf)
    flat = np.arange(H * W, dtype=np.int64).reshape(H, W)
    idxpad = _pad_for_pool(flat, kernel_size, stride, padding, dilation, (OH, OW), -1)

    maxval = np.full((N, C, OH, OW), -np.inf, dtype=x.dtype)
    maxidx = np.full((N, C, OH, OW), -1, dtype=np.int64)
    for ki in range(kH):
        for kj in range(kW):
            hs = _window(ki * dH, sH, OH)
            ws = _window(kj * dW, sW, OW)
            val = xpad[:, :, hs, ws]
            idx = np.broadcast_to(idxpad[hs, ws], val.shape)
            in_bounds = idx >= 0
            # maxidx == -1: nothing in-bounds seen yet, so take the first in-bounds
            # element (this is PyTorch's initial maxindex).
            take = in_bounds & ((val > maxval) | np.isnan(val) | (maxidx == -1))
            maxval = np.where(take, val, maxval)
            maxidx = np.where(take, idx, maxidx)
    return maxval, maxidx


def max_pool2d_backward(
    grad_output: np.ndarray,
    x: np.ndarray,
    kernel_size: Pair,
    stride: Pair,
    padding: Pad4,
    dilation: Pair,
    ceil_mode: bool,
    indices: np.ndarray | None = None,
    data_format: str = "NCHW",
) -> np.ndarray:
    """Gradient of :func:`max_pool2d`: scatter-add ``grad_output`` to ``indices``.

    ``indices`` are computed with :func:`max_pool2d` if not given; entries equal to
    ``-1`` (windows wholly in the padding) are skipped.
    """
    if data_format != "NCHW":
        return _in_format(max_pool2d_backward(
            _nchw(grad_output, data_format), _nchw(x, data_format), kernel_size, stride, padding,
            dilation, ceil_mode, None if indices is None else _nchw(indices, data_format)),
            data_format)
    if indices is None:
        _, indices = max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
    return _scatter_to_indices(grad_output, indices, x)


def _scatter_to_indices(grad_output: np.ndarray, indices: np.ndarray,
                        x: np.ndarray) -> np.ndarray:
    """Max pooling's gradient: each output's gradient added at its flat index in its plane of
    x's shape; indices of -1 (no input) skipped."""
    N, C, H, W = x.shape
    grad_input = np.zeros((N * C, H * W), dtype=x.dtype)
    OH, OW = indices.shape[2:]
    idx = indices.reshape(N * C, OH * OW)
    go = grad_output.reshape(N * C, OH * OW)
    plane = np.broadcast_to(np.arange(N * C).reshape(-1, 1), idx.shape)
    keep = idx >= 0
    np.add.at(grad_input, (plane[keep], idx[keep]), go[keep])
    return grad_input.reshape(N, C, H, W)


def _window_areas(H: int, W: int, OH: int, OW: int, kernel_size: Pair, stride: Pair,
                  padding: Pad4) -> tuple[np.ndarray, np.ndarray]:
    """(OH, OW) int64 arrays: each window's area clipped to the padded input (PyTorch's
    ``min(h0 + k, H + pad)`` with the end's pad) and clipped to the input (0 for a window
    wholly in the padding)."""
    kH, kW = kernel_size
    sH, sW = stride
    top, bottom, left, right = padding
    padded = np.zeros((OH, OW), dtype=np.int64)
    inside = np.zeros((OH, OW), dtype=np.int64)
    for oh in range(OH):
        for ow in range(OW):
            h0 = oh * sH - top
            w0 = ow * sW - left
            h1 = min(h0 + kH, H + bottom)
            w1 = min(w0 + kW, W + right)
            padded[oh, ow] = (h1 - h0) * (w1 - w0)
            h0, w0 = max(h0, 0), max(w0, 0)
            h1, w1 = min(h1, H), min(w1, W)
            inside[oh, ow] = max(h1 - h0, 0) * max(w1 - w0, 0)
    return padded, inside


def _avg_divisors(H: int, W: int, OH: int, OW: int, kernel_size: Pair, stride: Pair,
                  padding: Pad4, count_include_pad: bool,
                  divisor_override: int | None) -> np.ndarray:
    """(OH, OW) int64 array of the divisor used by each avg-pool output; 0 for a window
    wholly in the padding (its output is 0)."""
    padded, inside = _window_areas(H, W, OH, OW, kernel_size, stride, padding)
    if divisor_override is not None:
        div = np.full((OH, OW), divisor_override, dtype=np.int64)
    else:
        div = padded if count_include_pad else inside
    return np.where(inside == 0, 0, div)


def avg_pool2d(
    x: np.ndarray,
    kernel_size: Pair,
    stride: Pair,
    padding: Pad4,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
    data_format: str = "NCHW",
) -> np.ndarray:
    """2-D average pooling (PyTorch CPU semantics).

    The sum runs over the window clipped to the input.  The divisor is
    ``divisor_override`` if given, else the window size clipped to the padded
    input (``count_include_pad``) or to the input itself.  A window wholly in the
    padding (possible with a 4-tuple padding of at least the kernel) gives 0.
    """
    if data_format != "NCHW":
        return _in_format(avg_pool2d(_nchw(x, data_format), kernel_size, stride, padding,
                                     ceil_mode, count_include_pad, divisor_override), data_format)
    N, C, H, W = x.shape
    kH, kW = kernel_size
    sH, sW = stride
    OH, OW = _pool_sizes(x, kernel_size, stride, padding, (1, 1), ceil_mode)
    # Zero padding: summing over padded positions adds nothing.
    xpad = _pad_for_pool(x, kernel_size, stride, padding, (1, 1), (OH, OW), 0)
    total = np.zeros((N, C, OH, OW), dtype=x.dtype)
    for ki in range(kH):
        for kj in range(kW):
            total += xpad[:, :, _window(ki, sH, OH), _window(kj, sW, OW)]
    div = _avg_divisors(H, W, OH, OW, kernel_size, stride, padding,
                        count_include_pad, divisor_override)
    safe = np.where(div == 0, 1, div).astype(x.dtype)
    return np.where(div == 0, x.dtype.type(0), total / safe)


def avg_pool2d_backward(
    grad_output: np.ndarray,
    x: np.ndarray,
    kernel_size: Pair,
    stride: Pair,
    padding: Pad4,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
    data_format: str = "NCHW",
) -> np.ndarray:
    """Gradient of :func:`avg_pool2d`: each output spreads ``grad / divisor`` over
    the in-bounds part of its window."""
    if data_format != "NCHW":
        return _in_format(avg_pool2d_backward(
            _nchw(grad_output, data_format), _nchw(x, data_format), kernel_size, stride, padding,
            ceil_mode, count_include_pad, divisor_override), data_format)
    N, C, H, W = x.shape
    kH, kW = kernel_size
    sH, sW = stride
    OH, OW = grad_output.shape[2:]
    div = _avg_divisors(H, W, OH, OW, kernel_size, stride, padding,
                        count_include_pad, divisor_override)
    safe = np.where(div == 0, 1, div).astype(x.dtype)
    g = np.where(div == 0, x.dtype.type(0), grad_output / safe)
    grad_pad = _pad_for_pool(np.zeros_like(x), kernel_size, stride, padding, (1, 1), (OH, OW), 0)
    for ki in range(kH):
        for kj in range(kW):
            grad_pad[:, :, _window(ki, sH, OH), _window(kj, sW, OW)] += g
    return _unpad(grad_pad, padding, H, W)


def _lp_scale(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pad4, OH: int,
              OW: int) -> np.ndarray:
    """(OH, OW) array ``kH*kW / area``, ``area`` the window clipped to the padded input."""
    _, _, H, W = x.shape
    kH, kW = kernel_size
    padded, _ = _window_areas(H, W, OH, OW, kernel_size, stride, padding)
    return (kH * kW / padded).astype(x.dtype)


def lp_pool2d(
    x: np.ndarray,
    norm_type: float,
    kernel_size: Pair,
    stride: Pair,
    ceil_mode: bool,
    padding: Pad4 = (0, 0, 0, 0),
    data_format: str = "NCHW",
) -> np.ndarray:
    """2-D power-average pooling (PyTorch ``lp_pool2d``).

    ``S = avg_pool2d(x**p, padding=padding, count_include_pad=True)`` and
    ``out = (sign(S) * relu(|S|) * kH * kW) ** (1/p)``; a partial (ceil_mode)
    window is thereby scaled by ``kH*kW / area``.  PyTorch has no padding: zero
    padding, passed on to avg_pool2d, is fastconv's extension (a full window is then
    the plain p-norm of its elements and zeros).
    """
    if data_format != "NCHW":
        return _in_format(lp_pool2d(_nchw(x, data_format), norm_type, kernel_size, stride,
                                    ceil_mode, padding), data_format)
    p = x.dtype.type(norm_type)
    kH, kW = kernel_size
    with np.errstate(invalid="ignore", divide="ignore"):
        S = avg_pool2d(x ** p, kernel_size, stride, padding, ceil_mode, True, None)
        base = np.sign(S) * relu(np.abs(S)) * x.dtype.type(kH * kW)
        return base ** (x.dtype.type(1) / p)


def lp_pool2d_backward(
    grad_output: np.ndarray,
    x: np.ndarray,
    norm_type: float,
    kernel_size: Pair,
    stride: Pair,
    ceil_mode: bool,
    padding: Pad4 = (0, 0, 0, 0),
    data_format: str = "NCHW",
) -> np.ndarray:
    """Gradient of :func:`lp_pool2d`.

    For each window containing ``x_i``:
    ``d out / d x_i = (kH*kW/area) * x_i**(p-1) * out**(1-p)``, taken as 0 where
    the window's ``S == 0``.
    """
    if data_format != "NCHW":
        return _in_format(lp_pool2d_backward(
            _nchw(grad_output, data_format), _nchw(x, data_format), norm_type, kernel_size,
            stride, ceil_mode, padding), data_format)
    N, C, H, W = x.shape
    kH, kW = kernel_size
    sH, sW = stride
    OH, OW = grad_output.shape[2:]
    p = x.dtype.type(norm_type)
    one = x.dtype.type(1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        S = avg_pool2d(x ** p, kernel_size, stride, padding, ceil_mode, True, None)
        out = lp_pool2d(x, norm_type, kernel_size, stride, ceil_mode, padding)
        scale = _lp_scale(x, kernel_size, stride, padding, OH, OW)
        # Per-output factor; 0 for windows whose sum is 0, and (PyTorch's sign(NaN) = 0 in its
        # chain) for a NaN sum when p == 1, where t**(1/p - 1) = t**0 stays finite.
        g = np.where((S == 0) | (np.isnan(S) & (p == one)), x.dtype.type(0),
                     grad_output * scale * out ** (one - p))
        acc = _pad_for_pool(np.zeros_like(x), kernel_size, stride, padding, (1, 1), (OH, OW), 0)
        for ki in range(kH):
            for kj in range(kW):
                acc[:, :, _window(ki, sH, OH), _window(kj, sW, OW)] += g
        return _unpad(acc, padding, H, W) * x ** (p - one)


# --------------------------------------------------------------------------- adaptive pooling


def _adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive windows along one dimension: output o pools
    ``[floor(o * size / out), ceil((o + 1) * size / out))``."""
    return [(o * size // out, -(-(o + 1) * size // out)) for o in range(out)]


def adaptive_avg_pool2d(x: np.ndarray, output_size: Pair) -> np.ndarray:
    """Adaptive average pooling (PyTorch ``adaptive_avg_pool2d``) to ``output_size`` (OH, OW):
    each output is its window's sum divided by the window's height, then by its width."""
    N, C, H, W = x.shape
    OH, OW = output_size
    out = np.zeros((N, C, OH, OW), dtype=x.dtype)
    for oh, (h0, h1) in enumerate(_adaptive_windows(H, OH)):
        for ow, (w0, w1) in enumerate(_adaptive_windows(W, OW)):
            total = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3))
            out[:, :, oh, ow] = total / x.dtype.type(h1 - h0) / x.dtype.type(w1 - w0)
    return out


def adaptive_avg_pool2d_backward(grad_output: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Gradient of :func:`adaptive_avg_pool2d`: each output spreads ``grad / height / width``
    over its window."""
    N, C, H, W = x.shape
    OH, OW = grad_output.shape[2:]
    grad_input = np.zeros_like(x)
    for oh, (h0, h1) in enumerate(_adaptive_windows(H, OH)):
        for ow, (w0, w1) in enumerate(_adaptive_windows(W, OW)):
            share = grad_output[:, :, oh, ow] / x.dtype.type(h1 - h0) / x.dtype.type(w1 - w0)
            grad_input[:, :, h0:h1, w0:w1] += share[:, :, None, None]
    return grad_input


def adaptive_max_pool2d(x: np.ndarray, output_size: Pair) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive max pooling (PyTorch ``adaptive_max_pool2d``) with int64 flat indices
    ``h * W + w``: each window is scanned in row-major order from ``-inf`` at its first
    element, a value replacing the maximum when greater or NaN (ties keep the first maximum,
    NaN propagates with the index of the last NaN)."""
    N, C, H, W = x.shape
    OH, OW = output_size
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    indices = np.empty((N, C, OH, OW), dtype=np.int64)
    for oh, (h0, h1) in enumerate(_adaptive_windows(H, OH)):
        for ow, (w0, w1) in enumerate(_adaptive_windows(W, OW)):
            best = np.full((N, C), -np.inf, dtype=x.dtype)
            at = np.full((N, C), h0 * W + w0, dtype=np.int64)
            for h in range(h0, h1):
                for w in range(w0, w1):
                    val = x[:, :, h, w]
                    take = (val > best) | np.isnan(val)
                    best = np.where(take, val, best)
                    at = np.where(take, h * W + w, at)
            out[:, :, oh, ow], indices[:, :, oh, ow] = best, at
    return out, indices


def adaptive_max_pool2d_backward(grad_output: np.ndarray, x: np.ndarray,
                                 indices: np.ndarray | None = None) -> np.ndarray:
    """Gradient of :func:`adaptive_max_pool2d`: ``grad_output`` added at ``indices`` (computed
    from x for grad_output's output size if not given)."""
    if indices is None:
        _, indices = adaptive_max_pool2d(x, grad_output.shape[2:])
    return _scatter_to_indices(grad_output, indices, x)


# --------------------------------------------------------------------------- relu


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)`` elementwise, keeping x unless ``x < 0`` (PyTorch's clamp_min): NaN
    propagates (``relu(nan) == nan``) and ``relu(-0.0)`` is -0.0."""
    return np.where(x < 0, x.dtype.type(0), x)


def relu_backward(grad_output: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Gradient of :func:`relu`: 0 where ``x <= 0``, else ``grad_output``.

    As in PyTorch (``threshold_backward`` tests ``x <= 0``), the gradient passes through NaN.
    """
    return np.where(x <= 0, grad_output.dtype.type(0), grad_output)


# --------------------------------------------------------------------------- linear


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``x @ weight.T + bias`` (PyTorch ``linear``): x (*, in), weight (out, in), bias (out,)
    or None; one matrix product over all leading dims."""
    rows = int(np.prod(x.shape[:-1]))  # not reshape(-1, ...): that fails for in_features = 0
    y = (x.reshape(rows, weight.shape[1]) @ weight.T).reshape(x.shape[:-1] + weight.shape[:1])
    return y if bias is None else y + bias


def linear_backward(grad_output: np.ndarray, x: np.ndarray, weight: np.ndarray):
    """Gradients of :func:`linear`: ``(grad_input, grad_weight, grad_bias)``, grad_bias being
    grad_output summed over the leading dims."""
    out_features, in_features = weight.shape
    rows = int(np.prod(x.shape[:-1]))
    go = grad_output.reshape(rows, out_features)
    return ((go @ weight).reshape(x.shape), go.T @ x.reshape(rows, in_features),
            go.sum(axis=0))


# --------------------------------------------------------------------------- batch norm


def _batch_norm_stats(x, running_mean, running_var, training):
    """(axes reduced, broadcast shape of a per-channel array, mean, variance) for x."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if not training:
        return axes, shape, running_mean, running_var
    mean = x.mean(axis=axes)
    centred = x - mean.reshape(shape)
    return axes, shape, mean, np.mean(centred * centred, axis=axes)  # biased, as PyTorch


def batch_norm(x: np.ndarray, running_mean: np.ndarray | None, running_var: np.ndarray | None,
               weight: np.ndarray | None, bias: np.ndarray | None, training: bool,
               momentum: float, eps: float) -> np.ndarray:
    """Batch normalisation over channel 1 (PyTorch ``batch_norm``): x (N, C, *); in training
    the batch's mean and biased variance normalise, and the running statistics (when not None)
    are updated IN PLACE, ``running = (1 - momentum) * running + momentum * batch`` with the
    unbiased variance; in evaluation the running statistics normalise."""
    axes, shape, mean, var = _batch_norm_stats(x, running_mean, running_var, training)
    if training and running_mean is not None:
        n = x.size // x.shape[1]
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += (momentum * n / (n - 1)) * var
    y = (x - mean.reshape(shape)) * (1 / np.sqrt(var + eps)).reshape(shape)
    if weight is not None:
        y *= weight.reshape(shape)
    if bias is not None:
        y += bias.reshape(shape)
    return y


def batch_norm_backward(grad_output: np.ndarray, x: np.ndarray,
                        running_mean: np.ndarray | None, running_var: np.ndarray | None,
                        weight: np.ndarray | None, training: bool, eps: float):
    """Gradients of :func:`batch_norm`: ``(grad_input, grad_weight, grad_bias)``, through the
    batch statistics in training (recomputed from x), the running ones constant in evaluation."""
    axes, shape, mean, var = _batch_norm_stats(x, running_mean, running_var, training)
    invstd = 1 / np.sqrt(var + eps)
    x_hat = (x - mean.reshape(shape)) * invstd.reshape(shape)
    grad_bias = grad_output.sum(axis=axes)
    grad_weight = (grad_output * x_hat).sum(axis=axes)
    scale = invstd if weight is None else weight * invstd
    if training:
        # the batch mean and variance depend on every x: subtract their share of the gradient
        n = x.size // x.shape[1]
        grad_input = grad_output - (grad_bias / n).reshape(shape) \
            - x_hat * (grad_weight / n).reshape(shape)
        grad_input *= scale.reshape(shape)
    else:
        grad_input = grad_output * scale.reshape(shape)
    return grad_input, grad_weight, grad_bias


# --------------------------------------------------------------------------- dropout, loss


def dropout(x: np.ndarray, p: float, uniform: np.ndarray):
    """Inverted dropout given one uniform draw in [0, 1) per element: ``(x * mask, mask)``, the
    element kept (mask ``1 / (1 - p)``) where its draw is below ``1 - p``, else 0."""
    keep = uniform < 1 - p  # kept with probability 1 - p
    mask = keep.astype(x.dtype)
    if p < 1:
        mask *= 1 / (1 - p)
    return x * mask, mask


def _log_softmax_parts(logits):
    """(logits - row max, exp of that, log of its row sums): never overflows."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return shifted, exp, np.log(exp.sum(axis=1, keepdims=True))


def cross_entropy(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean softmax cross-entropy of logits (N, C) against class indices (N,) (PyTorch
    ``cross_entropy``, reduction 'mean'), as a 0-d array of logits' dtype."""
    shifted, _, log_sum = _log_softmax_parts(logits)
    rows = np.arange(logits.shape[0])
    return np.asarray((log_sum[:, 0] - shifted[rows, target]).mean(), dtype=logits.dtype)


def cross_entropy_backward(grad_output: float, logits: np.ndarray,
                           target: np.ndarray) -> np.ndarray:
    """Gradient of :func:`cross_entropy`: ``grad_output * (softmax(logits) - one_hot) / N``."""
    _, exp, _ = _log_softmax_parts(logits)
    grad = exp / exp.sum(axis=1, keepdims=True)
    grad[np.arange(logits.shape[0]), target] -= 1
    grad *= grad_output / logits.shape[0]
    return grad


# --------------------------------------------------------------------------- optimiser steps


def adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay) -> None:
    """One Adam step IN PLACE, in the operations and order of PyTorch's single-tensor Adam."""
    beta1, beta2 = betas
    if weight_decay:
        grad = grad + weight_decay * param
    exp_avg += (1 - beta1) * (grad - exp_avg)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    step_size = lr / (1 - beta1**step)
    denom = np.sqrt(exp_avg_sq) / np.sqrt(1 - beta2**step) + eps
    param += (-step_size * exp_avg) / denom


def sgd_update(param, grad, lr, momentum, dampening, weight_decay, nesterov, momentum_buffer):
    """One SGD step IN PLACE (PyTorch's SGD); returns the momentum buffer (a new one, the
    gradient, on the first step; None without momentum)."""
    if weight_decay:
        grad = grad + weight_decay * param
    if momentum:
        if momentum_buffer is None:
            momentum_buffer = grad.copy()
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1 - dampening) * grad
        grad = grad + momentum * momentum_buffer if nesterov else momentum_buffer
    else:
        momentum_buffer = None
    param -= lr * grad
    return momentum_buffer
