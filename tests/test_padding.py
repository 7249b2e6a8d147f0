"""Padding in every form: the SAME-padding helper against hand-computed cases, TensorFlow's
documented formula and ONNX's reference implementation (auto_pad), and 4-tuple / 'same' padding
against PyTorch, which has them only as an explicit ``F.pad`` before the op (skipped without
onnx or torch). The kernels' own tests (test_conv2d.py, test_pool2d.py) cover the forms on
every ISA and algorithm against fastconv.reference.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastconv.functional as F

# (input_size, kernel_size, stride, dilation, mode, expected (top, bottom, left, right))
SAME_CASES = [
    ((7, 8), 3, 2, 1, "upper", (1, 1, 0, 1)),   # H: total 2; W: total 1, odd one at the end
    ((7, 8), 3, 2, 1, "lower", (1, 1, 1, 0)),   # ... or at the start
    (5, 1, 3, 1, "upper", (0, 0, 0, 0)),        # kernel below the stride: no padding
    (6, 2, 1, 1, "upper", (0, 1, 0, 1)),        # stride 1: PyTorch's 'same'
    (6, 4, 1, 1, "lower", (2, 1, 2, 1)),
    ((10, 9), (3, 5), (2, 4), (2, 1), "upper", (1, 2, 2, 2)),  # H: dilated 3 spans 5
    (224, 7, 2, 1, "upper", (2, 3, 2, 3)),      # the ResNet stem in TensorFlow
    (1, 11, 4, 1, "upper", (5, 5, 5, 5)),       # one output, the kernel centred
]


@pytest.mark.parametrize("size, k, s, d, mode, expected", SAME_CASES)
def test_same_padding_hand(size, k, s, d, mode, expected):
    assert F.same_padding(size, k, s, d, mode) == expected


def _tensorflow_pads(size, k, s, d):
    """TensorFlow's documented SAME padding (its convolution guide): pad_along = max(k - s, 0)
    if size % s == 0 else max(k - size % s, 0), with the dilated kernel's span as k; the start
    gets pad_along // 2."""
    span = d * (k - 1) + 1
    along = max(span - s, 0) if size % s == 0 else max(span - size % s, 0)
    return along // 2, along - along // 2


def test_same_padding_is_tensorflows_formula():
    for size, k, s, d in itertools.product(range(1, 12), range(1, 6), range(1, 5), range(1, 4)):
        top, bottom, left, right = F.same_padding((size, size + 1), k, s, d)
        assert (top, bottom) == _tensorflow_pads(size, k, s, d), (size, k, s, d)
        assert (left, right) == _tensorflow_pads(size + 1, k, s, d), (size + 1, k, s, d)


@pytest.mark.parametrize("mode", ["upper", "lower"])
def test_same_padding_is_onnx_auto_pad(mode):
    """ONNX's pooling reference: get_pad_shape with the auto_pad output size, split by
    get_pad_with_auto_pad. Its total can be negative where the kernel is shorter than the
    stride leaves room for (an output shrinking the input); fastconv, like TensorFlow and ONNX's
    own Conv reference, pads 0 there."""
    pool_common = pytest.importorskip("onnx.reference.ops.op_pool_common")
    auto_pad = f"SAME_{mode.upper()}"
    for size, k, s in itertools.product(range(1, 12), range(1, 6), range(1, 5)):
        shape = (size, size + 2)
        out = pool_common.get_output_shape_auto_pad(auto_pad, shape, (k, k), (s, s))
        totals = pool_common.get_pad_shape(auto_pad, shape, (k, k), (s, s), out)
        head_tail = pool_common.get_pad_with_auto_pad(auto_pad, [max(0, t) for t in totals])
        expected = (head_tail[0], head_tail[2], head_tail[1], head_tail[3])
        assert F.same_padding(shape, k, s, 1, mode) == expected, (shape, k, s)


