"""fastconv.compat.cs231n against two NumPy implementations of the same layers, interleaved.

    python bench/cs231n_speed.py [--repeats 15] [--threads 1] [--float32]

Each case times a forward pass and the backward pass from its cache, for three implementations
called in turn within each repeat (so a noisy machine slows all alike): fastconv.compat.cs231n,
an im2col one written here (a strided window view copied into a matrix for one BLAS product,
col2im by one strided add per kernel offset), and the naive layers of tests/cs231n_naive.py
(one BLAS product per output position). It prints the median time of each, the median of the
per-repeat speed-ups, and the largest difference from the naive layers (relative to the largest
naive value) of every output and gradient. fastconv's kernels and NumPy's BLAS get the same
number of threads (default 1: on a shared machine, more threads than free cores make OpenMP's
spinning barriers, and BLAS's, wait for descheduled threads).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import cs231n_naive as naive  # noqa: E402

import fastconv  # noqa: E402
from fastconv.compat import cs231n as fc  # noqa: E402

# ---- an im2col implementation --------------------------------------------------------------------

def _windows(xp, height, width, stride):
    """(N, C, OH, OW, height, width) view of the windows of xp."""
    return sliding_window_view(xp, (height, width), axis=(2, 3))[:, :, ::stride, ::stride]


def conv_forward_im2col(x, w, b, conv_param):
    stride, pad = conv_param["stride"], conv_param["pad"]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = _windows(xp, w.shape[2], w.shape[3], stride)
    out = np.tensordot(cols, w, axes=([1, 4, 5], [1, 2, 3]))  # (N, OH, OW, F), via one GEMM
    return out.transpose(0, 3, 1, 2) + b[:, None, None], (x, w, b, conv_param)


def conv_backward_im2col(dout, cache):
    x, w, _, conv_param = cache
    stride, pad = conv_param["stride"], conv_param["pad"]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    hh, ww = w.shape[2:]
    out_h, out_w = dout.shape[2:]
    dw = np.tensordot(dout, _windows(xp, hh, ww, stride), axes=([0, 2, 3], [0, 2, 3]))
    dcols = np.tensordot(w, dout, axes=([0], [1]))  # (C, HH, WW, N, OH, OW)
    dxp = np.zeros(xp.shape, dcols.dtype)
    for i in range(hh):
        for j in range(ww):
            dxp[:, :, i:i + stride * out_h:stride, j:j + stride * out_w:stride] += \
                dcols[:, i, j].transpose(1, 0, 2, 3)
    height, width = x.shape[2:]
    return dxp[:, :, pad:pad + height, pad:pad + width], dw, dout.sum(axis=(0, 2, 3))


def _pool_windows(x, pool_param):
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    windows = _windows(x, ph, pw, stride)
    return windows.reshape(windows.shape[:4] + (ph * pw,)), pw, stride


def max_pool_forward_im2col(x, pool_param):
    cols, _, _ = _pool_windows(x, pool_param)
    return cols.max(axis=4), (x, pool_param)


def max_pool_backward_im2col(dout, cache):
    x, pool_param = cache
    cols, pw, stride = _pool_windows(x, pool_param)
    first = cols.argmax(axis=4)
    out_h, out_w = dout.shape[2:]
    dx = np.zeros(x.shape, np.result_type(dout, x))
    for k in range(cols.shape[4]):
        i, j = divmod(k, pw)
        dx[:, :, i:i + stride * out_h:stride, j:j + stride * out_w:stride] += \
            np.where(first == k, dout, 0)
    return dx


def conv_relu_pool_forward_im2col(x, w, b, conv_param, pool_param):
    a, conv_cache = conv_forward_im2col(x, w, b, conv_param)
    s, relu_cache = naive.relu_forward(a)
    out, pool_cache = max_pool_forward_im2col(s, pool_param)
    return out, (conv_cache, relu_cache, pool_cache)


def conv_relu_pool_backward_im2col(dout, cache):
    conv_cache, relu_cache, pool_cache = cache
    ds = max_pool_backward_im2col(dout, pool_cache)
    return conv_backward_im2col(naive.relu_backward(ds, relu_cache), conv_cache)


# each implementation's (forward, backward) per layer
IMPLEMENTATIONS = {
    "fastconv": {"conv": (fc.conv_forward_fast, fc.conv_backward_fast),
                 "max_pool": (fc.max_pool_forward_fast, fc.max_pool_backward_fast),
                 "conv_relu_pool": (fc.conv_relu_pool_forward, fc.conv_relu_pool_backward)},
    "im2col": {"conv": (conv_forward_im2col, conv_backward_im2col),
               "max_pool": (max_pool_forward_im2col, max_pool_backward_im2col),
               "conv_relu_pool": (conv_relu_pool_forward_im2col, conv_relu_pool_backward_im2col)},
    "naive": {"conv": (naive.conv_forward_naive, naive.conv_backward_naive),
              "max_pool": (naive.max_pool_forward_naive, naive.max_pool_backward_naive),
              "conv_relu_pool": (naive.conv_relu_pool_forward, naive.conv_relu_pool_backward)},
}


# ---- cases ---------------------------------------------------------------------------------------

def _pool(size, stride):
    return {"pool_height": size, "pool_width": size, "stride": stride}


# name: (layer, x shape, w shape or None, conv_param or None, pool_param or None)
CASES = {
    "conv 3x3 s2 (notebook timing)": ("conv", (100, 3, 31, 31), (25, 3, 3, 3),
                                      {"stride": 2, "pad": 1}, None),
    "conv 7x7 (ThreeLayerConvNet)": ("conv", (50, 3, 32, 32), (32, 3, 7, 7),
                                     {"stride": 1, "pad": 3}, None),
    "conv 3x3 64->64": ("conv", (50, 64, 16, 16), (64, 64, 3, 3), {"stride": 1, "pad": 1}, None),
    "pool 2x2 s2 (notebook timing)": ("max_pool", (100, 3, 32, 32), None, None, _pool(2, 2)),
    "pool 2x2 s2 (ThreeLayerConvNet)": ("max_pool", (50, 32, 32, 32), None, None, _pool(2, 2)),
    "pool 3x3 s2 (overlapping)": ("max_pool", (50, 32, 32, 32), None, None, _pool(3, 2)),
    "conv-relu-pool (ThreeLayerConvNet)": ("conv_relu_pool", (50, 3, 32, 32), (32, 3, 7, 7),
                                           {"stride": 1, "pad": 3}, _pool(2, 2)),
}


def run_case(name, dtype, repeats, rng):
    layer, x_shape, w_shape, conv_param, pool_param = CASES[name]
    args = [rng.standard_normal(x_shape).astype(dtype)]
    if w_shape is not None:
        fan_in = np.prod(w_shape[1:])
        args += [(rng.standard_normal(w_shape) / np.sqrt(fan_in)).astype(dtype),
                 rng.standard_normal(w_shape[0]).astype(dtype), conv_param]
    if pool_param is not None:
        args.append(pool_param)

    results, times = {}, {impl: [] for impl in IMPLEMENTATIONS}
    dout = None
    for rep in range(repeats + 1):  # the first round warms up and is not counted
        order = list(IMPLEMENTATIONS)
        order = order[rep % len(order):] + order[:rep % len(order)]
        for impl in order:
            forward, backward = IMPLEMENTATIONS[impl][layer]
            start = time.perf_counter()
            out, cache = forward(*args)
            if dout is None:
                dout = rng.standard_normal(out.shape).astype(dtype)
            grads = backward(dout, cache)
            elapsed = time.perf_counter() - start
            if rep:
                times[impl].append(elapsed)
            results[impl] = (out, *(grads if isinstance(grads, tuple) else (grads,)))

    errors = {}
    for impl in ("fastconv", "im2col"):
        errors[impl] = max(float(np.max(np.abs(a - e)) / np.max(np.abs(e)))
                           for a, e in zip(results[impl], results["naive"]))
    speedups = {impl: statistics.median(n / f for n, f in zip(times[impl], times["fastconv"]))
                for impl in ("im2col", "naive")}
    return {impl: statistics.median(t) for impl, t in times.items()}, speedups, errors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for fastconv's kernels and for NumPy's BLAS alike")
    parser.add_argument("--float32", action="store_true", help="float32 instead of float64")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dtype = np.float32 if args.float32 else np.float64
    rng = np.random.default_rng(args.seed)
    print(f"{np.dtype(dtype).name}, forward + backward, median of {args.repeats} interleaved "
          f"repeats; {args.threads} thread(s) for fastconv ({fastconv.selected_isa()}) and BLAS")
    print(f"{'case':36} {'fastconv':>10} {'im2col':>10} {'naive':>10} {'x im2col':>9} "
          f"{'x naive':>8}  max rel. diff from naive (fastconv, im2col)")
    with fastconv.num_threads(args.threads), threadpool_limits(args.threads, user_api="blas"):
        for name in CASES:
            medians, speedups, errors = run_case(name, dtype, args.repeats, rng)
            print(f"{name:36} " +
                  " ".join(f"{medians[i] * 1e3:8.2f}ms" for i in IMPLEMENTATIONS) +
                  f" {speedups['im2col']:8.1f}x {speedups['naive']:7.1f}x  "
                  f"{errors['fastconv']:.1e}, {errors['im2col']:.1e}")


if __name__ == "__main__":
    main()
