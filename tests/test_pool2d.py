"""Pooling (max, average, L^p) and relu kernels against fastconv.reference, on every ISA path.

Max pooling must match exactly (values and int64 indices, ties, NaN, -inf); average and L^p
pooling within the dtype's tolerance for a kH*kW-term sum. Padding in every form: PyTorch's int
and pair, 4-tuples (top, bottom, left, right) of any size (windows wholly in the padding
included), 'same' and 'valid'. Every case runs in both layouts, NCHW and channels last
(data_format='NHWC', its own kernels), on the same values.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DTYPES, assert_close, assert_same_for_1_and_2_threads, padding4, pair, random
from hypothesis import given
from hypothesis import strategies as st

import fastconv
import fastconv.functional as F
from fastconv import reference as ref

# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = {
    "2x2s2": (2, 3, 8, 8, 2, None, 0, 1, False),
    "3x3s2p1": (2, 3, 9, 9, 3, 2, 1, 1, False),
    "3x3s2p1-ceil": (2, 2, 10, 10, 3, 2, 1, 1, True),
    "3x3s1": (1, 2, 6, 7, 3, 1, 0, 1, False),
    "rect-kernel": (2, 2, 9, 8, (3, 2), (2, 1), (1, 0), 1, False),
    "rect-stride-ceil": (1, 3, 11, 7, 2, (3, 2), 0, 1, True),
    "dilation2": (2, 2, 10, 10, 3, 1, 1, 2, False),
    "dilation-rect-ceil": (1, 2, 13, 11, (2, 3), (2, 3), (1, 1), (3, 2), True),
    "kernel1": (1, 2, 5, 5, 1, 1, 0, 1, False),
    "kernel1-stride2": (1, 2, 5, 5, 1, 2, 0, 1, True),
    "input-1x1": (2, 3, 1, 1, 1, 1, 0, 1, False),
    "input-1x1-pad": (2, 3, 1, 1, 2, 1, 1, 1, True),
    "global": (2, 4, 7, 7, 7, 1, 0, 1, False),
    "big-kernel-pad": (1, 2, 12, 12, 5, 3, 2, 1, True),
    "batch0": (0, 3, 6, 6, 2, 2, 0, 1, False),
    "batch1-wide": (1, 1, 3, 40, (1, 3), (1, 2), (0, 1), 1, True),
    # rows of several 16-output blocks plus a remainder (the kernels compute whole blocks)
    "2x2s2-long-rows": (2, 3, 6, 70, 2, None, 0, 1, False),
    # odd sizes in ceil mode: a last column of one tap (a border) and a last row of one row
    "2x2s2-long-rows-ceil": (2, 3, 7, 67, 2, None, 0, 1, True),
    # one column: column 0's window (taps -1, 0, 1) is clipped on both sides, so the 3x3 stride
    # 2 path must not treat it as interior (it read the next row's element)
    "3x3s2p1-width1": (1, 2, 40, 1, 3, 2, 1, 1, False),
    "3x3s2p1-width2": (1, 2, 40, 2, 3, 2, 1, 1, True),
    "3x3s2p1-long-rows": (2, 3, 7, 67, 3, 2, 1, 1, False),
    # PyTorch 2.13 corrupts its heap on this one in backward: a dilated window lies wholly in the
    # padding. fastconv gives -inf, index -1 and no gradient there.
    "window-in-padding": (1, 1, 1, 14, (2, 3), (3, 1), (1, 0), (2, 2), True),
    # (top, bottom, left, right): asymmetric, past half the kernel, and past the whole kernel
    # (ONNX's pads allow it), so whole rows and columns of windows lie in the padding
    "pad4-asym": (2, 3, 9, 8, 3, 2, (0, 2, 1, 0), 1, False),
    "pad4-asym-ceil": (2, 2, 10, 11, 3, 2, (2, 0, 0, 1), 1, True),
    "pad4-beyond-kernel": (1, 2, 6, 7, 2, 1, (3, 2, 0, 4), 1, False),
    "pad4-dilated-ceil": (1, 2, 10, 9, 3, (2, 1), (1, 3, 2, 0), 2, True),
    # the register paths: 3x3 stride 2 with its padding column on the left only, and 2x2 stride
    # 2 with indices, a right padding column and no left one
    "pad4-3x3s2-left-long-rows": (2, 3, 7, 67, 3, 2, (1, 0, 1, 0), 1, False),
    "pad4-2x2s2-right-long-rows": (2, 3, 6, 69, 2, 2, (0, 1, 0, 1), 1, False),
    "same": (2, 3, 8, 9, 3, 1, "same", 1, False),
    "same-even-kernel-ceil": (1, 2, 7, 6, (2, 4), 1, "same", 1, True),
    "same-dilated": (1, 2, 9, 9, 3, 1, "same", 2, False),
    "valid": (2, 2, 7, 7, 3, 2, "valid", 1, True),
    # disjoint windows (span <= stride: the channels-last backward gathers): dilated with a gap
    # column between windows, and one image of 128 channels (split into channel blocks)
    "disjoint-dilated-ceil": (2, 3, 11, 10, 2, 3, (1, 0), 2, True),
    "2x2s2-channel-blocks": (1, 128, 6, 7, 2, None, 0, 1, True),
}

# (N, C, H, W, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CASES = {
    "2x2s2": (2, 3, 8, 8, 2, None, 0, False, True, None),
    "3x3s2p1": (2, 3, 9, 9, 3, 2, 1, False, True, None),
    "3x3s2p1-exclude-pad": (2, 3, 9, 9, 3, 2, 1, False, False, None),
    "ceil-include": (1, 2, 10, 10, 3, 2, 1, True, True, None),
    "ceil-exclude": (1, 2, 10, 10, 3, 2, 1, True, False, None),
    "ceil-past-padding": (1, 2, 5, 5, 2, 2, 1, True, True, None),
    "divisor": (2, 2, 7, 7, 3, 2, 1, False, True, 5),
    "divisor-negative-ceil": (1, 2, 7, 8, 2, 2, 1, True, False, -3),
    "rect": (2, 2, 9, 8, (3, 2), (2, 1), (1, 0), True, False, None),
    "kernel1": (1, 2, 4, 5, 1, 1, 0, False, True, None),
    "input-1x1": (2, 3, 1, 1, 1, 1, 0, False, True, None),
    "input-1x1-pad": (2, 3, 1, 1, 3, 1, 1, True, False, None),
    "global": (2, 4, 6, 6, 6, 1, 0, False, True, None),
    "batch0": (0, 2, 6, 6, 2, 2, 0, False, True, None),
    "2x2s2-long-rows": (2, 3, 6, 70, 2, None, 0, False, True, None),
    "3x3s2p1-long-rows-exclude": (2, 3, 7, 67, 3, 2, 1, True, False, None),
    # (top, bottom, left, right): the divisor clips a window at its own side's padding
    "pad4-asym-include": (2, 3, 9, 8, 3, 2, (0, 2, 1, 0), False, True, None),
    "pad4-asym-exclude-ceil": (2, 2, 10, 11, 3, 2, (2, 0, 0, 1), True, False, None),
    "pad4-ceil-past-bottom": (1, 2, 5, 5, 2, 2, (0, 1, 1, 0), True, True, None),
    # windows wholly in the padding: 0, whatever the divisor rule, and no gradient
    "pad4-beyond-kernel-include": (1, 2, 6, 7, 2, 1, (3, 2, 0, 4), False, True, None),
    "pad4-beyond-kernel-exclude": (1, 2, 6, 7, 2, 1, (3, 2, 0, 4), False, False, None),
    "pad4-divisor": (1, 2, 6, 7, 3, 2, (2, 0, 1, 3), True, False, 4),
    "pad4-long-rows": (2, 3, 7, 67, 3, 2, (1, 0, 1, 0), False, True, None),
    "same": (2, 3, 8, 9, 3, 1, "same", False, False, None),
    "same-even-kernel-ceil": (1, 2, 7, 6, (2, 4), 1, "same", True, True, None),
    "valid": (2, 2, 7, 7, 3, 2, "valid", True, True, None),
}

# (N, C, H, W, norm_type, kernel, stride, ceil_mode, padding)
LP_CASES = {
    "l2-2x2": (2, 3, 8, 8, 2, 2, None, False, 0),
    "l2-3x3s2-ceil": (2, 2, 9, 10, 2, 3, 2, True, 0),
    "l1": (1, 2, 6, 6, 1, 2, 2, False, 0),
    "l3-rect": (2, 2, 7, 9, 3, (2, 3), (2, 1), True, 0),
    "l1.5": (1, 2, 6, 6, 1.5, 3, 1, False, 0),
    "l2-input-1x1": (1, 2, 1, 1, 2, 1, 1, False, 0),
    "batch0": (0, 2, 6, 6, 2, 2, 2, False, 0),
    "l2-2x2-long-rows": (2, 3, 6, 70, 2, 2, None, False, 0),
    "l2-3x3s2-long-rows-ceil": (2, 2, 7, 68, 2, 3, 2, True, 0),
    # padding is fastconv's extension (zeros, counted in the window's area)
    "l2-pad1-long-rows": (2, 3, 6, 70, 2, 2, None, False, 1),
    "l3-pad-pair-ceil": (1, 2, 7, 7, 3, (3, 2), (2, 1), True, (1, 1)),
    "l2-pad4": (2, 2, 8, 9, 2, 3, 2, False, (1, 0, 2, 1)),
    "l2-pad4-ceil": (1, 2, 9, 10, 2, 3, 2, True, (0, 1, 1, 0)),
    "l1.5-pad4-beyond-kernel": (1, 2, 6, 6, 1.5, 2, 1, False, (3, 0, 0, 2)),
    "l2-same": (2, 2, 7, 8, 2, 3, 1, False, "same"),
}

IDS = ["f32", "f64"]
LAYOUTS = ["NCHW", "NHWC"]


def _in(x, data_format):
    """An NCHW array's values in data_format (C-contiguous)."""
    return x if data_format == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _ties_nan_inf(rng, shape, dtype):
    """Small integers so windows hold ties, plus sprinkled NaN and -inf; some zeros are -0.0 and
    some NaNs have their sign bit set, so ties and NaNs that compare alike differ in bits and
    only the right element (the first maximum, the last NaN) gives the expected bits."""
    x = rng.integers(-3, 4, size=shape).astype(dtype)
    mask = rng.random(shape)
    x[mask < 0.03] = np.nan
    x[mask < 0.015] = -np.nan
    x[(mask >= 0.03) & (mask < 0.06)] = -np.inf
    x[(x == 0) & (mask > 0.5)] = -0.0
    return x


