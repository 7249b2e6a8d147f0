"""conv_transpose2d: the reference, the kernels it runs on, its arguments, and nn.ConvTranspose2d.

* The reference (fastconv.reference.conv_transpose2d, the scatter definition) against hand-worked
  cases, a scalar loop written here, central finite differences (float64) and, where installed,
  PyTorch.
* The functional op against the reference on a case table (stride 1-3, padding, output_padding
  below the stride or, with dilation, not, dilation, groups incl. depthwise, kernels 1x1 to 5x5,
  rectangular kernels and strides, 1x1 inputs, odd sizes, batch 0 and 1, and the conv kernels'
  tile edges), forward and backward, on every ISA, as the plan chooses and with each algorithm
  of the conv2d pass it runs on forced: the forward is conv2d's input-gradient pass
  ('transposed' or 'col2im'), grad_input conv2d's forward ('direct', 'winograd', 'plain'),
  grad_weight conv2d's weight gradient ('direct', 'plain').
* The plan: the common decoder layers never fall onto the plain loops.
* Bad arguments: ValueError or TypeError before any kernel runs, naming the function and the
  argument.
* nn.ConvTranspose2d: finite differences, and PyTorch's layer with copied weights.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from helpers import (
    DTYPES,
    KernelTripwire,
    assert_close,
    assert_same_for_1_and_2_threads,
    numerical_gradient,
    pair,
    random,
)

import fastconv.functional as F
from fastconv import _kernels, init, nn
from fastconv import _validation as v
from fastconv import reference as ref

# (N, C_in, H, W, C_out, kernel, stride, padding, output_padding, dilation, groups, bias)
CASES = {
    "basic3x3": (2, 3, 5, 5, 4, 3, 1, 0, 0, 1, 1, True),
    "padded3x3": (2, 3, 6, 5, 4, 3, 1, 1, 0, 1, 1, True),
    "up-2x2s2": (2, 4, 5, 6, 3, 2, 2, 0, 0, 1, 1, True),  # U-Net: taps never overlap
    "up-3x3s2p1-op1": (2, 3, 5, 5, 4, 3, 2, 1, 1, 1, 1, True),  # doubles the size exactly
    "up-3x3s2p1-op0": (1, 3, 4, 5, 2, 3, 2, 1, 0, 1, 1, True),
    "up-4x4s2p1": (1, 5, 4, 4, 3, 4, 2, 1, 0, 1, 1, True),  # DCGAN
    "stride3-5x5-op2": (1, 2, 4, 5, 3, 5, 3, 2, 2, 1, 1, False),
    "stride-rect": (2, 3, 4, 5, 2, (3, 2), (2, 3), (1, 0), (1, 2), 1, 1, True),
    "1x1": (2, 4, 3, 3, 5, 1, 1, 0, 0, 1, 1, True),
    "1x1-stride2-op1": (1, 3, 3, 4, 2, 1, 2, 0, 1, 1, 1, True),  # rows no tap reaches: bias only
    "1x1-padding": (1, 2, 5, 5, 3, 1, 1, 1, 0, 1, 1, True),  # padding crops the input size
    "dilation2": (1, 3, 5, 5, 2, 3, 1, 1, 0, 2, 1, True),
    "dilation-op-past-stride": (1, 2, 4, 4, 3, 3, 1, 0, 1, 2, 1, True),  # op >= stride, < dil.
    "dilation3-rect-op": (2, 2, 4, 3, 2, (2, 3), 2, (1, 2), (1, 2), 3, 1, True),
    "groups2": (2, 4, 5, 5, 6, 3, 2, 1, 1, 1, 2, True),
    "groups3-rect": (1, 6, 4, 5, 9, (3, 2), (1, 2), (1, 0), (0, 1), 1, 3, True),
    "depthwise": (2, 5, 6, 6, 5, 3, 2, 1, 1, 1, 5, True),
    "depthwise-multiplier": (1, 4, 5, 5, 8, 4, 2, 1, 0, 1, 4, False),
    "crops-to-1x1": (1, 2, 1, 1, 3, 3, 1, 1, 0, 1, 1, True),
    # (top, bottom, left, right), as ONNX's pads
    "asymmetric-4-tuple": (2, 3, 5, 4, 4, 3, 2, (0, 2, 1, 0), 1, 1, 1, True),
    "asymmetric-4-tuple-s1": (1, 4, 5, 6, 9, (2, 3), 1, (1, 0, 2, 1), 0, 1, 1, True),
    "padding-beyond-kernel": (2, 2, 6, 6, 3, 2, 1, 2, 0, 1, 1, True),  # conv pad > d*(k-1)
    "input-1x1": (3, 4, 1, 1, 5, 3, 2, 0, 1, 1, 1, True),
    "odd-sizes-5x5s3": (1, 3, 7, 9, 5, 5, 3, 2, 1, 1, 1, True),
    "batch1": (1, 2, 4, 4, 3, 3, 2, 1, 1, 1, 1, True),
    "batch0": (0, 2, 4, 4, 3, 3, 2, 1, 1, 1, 1, True),
    # 3x3 stride 1 with >= 16 channels each side: Winograd both ways (forward as the transposed
    # input-gradient pass, grad_input as conv2d's forward)
    "winograd": (2, 20, 7, 9, 24, 3, 1, 1, 0, 1, 1, True),
    "winograd-full": (1, 16, 5, 4, 17, 3, 1, 0, 0, 1, 1, True),
    # the conv kernels' tile edges: output channels around MR, pixel tiles past 384, reductions
    # past one KC panel (col2im's K is C_in), col2im tasks past 288 rows (C_out * k * k)
    "mr-edges-out9": (1, 3, 4, 4, 9, 3, 1, 1, 0, 1, 1, True),
    "mr-edges-out17-strided": (2, 3, 4, 4, 17, 3, 2, 1, 1, 1, 1, True),
    "many-pixels-tiles": (1, 2, 12, 12, 3, 3, 2, 1, 1, 1, 1, True),  # 24 x 24 = 576 pixels
    "long-reduction-strided": (1, 200, 3, 3, 4, 2, 2, 0, 0, 1, 1, True),
    # float32 over long reductions: C_in * k * k = 2304 (stride 1) and 8192 (col2im) products
    # per output, the weight gradient's over a batch of 16 images
    "long-reduction-s1": (1, 256, 4, 5, 32, 3, 1, 1, 0, 1, 1, True),
    "long-reduction-col2im": (2, 512, 3, 3, 16, 4, 2, 1, 0, 1, 1, True),
    "long-reduction-weight": (16, 8, 9, 9, 8, 3, 2, 1, 1, 1, 1, True),
    "rows-past-288": (1, 4, 4, 4, 33, 3, 2, 1, 1, 1, 1, True),
    "big-batch-weight-chunks": (20, 2, 3, 3, 3, 3, 2, 1, 1, 1, 1, True),
}


def _make(case, dtype, rng, layout="C"):
    n, c_in, h, w, c_out, kernel, stride, padding, output_padding, dilation, groups, bias = case
    kh, kw = pair(kernel)
    x = random(rng, (n, c_in, h, w), dtype, layout)
    weight = random(rng, (c_in, c_out // groups, kh, kw), dtype, layout)
    b = random(rng, (c_out,), dtype) if bias else None
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                  dilation=dilation)
    ref_args = (pair(stride), _pad4(padding), pair(output_padding), groups, pair(dilation))
    return x, weight, b, kwargs, ref_args


def _pad4(padding):
    """An int, a pair or a 4-tuple as the reference's (top, bottom, left, right)."""
    if isinstance(padding, tuple) and len(padding) == 4:
        return padding
    ph, pw = pair(padding)
    return (ph, ph, pw, pw)


