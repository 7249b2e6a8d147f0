"""fastconv.onnx: ONNX's own node tests for its operators, a case table of single-node models
against onnxruntime and the plain reference evaluator, the fallbacks (what the kernels don't
cover runs on the plain implementation and gives its result), bad attributes, and a small CNN
against onnxruntime. Skipped without the onnx package; the onnxruntime comparisons without
onnxruntime."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator as PlainEvaluator  # noqa: E402

import fastconv.onnx as fo  # noqa: E402

OPS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool",
       "GlobalMaxPool", "Relu")
OPSET = 19


def _ort():
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def _counts_of(run):
    """The fastconv.onnx counts that `run()` adds, as {(op, route): calls}."""
    before = fo.counts.copy()
    result = run()
    after = fo.counts.copy()
    after.subtract(before)
    return result, {k: v for k, v in after.items() if v}


def _feeds(model, arrays):
    return {i.name: a for i, a in zip(model.graph.input, arrays)}


# ---- ONNX's node tests ---------------------------------------------------------------------------

# The modules of onnx.backend.test.case.node whose cases run these operators
# (causal_conv_with_state: 1-D Conv inside a function). Importing them adds their cases to the
# list collect_testcases() returns; collect_testcases() itself imports every operator's module
# (about 1900 cases, twice the time).
NODE_TEST_MODULES = ("conv", "convtranspose", "maxpool", "averagepool", "lppool",
                     "globalaveragepool", "globalmaxpool", "relu", "causal_conv_with_state")


def _node_cases():
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in NODE_TEST_MODULES:
            importlib.import_module(f"{node.__name__}.{name}")
    return [c for c in node._NodeTestCases
            if {n.op_type for n in c.model.graph.node} & set(OPS)]


NODE_CASES = _node_cases()


def _expected_route(name: str) -> str:
    """Where a node test's operators must run: 'plain' for what fastconv's float kernels don't
    cover (3-D, uint8, float16, dilated average and Lp pooling), 'fastconv' for the rest."""
    plain = ("_3d", "uint8", "fp16", "averagepool_2d_dilations", "lppool_2d_dilations")
    return "plain" if any(p in name for p in plain) else "fastconv"


@pytest.mark.parametrize("case", NODE_CASES, ids=[c.name for c in NODE_CASES])
def test_onnx_node_test_cases(case):
    """Each case's outputs within its own tolerances; its conv/pool/relu nodes all on fastconv,
    or all on the plain implementation where fastconv's kernels don't apply."""
    for inputs, expected in case.data_sets:
        feeds = _feeds(case.model, inputs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got, counts = _counts_of(
                lambda feeds=feeds: fo.ReferenceEvaluator(case.model).run(None, feeds))
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == e.shape and g.dtype == e.dtype, (g.shape, e.shape, g.dtype)
            np.testing.assert_allclose(g, e, rtol=case.rtol, atol=case.atol)
        routes = {route for _, route in counts}
        assert routes == {_expected_route(case.name)}, counts


def test_onnx_node_test_counts():
    """Most node tests run on fastconv (82 cases in onnx 1.23, 65 of them on fastconv; each
    case's test above checks the route it takes)."""
    routes = [_expected_route(c.name) for c in NODE_CASES]
    assert len(NODE_CASES) >= 80 and routes.count("fastconv") >= 65
    # every operator has node tests that run on fastconv
    assert {n.op_type for c in NODE_CASES if _expected_route(c.name) == "fastconv"
            for n in c.model.graph.node} >= set(OPS)


# ---- single-node models: onnxruntime and the plain evaluator ------------------------------------

def _model(op, shapes, dtype, attrs, indices=False):
    """A one-node model of `op` on inputs X (, W, B) of `shapes`, outputs Y (and Indices)."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    names = ["X", "W", "B"][:len(shapes)]
    outputs = [helper.make_tensor_value_info("Y", elem, None)]
    if indices:
        outputs.append(helper.make_tensor_value_info("I", TensorProto.INT64, None))
    node = helper.make_node(op, names, [o.name for o in outputs], **attrs)
    graph = helper.make_graph([node], op.lower(),
                              [helper.make_tensor_value_info(n, elem, s)
                               for n, s in zip(names, shapes)], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    return model


# id: (op, input shapes, attributes, indices output, checked against). Where the plain evaluator
# is wrong (ConvTranspose with several channels per group, SAME_LOWER max pooling at stride 2,
# AveragePool windows overhanging by 2) fastconv is checked against onnxruntime alone; where
# onnxruntime refuses the attributes (dilation with SAME), against the plain evaluator alone.
BOTH, ORT, PLAIN = {"onnxruntime", "plain"}, {"onnxruntime"}, {"plain"}
CASES = {
    "conv-pads-asym-s21": ("Conv", [(2, 3, 7, 6), (4, 3, 3, 3), (4,)],
                           dict(pads=[0, 1, 2, 1], strides=[2, 1]), False, BOTH),
    "conv-dilated-group": ("Conv", [(1, 4, 9, 9), (6, 2, 3, 2), (6,)],
                           dict(dilations=[2, 3], group=2), False, BOTH),
    "conv-depthwise-same-upper-s2": ("Conv", [(2, 4, 8, 7), (4, 1, 3, 3)],
                                     dict(group=4, auto_pad="SAME_UPPER", strides=[2, 2]),
                                     False, BOTH),
    "conv-same-lower-dilated": ("Conv", [(1, 2, 6, 5), (3, 2, 2, 4)],
                                dict(auto_pad="SAME_LOWER", dilations=[1, 2]), False, PLAIN),
    "conv-valid-kernel-shape": ("Conv", [(1, 3, 5, 6), (2, 3, 3, 1)],
                                dict(auto_pad="VALID", kernel_shape=[3, 1]), False, BOTH),
    "convt-s2-output-padding": ("ConvTranspose", [(2, 4, 5, 5), (4, 3, 3, 3), (3,)],
                                dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
                                False, BOTH),
    "convt-pads-asym-dilated": ("ConvTranspose", [(1, 2, 4, 5), (2, 2, 3, 2)],
                                dict(dilations=[2, 1], pads=[0, 1, 2, 0], strides=[1, 2]),
                                False, BOTH),
    "convt-group-2x3": ("ConvTranspose", [(1, 4, 3, 3), (4, 3, 2, 2), (6,)],
                        dict(group=2, strides=[2, 2]), False, ORT),
    "convt-output-shape-past-end": ("ConvTranspose", [(1, 2, 3, 3), (2, 1, 3, 3), (1,)],
                                    dict(strides=[3, 2], output_shape=[10, 8]), False, BOTH),
    "convt-output-shape-cropped": ("ConvTranspose", [(1, 2, 4, 4), (2, 2, 3, 3)],
                                   dict(strides=[2, 2], output_shape=[7, 8]), False, ORT),
    "convt-same-upper": ("ConvTranspose", [(1, 1, 3, 4), (1, 2, 3, 3), (2,)],
                         dict(strides=[2, 2], auto_pad="SAME_UPPER"), False, BOTH),
    "convt-same-lower": ("ConvTranspose", [(1, 1, 3, 4), (1, 2, 3, 3)],
                         dict(strides=[2, 2], auto_pad="SAME_LOWER"), False, BOTH),
    "max-s2-indices": ("MaxPool", [(2, 3, 6, 7)], dict(kernel_shape=[2, 2], strides=[2, 2]),
                       True, BOTH),
    "max-ceil-pads-asym": ("MaxPool", [(1, 2, 7, 8)],
                           dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1],
                                ceil_mode=1), True, BOTH),
    "max-dilated": ("MaxPool", [(2, 2, 9, 9)],
                    dict(kernel_shape=[2, 3], dilations=[2, 2], strides=[1, 2]), True, BOTH),
    "max-storage-order": ("MaxPool", [(2, 2, 5, 6)],
                          dict(kernel_shape=[3, 3], strides=[2, 2], storage_order=1), True, BOTH),
    "max-same-upper": ("MaxPool", [(1, 2, 5, 6)], dict(kernel_shape=[2, 2], auto_pad="SAME_UPPER"),
                       False, BOTH),
    "max-same-lower-s2": ("MaxPool", [(1, 2, 7, 6)],
                          dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_LOWER"),
                          False, ORT),
    "avg-ceil-include-pad": ("AveragePool", [(1, 2, 7, 7)],
                             dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                  ceil_mode=1, count_include_pad=1), False, BOTH),
    "avg-ceil-exclude-pad": ("AveragePool", [(1, 2, 7, 7)],
                             dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                  ceil_mode=1), False, BOTH),
    "avg-pads-asym": ("AveragePool", [(2, 3, 6, 5)],
                      dict(kernel_shape=[2, 3], pads=[0, 1, 1, 0], strides=[1, 2]), False, BOTH),
    "avg-same-upper-s2": ("AveragePool", [(1, 2, 7, 6)],
                          dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER",
                               count_include_pad=1), False, BOTH),
    "avg-ceil-overhang-2": ("AveragePool", [(1, 1, 5, 5)],
                            dict(kernel_shape=[4, 4], strides=[3, 3], ceil_mode=1), False, ORT),
    "lp-p2-s2": ("LpPool", [(1, 2, 6, 6)], dict(kernel_shape=[2, 2], strides=[2, 2]), False, BOTH),
    "lp-p1-pads": ("LpPool", [(1, 2, 6, 5)],
                   dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], p=1), False,
                   BOTH),
    "lp-p3-asym": ("LpPool", [(2, 2, 6, 7)],
                   dict(kernel_shape=[2, 3], strides=[2, 1], pads=[0, 1, 1, 0], p=3), False,
                   BOTH),
    "conv-1d-s2-dilated": ("Conv", [(2, 4, 11), (6, 2, 3), (6,)],
                           dict(pads=[2, 1], strides=[2], dilations=[2], group=2), False, BOTH),
    "conv-1d-same-upper": ("Conv", [(1, 2, 9), (3, 2, 4)], dict(auto_pad="SAME_UPPER",
                                                                strides=[2]), False, BOTH),
    "convt-1d-s2": ("ConvTranspose", [(2, 3, 5), (3, 2, 3), (2,)],
                    dict(strides=[2], pads=[1, 0], output_padding=[1]), False, BOTH),
    "max-1d-ceil-indices": ("MaxPool", [(2, 3, 10)],
                            dict(kernel_shape=[3], strides=[2], pads=[1, 0], ceil_mode=1), True,
                            BOTH),
    "avg-1d-exclude-pad": ("AveragePool", [(2, 2, 9)],
                           dict(kernel_shape=[3], strides=[2], pads=[1, 1]), False, BOTH),
    "lp-1d": ("LpPool", [(1, 2, 8)], dict(kernel_shape=[2], strides=[2], p=3), False, BOTH),
    "global-avg-1d": ("GlobalAveragePool", [(2, 3, 6)], {}, False, BOTH),
    "global-avg": ("GlobalAveragePool", [(2, 3, 5, 7)], {}, False, BOTH),
    "global-max": ("GlobalMaxPool", [(2, 3, 5, 7)], {}, False, BOTH),
    "relu-2d": ("Relu", [(3, 4)], {}, False, BOTH),
    "relu-5d": ("Relu", [(2, 3, 4, 5, 2)], {}, False, BOTH),
}


def _inputs(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _run_fastconv(model, inputs):
    result, counts = _counts_of(lambda: fo.ReferenceEvaluator(model).run(None,
                                                                         _feeds(model, inputs)))
    assert {route for _, route in counts} == {"fastconv"}, counts
    return result


def _assert_same(got, expected, dtype):
    assert len(got) == len(expected)
    tol = 1e-5 if np.dtype(dtype) == np.float32 else 1e-12
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype, (g.shape, e.shape, g.dtype, e.dtype)
        if g.dtype == np.int64:
            np.testing.assert_array_equal(g, e)
        else:
            np.testing.assert_allclose(g, e, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", CASES)
def test_against_onnxruntime(name):
    ort = _ort()
    if ort is None:
        pytest.skip("onnxruntime is not installed")
    op, shapes, attrs, indices, against = CASES[name]
    if "onnxruntime" not in against:
        pytest.skip("onnxruntime refuses these attributes")
    model = _model(op, shapes, np.float32, attrs, indices)
    inputs = _inputs(shapes, np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    _assert_same(_run_fastconv(model, inputs), sess.run(None, _feeds(model, inputs)),
                 np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", [n for n, case in CASES.items() if "plain" in case[4]])
def test_against_the_plain_evaluator(name, dtype):
    op, shapes, attrs, indices, _ = CASES[name]
    model = _model(op, shapes, dtype, attrs, indices)
    inputs = _inputs(shapes, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = PlainEvaluator(model).run(None, _feeds(model, inputs))
    _assert_same(_run_fastconv(model, inputs), expected, dtype)


def test_new_ops_in_the_plain_evaluator():
    """fastconv.onnx.ops passed as new_ops does what fastconv.onnx.ReferenceEvaluator does."""
    op, shapes, attrs, indices, _ = CASES["max-ceil-pads-asym"]
    model = _model(op, shapes, np.float32, attrs, indices)
    inputs = _inputs(shapes, np.float32)
    got, counts = _counts_of(lambda: PlainEvaluator(model, new_ops=fo.ops).run(
        None, _feeds(model, inputs)))
    assert counts == {("MaxPool", "fastconv"): 1}
    _assert_same(got, _run_fastconv(model, inputs), np.float32)


# ---- what runs on the plain implementation ------------------------------------------------------

def _nan_input(shape, dtype):
    x = _inputs([shape], dtype)[0]
    x[0, 0, 1, 1] = np.nan
    return x


# id: (op, attributes, inputs): calls the kernels don't cover; each gives the plain result
FALLBACKS = {
    "conv-float16": ("Conv", {}, _inputs([(1, 2, 5, 5), (3, 2, 3, 3)], np.float16)),
    "conv-3d": ("Conv", {}, _inputs([(1, 2, 4, 4, 4), (3, 2, 2, 2, 2)], np.float32)),
    "conv-bias-not-M": ("Conv", {}, _inputs([(1, 2, 5, 5), (3, 2, 3, 3), (1,)], np.float32)),
    "conv-bias-float64": ("Conv", {}, [*_inputs([(1, 2, 5, 5), (3, 2, 3, 3)], np.float32),
                                       np.arange(3.0)]),
    "max-int8": ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2]),
                 [np.arange(-50, 50, dtype=np.int8).reshape(1, 1, 10, 10)]),
    "max-nan": ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2]),
                [_nan_input((1, 2, 4, 4), np.float32)]),
    "max-window-in-padding": ("MaxPool", dict(kernel_shape=[2, 1], strides=[1, 2],
                                              pads=[2, 0, 0, 0]),
                              _inputs([(1, 1, 3, 4)], np.float32)),
    "avg-nan-exclude-pad": ("AveragePool", dict(kernel_shape=[2, 2], pads=[1, 1, 1, 1]),
                            [_nan_input((1, 1, 4, 4), np.float64)]),
    "avg-dilated": ("AveragePool", dict(kernel_shape=[2, 2], dilations=[2, 2]),
                    _inputs([(1, 1, 5, 5)], np.float32)),
    "lp-nan": ("LpPool", dict(kernel_shape=[2, 2]), [_nan_input((1, 1, 3, 3), np.float32)]),
    "global-avg-float16": ("GlobalAveragePool", {}, _inputs([(1, 2, 3, 3)], np.float16)),
    "global-max-3d": ("GlobalMaxPool", {}, _inputs([(2, 3, 5, 2, 2)], np.float64)),
    "relu-int32": ("Relu", {}, [np.arange(-3, 3, dtype=np.int32)]),
}


@pytest.mark.parametrize("name", FALLBACKS)
def test_fallback_gives_the_plain_result(name):
    op, attrs, inputs = FALLBACKS[name]
    model = _model(op, [a.shape for a in inputs], inputs[0].dtype, attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = PlainEvaluator(model).run(None, _feeds(model, inputs))
        got, counts = _counts_of(lambda: fo.ReferenceEvaluator(model).run(
            None, _feeds(model, inputs)))
    assert counts == {(op, "plain"): 1}
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("shape, route", [((1, 2, 5, 6), "fastconv"), ((1, 2, 3, 4, 5), "plain")])
def test_an_older_opset(shape, route):
    """AveragePool-11 has no dilations attribute (the newest schema's default, None, reaches
    fastconv's class; its own plain class gets only its own attributes)."""
    x = _inputs([shape], np.float32)[0]
    model = _model("AveragePool", [x.shape], np.float32, dict(kernel_shape=[2] * (x.ndim - 2)))
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", 11))
    got, counts = _counts_of(lambda: fo.ReferenceEvaluator(model).run(None, {"X": x}))
    assert counts == {("AveragePool", route): 1}
    np.testing.assert_allclose(got[0], PlainEvaluator(model).run(None, {"X": x})[0], rtol=1e-6)


# ---- bad attributes ------------------------------------------------------------------------------

BAD = [
    ("Conv", dict(pads=[1, 1]), "Conv: pads must have 4 values"),
    ("Conv", dict(pads=[1, -1, 1, 1]), "Conv: pads must be >= 0"),
    ("Conv", dict(strides=[1, 1, 1]), "Conv: strides must have 2 values"),
    ("Conv", dict(kernel_shape=[2, 2]), "Conv: kernel_shape [2, 2] is not the weight's [3, 3]"),
    ("Conv", dict(auto_pad="SAME"), "Conv: auto_pad must be one of"),
    ("Conv", dict(group=2), "Conv: conv2d: input channels (3) must be divisible by groups (2)"),
    ("Conv", dict(strides=[0, 1]), "Conv: conv2d: stride"),
    ("MaxPool", dict(kernel_shape=[9, 9]), "MaxPool: max_pool2d: output size would be"),
    ("MaxPool", dict(kernel_shape=[2]), "MaxPool: kernel_shape must have 2 values"),
    ("Conv1d", dict(strides=[1, 1]), "Conv: strides must have 1 value(s) for a 1-D input"),
    ("MaxPool1d", dict(kernel_shape=[2], pads=[1]), "MaxPool: pads must have 2 value(s)"),
    ("LpPool", dict(kernel_shape=[2, 2], p=0), "LpPool: lp_pool2d: norm_type"),
    ("ConvTranspose", dict(pads=[4, 4, 4, 4]), "ConvTranspose: output size would be"),
    ("ConvTranspose", dict(pads=[0, -1, 0, 0]), "ConvTranspose: pads must be >= 0"),
    ("ConvTranspose", dict(output_shape=[10, 7]),
     "ConvTranspose: output_shape [10, 7] reaches (3, 0) rows and columns past"),
    ("ConvTranspose", dict(output_padding=[1, 0]),
     "ConvTranspose: conv_transpose2d: output_padding must be smaller than stride"),
]


@pytest.mark.parametrize("op, attrs, message", BAD)
def test_bad_attributes(op, attrs, message):
    shapes = [(1, 3, 5, 5), (3, 3, 3, 3)] if op.startswith("Conv") else [(1, 3, 5, 5)]
    if op.endswith("1d"):
        op, shapes = op[:-2], [s[:3] for s in shapes]
    inputs = _inputs(shapes, np.float32)
    model = _model(op, shapes, np.float32, attrs)
    with pytest.raises(ValueError) as info:
        fo.ReferenceEvaluator(model).run(None, _feeds(model, inputs))
    assert str(info.value).startswith(message)


# ---- the CNN and the benchmark -------------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 5])
def test_cnn_against_onnxruntime(batch):
    ort = _ort()
    if ort is None:
        pytest.skip("onnxruntime is not installed")
    from fastconv import bench_onnx

    model = bench_onnx.cnn_model()
    x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    (got,), counts = _counts_of(lambda: fo.ReferenceEvaluator(model).run(None, {"X": x}))
    assert counts == {("Conv", "fastconv"): 3, ("Relu", "fastconv"): 3,
                      ("MaxPool", "fastconv"): 1, ("AveragePool", "fastconv"): 1,
                      ("GlobalAveragePool", "fastconv"): 1}
    (expected,) = bench_onnx.onnxruntime_session(model, 1).run(None, {"X": x})
    assert got.shape == (batch, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_bench_table():
    """One round at batch 1 (no timing is asserted): every evaluator has its row and agrees."""
    pytest.importorskip("threadpoolctl")
    from fastconv import bench_onnx

    times = bench_onnx.run(batch=1, repeat=1, threads=1, pause=0)
    table = bench_onnx.format_table(times, 1, 1)
    assert "fastconv.onnx.ReferenceEvaluator" in table and "onnx.reference" in table
    assert ("onnxruntime" in times) == (_ort() is not None)
    assert max(times["max_error"].values()) < 1e-4


def test_bench_command_runs_the_onnx_table(monkeypatch):
    from fastconv import __main__, bench_onnx

    calls = []
    monkeypatch.setattr(bench_onnx, "main", lambda **kwargs: calls.append(kwargs))
    assert __main__.main(["bench", "--onnx", "--threads", "1", "--repeat", "2"]) == 0
    assert calls == [dict(threads=1, repeat=2)]