def _bits(a):
    """The array's bit patterns, so -0.0 != 0.0 and NaNs compare by payload and sign."""
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _max_args(case):
    """The NCHW input shape, max_pool2d's keyword arguments and the reference's."""
    n, c, h, w, kernel, stride, padding, dilation, ceil = case
    kwargs = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
                  ceil_mode=ceil)
    ref_args = dict(kernel_size=pair(kernel), stride=pair(kernel if stride is None else stride),
                    padding=padding4(padding, kernel, dilation), dilation=pair(dilation),
                    ceil_mode=ceil)
    return (n, c, h, w), kwargs, ref_args


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("values", ["normal", "ties-nan-inf"])
@pytest.mark.parametrize("case", list(MAX_CASES.values()), ids=list(MAX_CASES))
def test_max_pool2d_matches_reference_exactly(case, values, dtype, data_format, isa):
    rng = np.random.default_rng(1)
    shape, kwargs, ref_args = _max_args(case)
    x = random(rng, shape, dtype) if values == "normal" else _ties_nan_inf(rng, shape, dtype)
    x = _in(x, data_format)
    kwargs["data_format"] = ref_args["data_format"] = data_format
    y, idx = F.max_pool2d(x, **kwargs, return_indices=True)
    ry, ridx = ref.max_pool2d(x, **ref_args)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(_bits(y), _bits(ry))
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(_bits(F.max_pool2d(x, **kwargs)), _bits(y))  # values only

    # dY with signed zeros, NaNs of both signs and -inf too: the gradient's bits are the
    # reference's (0 + -0.0 is +0.0 whether a kernel scatters or gathers)
    gy = random(rng, y.shape, dtype) if values == "normal" else _ties_nan_inf(rng, y.shape, dtype)
    expected = _bits(ref.max_pool2d_backward(gy, x, **ref_args))
    np.testing.assert_array_equal(_bits(F.max_pool2d_backward(gy, x, **kwargs)), expected)
    np.testing.assert_array_equal(_bits(F.max_pool2d_backward(gy, x, **kwargs, indices=idx)),
                                  expected)