def _check_forward(x, weight, bias, kwargs, ref_args):
    y = F.conv_transpose2d(x, weight, bias, **kwargs)
    expected = ref.conv_transpose2d(x, weight, bias, *ref_args)
    scale = ref.conv_transpose2d(np.abs(x), np.abs(weight),
                                 None if bias is None else np.abs(bias), *ref_args)
    per_output = weight.shape[0] // kwargs["groups"] * weight.shape[2] * weight.shape[3]
    assert_close(y, expected, per_output, scale)
    return y


def _check_backward(x, weight, gy, kwargs, ref_args, passes=("input", "weight")):
    grads = F.conv_transpose2d_backward(gy, x, weight, **kwargs)
    expected = ref.conv_transpose2d_backward(gy, x, weight, *ref_args)
    scale = ref.conv_transpose2d_backward(np.abs(gy), np.abs(x), np.abs(weight), *ref_args)
    lengths = (weight.shape[1] * weight.shape[2] * weight.shape[3],  # C_out/groups * kH * kW
               x.shape[0] * x.shape[2] * x.shape[3],  # each weight: N * H * W products
               gy.shape[0] * gy.shape[2] * gy.shape[3])
    checked = {"input": [0], "weight": [1, 2]}
    for i in sum((checked[p] for p in passes), []):
        assert_close(grads[i], expected[i], lengths[i], scale[i])
    return grads


def _seed(case):
    return abs(hash(str(case))) % 2**32


# ---- the reference -------------------------------------------------------------------------------

def a4(rows):
    return np.array(rows, dtype=np.float64)[None, None]


def test_reference_hand_stride2():
    # each input pixel stamps the 2x2 kernel, 2 apart: overlapping column 2 and row 2 add up
    x = a4([[1, 2], [3, 4]])
    w = a4([[1, 10], [100, 1000]])
    out = ref.conv_transpose2d(x, w, None, (1, 1), (0, 0, 0, 0), (0, 0), 1, (1, 1))
    np.testing.assert_array_equal(out, a4([[1, 12, 20], [103, 1234, 2040], [300, 3400, 4000]]))
    out = ref.conv_transpose2d(x, w, np.array([0.5]), (2, 2), (0, 0, 0, 0), (0, 0), 1, (1, 1))
    np.testing.assert_array_equal(out - 0.5, a4([[1, 10, 2, 20], [100, 1000, 200, 2000],
                                                 [3, 30, 4, 40], [300, 3000, 400, 4000]]))


def test_reference_hand_padding_and_output_padding():
    x = a4([[1, 2], [3, 4]])
    w = np.ones((1, 1, 3, 3))
    # uncropped 5x5 (stride 2, 3x3 taps), cropped by 1 on each side; output_padding adds a row
    # and a column at the bottom and right, reached by the uncropped plane's last one
    full = ref.conv_transpose2d(x, w, None, (2, 2), (0, 0, 0, 0), (0, 0), 1, (1, 1))
    np.testing.assert_array_equal(full, a4([[1, 1, 3, 2, 2], [1, 1, 3, 2, 2],
                                            [4, 4, 10, 6, 6], [3, 3, 7, 4, 4], [3, 3, 7, 4, 4]]))
    out = ref.conv_transpose2d(x, w, None, (2, 2), (1, 1, 1, 1), (1, 1), 1, (1, 1))
    np.testing.assert_array_equal(out, full[:, :, 1:, 1:])
    # past every tap: a 1x1 kernel at stride 2 with output_padding 1 leaves zeros
    out = ref.conv_transpose2d(x, np.ones((1, 1, 1, 1)), None, (2, 2), (0, 0, 0, 0), (1, 1), 1,
                               (1, 1))
    np.testing.assert_array_equal(out, a4([[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0],
                                           [0, 0, 0, 0]]))


def naive_conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation):
    """Scalar loops over every input pixel and tap, straight from the scatter definition."""
    N, C, H, W = x.shape
    _, Kg, kH, kW = w.shape
    top, bottom, left, right = padding
    OH = (H - 1) * stride[0] - top - bottom + dilation[0] * (kH - 1) + output_padding[0] + 1
    OW = (W - 1) * stride[1] - left - right + dilation[1] * (kW - 1) + output_padding[1] + 1
    Cg = C // groups
    out = np.zeros((N, Kg * groups, OH, OW))
    for n in range(N):
        for c in range(C):
            g = c // Cg
            for h in range(H):
                for ww in range(W):
                    for kk in range(Kg):
                        for i in range(kH):
                            for j in range(kW):
                                oh = h * stride[0] - top + i * dilation[0]
                                ow = ww * stride[1] - left + j * dilation[1]
                                if 0 <= oh < OH and 0 <= ow < OW:
                                    out[n, g * Kg + kk, oh, ow] += x[n, c, h, ww] * w[c, kk, i, j]
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