def _onnx_run(op, x, w=None, **attrs):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator
    names = ["x"] if w is None else ["x", "w"]
    node = helper.make_node(op, names, ["y"], **attrs)
    inputs = [helper.make_tensor_value_info(n, TensorProto.DOUBLE, None) for n in names]
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    feeds = {"x": x} if w is None else {"x": x, "w": w}
    return ReferenceEvaluator(model).run(None, feeds)[0]


# (input (H, W), kernel (kH, kW), stride, dilation)
AUTO_PAD_CASES = [((7, 8), (3, 3), (2, 2), (1, 1)), ((9, 6), (4, 2), (3, 1), (1, 1)),
                  ((8, 8), (3, 2), (2, 3), (2, 2)), ((5, 7), (1, 1), (3, 2), (1, 1)),
                  ((9, 6), (2, 4), (3, 1), (1, 1))]


def _onnx_pool_total_negative(hw, k, s):
    """ONNX's pooling reference takes (out - 1) s + k - size unclamped: negative where the
    kernel is shorter than the stride leaves, which its MaxPool turns into a shift and its
    AveragePool into an error (fastconv pads 0 there, as TensorFlow and ONNX's Conv do)."""
    return any((-(-n // st) - 1) * st + kk - n < 0 for n, kk, st in zip(hw, k, s))


@pytest.mark.parametrize("mode", ["upper", "lower"])
@pytest.mark.parametrize("hw, k, s, d", AUTO_PAD_CASES)
def test_conv2d_with_same_padding_is_onnx_conv_auto_pad(hw, k, s, d, mode):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, *hw)), rng.standard_normal((4, 3, *k))
    expected = _onnx_run("Conv", x, w, auto_pad=f"SAME_{mode.upper()}", strides=list(s),
                         dilations=list(d), kernel_shape=list(k))
    y = F.conv2d(x, w, stride=s, dilation=d, padding=F.same_padding(hw, k, s, d, mode))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["upper", "lower"])
@pytest.mark.parametrize("hw, k, s, d", [c for c in AUTO_PAD_CASES if c[3] == (1, 1)
                                         and not _onnx_pool_total_negative(*c[:3])])
def test_pools_with_same_padding_are_onnx_pools_auto_pad(hw, k, s, d, mode):
    """ONNX's reference MaxPool computes SAME_LOWER as floor(size / stride) outputs with the odd
    padding at the end (op_max_pool.py), against the operator's specification and its own
    AveragePool and Conv: it is compared on SAME_UPPER only."""
    x = np.random.default_rng(1).standard_normal((2, 3, *hw))
    attrs = dict(auto_pad=f"SAME_{mode.upper()}", strides=list(s), kernel_shape=list(k))
    pads = F.same_padding(hw, k, s, d, mode)
    if mode == "upper":
        np.testing.assert_array_equal(F.max_pool2d(x, k, s, pads),
                                      _onnx_run("MaxPool", x, **attrs))
    for include in (0, 1):
        expected = _onnx_run("AveragePool", x, count_include_pad=include, **attrs)
        np.testing.assert_allclose(F.avg_pool2d(x, k, s, pads, count_include_pad=bool(include)),
                                   expected, rtol=1e-12, atol=1e-12)