def test_max_pool2d_window_wholly_in_padding_is_defined():
    x = np.arange(14.0).reshape(1, 1, 1, 14)
    kwargs = dict(kernel_size=(2, 3), stride=(3, 1), padding=(1, 0), dilation=(2, 2),
                  ceil_mode=True)
    y, idx = F.max_pool2d(x, **kwargs, return_indices=True)
    assert y.shape == (1, 1, 1, 10)
    assert np.all(np.isneginf(y)) and np.all(idx == -1)
    gx = F.max_pool2d_backward(np.ones_like(y), x, **kwargs, indices=idx)
    np.testing.assert_array_equal(gx, np.zeros_like(x))


# Indices a backward pass may be given besides the forward pass's own: any flat position in the
# plane is a valid target. name: (N, C, kernel, stride, padding, indices(rng, shape, H*W))
SCATTER_INDEX_CASES = {
    # every gradient to the last pixel, ahead of any window, then to the first (behind)
    "all-last": (2, 3, 3, 2, 1, lambda rng, shape, hw: np.full(shape, hw - 1)),
    "all-first": (2, 3, 2, 2, 0, lambda rng, shape, hw: np.zeros(shape, np.int64)),
    "random": (2, 5, 3, 2, 1, lambda rng, shape, hw: rng.integers(-1, hw, shape)),
    # one image of 128 channels: the channels-last pass splits them into blocks
    "random-channel-blocks": (1, 128, 2, 2, 0, lambda rng, shape, hw: rng.integers(-1, hw, shape)),
}


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("case", SCATTER_INDEX_CASES)
def test_max_pool2d_backward_scatters_any_valid_index(case, data_format, isa):
    """Each output's gradient lands on its index even outside its window, added in output order
    (small integers, so every sum is exact), and -1 passes none; the same for 1 and 2 threads."""
    N, C, kernel, stride, padding, make = SCATTER_INDEX_CASES[case]
    rng = np.random.default_rng(11)
    x = random(rng, (N, C, 9, 10), np.float32)
    y = F.max_pool2d(x, kernel, stride, padding)
    idx = make(rng, y.shape, 9 * 10).astype(np.int64)
    gy = rng.integers(1, 8, y.shape).astype(np.float32)
    expected = ref.max_pool2d_backward(gy, x, pair(kernel), pair(stride),
                                       padding4(padding, pair(kernel)), (1, 1), False, idx)
    fmt = dict(data_format=data_format)

    def call():
        return F.max_pool2d_backward(_in(gy, data_format), _in(x, data_format), kernel, stride,
                                     padding, indices=_in(idx, data_format), **fmt)

    np.testing.assert_array_equal(call(), _in(expected, data_format))
    assert_same_for_1_and_2_threads([call])


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_pool_windows_wholly_in_padding_are_defined(dtype, isa):
    """4-tuple paddings of at least the kernel put whole windows in the padding: max gives -inf,
    index -1; average (either divisor rule) and L^p give 0; none passes a gradient, and no
    division by zero happens (NumPy would warn, the kernels would give NaN)."""
    x = np.arange(1.0, 13.0, dtype=dtype).reshape(1, 1, 3, 4)
    padding = (2, 0, 0, 3)  # kernel 2, stride 1: output row 0 and the last 2 columns
    y, idx = F.max_pool2d(x, 2, 1, padding, return_indices=True)
    assert y.shape == (1, 1, 4, 6)
    empty = np.zeros(y.shape, bool)
    empty[:, :, 0] = empty[:, :, :, 4:] = True
    assert np.all(np.isneginf(y[empty])) and np.all(idx[empty] == -1)
    assert np.all(np.isfinite(y[~empty]))
    gy = np.where(empty, dtype(7), dtype(0))  # gradient only where the windows are empty
    np.testing.assert_array_equal(F.max_pool2d_backward(gy, x, 2, 1, padding), np.zeros_like(x))
    with np.errstate(all="raise"):
        for include in (True, False):
            ya = F.avg_pool2d(x, 2, 1, padding, count_include_pad=include)
            assert np.all(ya[empty] == 0) and np.all(ya[~empty] > 0)
            np.testing.assert_array_equal(
                F.avg_pool2d_backward(gy, x, 2, 1, padding, count_include_pad=include),
                np.zeros_like(x))
        yl = F.lp_pool2d(x, 2, 2, 1, padding=padding)
        assert np.all(yl[empty] == 0) and np.all(yl[~empty] > 0)
        np.testing.assert_array_equal(F.lp_pool2d_backward(gy, x, 2, 2, 1, padding=padding),
                                      np.zeros_like(x))