# (N, C_in, H, W, C_out, kH, kW, stride, padding, output_padding, groups, dilation)
REF_CASES = [
    (2, 2, 3, 3, 3, 3, 3, (1, 1), (0, 0, 0, 0), (0, 0), 1, (1, 1)),
    (1, 4, 3, 4, 6, 2, 3, (2, 1), (1, 1, 0, 2), (1, 0), 2, (1, 2)),  # asymmetric padding
    (2, 6, 3, 2, 3, 3, 2, (2, 3), (0, 1, 1, 0), (1, 2), 3, (2, 1)),
    (1, 4, 3, 3, 4, 1, 1, (1, 1), (0, 0, 0, 0), (0, 0), 4, (1, 1)),
    (1, 3, 2, 3, 2, 3, 3, (1, 1), (1, 1, 2, 2), (1, 1), 1, (2, 3)),  # op >= stride, < dilation
    (1, 2, 2, 2, 2, 2, 2, (3, 3), (1, 1, 1, 1), (2, 1), 1, (1, 1)),
]


def _ref_inputs(case, seed=0):
    N, C, H, W, K, kH, kW, stride, padding, output_padding, groups, dilation = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((C, K // groups, kH, kW))
    b = rng.standard_normal(K)
    return x, w, b, (stride, padding, output_padding, groups, dilation)


@pytest.mark.parametrize("case", REF_CASES)
def test_reference_matches_naive(case):
    x, w, b, args = _ref_inputs(case)
    for bias in (b, None):
        np.testing.assert_allclose(ref.conv_transpose2d(x, w, bias, *args),
                                   naive_conv_transpose2d(x, w, bias, *args), rtol=1e-12,
                                   atol=1e-12)


@pytest.mark.parametrize("case", REF_CASES)
def test_reference_backward_finite_difference(case):
    x, w, b, args = _ref_inputs(case)
    G = np.random.default_rng(1).standard_normal(ref.conv_transpose2d(x, w, b, *args).shape)
    loss = lambda: float(np.sum(ref.conv_transpose2d(x, w, b, *args) * G))  # noqa: E731
    gi, gw, gb = ref.conv_transpose2d_backward(G, x, w, *args)
    assert gi.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape
    for analytic, array in ((gi, x), (gw, w), (gb, b)):
        np.testing.assert_allclose(analytic, numerical_gradient(loss, array), rtol=1e-5,
                                   atol=1e-7)


def _conv_padding(padding, output_padding):
    """The paddings of the conv2d whose input gradient the transposed convolution is."""
    return (padding[0], padding[1] - output_padding[0], padding[2], padding[3] - output_padding[1])


@pytest.mark.parametrize("case", [c for c in REF_CASES if min(_conv_padding(c[8], c[9])) >= 0])
def test_reference_is_the_input_gradient_of_conv2d(case):
    """conv_transpose2d(x, w) is the gradient, with respect to its input, of the conv2d that maps
    an input of the transposed output's shape to x's shape: the two references agree."""
    x, w, _, (stride, padding, output_padding, groups, dilation) = _ref_inputs(case)
    y = ref.conv_transpose2d(x, w, None, stride, padding, output_padding, groups, dilation)
    grad_input, _, _ = ref.conv2d_backward(x, np.zeros_like(y), w, stride,
                                           _conv_padding(padding, output_padding), dilation,
                                           groups)
    np.testing.assert_allclose(y, grad_input, rtol=1e-12, atol=1e-12)


# ---- PyTorch -------------------------------------------------------------------------------------

TORCH_CASES = [  # (input shape, weight shape, kwargs)
    ((2, 4, 5, 4), (4, 3, 3, 2), dict(stride=(2, 1), padding=1, output_padding=(1, 0),
                                      dilation=(1, 2))),
    ((1, 6, 3, 4), (6, 2, 4, 4), dict(stride=2, padding=1, groups=3)),
    ((2, 3, 4, 4), (3, 2, 3, 3), dict(stride=1, output_padding=1, dilation=2)),
    ((1, 4, 5, 5), (4, 1, 3, 3), dict(stride=3, padding=(0, 2), output_padding=2, groups=4)),
    ((1, 2, 3, 3), (2, 3, 1, 1), dict(padding=1)),
]


@pytest.mark.parametrize("xs, ws, kwargs", TORCH_CASES)
def test_matches_torch(xs, ws, kwargs):
    """The functional op and the reference both equal PyTorch's, forward and backward (float64,
    so only semantics can differ)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal(ws[1] * kwargs.get("groups", 1))
    tx, tw, tb = (torch.from_numpy(a).requires_grad_(True) for a in (x, w, b))
    ty = torch.nn.functional.conv_transpose2d(tx, tw, tb, **kwargs)
    gy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.from_numpy(gy))
    theirs = [ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()]
    ref_args = (pair(kwargs.get("stride", 1)), _pad4(kwargs.get("padding", 0)),
                pair(kwargs.get("output_padding", 0)), kwargs.get("groups", 1),
                pair(kwargs.get("dilation", 1)))
    for mine in ([F.conv_transpose2d(x, w, b, **kwargs),
                  *F.conv_transpose2d_backward(gy, x, w, **kwargs)],
                 [ref.conv_transpose2d(x, w, b, *ref_args),
                  *ref.conv_transpose2d_backward(gy, x, w, *ref_args)]):
        for a, t in zip(mine, theirs):
            np.testing.assert_allclose(a, t, rtol=1e-10, atol=1e-10)


# ---- the kernels ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_matches_reference(case, dtype, isa):
    rng = np.random.default_rng(_seed(case))
    x, weight, bias, kwargs, ref_args = _make(case, dtype, rng)
    y = _check_forward(x, weight, bias, kwargs, ref_args)
    gy = rng.standard_normal(y.shape).astype(dtype)
    _check_backward(x, weight, gy, kwargs, ref_args)


# (pass of conv_transpose2d, the conv2d pass it runs on, algorithm)
ALGORITHMS = [("forward", "input", "transposed"), ("forward", "input", "col2im"),
              ("forward", "input", "depthwise"),
              ("grad_input", "forward", "direct"), ("grad_input", "forward", "winograd"),
              ("grad_input", "forward", "plain"), ("grad_input", "forward", "depthwise"),
              ("grad_weight", "weight", "direct"), ("grad_weight", "weight", "plain"),
              ("grad_weight", "weight", "depthwise")]


def _can_run(algorithm, case) -> bool:
    """The conv2d geometry rules (docs/KERNELS.md) on the matching conv2d (same kernel, stride
    and dilation); the table's strides are small, so the stride phases always fit."""
    kernel, stride, dilation = case[5], case[6], case[9]
    if algorithm == "depthwise":  # one conv2d input channel (ours: output channel) per group
        return case[4] == case[10]
    if algorithm == "winograd":
        return pair(kernel) == (3, 3) and pair(stride) == (1, 1) and pair(dilation) == (1, 1)
    if algorithm == "transposed":
        return pair(stride) == (1, 1)
    return True


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case, which, conv_pass, algorithm", [
    pytest.param(case, which, conv_pass, algorithm, id=f"{name}-{which}-{algorithm}")
    for name, case in CASES.items() for which, conv_pass, algorithm in ALGORITHMS
    if _can_run(algorithm, case)])
