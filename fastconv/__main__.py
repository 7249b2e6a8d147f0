"""The `fastconv` command: train a ConvNet, run the experiments, time the kernels.

``fastconv train`` trains a ConvNet on Fashion-MNIST (``fastconv.train``); ``fastconv experiment
params|relu-vs-tanh`` reproduces two claims about ConvNets as reports in docs/
(``fastconv.experiments``); ``fastconv bench`` times the kernels against PyTorch on real layer
shapes (``fastconv.bench``), with ``--model`` whole networks (``fastconv.bench_models``) and
with ``--onnx`` ONNX's reference evaluator on fastconv (``fastconv.bench_onnx``);
``fastconv demo`` runs every op once on a real layer shape, checks it against the NumPy
reference and prints timings; ``fastconv config`` prints the build."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import fastconv
import fastconv.functional as F
from fastconv import experiments, train
from fastconv import reference as ref
from fastconv.train import UsageError, check_outputs, positive_int


def _best_time(fn, repeat: int) -> float:
    fn()  # warm up (page faults, thread start-up)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def demo(batch: int, repeat: int, dtype) -> int:
    """Run conv, pooling and relu forward and backward on a CIFAR-sized layer."""
    rng = np.random.default_rng(0)
    n, c, h, w, k = batch, 32, 32, 32, 64
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = (rng.standard_normal((k, c, 3, 3)) / np.sqrt(c * 9)).astype(dtype)
    bias = rng.standard_normal(k).astype(dtype)
    y = F.conv2d(x, weight, bias, padding=1)
    gy = rng.standard_normal(y.shape).astype(dtype)
    p = F.relu(y)
    gp = rng.standard_normal((n, k, h // 2, w // 2)).astype(dtype)
    conv_flop = 2.0 * n * k * h * w * c * 9
    pool_bytes = (p.nbytes + p.nbytes // 4)

    ops = [
        ("conv2d 3x3 pad 1", lambda: F.conv2d(x, weight, bias, padding=1), conv_flop, "GFLOP/s"),
        ("conv2d_backward", lambda: F.conv2d_backward(gy, x, weight, padding=1), 2 * conv_flop,
         "GFLOP/s"),
        ("relu", lambda: F.relu(y), 2 * y.nbytes, "GB/s"),
        ("max_pool2d 2x2", lambda: F.max_pool2d(p, 2), pool_bytes, "GB/s"),
        ("max_pool2d_backward", lambda: F.max_pool2d_backward(gp, p, 2), pool_bytes, "GB/s"),
        ("avg_pool2d 2x2", lambda: F.avg_pool2d(p, 2), pool_bytes, "GB/s"),
        ("lp_pool2d L2 2x2", lambda: F.lp_pool2d(p, 2, 2), pool_bytes, "GB/s"),
    ]
    print(f"fastconv {fastconv.__version__}: {fastconv.selected_isa()} kernels, "
          f"{fastconv.get_num_threads()} thread(s), {np.dtype(dtype).name}")
    print(f"input {x.shape}, weight {weight.shape}; best of {repeat}\n")
    print(f"{'op':<22}{'time':>10}{'throughput':>18}")
    for name, fn, work, unit in ops:
        t = _best_time(fn, repeat)
        print(f"{name:<22}{t * 1e3:>8.2f} ms{work / t / 1e9:>11.1f} {unit}")

    # correctness on a slice small enough for the NumPy reference
    xs, gs = x[:2], gy[:2]
    err_fwd = np.abs(F.conv2d(xs, weight, bias, padding=1)
                     - ref.conv2d(xs, weight, bias, (1, 1), (1, 1, 1, 1), (1, 1), 1)).max()
    mine = F.conv2d_backward(gs, xs, weight, padding=1)
    theirs = ref.conv2d_backward(gs, xs, weight, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    err_bwd = max(np.abs(a - b).max() / max(1.0, np.abs(b).max()) for a, b in zip(mine, theirs))
    ref_pool = ref.max_pool2d(p[:2], (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False)[0]
    same_pool = np.array_equal(F.max_pool2d(p[:2], 2), ref_pool)
    print(f"\nagainst the NumPy reference: conv2d max error {err_fwd:.2e}, backward {err_bwd:.2e} "
          f"(relative), max_pool2d {'identical' if same_pool else 'DIFFERENT'}")
    return 0 if same_pool else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastconv", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    p_demo = sub.add_parser("demo", help="run every op on a real layer shape with timings")
    p_demo.add_argument("--batch", type=positive_int, default=32, help="batch size (default 32)")
    p_demo.add_argument("--repeat", type=positive_int, default=5,
                        help="timed repetitions (default 5)")
    p_demo.add_argument("--threads", type=positive_int, default=None,
                        help="threads (default: OpenMP's)")
    p_demo.add_argument("--float64", action="store_true", help="run in float64")
    sub.add_parser("config", help="print version, OpenMP, threads and SIMD paths")
    p_train = sub.add_parser("train", help="train a ConvNet on Fashion-MNIST",
                             description=train.__doc__.split("\n\n")[1])
    train.add_arguments(p_train)
    p_exp = sub.add_parser("experiment", help="reproduce a claim about ConvNets as a report "
                                              "in docs/")
    experiments.add_arguments(p_exp)
    p_bench = sub.add_parser("bench", help="time fastconv against PyTorch side by side on real "
                                           "layer shapes")
    p_bench.add_argument("--threads", type=positive_int, default=None,
                         help="threads for both (default: fastconv's default)")
    p_bench.add_argument("--repeat", type=positive_int, default=7,
                         help="interleaved pairs (default 7)")
    p_bench.add_argument("--only", choices=["all", "conv", "conv_transpose", "pool"],
                         default="all")
    p_bench.add_argument("--float64", action="store_true", help="run in float64")
    p_bench.add_argument("--layout", choices=["nchw", "nhwc", "both"], default="nchw",
                         help="nhwc: the conv and pool layers channels last, against PyTorch's "
                              "channels_last and fastconv's NCHW in the same rounds")
    p_bench.add_argument("--plot", metavar="PNG", type=Path, default=None,
                         help="write a bar chart of the speed-ups (needs matplotlib)")
    p_bench.add_argument("--model", action="store_true",
                         help="whole networks instead of layers: training steps and inference "
                              "of the train ConvNet and a CIFAR ResNet-14, against PyTorch and "
                              "onnxruntime (fastconv.bench_models)")
    p_bench.add_argument("--layers", action="store_true",
                         help="with --model: the time of every layer, not only of each kind")
    p_bench.add_argument("--onnx", action="store_true",
                         help="instead: a small CNN in ONNX's reference evaluator, plain and on "
                              "fastconv, beside onnxruntime (fastconv.bench_onnx; needs onnx)")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    commands = {"train": p_train, "experiment": p_exp, "bench": p_bench}
    try:
        return _run(args, argv)
    except UsageError as exc:  # refused before any work: a usage error, exit status 2
        commands[args.command].error(str(exc))


def _run(args, argv) -> int:
    if args.command == "config":
        fastconv.show_config()
        return 0
    if args.command == "train":
        return train.run(args)
    if args.command == "experiment":
        args.argv = sys.argv[1:] if argv is None else list(argv)
        return experiments.run(args)
    if args.command == "bench":
        if args.onnx:
            from fastconv import bench_onnx

            bench_onnx.main(threads=args.threads, repeat=args.repeat)
            return 0
        from fastconv import bench

        if args.plot is not None:  # checked before the minutes of timing, not after
            check_outputs("--plot", (args.plot,))
        dtype = np.float64 if args.float64 else np.float32
        if args.model:
            from fastconv import bench_models

            bench_models.main(threads=args.threads, repeat=args.repeat, plot_path=args.plot,
                              dtype=dtype, layers=args.layers)
            return 0
        bench.main(threads=args.threads, repeat=args.repeat, only=args.only,
                   plot_path=args.plot, dtype=dtype, layout=args.layout)
        return 0
    if args.command == "demo":
        if args.threads is not None:
            fastconv.set_num_threads(args.threads)
        return demo(args.batch, args.repeat, np.float64 if args.float64 else np.float32)
    return 0


if __name__ == "__main__":
    sys.exit(main())