def _avg_args(case, data_format="NCHW"):
    n, c, h, w, kernel, stride, padding, ceil, include, divisor = case
    kwargs = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil,
                  count_include_pad=include, divisor_override=divisor, data_format=data_format)
    ref_args = (pair(kernel), pair(kernel if stride is None else stride),
                padding4(padding, kernel), ceil, include, divisor, data_format)
    return (n, c, h, w), kwargs, ref_args


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("case", list(AVG_CASES.values()), ids=list(AVG_CASES))
def test_avg_pool2d_matches_reference(case, dtype, data_format, isa):
    rng = np.random.default_rng(2)
    shape, kwargs, ref_args = _avg_args(case, data_format)
    x = _in(random(rng, shape, dtype), data_format)
    L = int(np.prod(pair(kwargs["kernel_size"])))
    y = F.avg_pool2d(x, **kwargs)
    assert_close(y, ref.avg_pool2d(x, *ref_args), L, ref.avg_pool2d(np.abs(x), *ref_args))
    gy = random(rng, y.shape, dtype)
    assert_close(F.avg_pool2d_backward(gy, x, **kwargs), ref.avg_pool2d_backward(gy, x, *ref_args),
                 L, ref.avg_pool2d_backward(np.abs(gy), x, *ref_args))


def _lp_args(case, data_format="NCHW"):
    n, c, h, w, p, kernel, stride, ceil, padding = case
    kwargs = dict(norm_type=p, kernel_size=kernel, stride=stride, ceil_mode=ceil, padding=padding,
                  data_format=data_format)
    ref_args = (p, pair(kernel), pair(kernel if stride is None else stride), ceil,
                padding4(padding, kernel), data_format)
    return (n, c, h, w), kwargs, ref_args


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("case", list(LP_CASES.values()), ids=list(LP_CASES))
def test_lp_pool2d_matches_reference(case, dtype, data_format, isa):
    rng = np.random.default_rng(3)
    shape, kwargs, ref_args = _lp_args(case, data_format)
    # positive inputs keep x**p real for fractional p; a zero window checks the zero gradient
    x = np.abs(random(rng, shape, dtype)) + dtype(0.1)
    if x.size:
        x[0, 0, :2, :2] = 0
    x = _in(x, data_format)
    L = 4 * int(np.prod(pair(kwargs["kernel_size"])))
    y = F.lp_pool2d(x, **kwargs)
    assert_close(y, ref.lp_pool2d(x, *ref_args), L)
    gy = random(rng, y.shape, dtype)
    assert_close(F.lp_pool2d_backward(gy, x, **kwargs), ref.lp_pool2d_backward(gy, x, *ref_args),
                 L, ref.lp_pool2d_backward(np.abs(gy), x, *ref_args))


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_relu_matches_reference(dtype, isa):
    rng = np.random.default_rng(4)
    x = random(rng, (3, 4, 5, 6), dtype)
    x.flat[::7] = np.nan
    x.flat[1::11] = 0
    gy = random(rng, x.shape, dtype)
    np.testing.assert_array_equal(F.relu(x), ref.relu(x))
    np.testing.assert_array_equal(F.relu_backward(gy, x), ref.relu_backward(gy, x))
    # any shape, any layout
    v = x[:, ::2, ::-1]
    np.testing.assert_array_equal(F.relu(v), ref.relu(v))