def test_algorithm_matches_reference(case, which, conv_pass, algorithm, dtype, isa):
    rng = np.random.default_rng(_seed(case))
    x, weight, bias, kwargs, ref_args = _make(case, dtype, rng)
    with _kernels.force_conv_algorithms(**{conv_pass: algorithm}):
        if which == "forward":
            _check_forward(x, weight, bias, kwargs, ref_args)
            return
        gy = rng.standard_normal(ref.conv_transpose2d(x, weight, None, *ref_args).shape)
        _check_backward(x, weight, gy.astype(dtype), kwargs, ref_args,
                        passes=("input",) if which == "grad_input" else ("weight",))


def test_forced_algorithm_that_cannot_run_raises():
    x, weight, bias, kwargs, _ = _make(CASES["up-3x3s2p1-op1"], np.float32,
                                       np.random.default_rng(0))
    with _kernels.force_conv_algorithms(input="transposed"), \
            pytest.raises(ValueError, match="the forced algorithm 'transposed' cannot run"):
        F.conv_transpose2d(x, weight, bias, **kwargs)


@pytest.mark.parametrize("layout", ["F", "strided", "reversed", "readonly"])
def test_any_memory_layout(layout):
    rng = np.random.default_rng(7)
    x, weight, bias, kwargs, ref_args = _make(CASES["groups3-rect"], np.float64, rng, layout)
    y = _check_forward(x, weight, bias, kwargs, ref_args)
    gy = random(rng, y.shape, np.float64, layout)
    grads = _check_backward(x, weight, gy, kwargs, ref_args)
    contiguous = [np.ascontiguousarray(a) for a in (gy, x, weight)]
    for a, b in zip(grads, F.conv_transpose2d_backward(*contiguous, **kwargs)):
        np.testing.assert_array_equal(a, b)
    assert not any(np.shares_memory(o, a) for o in (y, *grads) for a in (x, weight, gy))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_same_result_for_1_and_2_threads(case, dtype, isa):
    rng = np.random.default_rng(5)
    x, weight, bias, kwargs, ref_args = _make(case, dtype, rng)
    gy = rng.standard_normal(ref.conv_transpose2d(x, weight, None, *ref_args).shape).astype(dtype)
    assert_same_for_1_and_2_threads([
        lambda: F.conv_transpose2d(x, weight, bias, **kwargs),
        lambda: F.conv_transpose2d_backward(gy, x, weight, **kwargs)])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_batch_zero_gives_empty_and_zero_gradients(dtype):
    x = np.zeros((0, 4, 3, 3), dtype)
    w = np.ones((4, 3, 3, 3), dtype)
    y = F.conv_transpose2d(x, w, np.ones(6, dtype), stride=2, output_padding=1, groups=2)
    assert y.shape == (0, 6, 8, 8) and y.dtype == dtype
    gx, gw, gb = F.conv_transpose2d_backward(y, x, w, stride=2, output_padding=1, groups=2)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == (6,)
    assert not gw.any() and not gb.any() and gw.dtype == gb.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["padded3x3", "up-3x3s2p1-op1", "winograd"])
def test_nan_and_inf_propagate_as_in_the_reference(name, dtype):
    """Inputs sprinkled with NaN and +-Inf: NaN and the same infinities exactly where the
    reference has them, in every output (the conv2d passes' non-finite fallbacks included)."""
    rng = np.random.default_rng(9)
    x, weight, bias, kwargs, ref_args = _make(CASES[name], dtype, rng)
    gy = rng.standard_normal(ref.conv_transpose2d(x, weight, None, *ref_args).shape)
    gy = gy.astype(dtype)
    for a, fraction in ((x, 0.05), (weight, 0.02), (gy, 0.02)):
        special = rng.random(a.shape) < fraction
        a[special] = rng.choice([np.nan, np.inf, -np.inf], special.sum())
    with np.errstate(invalid="ignore"):
        expected = [ref.conv_transpose2d(x, weight, bias, *ref_args),
                    *ref.conv_transpose2d_backward(gy, x, weight, *ref_args)]
    actual = [F.conv_transpose2d(x, weight, bias, **kwargs),
              *F.conv_transpose2d_backward(gy, x, weight, **kwargs)]
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
        np.testing.assert_array_equal(a[np.isinf(e)], e[np.isinf(e)])
        finite = np.isfinite(e)
        assert_close(a[finite], e[finite], int(np.prod(weight.shape)))


