"""numpy-ml's Conv2D and Pool2D layers on their own code and on fastconv, interleaved.

    python bench/numpy_ml_speed.py [--repeats 7] [--threads 1] [--float32]

Each case is one numpy-ml layer object; every repeat times its forward pass and its backward
pass once with numpy-ml's own methods and once with fastconv.compat.numpy_ml installed, in
alternating order (so a noisy machine slows both alike), on the same weights and data. It prints
the median time of each pass, the median of the per-repeat speed-ups, and the largest difference
between the two (relative to the largest numpy-ml value) over the output and the input, weight
and bias gradients. fastconv's kernels and NumPy's BLAS (numpy-ml's im2col product) get the same
number of threads (default 1: on a shared machine, more threads than free cores make spinning
barriers wait for descheduled threads). Max pooling cases have no padding, where numpy-ml's
backward pass is right.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

import fastconv
from fastconv.compat import numpy_ml as fc

# name: (layer class, its arguments, X shape (n_ex, rows, cols, in_ch))
CASES = {
    "conv 3x3 same, 1->16 (MNIST)": ("Conv2D", dict(out_ch=16, kernel_shape=(3, 3), pad="same",
                                                    act_fn="ReLU"), (32, 28, 28, 1)),
    "conv 5x5 pad 2, 3->32 (CIFAR)": ("Conv2D", dict(out_ch=32, kernel_shape=(5, 5), pad=2),
                                      (16, 32, 32, 3)),
    "conv 3x3 s2 same, 32->64": ("Conv2D", dict(out_ch=64, kernel_shape=(3, 3), pad="same",
                                                stride=2), (16, 16, 16, 32)),
    "conv 3x3 dilation 1, 16->16": ("Conv2D", dict(out_ch=16, kernel_shape=(3, 3), pad=2,
                                                   dilation=1), (16, 16, 16, 16)),
    "max pool 2x2 s2": ("Pool2D", dict(kernel_shape=(2, 2), stride=2, mode="max"),
                        (8, 28, 28, 16)),
    "max pool 3x3 s2 (overlapping)": ("Pool2D", dict(kernel_shape=(3, 3), stride=2, mode="max"),
                                      (16, 15, 15, 32)),
    "avg pool 3x3 s1 pad 1": ("Pool2D", dict(kernel_shape=(3, 3), stride=1, pad=1,
                                             mode="average"), (8, 14, 14, 16)),
}


def one_pass(layer, X, dY):
    """Forward and backward; their times and (Y, dX, gradients...)."""
    start = time.perf_counter()
    Y = layer.forward(X)
    middle = time.perf_counter()
    dX = layer.backward(dY)
    end = time.perf_counter()
    grads = [layer.gradients[k].copy() for k in sorted(layer.gradients)]
    layer.flush_gradients()  # the caches and the accumulated gradients
    return middle - start, end - middle, [Y, dX, *grads]


def run_case(name, dtype, repeats, layers):
    class_name, kwargs, x_shape = CASES[name]
    rng = np.random.default_rng(0)
    np.random.seed(0)  # numpy-ml's weight initialisation
    layer = getattr(layers, class_name)(**kwargs)
    X = rng.standard_normal(x_shape).astype(dtype)
    dY = rng.standard_normal(layer.forward(X, retain_derived=False).shape).astype(dtype)
    times = {impl: ([], []) for impl in ("numpy-ml", "fastconv")}
    results = {}
    for rep in range(repeats + 1):  # the first round warms up and is not counted
        for impl in (("numpy-ml", "fastconv") if rep % 2 else ("fastconv", "numpy-ml")):
            if impl == "fastconv":
                fc.install()
            try:
                forward, backward, results[impl] = one_pass(layer, X, dY)
            finally:
                fc.uninstall()
            if rep:
                times[impl][0].append(forward)
                times[impl][1].append(backward)
    error = max(float(np.max(np.abs(a - e)) / np.max(np.abs(e)))
                for a, e in zip(results["fastconv"], results["numpy-ml"]))
    medians = {impl: [statistics.median(t) for t in pair] for impl, pair in times.items()}
    speedups = [statistics.median(n / f for n, f in zip(times["numpy-ml"][i], times["fastconv"][i]))
                for i in (0, 1)]
    return medians, speedups, error


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for fastconv's kernels and for NumPy's BLAS alike")
    parser.add_argument("--float32", action="store_true",
                        help="float32 data (numpy-ml's weights stay float64)")
    args = parser.parse_args(argv)
    dtype = np.float32 if args.float32 else np.float64
    with warnings.catch_warnings():  # numpy_ml.rl_models warns that gym is missing
        warnings.simplefilter("ignore")
        layers = fc.import_numpy_ml().neural_nets.layers
    print(f"{np.dtype(dtype).name} data, median of {args.repeats} interleaved repeats; "
          f"{args.threads} thread(s) for fastconv ({fastconv.selected_isa()}) and BLAS")
    print(f"{'case':32} {'numpy-ml fwd':>12} {'bwd':>10} {'fastconv fwd':>12} {'bwd':>10} "
          f"{'x fwd':>8} {'x bwd':>8}  max rel. diff")
    with fastconv.num_threads(args.threads), threadpool_limits(args.threads, user_api="blas"):
        for name in CASES:
            medians, speedups, error = run_case(name, dtype, args.repeats, layers)
            print(f"{name:32} " + " ".join(f"{t * 1e3:10.2f}ms" for impl in medians
                                           for t in medians[impl]) +
                  f" {speedups[0]:7.1f}x {speedups[1]:7.1f}x  {error:.1e}")


if __name__ == "__main__":
    main()