@pytest.mark.parametrize("layout", ["F", "strided", "reversed", "readonly"])
def test_pools_accept_any_memory_layout(layout):
    rng = np.random.default_rng(5)
    x = random(rng, (2, 3, 9, 9), np.float32, layout)
    c = np.ascontiguousarray(x)
    for op, kwargs in ((F.max_pool2d, dict(kernel_size=3, stride=2, padding=1)),
                       (F.avg_pool2d, dict(kernel_size=3, stride=2, padding=1)),
                       (F.lp_pool2d, dict(norm_type=2, kernel_size=2))):
        np.testing.assert_array_equal(op(x, **kwargs), op(c, **kwargs))


@pytest.mark.parametrize("data_format", LAYOUTS)
def test_pools_same_result_for_1_and_2_threads(data_format):
    rng = np.random.default_rng(6)
    x = _in(random(rng, (4, 8, 33, 33), np.float32), data_format)
    fmt = dict(data_format=data_format)

    def ones(size):
        return _in(np.ones((4, 8, size, size), np.float32), data_format)

    calls = [
        lambda: F.max_pool2d(x, 3, 2, 1, return_indices=True, **fmt),
        lambda: F.max_pool2d_backward(ones(17), x, 3, 2, 1, **fmt),
        lambda: F.avg_pool2d(x, 3, 2, 1, **fmt),
        lambda: F.avg_pool2d_backward(ones(17), x, 3, 2, 1, **fmt),
        lambda: F.lp_pool2d(x, 2, 2, **fmt),
        lambda: F.lp_pool2d_backward(ones(16), x, 2, 2, **fmt),
        lambda: F.max_pool2d(x, 3, 2, (0, 2, 1, 0), return_indices=True, **fmt),
        lambda: F.avg_pool2d_backward(ones(17), x, 3, 2, (2, 0, 1, 1), count_include_pad=False,
                                      **fmt),
        lambda: F.lp_pool2d_backward(ones(17), x, 2, 2, padding=(1, 0, 0, 1), **fmt),
    ]
    assert_same_for_1_and_2_threads(calls)