def test_pools_with_4_tuple_padding_are_onnx_pools():
    """Explicit pads, ceil_mode and count_include_pad as ONNX defines them, pads past half the
    kernel (ONNX's reference accepts any)."""
    x = np.random.default_rng(2).standard_normal((1, 2, 7, 9))
    for pads, ceil in [((0, 2, 1, 0), 0), ((2, 0, 0, 1), 1), ((1, 1, 2, 2), 1)]:
        onnx_pads = [pads[0], pads[2], pads[1], pads[3]]  # ONNX: begins, then ends
        attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=onnx_pads, ceil_mode=ceil)
        np.testing.assert_array_equal(F.max_pool2d(x, 3, 2, pads, ceil_mode=bool(ceil)),
                                      _onnx_run("MaxPool", x, **attrs))
        for include in (0, 1):
            np.testing.assert_allclose(
                F.avg_pool2d(x, 3, 2, pads, ceil_mode=bool(ceil), count_include_pad=bool(include)),
                _onnx_run("AveragePool", x, count_include_pad=include, **attrs),
                rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_size=0, kernel_size=3), r"input_size must be a positive int .*got 0$"),
    (dict(input_size=(4, 4, 4), kernel_size=3), r"input_size must be .*got \(4, 4, 4\)$"),
    (dict(input_size=4, kernel_size=(3, 0)), r"kernel_size must be a positive int .*got \(3, 0\)"),
    (dict(input_size=4, kernel_size=3, stride=0), r"stride must be a positive int .*got 0$"),
    (dict(input_size=4, kernel_size=3, dilation=-1), r"dilation must be a positive .*got -1$"),
    (dict(input_size=4, kernel_size=3, mode="SAME_UPPER"),
     r"mode must be 'upper' or 'lower', got 'SAME_UPPER'$"),
])
def test_same_padding_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=r"^same_padding: " + message):
        F.same_padding(**kwargs)


# ---- PyTorch: 4-tuples as F.pad before the op --------------------------------------------------

def _torch():
    return pytest.importorskip("torch")


def _padded(torch, x, pads, value):
    top, bottom, left, right = pads
    return torch.nn.functional.pad(x, (left, right, top, bottom), value=value)


PADS = [(0, 2, 1, 0), (2, 0, 0, 1), (1, 2, 2, 1), "same"]


@pytest.mark.parametrize("padding", PADS)
def test_conv2d_4_tuple_matches_torch_pad_then_conv(padding):
    torch = _torch()
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 4, 7, 8)), rng.standard_normal((6, 2, 3, 2)), \
        rng.standard_normal(6)
    pads = padding if padding != "same" else F.same_padding((7, 8), (3, 2), 1, (2, 1))
    kwargs = dict(stride=1 if padding == "same" else (2, 1), dilation=(2, 1), groups=2)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(_padded(torch, tx, pads, 0.0), tw, tb, **kwargs)
    y = F.conv2d(x, w, b, padding=padding, **kwargs)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    gy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(gy))
    for mine, theirs in zip(F.conv2d_backward(gy, x, w, padding=padding, **kwargs),
                            (tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("padding", PADS)
def test_pools_4_tuple_match_torch_pad_then_pool(padding):
    """Max pooling pads with -inf, average (counting the padding) and L^p with zeros; no
    ceil_mode here, where PyTorch's divisor would clip at the padded tensor's own end."""
    torch = _torch()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 8, 9))
    stride = 1 if padding == "same" else 2
    pads = padding if padding != "same" else F.same_padding((8, 9), 3)
    tf = torch.nn.functional
    ops = [
        (lambda a: F.max_pool2d(a, 3, stride, padding),
         lambda g, a: F.max_pool2d_backward(g, a, 3, stride, padding),
         lambda t: tf.max_pool2d(_padded(torch, t, pads, -np.inf), 3, stride)),
        (lambda a: F.avg_pool2d(a, 3, stride, padding),
         lambda g, a: F.avg_pool2d_backward(g, a, 3, stride, padding),
         lambda t: tf.avg_pool2d(_padded(torch, t, pads, 0.0), 3, stride)),
        (lambda a: F.lp_pool2d(np.abs(a), 2, 3, stride, padding=padding),
         lambda g, a: F.lp_pool2d_backward(g, np.abs(a), 2, 3, stride, padding=padding),
         lambda t: tf.lp_pool2d(_padded(torch, t.abs(), pads, 0.0), 2, 3, stride)),
    ]
    for forward, backward, theirs in ops:
        tx = torch.tensor(x, requires_grad=True)
        ty = theirs(tx)
        y = forward(x)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
        gy = rng.standard_normal(y.shape)
        ty.backward(torch.tensor(gy))
        gx = backward(gy, x)
        if backward is ops[2][1]:
            gx = gx * np.sign(x)  # through the abs() the torch graph holds
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
