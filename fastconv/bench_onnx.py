"""A small CNN as an ONNX model, run by three evaluators side by side (``fastconv bench --onnx``).

The evaluators: ONNX's plain reference evaluator (``onnx.reference.ReferenceEvaluator``),
``fastconv.onnx.ReferenceEvaluator`` (the same with its convolution, pooling and relu nodes on
fastconv) and onnxruntime (when installed), all on the same number of threads (NumPy's BLAS
limited to it through threadpoolctl for the two reference evaluators, onnxruntime's intra-op
pool set to it). Each round runs the three in turn on the same batch, each for about 50 ms
(the plain one once), so a noisy machine slows all alike; every figure is a median over the
rounds, the ratios medians of the per-round ratios. The model, ``cnn_model``, is also what
tests/test_onnx.py checks against onnxruntime.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import fastconv
import fastconv.onnx
from fastconv.bench_models import PAUSE

# what cnn_model's graph holds, for the table's title
CNN_LAYERS = ("conv 3x3 (16) + relu, max pool 2x2, conv 3x3 (32) + relu, average pool 2x2, "
              "conv 1x1 (32) + relu, global average pool, flatten, gemm (10)")


def cnn_model(image=(3, 32, 32), classes: int = 10, seed: int = 0,
              opset: int = 17) -> onnx.ModelProto:
    """A small CNN on float32 images X (N, *image) giving logits Y (N, classes), with random
    weights: the layers of CNN_LAYERS, in opset `opset` (IR version 8, which onnxruntime reads).
    """
    rng = np.random.default_rng(seed)
    c = image[0]
    weights = {}

    def param(name, shape, fan_in):
        weights[name] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        return name

    nodes = [
        helper.make_node("Conv", ["X", param("W1", (16, c, 3, 3), c * 9),
                                  param("B1", (16,), 9)], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", param("W2", (32, 16, 3, 3), 16 * 9),
                                  param("B2", (32,), 9)], ["c2"], auto_pad="SAME_UPPER"),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("AveragePool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p2", param("W3", (32, 32, 1, 1), 32),
                                  param("B3", (32,), 1)], ["c3"]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", param("W4", (classes, 32), 32), param("B4", (classes,), 1)],
                         ["Y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "fastconv_cnn",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", *image])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(a, name) for name, a in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def onnxruntime_session(model: onnx.ModelProto, threads: int):
    """An onnxruntime session of `model` on `threads` threads, or None without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])


def _seconds_per_call(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def run(batch: int = 8, repeat: int = 5, threads: int | None = None, seed: int = 0,
        round_seconds: float = 0.05, pause: float = PAUSE) -> dict:
    """Time the three evaluators on cnn_model at `batch`; returns {name: [seconds per call, one
    per round]} and, under "max_error", each one's largest difference from onnxruntime's logits
    (from the plain evaluator's without onnxruntime). In each round an evaluator runs as many
    calls as took about `round_seconds` at warm-up (at least one): a single call of a fast one
    is a few milliseconds, which one time slice of another process on a shared machine
    doubles. Each evaluator's turn begins with a pause of `pause` seconds, as in
    fastconv.bench_models.run: another library's idle threads spin for tens of milliseconds
    after its call (onnxruntime's, BLAS's), and a turn run inside that window shares the cores
    with them."""
    from threadpoolctl import threadpool_limits

    n = threads or fastconv.get_num_threads()
    model = cnn_model(seed=seed)
    x = np.random.default_rng(seed + 1).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    runners = {"plain": onnx.reference.ReferenceEvaluator(model),
               "fastconv": fastconv.onnx.ReferenceEvaluator(model)}
    session = onnxruntime_session(model, n)
    if session is not None:
        runners["onnxruntime"] = session
    calls = {name: (lambda sess=sess: sess.run(None, {"X": x})) for name, sess in runners.items()}
    times = {name: [] for name in runners}
    with threadpool_limits(n), fastconv.num_threads(n):
        outputs = {name: call()[0] for name, call in calls.items()}  # warm-up: thread pools
        per_round = {name: max(1, int(round_seconds / _seconds_per_call(call, 1)))
                     for name, call in calls.items()}
        for _ in range(repeat):
            for name, call in calls.items():
                time.sleep(pause)
                times[name].append(_seconds_per_call(call, per_round[name]))
    against = outputs.get("onnxruntime", outputs["plain"])
    times["max_error"] = {name: float(np.abs(y - against).max()) for name, y in outputs.items()}
    return times


def format_table(times: dict, batch: int, threads: int) -> str:
    """The side-by-side table of `run`'s times: medians, and each evaluator's speed-up over
    the plain one and over onnxruntime (medians of the per-round ratios)."""
    names = [name for name in ("plain", "fastconv", "onnxruntime") if name in times]
    labels = {"plain": "onnx.reference.ReferenceEvaluator",
              "fastconv": "fastconv.onnx.ReferenceEvaluator",
              "onnxruntime": "onnxruntime"}
    repeat = len(times["plain"])

    def ratio(slow, fast):
        return statistics.median(a / b for a, b in zip(times[slow], times[fast]))

    lines = [f"ONNX CNN ({CNN_LAYERS}), float32, batch {batch}, {threads} thread(s), median of "
             f"{repeat} interleaved rounds (time per call)",
             f"{'evaluator':<36}{'time':>12}{'vs plain':>11}{'vs onnxruntime':>16}"
             f"{'max |error|':>13}"]
    for name in names:
        versus_ort = f"{ratio('onnxruntime', name):.3g}x" if "onnxruntime" in times else "-"
        lines.append(f"{labels[name]:<36}{statistics.median(times[name]) * 1e3:10.2f}ms"
                     f"{ratio('plain', name):10.4g}x{versus_ort:>16}"
                     f"{times['max_error'][name]:13.1e}")
    against = "onnxruntime's" if "onnxruntime" in times else "the plain evaluator's"
    lines.append(f"(speed-ups > 1: faster than that evaluator; errors: largest difference from "
                 f"{against} logits)")
    return "\n".join(lines)


def main(threads: int | None = None, repeat: int = 5, batches=(1, 32), out=None) -> dict:
    """Run and print the table for each batch size (the ``fastconv bench --onnx`` command)."""
    out = out or sys.stdout
    n = threads or fastconv.get_num_threads()
    results = {}
    for batch in batches:
        results[batch] = run(batch, repeat, n)
        print(format_table(results[batch], batch, n), file=out)
    return results


if __name__ == "__main__":
    main()