@st.composite
def pool_configs(draw):
    """PyTorch's (h, w) padding (at most half the kernel), or a 4-tuple up to one past the
    kernel, so windows may lie wholly in the padding."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if draw(st.booleans()):
        ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
        padding, pads = (ph, pw), (ph, ph, pw, pw)
    else:
        padding = pads = tuple(draw(st.integers(0, k + 1)) for k in (kh, kh, kw, kw))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - pads[0] - pads[1]), 11))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - pads[2] - pads[3]), 11))
    return ((draw(st.integers(0, 2)), draw(st.integers(1, 3)), h, w), (kh, kw), (sh, sw),
            padding, (dh, dw), draw(st.booleans()), draw(st.booleans()),
            draw(st.sampled_from(LAYOUTS)))


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@given(config=pool_configs(), seed=st.integers(0, 2**32 - 1))
def test_pools_random_configurations(dtype, config, seed):
    for name in fastconv.available_isas():
        with fastconv.use_isa(name):
            _check_random_pools(dtype, config, seed)


def _check_random_pools(dtype, config, seed):
    shape, kernel, stride, padding, dilation, ceil, include, data_format = config
    pads = padding4(padding, kernel)
    fmt = dict(data_format=data_format)
    rng = np.random.default_rng(seed)
    x = _in(_ties_nan_inf(rng, shape, dtype), data_format)
    y, idx = F.max_pool2d(x, kernel, stride, padding, dilation, ceil, return_indices=True, **fmt)
    ry, ridx = ref.max_pool2d(x, kernel, stride, pads, dilation, ceil, **fmt)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    gy = random(rng, y.shape, dtype)
    np.testing.assert_array_equal(F.max_pool2d_backward(gy, x, kernel, stride, padding, dilation,
                                                        ceil, **fmt),
                                  ref.max_pool2d_backward(gy, x, kernel, stride, pads, dilation,
                                                          ceil, **fmt))
    x = _in(random(rng, shape, dtype), data_format)
    L = kernel[0] * kernel[1]
    avg = (kernel, stride, pads, ceil, include, None)
    ya = F.avg_pool2d(x, kernel, stride, padding, ceil, include, **fmt)
    assert_close(ya, ref.avg_pool2d(x, *avg, **fmt), L, ref.avg_pool2d(np.abs(x), *avg, **fmt))
    gy = random(rng, ya.shape, dtype)
    assert_close(F.avg_pool2d_backward(gy, x, kernel, stride, padding, ceil, include, **fmt),
                 ref.avg_pool2d_backward(gy, x, *avg, **fmt), L,
                 ref.avg_pool2d_backward(np.abs(gy), x, *avg, **fmt))
    x = np.abs(x) + dtype(0.1)
    ylp = F.lp_pool2d(x, 2, kernel, stride, ceil, padding=padding, **fmt)
    assert_close(ylp, ref.lp_pool2d(x, 2, kernel, stride, ceil, pads, **fmt), 4 * L)
    gy = random(rng, ylp.shape, dtype)
    assert_close(F.lp_pool2d_backward(gy, x, 2, kernel, stride, ceil, padding=padding, **fmt),
                 ref.lp_pool2d_backward(gy, x, 2, kernel, stride, ceil, pads, **fmt), 4 * L,
                 ref.lp_pool2d_backward(np.abs(gy), x, 2, kernel, stride, ceil, pads, **fmt))
