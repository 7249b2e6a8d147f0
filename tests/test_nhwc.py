"""Channels last (data_format='NHWC', weight_format='HWIO') beyond the case tables of
test_conv2d.py and test_pool2d.py: PyTorch's own channels_last tensors, NaN and Inf, the plan's
non-finite fallbacks, gradients by finite differences, bad arguments and the nn layers.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    assert_close,
    assert_same_for_1_and_2_threads,
    numerical_gradient,
    padding4,
    pair,
)
from test_nonfinite import _sprinkled, assert_same_nonfinite

import fastconv.functional as F
from fastconv import _kernels, nn
from fastconv import _validation as v
from fastconv import reference as ref


def nhwc(a):
    """An NCHW array's values channels last (C-contiguous)."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def hwio(w):
    """OIHW weights as (kH, kW, C/groups, K)."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


# (input shape NCHW, weight shape OIHW, kwargs)
CONV = [
    ((2, 4, 9, 8), (6, 2, 3, 2), dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)),
    ((1, 3, 7, 6), (4, 3, 2, 4), dict(padding="same")),
    ((2, 3, 10, 9), (5, 3, 4, 3), dict(padding="valid", stride=3)),
    ((2, 4, 6, 6), (8, 1, 3, 3), dict(padding=(0, 2), groups=4)),
    ((2, 16, 6, 5), (16, 16, 3, 3), dict(padding=1)),  # Winograd-sized
    ((2, 5, 7, 8), (5, 1, 3, 3), dict(padding=(1, 2), stride=(2, 1), dilation=(1, 2), groups=5)),
    ((2, 6, 7, 8), (6, 2, 3, 3), dict(padding=1, groups=3)),
    ((2, 12, 7, 6), (12, 4, 3, 3), dict(padding=(1, 2), stride=(1, 2), groups=3)),
    ((1, 5, 8, 7), (3, 5, 3, 3), dict(padding=(2, 0, 1, 3), stride=2)),
]
CONV_IDS = ["grouped-dilated", "same", "valid-s3", "depthwise", "winograd", "depthwise-strided",
            "grouped-channelwise", "groups-of-4", "pad4-s2"]


# ---- PyTorch's channels_last tensors ------------------------------------------------------------

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _channels_last(torch, a, grad=False):
    """A channels_last torch tensor of an NCHW array, and its memory seen as an NHWC array."""
    t = torch.from_numpy(a).contiguous(memory_format=torch.channels_last)
    if grad:
        t.requires_grad_(True)
    view = t.detach().permute(0, 2, 3, 1).numpy()
    assert view.flags.c_contiguous  # channels_last memory is NHWC: no copy
    return t, view


def _nhwc_of(t):
    return t.detach().permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("weight_format", ["OIHW", "HWIO"])
@pytest.mark.parametrize("xs, ws, kwargs", CONV[:-1], ids=CONV_IDS[:-1])  # PyTorch: no 4-tuples
def test_conv2d_matches_torch_channels_last(torch, xs, ws, kwargs, weight_format):
    rng = np.random.default_rng(0)
    tx, x = _channels_last(torch, rng.standard_normal(xs), grad=True)
    w, b = rng.standard_normal(ws), rng.standard_normal(ws[0])
    tw, tb = torch.from_numpy(w).requires_grad_(True), torch.from_numpy(b).requires_grad_(True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, **kwargs)
    fw = w if weight_format == "OIHW" else hwio(w)
    fmt = dict(data_format="NHWC", weight_format=weight_format)
    y = F.conv2d(x, fw, b, **kwargs, **fmt)
    np.testing.assert_allclose(y, _nhwc_of(ty), rtol=1e-10, atol=1e-10)
    gy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(nchw(gy)))
    gx, gw, gb = F.conv2d_backward(gy, x, fw, **kwargs, **fmt)
    np.testing.assert_allclose(gx, _nhwc_of(tx.grad), rtol=1e-10, atol=1e-10)
    tgw = tw.grad.numpy()
    np.testing.assert_allclose(gw, tgw if weight_format == "OIHW" else hwio(tgw), rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-10, atol=1e-10)


POOL = [  # (input shape NCHW, kernel, stride, padding, dilation, ceil_mode)
    ((2, 3, 9, 9), 3, 2, 1, 1, True),
    ((1, 2, 10, 7), (3, 2), (2, 3), (1, 1), (2, 1), True),
    ((2, 5, 8, 8), 2, None, 0, 1, False),
]


@pytest.mark.parametrize("shape, k, s, p, d, ceil", POOL)
def test_pools_match_torch_channels_last(torch, shape, k, s, p, d, ceil):
    rng = np.random.default_rng(1)
    values = rng.integers(-2, 3, size=shape).astype(np.float64)  # max pooling: many ties
    tf = torch.nn.functional
    tx, x = _channels_last(torch, values, grad=True)
    ty, tidx = tf.max_pool2d(tx, k, s, p, d, ceil_mode=ceil, return_indices=True)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True, data_format="NHWC")
    np.testing.assert_array_equal(y, _nhwc_of(ty))
    np.testing.assert_array_equal(idx, _nhwc_of(tidx))  # the same flat h * W + w per plane
    gy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(nchw(gy)))
    np.testing.assert_array_equal(
        F.max_pool2d_backward(gy, x, k, s, p, d, ceil, indices=idx, data_format="NHWC"),
        _nhwc_of(tx.grad))

    if d != 1:
        return  # average and L^p pooling have no dilation
    values = np.abs(rng.standard_normal(shape))  # L^p pooling of positive values
    for name, args in (("avg_pool2d", (k, s, p, ceil, False)), ("lp_pool2d", (3.0, k, s, ceil))):
        tx, x = _channels_last(torch, values, grad=True)
        ty = getattr(tf, name)(tx, *args)
        y = getattr(F, name)(x, *args, data_format="NHWC")
        np.testing.assert_allclose(y, _nhwc_of(ty), rtol=1e-10, atol=1e-12)
        gy = rng.standard_normal(y.shape)
        ty.backward(torch.from_numpy(nchw(gy)))
        np.testing.assert_allclose(getattr(F, f"{name}_backward")(gy, x, *args, data_format="NHWC"),
                                   _nhwc_of(tx.grad), rtol=1e-10, atol=1e-12)


# ---- NaN and Inf ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("input_algorithm", [None, "direct", "col2im", "pixels"],
                         ids=["planned", "direct", "col2im", "pixels"])
@pytest.mark.parametrize("xs, ws, kwargs", CONV, ids=CONV_IDS)
def test_conv2d_nonfinite_matches_nchw_reference(xs, ws, kwargs, input_algorithm, dtype):
    """NaN and Inf give what the reference gives in NCHW (itself checked against PyTorch in
    test_nonfinite.py), forward and both gradients; the input gradient also with the algorithms
    that need no fallback forced on every geometry."""
    x, w = _sprinkled(xs, dtype, 1), _sprinkled(ws, dtype, 2, 0.05)
    b = _sprinkled(ws[:1], dtype, 3, 0.2)
    y = F.conv2d(x, w, b, **kwargs)
    gy = _sprinkled(y.shape, dtype, 4, 0.05)
    expected = (y, *F.conv2d_backward(gy, x, w, **kwargs))
    fmt = dict(data_format="NHWC", weight_format="HWIO")
    with _kernels.force_conv_algorithms(input=input_algorithm):
        got = (F.conv2d(nhwc(x), hwio(w), b, **kwargs, **fmt),
               *F.conv2d_backward(nhwc(gy), nhwc(x), hwio(w), **kwargs, **fmt))
    length = int(np.prod(ws[1:]))
    assert_same_nonfinite(nchw(got[0]), expected[0], length)
    assert_same_nonfinite(nchw(got[1]), expected[1], length)
    assert_same_nonfinite(got[2], hwio(expected[2]), gy.size // gy.shape[1])
    assert_same_nonfinite(got[3], expected[3], gy.size // gy.shape[1])


# few input channels per group, at the edges of the forward's im2col cutoff (C/groups 1, 3, 4, 5):
# strides, dilations, groups, every padding form; images of several pixel tiles, which start
# mid-row and reuse the input rows an earlier tile copied (kernel rows of 7 and 10 values: less
# and more than half an avx512 float32 vector)
FEW = [
    ((2, 1, 9, 8), (5, 1, 5, 5), dict(padding=2)),
    ((1, 3, 10, 9), (37, 3, 3, 3), dict(padding=(2, 0, 1, 3), stride=(2, 1))),
    ((2, 4, 8, 9), (6, 4, 3, 2), dict(padding="same", dilation=(2, 3))),
    ((1, 5, 9, 11), (7, 5, 3, 3), dict(padding="valid", stride=2, dilation=(1, 2))),
    ((2, 6, 7, 8), (10, 3, 3, 3), dict(padding=1, groups=2)),
    ((2, 1, 31, 30), (8, 1, 3, 7), dict(padding=(1, 3))),
    ((2, 2, 30, 29), (37, 2, 3, 5), dict(padding=(1, 2))),
]
FEW_IDS = ["c1-5x5", "c3-k37-pad4-strided", "c4-same-dilated", "c5-valid-s2-dilated",
           "c3-per-group", "c1-3x7-tiles", "c2-k37-tiles"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, ws, kwargs", CONV + FEW, ids=CONV_IDS + FEW_IDS)
def test_im2col_forward_is_direct_bit_for_bit(xs, ws, kwargs, dtype, isa):
    """The im2col forward sums what direct sums, in the same order: the same result bit for bit,
    with NaN and Inf in x, w and the bias too, and that is the NCHW pass's (test_nonfinite.py
    checks that against the reference)."""
    x, w = _sprinkled(xs, dtype, 11), _sprinkled(ws, dtype, 12, 0.05)
    b = _sprinkled(ws[:1], dtype, 13, 0.2)
    fmt = dict(data_format="NHWC", weight_format="HWIO")
    got = {}
    for algorithm in ("im2col", "direct"):
        with _kernels.force_conv_algorithms(forward=algorithm):
            got[algorithm] = F.conv2d(nhwc(x), hwio(w), b, **kwargs, **fmt)
    np.testing.assert_array_equal(got["im2col"], got["direct"])
    assert_same_nonfinite(nchw(got["im2col"]), F.conv2d(x, w, b, **kwargs), int(np.prod(ws[1:])))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool2d_nonfinite_matches_nchw(dtype):
    x = _sprinkled((2, 3, 9, 8), dtype, 5, 0.2)
    x[0, 0, :3, :3] = np.nan
    x[0, 1, :3, :3] = -np.inf
    x[1, 0, 2:5, 2:5] = np.inf
    kwargs = dict(kernel_size=3, stride=2, padding=1)
    y, idx = F.max_pool2d(x, **kwargs, return_indices=True)
    yn, idxn = F.max_pool2d(nhwc(x), **kwargs, return_indices=True, data_format="NHWC")
    np.testing.assert_array_equal(nchw(yn), y)
    np.testing.assert_array_equal(nchw(idxn), idx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [3, 8, 17, 64, 80, 133])
def test_max_pool2d_values_in_channel_blocks_match_nchw(channels, dtype, isa):
    """Without indices the channels-last max pool folds a window's taps in registers over
    blocks of four 64-byte vectors of channels, then single vectors, then one vector ending at
    channel C (overlapping the one before); below one vector (3; 8 float32), and for windows of
    over 64 taps inside (9 x 9), the plain loops: each channel still in scan order, so the NCHW
    pass's values bit for bit (the same NaN, signed zero or infinity taken). With indices (the
    other loop, with the same prefetch one output row ahead, across images) the same values and
    NCHW's indices."""
    x = _sprinkled((2, channels, 9, 8), dtype, 7, 0.2)
    x[0, ::2, 4:6, 4:6] = -0.0
    x[1, 1::2, :3, :3] = np.nan
    x[1, ::3, 5:, 5:] = 1.5  # ties: the first maximum
    bits = np.uint32 if dtype == np.float32 else np.uint64
    for kwargs in (dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, dilation=2),
                   dict(kernel_size=2, stride=2, ceil_mode=True),
                   dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                   dict(kernel_size=9, stride=4, padding=4)):
        got = nchw(F.max_pool2d(nhwc(x), **kwargs, data_format="NHWC"))
        expected, idx = F.max_pool2d(x, **kwargs, return_indices=True)
        np.testing.assert_array_equal(got.view(bits), expected.view(bits))
        got, got_idx = F.max_pool2d(nhwc(x), **kwargs, return_indices=True, data_format="NHWC")
        np.testing.assert_array_equal(nchw(got).view(bits), expected.view(bits))
        np.testing.assert_array_equal(nchw(got_idx), idx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pools_same_for_1_and_2_threads(dtype, isa):
    """The channels-last pools' register folds, with the forward passes' prefetch one output row
    ahead (across images where a thread's rows end an image) and the max-pool backward's: bit
    for bit the same on 1 and 2 threads, 80 channels (vector blocks and an overlapping tail)."""
    x = _sprinkled((4, 28, 27, 80), dtype, 9, 0.05)
    fmt = dict(data_format="NHWC")
    for g in ((3, 2, 1), (2, 2, 0)):
        y, idx = F.max_pool2d(x, *g, return_indices=True, **fmt)
        gy = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
        assert_same_for_1_and_2_threads([
            lambda g=g: F.max_pool2d(x, *g, **fmt),
            lambda g=g: F.max_pool2d(x, *g, return_indices=True, **fmt),
            lambda g=g, gy=gy, idx=idx: F.max_pool2d_backward(gy, x, *g, indices=idx, **fmt),
            lambda g=g: F.avg_pool2d(x, *g, True, **fmt),
            lambda g=g: F.lp_pool2d(np.abs(x), 2, *g[:2], True, **fmt)])


def _scan_order_sums(x, k, s, p, out_hw, square):
    """Channels-last window sums, 0 + f(x) tap by tap in row-major scan order in x's dtype (an
    IEEE add per tap, as the kernels' vector and plain loops), and each window's taps inside."""
    N, H, W, C = x.shape
    sums = np.zeros((N,) + out_hw + (C,), x.dtype)
    count = np.zeros(out_hw, np.int64)
    for oh in range(out_hw[0]):
        for ow in range(out_hw[1]):
            rows = range(max(oh * s - p, 0), min(oh * s - p + k, H))
            cols = range(max(ow * s - p, 0), min(ow * s - p + k, W))
            for h in rows:
                for w in cols:
                    v = x[:, h, w, :]
                    sums[:, oh, ow, :] = sums[:, oh, ow, :] + (v * v if square else v)
            count[oh, ow] = len(rows) * len(cols)
    return sums, count


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [3, 8, 17, 64, 80, 133])
def test_avg_lp_pool2d_sums_in_scan_order(channels, dtype, isa):
    """The channels-last average and L2 pools sum a window's taps in registers over blocks of
    vectors of channels (a last vector overlapping the one before; below one vector, the plain
    loops), in scan order from 0 like the plain loops: bit for bit the scan-order sums, divided
    by the count inside (count_include_pad=False) or square-rooted, at padding, ceil_mode's
    partial windows and channel tails."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 8, channels)).astype(dtype)
    bits = np.uint32 if dtype == np.float32 else np.uint64
    for k, s, p, ceil in ((3, 2, 1, True), (2, 2, 0, True), (3, 1, 0, False)):
        got = F.avg_pool2d(x, k, s, p, ceil, False, data_format="NHWC")
        sums, count = _scan_order_sums(x, k, s, p, got.shape[1:3], False)
        expected = sums / count[:, :, None].astype(dtype)
        np.testing.assert_array_equal(got.view(bits), expected.view(bits))
    for k, s in ((3, 2), (2, 2)):  # whole windows: sqrt of the sum of squares
        got = F.lp_pool2d(x, 2, k, s, data_format="NHWC")
        sums, _ = _scan_order_sums(x, k, s, 0, got.shape[1:3], True)
        np.testing.assert_array_equal(got.view(bits), np.sqrt(sums).view(bits))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_input_gradient_blocks_equal_rows(dtype):
    """Stride 1, one group: the direct input gradient multiplies a task's input rows in panels
    across rows where its dY rows are finite, row by row where not (the panels meet zero
    weights); the input rows a NaN does not reach are bit for bit the same either way."""
    rng = np.random.default_rng(11)
    w = rng.standard_normal((37, 3, 3, 3)).astype(dtype)
    gy = rng.standard_normal((8, 9, 19, 37)).astype(dtype)
    fmt = dict(padding=1, data_format="NHWC")
    with _kernels.force_conv_algorithms(input="direct"):
        finite = F.conv2d_input((8, 9, 19, 3), w, gy, **fmt)
        gy[0, -1, 0, 0] = np.nan  # reaches input rows 7 and 8, columns 0 and 1, of image 0
        got = F.conv2d_input((8, 9, 19, 3), w, gy, **fmt)
    np.testing.assert_array_equal(got[0, :-2], finite[0, :-2])
    np.testing.assert_array_equal(got[1:], finite[1:])
    assert np.isnan(got[0, -2:, :2]).all() and not np.isnan(got[0, -2:, 2:]).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_direct_input_gradient_in_row_blocks(dtype, isa):
    """A strided stem's direct input gradient packs at most direct_input_pack_bytes of dY rows
    per task: here half an image's are more, so an image runs as several row blocks, each
    packing the dY rows it shares with the next again; against the reference, and bit for bit
    on 1 and 2 threads (each input row's sums are its own, whatever block it falls in)."""
    rng = np.random.default_rng(19)
    w = rng.standard_normal((384, 3, 7, 7)).astype(dtype)
    gy = rng.standard_normal((2, 32, 32, 384)).astype(dtype)
    nr = _kernels.tuning(isa, dtype)["nr"]
    row_bytes = -(-32 // nr) * nr * 384 * gy.itemsize  # one dY row's packed panels
    assert 16 * row_bytes > _kernels.tuning(isa, dtype)["direct_input_pack_bytes"]
    fmt = dict(stride=2, padding=3, data_format="NHWC")
    with _kernels.force_conv_algorithms(input="direct"):
        assert_same_for_1_and_2_threads([lambda: F.conv2d_input((2, 64, 64, 3), w, gy, **fmt)])
        got = F.conv2d_input((2, 64, 64, 3), w, gy, **fmt)
    args = ((2, 2), (3, 3, 3, 3), (1, 1), 1)
    x = np.zeros((2, 3, 64, 64), dtype)
    expected = ref.conv2d_backward(nchw(gy), x, w, *args)[0]
    scale = ref.conv2d_backward(np.abs(nchw(gy)), x, np.abs(w), *args)[0]
    assert_close(nchw(got), expected, 384 * 16, scale)


# (dX shape NHWC, weight shape OIHW, kwargs): the pixels input gradient at its edges: dY rows of
# 28 and 17 pixels (16-pixel transposed blocks and MR-row tiles ragged), 9 columns (the
# half-width tile), 196 (seven NR = 32 panels, the last ragged), 37 output channels (the GEMM's
# depth no multiple of a vector), one image (row blocks, the dY rows at their edges computed in
# both), stride 2 along W (the scalar additions), rows no dY row reaches (stride 3 along H),
# dilation, padding beyond the kernel, groups
PIXELS = {
    "c1-5x5-one-image": ((1, 28, 28, 1), (32, 1, 5, 5), dict(padding=2)),
    "c3-k37-ragged": ((2, 9, 17, 3), (37, 3, 3, 3), dict(padding=1)),
    "c1-3x3-half-tile": ((2, 11, 20, 1), (8, 1, 3, 3), dict(padding=(0, 1))),
    "c4-7x7-panels": ((1, 12, 13, 4), (9, 4, 7, 7), dict(padding=3)),
    "c2-s2-dilated": ((2, 10, 11, 2), (6, 2, 3, 3), dict(padding=(2, 1), stride=(1, 2),
                                                          dilation=(2, 1))),
    "c3-rows-unreached": ((1, 13, 9, 3), (5, 3, 1, 3), dict(padding=(0, 1), stride=(3, 1))),
    "c3-pad4-beyond": ((1, 6, 7, 3), (4, 3, 2, 2), dict(padding=(3, 2, 1, 3))),
    "c3-per-group": ((2, 7, 8, 6), (10, 3, 3, 3), dict(padding=1, groups=2)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, wshape, kwargs", list(PIXELS.values()), ids=list(PIXELS))
def test_pixels_input_gradient_edges(shape, wshape, kwargs, dtype, isa):
    """The pixels input gradient gives the reference's dX, bit for bit on 1 and 2 threads (an
    element's terms summed by dY row whatever the row blocks)."""
    rng = np.random.default_rng(37)
    w = rng.standard_normal(wshape).astype(dtype)
    x = np.zeros(shape, dtype)
    gy = rng.standard_normal(F.conv2d(x, w, **kwargs, data_format="NHWC").shape).astype(dtype)
    fmt = dict(kwargs, data_format="NHWC")
    with _kernels.force_conv_algorithms(input="pixels"):
        assert_same_for_1_and_2_threads([lambda: F.conv2d_input(shape, w, gy, **fmt)])
        got = F.conv2d_input(shape, w, gy, **fmt)
    dilation = pair(kwargs.get("dilation", 1))
    args = (pair(kwargs.get("stride", 1)), padding4(kwargs["padding"], wshape[2:], dilation),
            dilation, kwargs.get("groups", 1))
    expected = ref.conv2d_backward(nchw(gy), nchw(x), w, *args)[0]
    scale = ref.conv2d_backward(np.abs(nchw(gy)), nchw(x), np.abs(w), *args)[0]
    assert_close(nchw(got), expected, wshape[0] // args[3] * wshape[2] * wshape[3], scale)


# (x shape NHWC, kwargs), 3x3 kernels: weight gradients whose 16 output channels fit one K block
# (the runs read in place; on AVX-512 float32 two MR-row blocks at a time on the half-width tile)
# and whose 40 take two or more (the runs packed): kernel-row runs of 48, 15 (a pair of blocks,
# or a pair and a single on AVX2's MR = 6) and 30 values (10 channels per group), tap runs of 8
# (dilation); every kernel more than two B panels wide and no group with as many output as input
# channels, so neither the few-tap GEMM nor the channelwise pass
WEIGHT_K_BLOCKS = {
    "c16-pad1": ((2, 7, 9, 16), dict(padding=1)),
    "c5-strided": ((3, 8, 7, 5), dict(stride=2, padding=(1, 0))),
    "c8-dilated": ((2, 9, 8, 8), dict(padding=2, dilation=(1, 2))),
    "c20-groups2": ((2, 6, 7, 20), dict(padding=1, groups=2)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, kwargs", list(WEIGHT_K_BLOCKS.values()),
                         ids=list(WEIGHT_K_BLOCKS))
def test_weight_gradient_in_place_equals_packed(shape, kwargs, dtype, isa):
    """dW of output channel k reads only dY's channel k: the first 16 of 40 output channels
    (X^T packed for several K blocks) equal, bit for bit, a 16-channel layer's (the runs read
    in place), and both the reference."""
    rng = np.random.default_rng(17)
    groups = kwargs.get("groups", 1)
    x = rng.standard_normal(shape).astype(dtype)
    w40 = (40, shape[3] // groups, 3, 3)
    gy40 = rng.standard_normal(F.conv2d(x, np.zeros(w40, dtype), **kwargs,
                                        data_format="NHWC").shape).astype(dtype)
    per_group = [np.arange(g * 20, g * 20 + 16 // groups) for g in range(groups)]
    keep = np.concatenate(per_group)  # each group's first 16 / groups of its 20 channels
    gy16 = np.ascontiguousarray(gy40[..., keep])
    fmt = dict(**kwargs, data_format="NHWC", weight_format="HWIO")
    got16 = F.conv2d_weight(x, (3, 3, shape[3] // groups, 16), gy16, **fmt)
    got40 = F.conv2d_weight(x, (3, 3, shape[3] // groups, 40), gy40, **fmt)
    np.testing.assert_array_equal(got16, got40[..., keep])
    dilation = pair(kwargs.get("dilation", 1))
    args = (pair(kwargs.get("stride", 1)), padding4(kwargs["padding"], 3, dilation), dilation,
            groups)
    expected = ref.conv2d_backward(nchw(gy16), nchw(x), np.zeros((16, *w40[1:]), dtype),
                                   *args)[1]
    scale = ref.conv2d_backward(np.abs(nchw(gy16)), np.abs(nchw(x)),
                                np.zeros((16, *w40[1:]), dtype), *args)[1]
    assert_close(got16.transpose(3, 2, 0, 1), expected, gy16.shape[0] * gy16.shape[1] *
                 gy16.shape[2], scale)


# (x shape NHWC, output channels, kwargs), 3x3 kernels: the segments' weight gradient at its
# batch chunks' edges: batches that the chunks do not divide evenly (each chunk's sums in a copy
# of dW, added in order), whose copies are transposed into OIHW 16 of dW's (channel, tap) columns
# by 16 output channels at a time (whole blocks, and ragged ones in both directions: 90 or 108
# columns, 40 or 72 channels), or added in place into HWIO; one K block per task and two or more
# (the runs read in place for up to two, packed beyond: 96 channels are three on AVX-512 float32,
# six on AVX2), on 8 x 8 images whose pixel chunks run across images and whose border pixels'
# kernel rows reach the padding; groups, strides and dilated taps
WEIGHT_CHUNKS = {
    "n5-c32-8x8": ((5, 8, 8, 32), 32, dict(padding=1)),
    "n7-c64-8x8": ((7, 8, 8, 64), 64, dict(padding=1)),
    "n3-c20-k40-groups2": ((3, 6, 7, 20), 40, dict(padding=1, groups=2)),
    "n4-c12-k72-s2": ((4, 9, 9, 12), 72, dict(stride=2, padding=(1, 0))),
    "n3-c16-k96": ((3, 5, 6, 16), 96, dict(padding=(0, 1))),
    "n2-c8-k48-dilated": ((2, 9, 8, 8), 48, dict(padding=2, dilation=(1, 2))),
}


@pytest.mark.parametrize("weight_format", ["OIHW", "HWIO"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, k, kwargs", list(WEIGHT_CHUNKS.values()), ids=list(WEIGHT_CHUNKS))
def test_weight_gradient_batch_chunks(shape, k, kwargs, dtype, weight_format, isa):
    """The reference's dW in either weight layout, the same on 1 and 2 threads; NaN and Inf
    sprinkled in x and dY give the reference's NaN and Inf."""
    rng = np.random.default_rng(23)
    groups = kwargs.get("groups", 1)
    x = rng.standard_normal(shape).astype(dtype)
    ws = (k, shape[3] // groups, 3, 3)
    gy = rng.standard_normal(F.conv2d(x, np.zeros(ws, dtype), **kwargs,
                                      data_format="NHWC").shape).astype(dtype)
    fmt = dict(**kwargs, data_format="NHWC", weight_format=weight_format)
    wshape = ws if weight_format == "OIHW" else (3, 3, ws[1], k)

    def dw(x, gy):
        got = F.conv2d_weight(x, wshape, gy, **fmt)
        return got if weight_format == "OIHW" else got.transpose(3, 2, 0, 1)

    dilation = pair(kwargs.get("dilation", 1))
    args = (pair(kwargs.get("stride", 1)), padding4(kwargs["padding"], 3, dilation), dilation,
            groups)
    length = gy.shape[0] * gy.shape[1] * gy.shape[2]
    expected = ref.conv2d_backward(nchw(gy), nchw(x), np.zeros(ws, dtype), *args)[1]
    scale = ref.conv2d_backward(np.abs(nchw(gy)), np.abs(nchw(x)), np.zeros(ws, dtype), *args)[1]
    assert_close(dw(x, gy), expected, length, scale)
    assert_same_for_1_and_2_threads([lambda: F.conv2d_weight(x, wshape, gy, **fmt)])
    xn, gyn = _sprinkled(shape, dtype, 5, 0.002), _sprinkled(gy.shape, dtype, 6, 0.002)
    expected = ref.conv2d_backward(nchw(gyn), nchw(xn), np.zeros(ws, dtype), *args)[1]
    assert_same_nonfinite(dw(xn, gyn), expected, length)


# (dX shape NHWC, weight shape OIHW, kwargs): the transposed input gradient whose forward pass of
# dY runs Winograd (24 and 20 channels) or direct (a 3x2 dilated kernel, four paddings), on one
# group (the weights read in place through a flipped, transposed view) and on two (a copy)
TRANSPOSED = [
    ((1, 6, 7, 24), (20, 24, 3, 3), dict(padding=1)),
    ((2, 7, 6, 20), (18, 20, 3, 2), dict(padding=(2, 0, 1, 1), dilation=(1, 2))),
    ((1, 6, 6, 32), (32, 16, 3, 3), dict(padding=1, groups=2)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, wshape, kwargs", TRANSPOSED,
                         ids=["winograd", "direct-dilated", "groups2"])
def test_transposed_input_gradient_reads_either_weight_layout(shape, wshape, kwargs, dtype, isa):
    """The transposed input gradient gives the reference's dX from OIHW and HWIO weights alike,
    bit for bit the same from both and on 1 and 2 threads."""
    rng = np.random.default_rng(31)
    w = rng.standard_normal(wshape).astype(dtype)
    x = np.zeros(shape, dtype)
    gy = rng.standard_normal(F.conv2d(x, w, **kwargs, data_format="NHWC").shape).astype(dtype)
    fmt = dict(kwargs, data_format="NHWC")
    with _kernels.force_conv_algorithms(input="transposed"):
        got = F.conv2d_input(shape, w, gy, **fmt)
        assert_same_for_1_and_2_threads([
            lambda: F.conv2d_input(shape, w, gy, **fmt),
            lambda: F.conv2d_input(shape, hwio(w), gy, **fmt, weight_format="HWIO")])
        np.testing.assert_array_equal(
            F.conv2d_input(shape, hwio(w), gy, **fmt, weight_format="HWIO"), got)
    args = ((1, 1), padding4(kwargs["padding"], wshape[2:], kwargs.get("dilation", (1, 1))),
            pair(kwargs.get("dilation", 1)), kwargs.get("groups", 1))
    expected = ref.conv2d_backward(nchw(gy), nchw(x), w, *args)[0]
    scale = ref.conv2d_backward(np.abs(nchw(gy)), nchw(x), np.abs(w), *args)[0]
    assert_close(nchw(got), expected, wshape[0] // args[3] * wshape[2] * wshape[3], scale)


# (pass, the algorithm forced, its fallback, which input holds the Inf and NaN, groups of the
# 16 channels): as test_nonfinite.py's, for the channels-last passes (the channelwise ones on
# depthwise, on 2-channel groups, whose shifted reads meet other groups' data, and on 4-channel
# groups, rotated within the group)
FALLBACKS = [
    ("forward", "winograd", "direct", "x", 1), ("forward", "winograd", "direct", "w", 1),
    ("input", "transposed", "col2im", "w", 1), ("forward", "depthwise", "direct", "w", 16),
    ("weight", "depthwise", "direct", "gy", 16), ("forward", "depthwise", "direct", "x", 8),
    ("input", "depthwise", "col2im", "gy", 8), ("weight", "depthwise", "direct", "gy", 8),
    ("forward", "depthwise", "direct", "w", 4), ("weight", "depthwise", "direct", "gy", 4),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("which, algorithm, fallback, holder, groups", FALLBACKS,
                         ids=[f"{w}-{a}-{h}-g{g}" for w, a, _, h, g in FALLBACKS])
def test_nonfinite_data_runs_the_plans_fallback(which, algorithm, fallback, holder, groups, dtype):
    rng = np.random.default_rng(27)
    x = rng.standard_normal((2, 6, 7, 16)).astype(dtype)
    w = rng.standard_normal((3, 3, 16 // groups, 16)).astype(dtype)
    gy = rng.standard_normal((2, 6, 7, 16)).astype(dtype)
    special = {"x": x, "w": w, "gy": gy}[holder]
    special.flat[[5, 40, 77]] = [np.inf, -np.inf, np.nan]  # 5: the first tap's or pixel's
    fmt = dict(padding=1, groups=groups, data_format="NHWC", weight_format="HWIO")

    def run(name):
        with _kernels.force_conv_algorithms(**{which: name}):
            if which == "forward":
                return F.conv2d(x, w, **fmt)
            return F.conv2d_backward(gy, x, w, **fmt)[0 if which == "input" else 1]

    np.testing.assert_array_equal(run(algorithm), run(fallback))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("which, holder", [("forward", "x"), ("input", "gy")])
def test_groups_of_4_take_nonfinite_data_without_fallback(which, holder, dtype):
    """Groups of four channels meet only their own group's data (rotations, not shifted reads):
    Inf and NaN in x (forward) or dY (input gradient) give the reference's result exactly."""
    x, gy = _sprinkled((2, 16, 6, 7), dtype, 8, 0.05), _sprinkled((2, 16, 6, 7), dtype, 9, 0.05)
    w = _sprinkled((16, 4, 3, 3), dtype, 10, 0.0)
    kwargs = dict(padding=1, groups=4)
    with _kernels.force_conv_algorithms(**{which: "depthwise"}):
        if which == "forward":
            got = F.conv2d(nhwc(x), hwio(w), **kwargs, data_format="NHWC", weight_format="HWIO")
        else:
            got = F.conv2d_input((2, 6, 7, 16), hwio(w), nhwc(gy), **kwargs, data_format="NHWC",
                                 weight_format="HWIO")
    geometry = ((1, 1), (1, 1, 1, 1), (1, 1), 4)
    expected = ref.conv2d(x, w, None, *geometry) if which == "forward" else \
        ref.conv2d_backward(gy, x, w, *geometry)[0]
    assert_same_nonfinite(nchw(got), expected, 4 * 9)


# (output pixel of a 6 x 7 output holding the Inf, NaN and -Inf, stride, dilation): the
# channelwise weight gradient checks for Inf and NaN only the dY pixels with a tap in the padding
# (which it leaves out), every border of those, and sums the rest itself
DW_WEIGHT_SPECIALS = [
    ((2, 3), 1, 1), ((0, 3), 1, 1), ((5, 3), 1, 1), ((2, 0), 1, 1), ((2, 6), 1, 1),
    ((5, 6), 1, 1), ((1, 1), 1, 2), ((1, 5), 1, 2), ((1, 2), 2, 1), ((2, 3), 2, 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [16, 8, 4])
@pytest.mark.parametrize("pixel, stride, dilation", DW_WEIGHT_SPECIALS,
                         ids=[f"{p[0]}x{p[1]}-s{s}-d{d}" for p, s, d in DW_WEIGHT_SPECIALS])
def test_channelwise_weight_gradient_nonfinite_dy(pixel, stride, dilation, groups, dtype, isa):
    """Inf and NaN in one dY pixel, inside or on a border, give the reference's weight gradient
    with the channelwise pass forced (its fallback taking only border pixels)."""
    rng = np.random.default_rng(31)
    kwargs = dict(stride=stride, padding=dilation, dilation=dilation, groups=groups)
    oh, ow = 6, 7
    h, w_ = (oh - 1) * stride + 1, (ow - 1) * stride + 1
    x = rng.standard_normal((2, 16, h, w_)).astype(dtype)
    w = rng.standard_normal((16, 16 // groups, 3, 3)).astype(dtype)
    gy = rng.standard_normal((2, 16, oh, ow)).astype(dtype)
    gy[1, [2, 7, 13], pixel[0], pixel[1]] = [np.inf, np.nan, -np.inf]
    with _kernels.force_conv_algorithms(weight="depthwise"):
        got = F.conv2d_weight(nhwc(x), (3, 3, 16 // groups, 16), nhwc(gy), **kwargs,
                              data_format="NHWC", weight_format="HWIO")
    geometry = ((stride, stride), (dilation,) * 4, (dilation, dilation), groups)
    expected = ref.conv2d_backward(gy, x, w, *geometry)[1]
    assert_same_nonfinite(got, hwio(expected), 2 * oh * ow)


# ---- gradients by finite differences -------------------------------------------------------------

@pytest.mark.parametrize("weight_format", ["OIHW", "HWIO"])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_gradients_by_finite_differences(stride, weight_format):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5, 6, 3))
    w = rng.standard_normal((3, 2, 3, 4) if weight_format == "HWIO" else (4, 3, 3, 2))
    b = rng.standard_normal(4)
    kwargs = dict(stride=stride, padding=(1, 0, 2, 1), data_format="NHWC",
                  weight_format=weight_format)
    gy = rng.standard_normal(F.conv2d(x, w, b, **kwargs).shape)

    def loss():
        return float(np.sum(F.conv2d(x, w, b, **kwargs) * gy))

    gx, gw, gb = F.conv2d_backward(gy, x, w, **kwargs)
    for grad, array in ((gx, x), (gw, w), (gb, b)):
        np.testing.assert_allclose(grad, numerical_gradient(loss, array), rtol=1e-6, atol=1e-6)


POOL_GRADS = {
    "max": (lambda x: F.max_pool2d(x, 3, 2, 1, data_format="NHWC"),
            lambda gy, x: F.max_pool2d_backward(gy, x, 3, 2, 1, data_format="NHWC")),
    "avg": (lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, data_format="NHWC"),
            lambda gy, x: F.avg_pool2d_backward(gy, x, 3, 2, 1, ceil_mode=True,
                                                data_format="NHWC")),
    "lp": (lambda x: F.lp_pool2d(x, 3.0, 2, 2, True, data_format="NHWC"),
           lambda gy, x: F.lp_pool2d_backward(gy, x, 3.0, 2, 2, True, data_format="NHWC")),
}


@pytest.mark.parametrize("kind", list(POOL_GRADS))
def test_pool_gradients_by_finite_differences(kind):
    forward, backward = POOL_GRADS[kind]
    x = np.random.default_rng(7).permutation(2 * 7 * 6 * 3).reshape(2, 7, 6, 3) / 10.0 + 0.5
    gy = np.random.default_rng(8).standard_normal(forward(x).shape)
    numeric = numerical_gradient(lambda: float(np.sum(forward(x) * gy)), x)
    np.testing.assert_allclose(backward(gy, x), numeric, rtol=1e-6, atol=1e-6)


def test_reference_nhwc_is_nchw_transposed():
    """The reference's data_format is a transposition around its NCHW definition."""
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 2, 3))
    args = ((1, 2), (1, 0, 0, 2), (1, 1), 1)
    np.testing.assert_array_equal(ref.conv2d(nhwc(x), hwio(w), None, *args, "NHWC", "HWIO"),
                                  nhwc(ref.conv2d(x, w, None, *args)))
    np.testing.assert_array_equal(
        ref.avg_pool2d(nhwc(x), (2, 2), (1, 2), (0, 1, 1, 0), True, False, None, "NHWC"),
        nhwc(ref.avg_pool2d(x, (2, 2), (1, 2), (0, 1, 1, 0), True, False, None)))


# ---- bad arguments -------------------------------------------------------------------------------

X_NHWC = np.zeros((2, 5, 5, 3), np.float32)
W_OIHW = np.zeros((4, 3, 3, 3), np.float32)

BAD = [  # (call, exception, message)
    (lambda: F.conv2d(X_NHWC, W_OIHW, data_format="NWHC"), ValueError,
     r"^conv2d: data_format must be 'NCHW' or 'NHWC', got 'NWHC'"),
    (lambda: F.conv2d(X_NHWC, W_OIHW, data_format=None), TypeError,
     r"^conv2d: data_format must be 'NCHW' or 'NHWC', got None"),
    (lambda: F.conv2d(X_NHWC, W_OIHW, data_format="NHWC", weight_format="IOHW"), ValueError,
     r"^conv2d: weight_format must be 'OIHW' or 'HWIO', got 'IOHW'"),
    (lambda: F.conv2d(nchw(X_NHWC), hwio(W_OIHW), weight_format="HWIO"), ValueError,
     r"^conv2d: weight_format='HWIO' needs data_format='NHWC'.*got data_format='NCHW'"),
    # an NCHW array called NHWC: 5 channels against weights for 3
    (lambda: F.conv2d(nchw(X_NHWC), W_OIHW, data_format="NHWC"), ValueError, r"^conv2d: "),
    # OIHW weights called HWIO: (kH, kW, C, K) = (4, 3, 3, 3) reads C = 3 but kH = 4 > 5 + 0
    (lambda: F.conv2d(X_NHWC[:, :3, :3], W_OIHW, data_format="NHWC", weight_format="HWIO"),
     ValueError, r"^conv2d: "),
    (lambda: F.conv2d_backward(np.zeros((2, 4, 3, 3), np.float32), X_NHWC, W_OIHW,
                               data_format="NHWC"), ValueError,
     r"^conv2d_backward: grad_output.*\(2, 4, 3, 3\)"),
    (lambda: F.conv2d_input(X_NHWC.shape, W_OIHW, np.zeros((2, 3, 3, 4), np.float32),
                            data_format="nhwc"), ValueError,
     r"^conv2d_input: data_format must be 'NCHW' or 'NHWC', got 'nhwc'"),
    (lambda: F.conv2d_weight(X_NHWC, W_OIHW.shape, np.zeros((2, 3, 3, 4), np.float32),
                             weight_format="HWIO"), ValueError,
     r"^conv2d_weight: weight_format='HWIO' needs data_format='NHWC'"),
    (lambda: F.max_pool2d(X_NHWC, 2, data_format="NWHC"), ValueError,
     r"^max_pool2d: data_format must be 'NCHW' or 'NHWC', got 'NWHC'"),
    (lambda: F.max_pool2d_backward(np.zeros((2, 3, 2, 2), np.float32), X_NHWC, 2,
                                   data_format="NHWC"), ValueError,
     r"^max_pool2d_backward: grad_output.*\(2, 3, 2, 2\)"),
    (lambda: F.avg_pool2d(X_NHWC, 2, data_format=1), TypeError,
     r"^avg_pool2d: data_format must be 'NCHW' or 'NHWC', got 1"),
    (lambda: F.lp_pool2d_backward(X_NHWC, X_NHWC, 2, 1, data_format="CHWN"), ValueError,
     r"^lp_pool2d_backward: data_format must be"),
    (lambda: nn.Conv2d(3, 4, 3, data_format="NWHC"), ValueError,
     r"^Conv2d: data_format must be 'NCHW' or 'NHWC', got 'NWHC'"),
    (lambda: nn.MaxPool2d(2, data_format="HWC"), ValueError,
     r"^MaxPool2d: data_format must be 'NCHW' or 'NHWC', got 'HWC'"),
]


@pytest.mark.parametrize("call, error, message", BAD, ids=range(len(BAD)))
def test_bad_layout_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---- nn layers -----------------------------------------------------------------------------------

LAYERS = [
    lambda fmt: nn.Conv2d(3, 4, 3, stride=2, padding=1, data_format=fmt),
    lambda fmt: nn.Conv2d(4, 4, 3, padding="same", groups=2, bias=False, data_format=fmt),
    lambda fmt: nn.MaxPool2d(3, 2, 1, data_format=fmt),
    lambda fmt: nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False, data_format=fmt),
    lambda fmt: nn.LPPool2d(2, 2, data_format=fmt),
]


@pytest.mark.parametrize("make", LAYERS, ids=["conv-s2", "conv-same-groups", "max", "avg", "lp"])
def test_nn_layer_nhwc_equals_nchw(make):
    """An NHWC layer with the NCHW layer's state gives its outputs and gradients, transposed;
    its state_dict is PyTorch's (OIHW weights) in either layout."""
    a, b = make("NCHW"), make("NHWC")
    b.load_state_dict(a.state_dict())
    assert {k: v.shape for k, v in a.state_dict().items()} == \
           {k: v.shape for k, v in b.state_dict().items()}
    rng = np.random.default_rng(10)
    channels = a.in_channels if isinstance(a, nn.Conv2d) else 3
    x = np.abs(rng.standard_normal((2, channels, 7, 6))).astype(np.float32)
    y = a(x)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    yb = b(nhwc(x))
    np.testing.assert_allclose(nchw(yb), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nchw(b.backward(nhwc(gy))), a.backward(gy), rtol=1e-5, atol=1e-5)
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_allclose(pb.grad, pa.grad, rtol=1e-4, atol=1e-4)
    assert "data_format='NHWC'" in repr(b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("extra", [1, "half-1", "half", "nr+5"])
def test_forward_last_narrow_k_block_is_the_split_layers(extra, dtype, isa):
    """A last K block of at most NR/2 channels runs with the block before it in one pass over the
    tile (the one-and-a-half-panel microkernel where the ISA has one): each output channel's sum
    is still its own, in the same order, so the layer equals, bit for bit, its first channels'
    and its last block's channels run as two layers (full and half-width tiles alone), NaN and
    Inf included, on direct and im2col, on 1 and 2 threads."""
    nr = _kernels.tuning(isa, dtype)["nr"]
    k = {1: nr + 1, "half-1": nr + nr // 2 - 1, "half": nr + nr // 2, "nr+5": 2 * nr + 5}[extra]
    split = (k - 1) // nr * nr  # the channels before the last block
    # a few NaN and Inf, each reaching a few pixels or one channel
    x, w = _sprinkled((2, 3, 9, 11), dtype, 21, 0.01), _sprinkled((k, 3, 3, 3), dtype, 22, 0.003)
    b = _sprinkled((k,), dtype, 23, 0.05)
    fmt = dict(padding=1, data_format="NHWC", weight_format="HWIO")
    for algorithm in ("direct", "im2col"):
        with _kernels.force_conv_algorithms(forward=algorithm):
            whole = [lambda: F.conv2d(nhwc(x), hwio(w), b, **fmt)]
            assert_same_for_1_and_2_threads(whole)
            got = whole[0]()
            first = F.conv2d(nhwc(x), hwio(w[:split]), b[:split], **fmt)
            last = F.conv2d(nhwc(x), hwio(w[split:]), b[split:], **fmt)
        np.testing.assert_array_equal(got, np.concatenate([first, last], axis=-1))
    assert_same_nonfinite(nchw(got), F.conv2d(x, w, b, padding=1), 27)


# (x shape NHWC, output channels, padding, bias): 3x3 stride-1 layers of 16 and 32 channels, which
# the forward and the (transposed) input gradient run on Winograd F(2x2, 3x3) channels last:
# res14's stages' widths at odd sizes (partial tiles at the right and bottom), batch 1 and batches
# of more images than threads (tile blocks across images), no padding (no tile crosses it),
# padding 1 (a ring of tiles read through a pointer per pixel, zeros outside) and padding 2 (tiles
# wholly in the padding); 16 output channels take the half-width GEMM tile into M rows of NR/2;
# without a bias the output transform adds the zero row
WINOGRAD_NHWC = [
    ((1, 9, 7, 16), 16, 1, True),
    ((5, 8, 11, 16), 16, 1, False),
    ((3, 7, 6, 16), 16, 0, True),
    ((1, 6, 5, 16), 32, 2, False),
    ((4, 5, 9, 32), 32, 1, True),
    ((1, 10, 7, 32), 16, 1, False),
    ((3, 6, 6, 32), 32, (2, 0), False),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, k, padding, bias", WINOGRAD_NHWC,
                         ids=["c16-n1", "c16-n5-nobias", "c16-valid", "c16-k32-pad2", "c32-n4",
                              "c32-k16", "c32-pad20"])
def test_winograd_16_32_channels_forward_and_input(shape, k, padding, bias, dtype, isa):
    """The channels-last Winograd forward and input gradient (planned so) equal the reference
    within the float tolerance of the reduction, on 1 and 2 threads bit for bit; with Inf and NaN
    in x and w they give what the NCHW reference gives (the direct fallback)."""
    c = shape[-1]
    g = v.conv_geometry("conv2d", shape, (3, 3, c, k), 1, padding, 1, 1, "NHWC", "HWIO")
    assert _kernels.conv_plan(g, "forward", dtype)[0] == "winograd"
    gi = v.conv_geometry("conv2d", (*shape[:3], k), (3, 3, k, c), 1, padding, 1, 1, "NHWC",
                         "HWIO")  # the input gradient's forward pass of dY: K in, C out
    assert _kernels.conv_plan(gi, "forward", dtype)[0] == "winograd"
    rng = np.random.default_rng(41)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((k, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype) if bias else None
    fmt = dict(padding=padding, data_format="NHWC")
    calls = [lambda: F.conv2d(x, w, b, **fmt)]
    assert_same_for_1_and_2_threads(calls)
    y = calls[0]()
    gy = rng.standard_normal(y.shape).astype(dtype)
    calls.append(lambda: F.conv2d_input(shape, w, gy, **fmt))
    assert_same_for_1_and_2_threads(calls[1:])
    gx = calls[1]()
    args = ((1, 1), padding4(padding, (3, 3), (1, 1)), (1, 1), 1)
    expected = ref.conv2d(nchw(x), w, b, *args)
    scale = ref.conv2d(np.abs(nchw(x)), np.abs(w), None if b is None else np.abs(b), *args)
    assert_close(nchw(y), expected, 9 * c, scale)
    expected = ref.conv2d_backward(nchw(gy), nchw(x), w, *args)[0]
    scale = ref.conv2d_backward(np.abs(nchw(gy)), nchw(x), np.abs(w), *args)[0]
    assert_close(nchw(gx), expected, 9 * k, scale)

    xs, ws = _sprinkled(nchw(x).shape, dtype, 42, 0.02), _sprinkled(w.shape, dtype, 43, 0.01)
    gys = _sprinkled(nchw(gy).shape, dtype, 44, 0.02)
    with np.errstate(invalid="ignore"):  # the reference's Inf - Inf
        expected = (ref.conv2d(xs, ws, b, *args), ref.conv2d_backward(gys, xs, ws, *args)[0])
    assert_same_nonfinite(nchw(F.conv2d(nhwc(xs), ws, b, **fmt)), expected[0], 9 * c)
    assert_same_nonfinite(nchw(F.conv2d_input(shape, ws, nhwc(gys), **fmt)), expected[1], 9 * k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("extra", [1, 5, "half"])
def test_forward_narrow_k_block_per_group_is_the_group_alone(extra, dtype, isa):
    """Two groups of NR + extra output channels (3 input channels each: direct; and im2col): each
    group's last K block runs with the block before it (the one-and-a-half-panel microkernel
    where the ISA has one), its ragged last vector stored up to the group's last channel and no
    further, so each group's channels equal, bit for bit, that group run alone as a layer, NaN and
    Inf included, on 1 and 2 threads."""
    nr = _kernels.tuning(isa, dtype)["nr"]
    kg = nr + (nr // 2 if extra == "half" else extra)
    x, w = _sprinkled((2, 6, 9, 10), dtype, 24, 0.01), _sprinkled((2 * kg, 3, 3, 3), dtype, 25,
                                                                   0.003)
    b = _sprinkled((2 * kg,), dtype, 26, 0.05)
    fmt = dict(padding=1, data_format="NHWC", weight_format="HWIO")
    for algorithm in ("direct", "im2col"):
        with _kernels.force_conv_algorithms(forward=algorithm):
            whole = [lambda: F.conv2d(nhwc(x), hwio(w), b, groups=2, **fmt)]
            assert_same_for_1_and_2_threads(whole)
            got = whole[0]()
            for g in range(2):
                cs, ks = slice(3 * g, 3 * g + 3), slice(kg * g, kg * g + kg)
                alone = F.conv2d(nhwc(x[:, cs]), hwio(w[ks]), b[ks], **fmt)
                np.testing.assert_array_equal(got[..., ks], alone)
    assert_same_nonfinite(nchw(got), F.conv2d(x, w, b, padding=1, groups=2), 27)