@pytest.mark.parametrize("where", ["x", "weight", "grad_output"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["padded3x3", "up-3x3s2p1-op1", "winograd", "dilation3-rect-op",
                                  "depthwise", "crops-to-1x1", "1x1-stride2-op1"])
def test_nan_and_inf_where_torch_puts_them(name, dtype, where):
    """NaN and +-Inf (among zeros, so that 0 * Inf shows) in x, weight or grad_output: every
    output has NaN and the same infinities exactly where PyTorch's float64 path has them (its
    definition: a tap cropped off by padding multiplies nothing). PyTorch's float32 path
    (oneDNN) differs from its own float64 one here; fastconv follows the float64 one in both
    dtypes."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x, weight, bias, kwargs, ref_args = _make(CASES[name], dtype, rng)
    gy = rng.standard_normal(ref.conv_transpose2d(x, weight, None, *ref_args).shape)
    arrays = {"x": x, "weight": weight, "grad_output": gy.astype(dtype)}
    for a in (x, weight):
        a[rng.random(a.shape) < 0.2] = 0
    special = arrays[where]
    chosen = rng.random(special.shape) < 0.05
    chosen.flat[rng.integers(chosen.size)] = True  # at least one, in small arrays too
    special[chosen] = rng.choice([np.nan, np.inf, -np.inf], chosen.sum())
    t = {k: torch.from_numpy(a.astype(np.float64)).requires_grad_(True) for k, a in arrays.items()}
    tb = None if bias is None else torch.from_numpy(bias.astype(np.float64)).requires_grad_(True)
    ty = torch.nn.functional.conv_transpose2d(t["x"], t["weight"], tb, **kwargs)
    ty.backward(t["grad_output"])
    theirs = [ty.detach(), t["x"].grad, t["weight"].grad, t["grad_output"].sum((0, 2, 3))]
    with np.errstate(invalid="ignore", over="ignore"):
        mine = [F.conv_transpose2d(x, weight, bias, **kwargs),
                *F.conv_transpose2d_backward(arrays["grad_output"], x, weight, **kwargs)]
    for a, e in zip(mine, (e.detach().numpy() for e in theirs)):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
        np.testing.assert_array_equal(np.isinf(a), np.isinf(e))
        np.testing.assert_array_equal(a[np.isinf(e)], e[np.isinf(e)])
    assert not all(np.isfinite(a).all() for a in mine)  # the case tests something


# The decoder layers of real networks: (C_in, C_out, kernel, stride, padding, output_padding)
DECODER_LAYERS = {
    "unet-2x2s2": (128, 64, 2, 2, 0, 0),
    "fcn-3x3s2p1-op1": (64, 32, 3, 2, 1, 1),
    "3x3s2p1": (64, 32, 3, 2, 1, 0),
    "dcgan-4x4s2p1": (128, 64, 4, 2, 1, 0),
    "4x4s2p1-op1": (32, 16, 4, 2, 1, 1),
    "3x3s1p1": (64, 64, 3, 1, 1, 0),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layer", list(DECODER_LAYERS.values()), ids=list(DECODER_LAYERS))
def test_plan_never_runs_decoder_layers_on_the_plain_loops(layer, dtype, isa):
    c_in, c_out, k, s, p, op = layer
    g = v.conv_transpose_geometry("conv_transpose2d", (8, c_in, 16, 16), (c_in, c_out, k, k),
                                  s, p, op, 1, 1)
    forward, grad_input, grad_weight = (_kernels.conv_plan(g, which, dtype)[0]
                                        for which in ("input", "forward", "weight"))
    assert forward == ("transposed" if s == 1 else "col2im")
    # a GEMM forward pass: direct, or pixels where the output channels fill whole NR panels
    assert grad_input in (("winograd",) if (k, s) == (3, 1) else ("direct", "pixels"))
    assert grad_weight == "direct"


# ---- bad arguments -------------------------------------------------------------------------------

def _base(op, n=2, dtype=np.float64):
    """Valid arguments: x (n, 4, 3, 3), weight (4, 3, 3, 3), stride 2 -> (n, 3, 7, 7)."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((n, 4, 3, 3)).astype(dtype), rng.standard_normal((4, 3, 3, 3))
    kwargs = dict(x=x, weight=w.astype(dtype), stride=2)
    if op == "conv_transpose2d":
        return {**kwargs, "bias": np.zeros(3, dtype)}
    return {**kwargs, "grad_output": rng.standard_normal((n, 3, 7, 7)).astype(dtype)}


OPS = ["conv_transpose2d", "conv_transpose2d_backward"]
BAD = [  # (description, overrides, exception, pattern after "<op>: ")
    ("x-list", dict(x=[[1.0]]), TypeError, r"x must be a numpy\.ndarray, got list"),
    ("x-int", dict(x=np.zeros((2, 4, 3, 3), int)), TypeError,
     r"x must have dtype float32 or float64, got int64"),
    ("x-3d", dict(x=np.zeros((4, 3, 3))), ValueError,
     r"x must be a 4-D \(N, C_in, H, W\) array, got shape \(4, 3, 3\)"),
    ("weight-3d", dict(weight=np.zeros((4, 3, 3))), ValueError,
     r"weight must be a 4-D \(C_in, C_out/groups, kH, kW\) array, got shape \(4, 3, 3\)"),
    ("weight-float32", dict(weight=np.zeros((4, 3, 3, 3), np.float32)), TypeError,
     r"weight has dtype float32 but .* has dtype float64"),
    ("weight-channels", dict(weight=np.zeros((3, 3, 3, 3))), ValueError,
     r"weight of shape \(3, 3, 3, 3\) expects 3 input channels \(its first dim\), but the "
     r"input has 4 \(shape \(2, 4, 3, 3\)\)"),
    ("weight-empty", dict(weight=np.zeros((4, 0, 3, 3))), ValueError,
     r"weight must have a non-empty shape \(C_in, C_out/groups, kH, kW\), got \(4, 0, 3, 3\)"),
    ("x-no-rows", dict(x=np.zeros((2, 4, 0, 3))), ValueError,
     r"input must have at least one channel, row and column \(only the batch may be empty\), "
     r"got shape \(2, 4, 0, 3\)"),
    ("stride-zero", dict(stride=0), ValueError, r"stride must be a positive int .*got 0$"),
    ("stride-float", dict(stride=2.0), TypeError, r"stride must be a positive int .*got 2\.0$"),
    ("padding-negative", dict(padding=-1), ValueError,
     r"padding must be a non-negative int, a pair of them \(h, w\) or a 4-tuple of them "
     r"\(top, bottom, left, right\) .*got -1$"),
    ("padding-negative-in-4-tuple", dict(padding=(0, 1, -1, 0)), ValueError,
     r"padding must be a non-negative int, .*got \(0, 1, -1, 0\)$"),
    ("padding-same", dict(padding="same"), TypeError,
     r"padding must be a non-negative int, .*got 'same'$"),
    ("padding-3-tuple", dict(padding=(1, 1, 1)), ValueError, r"padding must be .*got \(1, 1, 1\)"),
    ("output_padding-negative", dict(output_padding=(0, -1)), ValueError,
     r"output_padding must be a non-negative int .*got \(0, -1\)$"),
    ("output_padding-bool", dict(output_padding=True), TypeError,
     r"output_padding must be a non-negative int .*got True$"),
    ("output_padding-equals-stride", dict(output_padding=2), ValueError,
     r"output_padding must be smaller than stride or dilation, got output_padding=\(2, 2\) "
     r"for stride=\(2, 2\) and dilation=\(1, 1\)"),
    ("output_padding-stride-1", dict(stride=1, output_padding=(0, 1)), ValueError,
     r"output_padding must be smaller .*output_padding=\(0, 1\) for stride=\(1, 1\)"),
    ("output_padding-at-dilation", dict(stride=1, dilation=2, output_padding=2), ValueError,
     r"output_padding must be smaller .*and dilation=\(2, 2\)"),
    ("dilation-zero", dict(dilation=0), ValueError, r"dilation must be a positive int .*got 0$"),
    ("groups-zero", dict(groups=0), ValueError, r"groups must be a positive int .*got 0$"),
    ("groups-float", dict(groups=1.0), TypeError, r"groups must be a positive int .*got 1\.0$"),
    ("groups-not-dividing", dict(groups=3), ValueError,
     r"input channels \(4\) must be divisible by groups \(3\)"),
    ("padding-crops-everything", dict(padding=4), ValueError,
     r"output size would be \(-1, -1\): padding \(top, bottom, left, right\) \(4, 4, 4, 4\) "
     r"crops away the whole uncropped output \(7, 7\)"),
    ("padding-4-tuple-crops-everything", dict(padding=(0, 7, 0, 0)), ValueError,
     r"output size would be \(0, 7\): padding \(top, bottom, left, right\) \(0, 7, 0, 0\)"),
    ("stride-2**31", dict(stride=2**31), ValueError, r"stride .*at most 2\*\*31 - 1\), got"),
]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("overrides, exc, pattern", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_rejects_bad_arguments_before_any_kernel(monkeypatch, op, overrides, exc, pattern):
    monkeypatch.setattr(F, "_kernels", KernelTripwire())
    with pytest.raises(exc, match=rf"^{op}: {pattern}"):
        getattr(F, op)(**{**_base(op), **overrides})


OWN_BAD = [
    ("conv_transpose2d", dict(bias=np.zeros(4)), ValueError,
     r"bias must have shape \(3,\) \(weight's C_out/groups times groups\), got \(4,\)"),
    ("conv_transpose2d", dict(bias=np.zeros((1, 3))), ValueError,
     r"bias must be a 1-D \(C_out,\) array, got shape \(1, 3\)"),
    ("conv_transpose2d", dict(bias=np.zeros(3, np.float32)), TypeError,
     r"bias has dtype float32 but x has dtype float64"),
    ("conv_transpose2d_backward", dict(grad_output=np.zeros((2, 3, 8, 8))), ValueError,
     r"grad_output must have the output's shape \(2, 3, 7, 7\), got \(2, 3, 8, 8\)"),
    ("conv_transpose2d_backward", dict(output_padding=1), ValueError,
     r"grad_output must have the output's shape \(2, 3, 8, 8\), got \(2, 3, 7, 7\)"),
    ("conv_transpose2d_backward", dict(grad_output=np.zeros((2, 3, 7, 7), np.float32)),
     TypeError, r"grad_output has dtype float32 but x has dtype float64"),
]


@pytest.mark.parametrize("op, overrides, exc, pattern", OWN_BAD)
def test_rejects_bad_bias_and_grad_output(monkeypatch, op, overrides, exc, pattern):
    monkeypatch.setattr(F, "_kernels", KernelTripwire())
    with pytest.raises(exc, match=rf"^{op}: .*{pattern}"):
        getattr(F, op)(**{**_base(op), **overrides})


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_base_arguments_are_valid(op, dtype):
    out = getattr(F, op)(**_base(op, dtype=dtype))
    assert all(o.dtype == dtype for o in (out if isinstance(out, tuple) else (out,)))


# ---- nn.ConvTranspose2d --------------------------------------------------------------------------

LAYERS = {  # id: (args, kwargs, input shape, output_size for forward or None)
    "plain": ((3, 4, 3), {}, (2, 3, 4, 4), None),
    "up-s2-op1": ((4, 6, 3), dict(stride=2, padding=1, output_padding=1), (2, 4, 3, 5), None),
    "grouped-dilated-rect-nobias": ((4, 6, (3, 2)), dict(stride=(2, 1), padding=(1, 0),
                                                           groups=2, bias=False, dilation=(1, 2)),
                                    (1, 4, 4, 3), None),
    "output_size": ((3, 2, 3), dict(stride=3, padding=1), (2, 3, 3, 4), (9, 11)),
    "output_size-4d": ((2, 2, 4), dict(stride=2, padding=1), (1, 2, 3, 3), (1, 2, 7, 6)),
    "padding-4-tuple-output_size": ((2, 3, 3), dict(stride=2, padding=(1, 0, 0, 2)),
                                    (1, 2, 3, 4), (7, 7)),
}


@pytest.mark.parametrize("args, kwargs, shape, output_size", list(LAYERS.values()),
                         ids=list(LAYERS))
def test_layer_gradients_match_finite_differences(args, kwargs, shape, output_size):
    rng = np.random.default_rng(0)
    init.manual_seed(0)
    layer = nn.ConvTranspose2d(*args, **kwargs, dtype=np.float64)
    x = rng.standard_normal(shape)
    y = layer(x, output_size)
    assert output_size is None or y.shape[2:] == tuple(output_size[-2:])
    weights = rng.standard_normal(y.shape)
    loss = lambda: float(np.sum(layer(x, output_size) * weights))  # noqa: E731
    loss()
    layer.zero_grad()
    grad_x = layer.backward(weights)
    np.testing.assert_allclose(grad_x, numerical_gradient(loss, x), rtol=1e-5, atol=1e-7)
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, numerical_gradient(loss, p.data), rtol=1e-5,
                                   atol=1e-7, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("args, kwargs, shape, output_size",
                         [c for c in LAYERS.values() if len(pair(c[1].get("padding", 0))) == 2],
                         ids=[k for k, c in LAYERS.items()
                              if len(pair(c[1].get("padding", 0))) == 2])
def test_layer_matches_torch(args, kwargs, shape, output_size, dtype):
    """torch.nn.ConvTranspose2d built from the same arguments, its weights copied: outputs, the
    input gradient and the parameter gradients; state_dict keys, order and shapes."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.ConvTranspose2d(*args, **kwargs).to(
        {np.float32: torch.float32, np.float64: torch.float64}[dtype])
    mine = nn.ConvTranspose2d(*args, **kwargs, dtype=dtype)
    assert {k: a.shape for k, a in mine.state_dict().items()} == \
        {k: tuple(t.shape) for k, t in theirs.state_dict().items()}
    assert list(mine.state_dict()) == list(theirs.state_dict())
    mine.load_state_dict({k: t.detach().numpy() for k, t in theirs.state_dict().items()})
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = theirs(tx, output_size)
    y = mine(x, output_size)
    gy = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(gy))
    grad_x = mine.backward(gy)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), **tol)
    for name, p in mine.named_parameters():
        np.testing.assert_allclose(p.grad, getattr(theirs, name).grad.numpy(), **tol,
                                   err_msg=name)


def test_layer_default_initialisation_matches_torchs():
    """kaiming_uniform_(a=sqrt(5)) with fan_in = C_out/groups * kH * kW (the weight's second
    dim, as PyTorch counts it), the bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    torch = pytest.importorskip("torch")
    args = (64, 32, 4)
    torch.manual_seed(0)
    init.manual_seed(0)
    theirs, mine = torch.nn.ConvTranspose2d(*args, groups=2), nn.ConvTranspose2d(*args, groups=2)
    bound = 1 / np.sqrt(16 * 4 * 4)
    for name, p in mine.named_parameters():
        their = getattr(theirs, name).detach().numpy()
        assert p.shape == their.shape and p.dtype == their.dtype, name
        assert bound * 0.8 < np.abs(p.data).max() <= bound
        assert np.abs(their).max() <= bound
    assert mine.weight.data.std() == pytest.approx(theirs.weight.detach().numpy().std(), rel=0.05)


def test_layer_repr_dtype_and_backward_before_forward():
    layer = nn.ConvTranspose2d(4, 2, 3, stride=2, output_padding=1, bias=False)
    assert repr(layer) == ("ConvTranspose2d(4, 2, kernel_size=(3, 3), stride=(2, 2), "
                           "padding=(0, 0), output_padding=(1, 1), dilation=(1, 1), groups=1, "
                           "bias=False)")
    with pytest.raises(RuntimeError, match="ConvTranspose2d.backward called before forward"):
        layer.backward(np.ones((1, 2, 8, 8), np.float32))
    assert layer.weight.dtype == np.float32
    x = np.ones((1, 4, 3, 3), np.float64)
    with pytest.raises(TypeError, match="conv_transpose2d: .*dtype"):
        layer(x)  # no silent promotion
    assert layer.to(np.float64)(x).dtype == np.float64


def test_layer_output_size_keeps_its_output_padding_for_backward():
    """backward uses the output_padding the forward pass chose from output_size."""
    layer = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((1, 2, 4, 4))
    y = layer(x, output_size=(8, 8))
    assert y.shape == (1, 3, 8, 8)
    gx = layer.backward(np.ones_like(y))
    expected = F.conv_transpose2d_backward(np.ones_like(y), x, layer.weight.data, 2, 1, 1)[0]
    np.testing.assert_array_equal(gx, expected)


@pytest.mark.parametrize("output_size", [(8, 7), [8, 7], (1, 3, 8, 7), np.array([8, 7]),
                                         np.array([1, 3, 8, 7], np.int32)],
                         ids=["tuple", "list", "tuple-4", "array", "array-4-int32"])
def test_layer_output_size_forms(output_size):
    """Any sequence of 2 or 4 ints, a 1-D integer array too (PyTorch takes one, e.g.
    ``np.array(skip.shape)``), gives the same output."""
    layer = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, dtype=np.float64)
    x = np.random.default_rng(3).standard_normal((1, 2, 4, 4))
    expected = F.conv_transpose2d(x, layer.weight.data, layer.bias.data, 2, 1, (1, 0))
    assert expected.shape == (1, 3, 8, 7)
    np.testing.assert_array_equal(layer(x, output_size), expected)


# (in, out, kernel, keyword arguments, input H x W): each layer tried at every output_size from
# one below its smallest to one above its largest
OUTPUT_SIZE_SWEEP = {
    "stride3-pad1": ((2, 3, 3), dict(stride=3, padding=1), (3, 2)),
    "dilation-past-stride": ((2, 2, 3), dict(stride=(1, 2), dilation=3), (2, 3)),
    "rect-grouped": ((4, 2, (2, 4)), dict(stride=(2, 4), padding=(1, 2), groups=2), (1, 3)),
    "crops-to-zero-or-less": ((2, 2, 1), dict(stride=3, padding=1), (1, 1)),
}


@pytest.mark.parametrize("args, kwargs, hw", list(OUTPUT_SIZE_SWEEP.values()),
                         ids=list(OUTPUT_SIZE_SWEEP))
def test_layer_every_output_size_as_torch(args, kwargs, hw):
    """Every output_size PyTorch's layer takes gives its output (float64, copied weights);
    every one it refuses is a ValueError here (PyTorch: a ValueError out of the range, a
    RuntimeError for a size of 0 in it)."""
    torch = pytest.importorskip("torch")
    theirs = torch.nn.ConvTranspose2d(*args, **kwargs).double()
    mine = nn.ConvTranspose2d(*args, **kwargs, dtype=np.float64)
    mine.load_state_dict({k: t.detach().numpy() for k, t in theirs.state_dict().items()})
    x = np.random.default_rng(4).standard_normal((2, args[0], *hw))
    stride, dilation = pair(kwargs["stride"]), pair(kwargs.get("dilation", 1))
    kernel, padding = pair(args[2]), pair(kwargs.get("padding", 0))
    smallest = [(n - 1) * s - 2 * p + d * (k - 1) + 1
                for n, s, p, d, k in zip(hw, stride, padding, dilation, kernel)]
    reach = [low + s + 1 for low, s in zip(smallest, stride)]
    accepted = 0
    for size in np.ndindex(*reach):
        try:
            expected = theirs(torch.from_numpy(x), list(size)).detach().numpy()
        except (ValueError, RuntimeError):
            with pytest.raises(ValueError, match=r"^ConvTranspose2d: output_size"):
                mine(x, size)
            continue
        accepted += 1
        np.testing.assert_allclose(mine(x, size), expected, rtol=1e-12, atol=1e-12)
    # output_padding 0 .. stride - 1 each way, less the sizes below 1
    assert accepted == np.prod([low + s - max(low, 1) for low, s in zip(smallest, stride)])


LAYER_ERRORS = [  # (constructor call, exception, message pattern)
    (lambda: nn.ConvTranspose2d(0, 4, 3), ValueError,
     "^ConvTranspose2d: in_channels must be a positive int"),
    (lambda: nn.ConvTranspose2d(3, 4, 3, groups=2), ValueError, r"divisible by groups \(2\)"),
    (lambda: nn.ConvTranspose2d(4, 4, (3, 0)), ValueError,
     r"^ConvTranspose2d: kernel_size must be a positive int .*got \(3, 0\)"),
    (lambda: nn.ConvTranspose2d(4, 4, 3, output_padding=-1), ValueError,
     "^ConvTranspose2d: output_padding must be a non-negative int"),
    (lambda: nn.ConvTranspose2d(4, 4, 3, padding="same"), TypeError,
     "^ConvTranspose2d: padding must be a non-negative int, .*got 'same'"),
    (lambda: nn.ConvTranspose2d(4, 4, 3, padding_mode="reflect"), ValueError,
     r"^ConvTranspose2d: padding_mode must be 'zeros' .*got 'reflect'"),
    (lambda: nn.ConvTranspose2d(4, 4, 3, dtype=np.int32), TypeError,
     "^ConvTranspose2d: dtype must be float32"),
    (lambda: nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1)(np.ones((1, 4, 3, 3), np.float32),
                                                             output_size=(7, 5)),
     ValueError, r"^ConvTranspose2d: output_size \(7, 5\) must lie between \(5, 5\) and \(6, 6\) "
                 r"for an input of size \(3, 3\), got \(7, 5\)"),
    # a sequence of the wrong length is a wrong value, as in PyTorch (ValueError)
    (lambda: nn.ConvTranspose2d(4, 4, 3)(np.ones((1, 4, 3, 3), np.float32), output_size=(5,)),
     ValueError,
     r"^ConvTranspose2d: output_size must be \(OH, OW\) or \(N, C, OH, OW\), got \(5,\)"),
    (lambda: nn.ConvTranspose2d(4, 4, 3)(np.ones((1, 4, 3, 3), np.float32),
                                         output_size=[1, 5, 5]),
     ValueError, r"^ConvTranspose2d: output_size must be .*got \[1, 5, 5\]$"),
    (lambda: nn.ConvTranspose2d(4, 4, 3)(np.ones((1, 4, 3, 3), np.float32), output_size=()),
     ValueError, r"^ConvTranspose2d: output_size must be .*got \(\)$"),
    (lambda: nn.ConvTranspose2d(4, 4, 3)(np.ones((1, 4, 3, 3), np.float32), output_size=5),
     TypeError, "^ConvTranspose2d: output_size must be .*got 5$"),
    (lambda: nn.ConvTranspose2d(4, 4, 3, stride=2)(np.ones((1, 4, 3, 3), np.float32),
                                                   output_size=np.array([1, 4, 9, 6])),
     ValueError, r"^ConvTranspose2d: output_size \(9, 6\) must lie between \(7, 7\) and "
                 r"\(8, 8\) for an input of size \(3, 3\), got \(1, 4, 9, 6\)$"),
    (lambda: nn.ConvTranspose2d(4, 4, 3)(np.ones((1, 4, 3, 3), np.float32),
                                         output_size=np.array([5.0, 5.0])),
     TypeError, r"^ConvTranspose2d: output_size must be .*got array\(\[5\., 5\.\]\)$"),
    (lambda: nn.ConvTranspose2d(4, 4, 3)(np.ones((4, 3, 3), np.float32), output_size=(5, 5)),
     ValueError, r"^ConvTranspose2d: x must be a 4-D \(N, C_in, H, W\) array"),
    (lambda: nn.ConvTranspose2d(4, 4, 3, stride=2, output_padding=2)(
        np.ones((1, 4, 3, 3), np.float32)), ValueError,
     "^conv_transpose2d: output_padding must be smaller than stride or dilation"),
]


@pytest.mark.parametrize("call, exc, pattern", LAYER_ERRORS)
def test_bad_layer_arguments_raise(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


@pytest.mark.parametrize("documented", [F.conv_transpose2d, F.conv_transpose2d_backward,
                                        nn.ConvTranspose2d], ids=lambda f: f.__name__)
def test_docstring_examples_run(documented):
    """The Examples sections run and print what they show (python -m doctest's check)."""
    tests = doctest.DocTestFinder(recurse=False).find(documented, globs={})
    assert sum(len(t.examples) for t in tests) >= 3
    runner = doctest.DocTestRunner()
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
