"""conv2d forward and backward kernels against fastconv.reference, on every ISA path, with every
algorithm that can run each pass.

The case table spans the knobs (stride, padding in every form: int, pair, (top, bottom, left,
right) up to past the kernel, 'same' and 'valid', dilation, groups incl. depthwise,
kernels 1x1 to 11x11, rectangular kernels and strides, 1x1 inputs, batch 0 and 1) and the kernels'
tile edges: output channels around the register tile (MR = 4/6/8), pixels around the vector
width and the pixel tile (384), reduction lengths past one packed panel (64..512) and
input-gradient tasks whose rows cross 288. Each case runs once as the plan chooses
(src/kernels/conv2d_plan.c; tests/test_plan.py tests its choices) and once with each algorithm
forced (fastconv._kernels.force_conv_algorithms): direct, pixels, Winograd and plain loops forward,
the transposed forward pass and col2im for the input gradient, direct and plain loops for the weight
gradient, and the depthwise passes wherever C/groups = 1. Forcing an algorithm on a geometry it
cannot run is an error.

Every case also runs channels last (data_format='NHWC', with PyTorch's OIHW and TensorFlow's HWIO
weights) as the plan chooses, and with each of that layout's own algorithms forced: the indirect
GEMM and Winograd forward, the transposed forward pass and col2im for the input gradient, the
direct weight gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DTYPES, assert_close, padding4, pair, random
from hypothesis import given
from hypothesis import strategies as st

import fastconv
import fastconv.functional as F
from fastconv import _kernels
from fastconv import _validation as v
from fastconv import reference as ref

# (N, C, H, W, K, kernel, stride, padding, dilation, groups, bias)
CONV_CASES = {
    "basic3x3": (2, 3, 8, 8, 4, 3, 1, 0, 1, 1, True),
    "pad1": (2, 3, 7, 9, 5, 3, 1, 1, 1, 1, True),
    "same-odd": (1, 2, 6, 5, 3, 3, 1, "same", 1, 1, False),
    "same-even-kernel": (2, 2, 7, 6, 3, (2, 4), 1, "same", 1, 1, True),
    "same-dilated": (1, 3, 9, 8, 2, (3, 2), 1, "same", (2, 3), 1, True),
    "valid": (2, 2, 6, 7, 3, (2, 3), 1, "valid", 1, 1, True),
    "stride2": (2, 3, 9, 9, 4, 3, 2, 1, 1, 1, True),
    "stride3-rect": (1, 2, 11, 10, 3, (3, 2), (3, 2), (1, 0), 1, 1, True),
    "stride-rect-21": (2, 2, 8, 8, 3, 3, (2, 1), (0, 1), 1, 1, False),
    "dilation2": (1, 3, 10, 10, 2, 3, 1, 2, 2, 1, True),
    "dilation3-rect": (2, 2, 12, 9, 3, (2, 3), (1, 2), (3, 1), (3, 2), 1, True),
    "groups2": (2, 4, 7, 7, 6, 3, 1, 1, 1, 2, True),
    "groups3-strided": (1, 6, 9, 8, 9, (3, 2), 2, 1, 1, 3, True),
    # ResNeXt's 4 channels per group (the grouped weight gradient): grids of several vectors,
    # and strided on phases whose last channel ends the buffer
    "groups-4x4": (2, 16, 13, 19, 16, 3, 1, 1, 1, 4, True),
    "groups-4x4-s2": (2, 8, 11, 10, 12, 3, 2, 1, 1, 2, False),
    "depthwise": (2, 5, 8, 8, 5, 3, 1, 1, 1, 5, True),
    "depthwise-multiplier": (1, 4, 7, 7, 8, 3, 2, 1, 1, 4, False),
    "pointwise-1x1": (2, 16, 5, 5, 8, 1, 1, 0, 1, 1, True),
    "pointwise-tiles": (1, 8, 21, 21, 9, 1, 1, 0, 1, 1, True),  # P = 441: two tiles, a ragged end
    "1x1-stride2": (1, 4, 7, 6, 3, 1, 2, 0, 1, 1, True),
    "5x5": (2, 1, 12, 12, 6, 5, 1, 2, 1, 1, True),
    "7x7s2": (1, 3, 15, 15, 4, 7, 2, 3, 1, 1, True),
    "11x11s4": (1, 3, 27, 27, 4, 11, 4, 0, 1, 1, True),
    "1x3": (2, 3, 5, 6, 2, (1, 3), 1, (0, 1), 1, 1, True),
    "3x1": (2, 3, 6, 5, 2, (3, 1), 1, (1, 0), 1, 1, True),
    "input-1x1": (3, 4, 1, 1, 5, 1, 1, 0, 1, 1, True),
    "input-1x1-padded": (2, 3, 1, 1, 2, 3, 1, 1, 1, 1, True),
    "kernel-equals-input": (2, 2, 5, 4, 3, (5, 4), 1, 0, 1, 1, True),
    "batch1": (1, 2, 6, 6, 3, 3, 1, 1, 1, 1, True),
    "batch0": (0, 2, 6, 6, 3, 3, 1, 1, 1, 1, True),
    "mr-edges-k9": (1, 2, 6, 6, 9, 3, 1, 1, 1, 1, True),
    "mr-edges-k17": (2, 3, 5, 5, 17, 3, 1, 1, 1, 1, True),
    "many-pixels-tiles": (1, 2, 23, 23, 3, 3, 1, 1, 1, 1, True),  # P = 529 > one 384 tile
    "pixels-vector-edge": (1, 2, 5, 7, 3, 2, 1, 0, 1, 1, True),  # P = 24
    "long-reduction": (1, 40, 6, 6, 7, 3, 1, 1, 1, 1, True),  # R = 360: several KC panels
    "long-reduction-k": (1, 3, 6, 6, 140, 1, 1, 0, 1, 1, True),  # Kg = 140 > KC for dX
    "rows-past-288": (1, 33, 5, 5, 4, 3, 1, 1, 1, 1, True),  # C*9 = 297 rows
    # stride > 1 takes the col2im input-gradient path: its row blocks and K panels too
    "rows-past-288-strided": (1, 33, 7, 7, 4, 3, 2, 1, 1, 1, True),
    "long-reduction-k-strided": (1, 3, 7, 7, 140, 1, 2, 0, 1, 1, True),
    "padding-beyond-kernel": (2, 2, 5, 5, 3, 2, 1, 3, 1, 1, True),  # d*(k-1) - pad < 0
    # output rows longer than every path's KC (768 at most): the weight gradient's reduction runs
    # over the phase grid, not in segments of whole output rows
    "rows-past-kc": (1, 2, 2, 771, 3, 3, 1, 1, 1, 1, False),
    # 3x3 stride 1 with >= 16 channels each side runs Winograd F(2x2, 3x3): odd sizes (partial
    # tiles), groups, no padding, reductions past one panel, tile blocks past one
    "winograd": (2, 20, 9, 11, 24, 3, 1, 1, 1, 1, True),
    "winograd-valid-odd": (1, 16, 8, 7, 17, 3, 1, 0, 1, 1, True),
    "winograd-same-groups": (2, 32, 10, 6, 32, 3, 1, "same", 1, 2, True),
    "winograd-long-reduction": (1, 200, 5, 5, 16, 3, 1, 1, 1, 1, True),
    "winograd-many-tiles": (1, 16, 30, 31, 16, 3, 1, 1, 1, 1, True),
    "winograd-big-padding": (1, 16, 4, 4, 16, 3, 1, 3, 1, 1, True),
    # 20 tiles an image, 9 images: the first 128-tile block ends inside image 6's second tile
    # row, so the input transform starts and stops mid-row and a block spans 7 images
    "winograd-blocks-across-images": (9, 16, 7, 9, 16, 3, 1, 1, 1, 1, True),
    # batch 1, one tile block, several K blocks on every ISA: channels last, Winograd's tasks
    # split K, differently on 1 and 2 threads (THREAD_CASES)
    "winograd-batch1-k-parts": (1, 16, 6, 7, 80, 3, 1, 1, 1, 1, True),
    "big-batch-weight-chunks": (20, 2, 5, 5, 3, 3, 1, 1, 1, 1, True),  # > 16 batch chunks
    # a first layer channels last: the direct input gradient's panels run across input rows
    # (kW C = 9 tile rows each), and K = 37 and OW = 19 end past the 16 x 16 transpose blocks
    "first-layer-k37": (2, 3, 9, 19, 37, 3, 1, 1, 1, 1, True),
    # one input channel per group, three outputs each: channels last, the weight gradient's GEMM
    # turned round (output channels as tile rows, the whole kernel as columns) on every ISA, its
    # pixel chunks (840 pixels: 2 to 5 of them) ending inside an image
    "multiplier-3-many-pixels": (4, 4, 15, 14, 12, 3, 1, 1, 1, 4, True),
    # batch 1 and one tile block: Winograd and the direct forward split the output channels
    # (5 blocks of MR = 8 rows on avx512) into tasks so that both threads work
    "batch1-channel-split": (1, 32, 6, 6, 40, 3, 1, 1, 1, 1, True),
    # the direct forward reads copies by kernel column where the stride phases' grid would drop
    # more than an eighth of its pixels (here 2 of 6 columns; "5x5" and "7x7s2" too), the stride
    # phases elsewhere ("many-pixels-tiles"): strided, dilated, four paddings
    "by-tap-strided-dilated": (2, 3, 11, 9, 5, 3, 2, (1, 0, 2, 1), (1, 2), 1, True),
    # (top, bottom, left, right): no copy of the input; each pass reads the padding from the
    # geometry (the transposed input gradient flips it: top and left become d(k-1) - pad, which
    # is negative past the kernel)
    "pad4-asym": (2, 3, 7, 8, 4, 3, 1, (0, 2, 1, 0), 1, 1, True),
    # just past the channels-last forward's im2col cutoff (3 input channels per group): im2col
    # forced on 4 and 5 channels, dilated and strided, on 'same' and four paddings
    "few-channels-c4-dilated": (2, 4, 9, 8, 6, (3, 2), 1, "same", (2, 3), 1, True),
    "few-channels-c5-strided": (1, 5, 9, 11, 7, 3, 2, (2, 1, 0, 1), (1, 2), 1, False),
    "pad4-asym-strided": (2, 3, 9, 8, 5, 3, 2, (2, 0, 0, 1), 1, 1, True),
    "pad4-beyond-kernel": (1, 2, 5, 6, 3, (2, 3), 1, (4, 1, 0, 5), 1, 1, True),
    "pad4-dilated-rect": (2, 2, 9, 10, 3, (3, 2), (1, 2), (3, 0, 1, 2), (2, 3), 1, True),
    "pad4-groups": (1, 6, 8, 7, 6, 3, 1, (1, 0, 0, 2), 1, 3, False),
    "pad4-depthwise-strided": (2, 4, 9, 9, 4, 3, 2, (0, 1, 1, 0), 1, 4, True),
    "pad4-pointwise": (1, 8, 5, 6, 9, 1, 1, (0, 1, 0, 2), 1, 1, True),
    "pad4-winograd": (1, 16, 9, 8, 16, 3, 1, (0, 2, 2, 1), 1, 1, True),
    "pad4-winograd-beyond": (2, 16, 6, 7, 17, 3, 1, (3, 0, 0, 4), 1, 1, True),
    "pad4-11x11s4": (1, 3, 27, 27, 4, 11, 4, (1, 2, 2, 1), 1, 1, True),  # TF's SAME here
    "pad4-transposed-mr": (1, 9, 6, 7, 8, 3, 1, (2, 0, 1, 3), 1, 1, True),  # C/groups >= MR
    "valid-strided": (1, 2, 9, 8, 3, 3, 2, "valid", 1, 1, True),
    # one input channel per group runs the depthwise passes: grids longer than one block of
    # the tap-sum microkernel with a ragged end, strides 2 and 3 (phases with no tap), dilation,
    # a 5x5 kernel (taps split into groups for the dot microkernel), padding past the kernel,
    # and a single channel with many outputs (C = groups = 1)
    "depthwise-long-rows": (2, 3, 23, 29, 3, 3, 1, 1, 1, 3, True),
    "depthwise-s3-dilated": (1, 2, 17, 16, 4, 3, 3, (2, 1, 0, 3), (2, 1), 2, True),
    "depthwise-5x5-s2": (2, 4, 13, 12, 4, 5, 2, 2, 1, 4, False),
    "depthwise-beyond-kernel": (1, 2, 5, 6, 2, (2, 3), 1, (3, 1, 4, 0), 1, 2, True),
    "single-channel-many-outputs": (2, 1, 9, 9, 12, 3, 1, 1, 1, 1, True),
    # channels last, the depthwise passes' microkernel runs NR channels, then a vector, then
    # single channels: 90 takes all three on every vector ISA and dtype
    "depthwise-wide-strided-dilated": (2, 90, 8, 7, 90, 3, (2, 1), (1, 0, 2, 1), (1, 2), 90,
                                       True),
    # groups of four channels (rotated within each group): 60 takes NR, a vector and single
    # groups on every vector ISA and dtype but AVX2 float64 (no single groups)
    "groups-of-4-wide-strided-dilated": (2, 60, 8, 7, 60, 3, (2, 1), (1, 0, 2, 1), (1, 2), 15,
                                         True),
    # batch 1 channels last with OIHW weights: the weight gradient's tasks own a K block each
    # (whole rows of dW) on every ISA; 136 = 4 x 32 + 8, so on AVX-512 float32 the last block is
    # ragged and runs the half-width tile (every block full where NR = 8);
    # grouped, the same where a group has two K blocks or more, the row parts elsewhere
    "batch1-weight-k-split": (1, 5, 6, 7, 136, 3, 1, 1, 1, 1, True),
    "batch1-weight-k-split-groups": (1, 8, 5, 6, 40, 3, 1, 1, 1, 2, False),
    # a 1x1 layer read in place packs each KC-deep slice of its tile's panels in one pass: 400
    # channels are 2 or 3 slices (KC 192 / 384 on the vector ISAs), P = 36 ends on a panel of
    # 4 columns (the half-width tile: 32 + 4, 16 + 16 + 4); two tiles of 320 and 305 pixels
    # (305 = 9 x 32 + 17, past half a panel), 200 channels = 192 + 8 on AVX-512
    "pointwise-slices-half-panel": (2, 400, 6, 6, 12, 1, 1, 0, 1, 1, True),
    "pointwise-tiles-slices": (1, 200, 25, 25, 10, 1, 1, 0, 1, 1, False),
    # Winograd's kernel transform stages 32 input channels at a time: 70 = 32 + 32 + 6, and
    # K = 19 leaves a last K block of 3 (MR 8) or 1 (MR 6) kernels
    "winograd-chunks-ragged-k": (1, 70, 6, 6, 19, 3, 1, 1, 1, 1, True),
}


# (data_format, weight_format) by id: the layouts a case runs in
FORMATS = {"nchw": ("NCHW", "OIHW"), "nhwc": ("NHWC", "OIHW"), "nhwc-hwio": ("NHWC", "HWIO")}


def _make(case, dtype, rng, layout="C", formats=("NCHW", "OIHW")):
    """x, weight, bias, conv2d's keyword arguments and the reference's positional ones, the
    arrays in `layout` (helpers.random) and `formats` (data_format, weight_format)."""
    n, c, h, w, k, kernel, stride, padding, dilation, groups, has_bias = case
    kh, kw = pair(kernel)
    x = random(rng, v.from_nchw((n, c, h, w), formats[0]), dtype, layout)
    weight = random(rng, v.from_oihw((k, c // groups, kh, kw), formats[1]), dtype, layout)
    bias = random(rng, (k,), dtype) if has_bias else None
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    if formats != ("NCHW", "OIHW"):  # NCHW calls as PyTorch's (conv2d_relu has no layouts)
        kwargs.update(data_format=formats[0], weight_format=formats[1])
    ref_args = (pair(stride), padding4(padding, (kh, kw), pair(dilation)), pair(dilation),
                groups, *formats)
    return x, weight, bias, kwargs, ref_args


def _oihw(weight, kwargs):
    """weight's (K, C/groups, kH, kW)."""
    return v.to_oihw(weight.shape, kwargs.get("weight_format", "OIHW"))


def _check_forward(x, weight, bias, kwargs, ref_args):
    y = F.conv2d(x, weight, bias, **kwargs)
    expected = ref.conv2d(x, weight, bias, *ref_args)
    # scale by the sum of |terms|: the reference on |x| and |w|
    scale = ref.conv2d(np.abs(x), np.abs(weight), None if bias is None else np.abs(bias), *ref_args)
    assert_close(y, expected, int(np.prod(_oihw(weight, kwargs)[1:])), scale)
    return y


def _check_backward(x, weight, gy, kwargs, ref_args, passes=("input", "weight")):
    """The gradients conv2d_backward gives, those of `passes` checked against the reference."""
    gx, gw, gb = F.conv2d_backward(gy, x, weight, **kwargs)
    rgx, rgw, rgb = ref.conv2d_backward(gy, x, weight, *ref_args)
    agx, agw, agb = ref.conv2d_backward(np.abs(gy), np.abs(x), np.abs(weight), *ref_args)
    k_all, _, kh, kw = _oihw(weight, kwargs)
    k = k_all // kwargs["groups"]
    per_pixel = gy.size // k_all
    if "input" in passes:
        assert_close(gx, rgx, k * kh * kw, agx)
    if "weight" in passes:
        assert_close(gw, rgw, per_pixel, agw)
        assert_close(gb, rgb, per_pixel, agb)
    return gx, gw, gb


def _check_conv(x, weight, bias, kwargs, ref_args, rng):
    y = _check_forward(x, weight, bias, kwargs, ref_args)
    gy = rng.standard_normal(y.shape).astype(x.dtype)
    return y, _check_backward(x, weight, gy, kwargs, ref_args)


# (pass, algorithm): every way a pass can run (fastconv.h, fc_conv_algorithm), per layout
ALGORITHMS = {
    "NCHW": [("forward", "direct"), ("forward", "pixels"), ("forward", "winograd"),
             ("forward", "plain"),
             ("forward", "depthwise"), ("input", "transposed"), ("input", "col2im"),
             ("input", "depthwise"), ("weight", "direct"), ("weight", "plain"),
             ("weight", "depthwise"), ("weight", "grouped")],
    "NHWC": [("forward", "direct"), ("forward", "winograd"), ("forward", "depthwise"),
             ("forward", "im2col"), ("input", "transposed"), ("input", "col2im"),
             ("input", "depthwise"), ("input", "plain"), ("input", "direct"),
             ("input", "pixels"), ("weight", "direct"), ("weight", "depthwise")],
}


def _can_run(algorithm, case, data_format) -> bool:
    """The geometry rules, as docs/KERNELS.md states them (the table's strides and dilations
    are small, so the stride phases of the direct passes always fit)."""
    _, c, _, _, k, kernel, stride, _, dilation, groups, _ = case
    if algorithm == "depthwise":  # channels last: as many output as input channels per group
        return k == c if data_format == "NHWC" else c == groups
    if algorithm == "winograd":
        return pair(kernel) == (3, 3) and pair(stride) == (1, 1) and pair(dilation) == (1, 1)
    if algorithm == "transposed":
        return pair(stride) == (1, 1)
    return True


def _algorithm_cases(runnable: bool):
    return [pytest.param(case, which, algorithm, fmt,
                         id=f"{name}-{fmt.lower()}-{which}-{algorithm}")
            for fmt, algorithms in ALGORITHMS.items()
            for name, case in CONV_CASES.items() for which, algorithm in algorithms
            if _can_run(algorithm, case, fmt) == runnable and (runnable or case[0] > 0)]


def _run_pass(which, case, dtype, rng, data_format="NCHW"):
    x, weight, bias, kwargs, ref_args = _make(case, dtype, rng, formats=(data_format, "OIHW"))
    if which == "forward":
        return (_check_forward(x, weight, bias, kwargs, ref_args),)
    gy = rng.standard_normal(F.conv2d(x, weight, **kwargs).shape).astype(dtype)
    return _check_backward(x, weight, gy, kwargs, ref_args, passes=(which,))


@pytest.mark.parametrize("formats", ["nchw", "nhwc-hwio"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(CONV_CASES.values()), ids=list(CONV_CASES))
def test_conv2d_matches_reference(case, dtype, formats, isa):
    rng = np.random.default_rng(abs(hash(str(case))) % 2**32)
    _check_conv(*_make(case, dtype, rng, formats=FORMATS[formats]), rng)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case, which, algorithm, data_format", _algorithm_cases(runnable=True))
def test_conv2d_algorithm_matches_reference(case, which, algorithm, data_format, dtype, isa):
    """Each algorithm of each pass of each layout run directly on the case table, whatever the
    plan would choose for the case."""
    rng = np.random.default_rng(abs(hash(str(case))) % 2**32)
    with _kernels.force_conv_algorithms(**{which: algorithm}):
        _run_pass(which, case, dtype, rng, data_format)


@pytest.mark.parametrize("case, which, algorithm, data_format", _algorithm_cases(runnable=False))
def test_conv2d_forced_algorithm_that_cannot_run_raises(case, which, algorithm, data_format, isa):
    rng = np.random.default_rng(0)
    with _kernels.force_conv_algorithms(**{which: algorithm}), \
            pytest.raises(ValueError, match=rf"conv2d \({which} pass\): the forced algorithm "
                                            rf"'{algorithm}' cannot run this geometry: it needs"):
        _run_pass(which, case, np.float64, rng, data_format)


# (pass, algorithm) that the channels-last layout does not have
NOT_NHWC = [("forward", "plain"), ("forward", "pixels"), ("input", "winograd"), ("input", "im2col"),
            ("weight", "plain"), ("weight", "grouped"), ("weight", "im2col")]


@pytest.mark.parametrize("which, algorithm", NOT_NHWC, ids=[f"{w}-{a}" for w, a in NOT_NHWC])
def test_conv2d_nhwc_refuses_other_algorithms(which, algorithm):
    with _kernels.force_conv_algorithms(**{which: algorithm}), \
            pytest.raises(ValueError, match=rf"conv2d \({which} pass\): the forced algorithm "
                                            rf"'{algorithm}' cannot run this geometry: it is not "
                                            r"a channels-last"):
        _run_pass(which, CONV_CASES["basic3x3"], np.float64, np.random.default_rng(0), "NHWC")


@pytest.mark.parametrize("layout", ["F", "strided", "reversed", "readonly"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_conv2d_any_memory_layout(layout, dtype):
    rng = np.random.default_rng(7)
    x, weight, bias, kwargs, ref_args = _make(CONV_CASES["groups3-strided"], dtype, rng, layout)
    y, grads = _check_conv(x, weight, bias, kwargs, ref_args, rng)
    contiguous = F.conv2d(np.ascontiguousarray(x), np.ascontiguousarray(weight), bias, **kwargs)
    np.testing.assert_array_equal(y, contiguous)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("view", ["transposed-nchw", "strided", "reversed"])
def test_conv2d_nhwc_any_memory_layout(view, dtype):
    """Channels-last input in any memory layout, e.g. an NCHW array's transposed view (what a
    channels_last PyTorch tensor's .numpy() is, seen as NHWC): accepted, copied only where it is
    not C-contiguous, and the same result as its contiguous copy."""
    rng = np.random.default_rng(8)
    x, weight, bias, kwargs, ref_args = _make(CONV_CASES["groups3-strided"], dtype, rng,
                                              formats=("NHWC", "HWIO"))
    if view == "transposed-nchw":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
        weight = np.ascontiguousarray(weight.transpose(3, 2, 0, 1)).transpose(2, 3, 1, 0)
    else:
        x, weight = random(rng, x.shape, dtype, view), random(rng, weight.shape, dtype, view)
    assert not x.flags.c_contiguous
    y, grads = _check_conv(x, weight, bias, kwargs, ref_args, rng)
    np.testing.assert_array_equal(y, F.conv2d(np.ascontiguousarray(x),
                                              np.ascontiguousarray(weight), bias, **kwargs))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("formats", list(FORMATS))
@pytest.mark.parametrize("name", ["groups3-strided", "same-dilated", "long-reduction"])
def test_conv2d_halves_equal_backward(name, formats, dtype):
    """conv2d_input and conv2d_weight give exactly what conv2d_backward gives."""
    rng = np.random.default_rng(3)
    x, weight, bias, kwargs, _ = _make(CONV_CASES[name], dtype, rng, formats=FORMATS[formats])
    gy = rng.standard_normal(F.conv2d(x, weight, **kwargs).shape).astype(dtype)
    gx, gw, _ = F.conv2d_backward(gy, x, weight, **kwargs)
    np.testing.assert_array_equal(F.conv2d_input(x.shape, weight, gy, **kwargs), gx)
    np.testing.assert_array_equal(F.conv2d_weight(x, weight.shape, gy, **kwargs), gw)


# all stride 1 and 3x3, so that every algorithm can run them
THREAD_CASES = ["many-pixels-tiles", "big-batch-weight-chunks", "long-reduction", "depthwise",
                "winograd-blocks-across-images", "winograd-batch1-k-parts", "depthwise-long-rows",
                "groups-4x4", "batch1-channel-split", "first-layer-k37",
                "multiplier-3-many-pixels", "batch1-weight-k-split", "batch1-weight-k-split-groups"]
# (data_format, algorithms forced): the plan's, then the others where the geometry allows them
THREAD_ALGORITHMS = {
    "planned": ("NCHW", {}),
    "winograd-transposed": ("NCHW", dict(forward="winograd", input="transposed")),
    "direct": ("NCHW", dict(forward="direct")),
    "pixels": ("NCHW", dict(forward="pixels")),
    "plain-col2im": ("NCHW", dict(forward="plain", input="col2im", weight="plain")),
    "grouped-weight": ("NCHW", dict(weight="grouped")),
    "nhwc-planned": ("NHWC", {}),
    "nhwc-winograd-transposed": ("NHWC", dict(forward="winograd", input="transposed")),
    "nhwc-direct-col2im": ("NHWC", dict(forward="direct", input="col2im")),
    "nhwc-plain-input": ("NHWC", dict(input="plain")),
    "nhwc-direct-input": ("NHWC", dict(input="direct")),
    "nhwc-pixels-input": ("NHWC", dict(input="pixels")),
    "nhwc-im2col": ("NHWC", dict(forward="im2col")),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("algorithms", list(THREAD_ALGORITHMS))
@pytest.mark.parametrize("name", THREAD_CASES)
def test_conv2d_same_result_for_1_and_2_threads(name, algorithms, dtype, isa):
    """The split into tasks does not depend on the thread count: results are bit-identical, for
    the planned algorithms and for the others forced (where the geometry allows them)."""
    data_format, forced = THREAD_ALGORITHMS[algorithms]
    rng = np.random.default_rng(5)
    x, weight, bias, kwargs, _ = _make(CONV_CASES[name], dtype, rng, formats=(data_format, "OIHW"))
    gy = rng.standard_normal(F.conv2d(x, weight, **kwargs).shape).astype(dtype)
    results = []
    for n in (1, 2):
        with fastconv.num_threads(n), _kernels.force_conv_algorithms(**forced):
            results.append((F.conv2d(x, weight, bias, **kwargs),
                            *F.conv2d_backward(gy, x, weight, **kwargs)))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["pointwise-slices-half-panel", "pointwise-tiles-slices"])
def test_conv2d_pointwise_same_result_for_1_and_2_threads(name, dtype, isa):
    """The direct forward of a 1x1 layer read in place (its panels packed a slice at a time, the
    last on the half-width tile), forced and as planned: bit-identical on 1 and 2 threads
    (THREAD_CASES' algorithms include Winograd, which a 1x1 kernel cannot run)."""
    rng = np.random.default_rng(7)
    x, weight, bias, kwargs, _ = _make(CONV_CASES[name], dtype, rng)
    for forced in ({}, dict(forward="direct")):
        results = []
        for n in (1, 2):
            with fastconv.num_threads(n), _kernels.force_conv_algorithms(**forced):
                results.append(F.conv2d(x, weight, bias, **kwargs))
        np.testing.assert_array_equal(*results)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_conv2d_weight_gradient_packs_dy_in_slabs(dtype, isa):
    """The weight gradient packs dY^T once for all channel blocks, a slab of batch chunks at a
    time (weight_grad_pack_bytes): here more than one slab's worth, so several slabs, each batch
    chunk's sum within one; against the reference and bit for bit on 1 and 2 threads."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((32, 2, 64, 64)).astype(dtype)
    w = rng.standard_normal((32, 2, 3, 3)).astype(dtype)
    gy = rng.standard_normal((32, 32, 64, 64)).astype(dtype)
    # dY^T packed on the grid of 66 columns per output row
    assert gy.size * 66 // 64 * gy.itemsize > _kernels.tuning(isa, dtype)["weight_grad_pack_bytes"]
    results = []
    for n in (1, 2):
        with fastconv.num_threads(n):
            results.append(F.conv2d_weight(x, w.shape, gy, padding=1))
    np.testing.assert_array_equal(results[0], results[1])
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    expected = ref.conv2d_backward(gy, x, w, *args)[1]
    scale = ref.conv2d_backward(np.abs(gy), np.abs(x), np.abs(w), *args)[1]
    assert_close(results[0], expected, 32 * 64 * 64, scale)



# id: (N, C, size, K, kernel, stride, groups): the direct weight gradient where one task reads
# each batch chunk's dY^T (one block of channels, one part of K), so the task packs each pixel
# chunk itself into its own buffer, no slab: several pixel chunks, the last one ragged; groups;
# a stride-2 grid; a pointwise layer read in place
WEIGHT_OWN_PACK_CASES = {
    "pixel-chunks-ragged": (5, 8, 20, 24, 3, 1, 1),  # 3 chunks of whole rows, 140 + 140 + 120
    "groups-2": (4, 8, 20, 32, 3, 1, 2),  # 16 output channels a group: half-width panels
    "stride-2": (3, 3, 23, 40, 3, 2, 1),  # 12 x 12 outputs on phases of 13 columns
    "pointwise": (6, 4, 13, 40, 1, 1, 1),  # 169 pixels a chunk, read in X itself
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(WEIGHT_OWN_PACK_CASES.values()),
                         ids=list(WEIGHT_OWN_PACK_CASES))
def test_conv2d_weight_gradient_packs_dy_per_task(case, dtype, isa):
    """One task per batch chunk's dY^T: packed by that task chunk by chunk; against the
    reference and bit for bit on 1 and 2 threads."""
    n, c, size, k, kernel, stride, groups = case
    rng = np.random.default_rng(29)
    pad = kernel // 2
    out = (size + 2 * pad - kernel) // stride + 1
    x = rng.standard_normal((n, c, size, size)).astype(dtype)
    w = rng.standard_normal((k, c // groups, kernel, kernel)).astype(dtype)
    gy = rng.standard_normal((n, k, out, out)).astype(dtype)
    results = []
    for threads in (1, 2):
        with fastconv.num_threads(threads):
            results.append(F.conv2d_weight(x, w.shape, gy, stride=stride, padding=pad,
                                           groups=groups))
    np.testing.assert_array_equal(results[0], results[1])
    args = ((stride, stride), (pad,) * 4, (1, 1), groups)
    expected = ref.conv2d_backward(gy, x, w, *args)[1]
    scale = ref.conv2d_backward(np.abs(gy), np.abs(x), np.abs(w), *args)[1]
    assert_close(results[0], expected, n * out * out, scale)

def _weight_grad_by_taps(x, gy, kernel, padding):
    """dW of a stride-1 convolution as one product over the batch's pixels per kernel tap (in
    float64, through BLAS): an oracle fast enough for layers whose reference takes seconds."""
    n, c, h, w = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh, ow = gy.shape[2:]
    dw = np.empty((gy.shape[1], c, kernel, kernel))
    for i in range(kernel):
        for j in range(kernel):
            dw[:, :, i, j] = np.tensordot(gy.astype(np.float64), xp[:, :, i:i + oh, j:j + ow],
                                          axes=([0, 2, 3], [0, 2, 3]))
    return dw


# id: (N, C, H = W, K) of a 3x3 layer, padding 1, with the products (at least 2^25 a task) to
# split the direct weight gradient past weight_grad_tasks
WEIGHT_TASK_CASES = {
    # 3 batch chunks of one task each (C = 16: one channel block); K = 80 split into 2 parts of
    # panels on every ISA, the last one ending in a partial panel on avx512 float32 (80 = 64 + 16)
    "k-parts": (3, 16, 64, 80),
    # 680M products: 20 batch chunks (of 1 or 2 images) where weight_grad_tasks gave 16
    "more-batch-chunks": (24, 16, 64, 48),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(WEIGHT_TASK_CASES.values()), ids=list(WEIGHT_TASK_CASES))
def test_conv2d_weight_gradient_short_tasks(case, dtype, isa):
    """On big layers the weight gradient splits into more, shorter tasks: more batch chunks,
    then parts of K's panels; against a per-tap oracle and bit for bit on 1 and 2 threads."""
    n, c, size, k = case
    tasks = _kernels.tuning(isa, dtype)["weight_grad_tasks"]  # one channel block: C <= 32
    assert min(4 * tasks, n * k * size * size * c * 9 // 2 ** 25) > min(n, max(2, tasks))
    _check_weight_grad_3x3(np.random.default_rng(17), case, dtype)


def _check_weight_grad_3x3(rng, case, dtype):
    """The 3x3, padding-1 weight gradient of random (n, c, size, size) inputs and k output
    channels: bit for bit on 1 and 2 threads, and against the per-tap oracle."""
    n, c, size, k = case
    x = rng.standard_normal((n, c, size, size)).astype(dtype)
    gy = rng.standard_normal((n, k, size, size)).astype(dtype)
    results = []
    for threads in (1, 2):
        with fastconv.num_threads(threads):
            results.append(F.conv2d_weight(x, (k, c, 3, 3), gy, padding=1))
    np.testing.assert_array_equal(results[0], results[1])
    expected = _weight_grad_by_taps(x, gy, 3, 1)
    scale = _weight_grad_by_taps(np.abs(x), np.abs(gy), 3, 1)
    assert_close(results[0], expected.astype(dtype), n * size * size, scale)


@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
def test_conv2d_isa_paths_agree(data_format):
    """Every SIMD path against the scalar C path on a shape large enough to use full tiles."""
    rng = np.random.default_rng(11)
    x = v.from_nchw((2, 24, 20, 20), data_format)
    x = rng.standard_normal(x).astype(np.float32)
    w = rng.standard_normal((40, 24, 3, 3)).astype(np.float32)
    gy = rng.standard_normal(v.from_nchw((2, 40, 20, 20), data_format)).astype(np.float32)
    fmt = dict(padding=1, data_format=data_format)
    outputs = {}
    for name in fastconv.available_isas():
        with fastconv.use_isa(name):
            outputs[name] = (F.conv2d(x, w, **fmt), *F.conv2d_backward(gy, x, w, **fmt))
    base = outputs["scalar"]
    for outs in outputs.values():
        for a, b, L in zip(outs, base, (216, 360, 800, 800)):
            assert_close(a, b, 2 * L, np.abs(b) + 10.0)


@st.composite
def conv_configs(draw):
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, 3))
    kg = draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    form = draw(st.sampled_from(["pair", "4-tuple", "same"]))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    if form == "pair":
        pads = (pads[0], pads[0], pads[2], pads[2])
        padding = pads[::2]
    elif form == "same" and sh == sw == 1:
        padding = "same"
        pads = padding4("same", (kh, kw), (dh, dw))
    else:
        padding = pads
    # input at least as large as the dilated kernel minus the padding
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - pads[0] - pads[1]), 12))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - pads[2] - pads[3]), 12))
    n = draw(st.integers(0, 2))
    return (n, cg * groups, h, w, kg * groups, (kh, kw), (sh, sw), padding, (dh, dw), groups,
            draw(st.booleans()))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@given(case=conv_configs(), formats=st.sampled_from(list(FORMATS.values())),
       seed=st.integers(0, 2**32 - 1))
def test_conv2d_random_configurations(dtype, case, formats, seed):
    for name in fastconv.available_isas():
        with fastconv.use_isa(name):
            rng = np.random.default_rng(seed)
            _check_conv(*_make(case, dtype, rng, formats=formats), rng)


# ---- the fused epilogue: conv2d_relu and its backward ----------------------------------------

def _assert_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def _check_relu_fusion(x, weight, bias, kwargs, rng):
    """conv2d_relu against relu(conv2d), and its backward against the unfused ops', bit for bit
    (under any algorithms forced around the call)."""
    z = F.conv2d(x, weight, bias, **kwargs)
    y = F.conv2d_relu(x, weight, bias, **kwargs)
    _assert_bits(y, F.relu(z))
    gy = rng.standard_normal(z.shape).astype(x.dtype)
    fused = F.conv2d_relu_backward(gy, x, weight, y, **kwargs)
    unfused = F.conv2d_backward(F.relu_backward(gy, z), x, weight, **kwargs)
    for a, b in zip(fused, unfused):
        _assert_bits(a, b)
    return z


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(CONV_CASES.values()), ids=list(CONV_CASES))
def test_conv2d_relu_equals_the_unfused_ops(case, dtype, isa):
    """Bit for bit relu(conv2d(...)) forward, and conv2d_backward of relu_backward's gradient
    backward (the bias gradient summed in the masking pass), on the whole case table."""
    rng = np.random.default_rng(abs(hash(str(case))) % 2**32)
    x, weight, bias, kwargs, _ = _make(case, dtype, rng)
    _check_relu_fusion(x, weight, bias, kwargs, rng)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name, algorithm", [("winograd", "winograd"), ("winograd", "direct"),
                                             ("stride2", "plain"), ("stride2", "pixels"),
                                             ("depthwise", "depthwise"),
                                             # pixels' copy-out in 16 x 16 blocks, and the
                                             # channels and pixels past them: K = 24 on a
                                             # grid of copies by kernel column (one run of 99
                                             # pixels), K = 37 on the stride phases (rows of 19)
                                             ("winograd", "pixels"), ("first-layer-k37", "pixels")])
def test_conv2d_relu_on_every_forward_algorithm(name, algorithm, dtype, isa):
    rng = np.random.default_rng(9)
    x, weight, bias, kwargs, _ = _make(CONV_CASES[name], dtype, rng)
    with _kernels.force_conv_algorithms(forward=algorithm):
        _check_relu_fusion(x, weight, bias, kwargs, rng)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("forward", [None, "pixels"])
def test_conv2d_relu_keeps_nan_and_inf(forward, dtype, isa):
    """NaN outputs stay NaN and pass the gradient (as relu and relu_backward), +Inf passes and
    -Inf stops; Inf in x sends Winograd to its fallback, which fuses the epilogue too (and
    pixels' copy-out of 16 channels at a time)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 16, 6, 7)).astype(dtype)
    w = rng.standard_normal((16, 16, 3, 3)).astype(dtype)
    x[0, 0, 2, 3], x[1, 5, 0, 0] = np.nan, np.inf
    with _kernels.force_conv_algorithms(forward=forward):
        z = _check_relu_fusion(x, w, None, dict(padding=1), rng)
    assert np.isnan(z).any() and np.isinf(z).any()


def test_conv2d_relu_validates_its_arguments():
    x, w = np.ones((1, 2, 4, 4)), np.ones((3, 2, 3, 3))
    y = F.conv2d_relu(x, w)
    with pytest.raises(ValueError, match=r"^conv2d_relu: "):
        F.conv2d_relu(x, np.ones((3, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"^conv2d_relu_backward: output must have the shape"):
        F.conv2d_relu_backward(y, x, w, y[:, :2])
    with pytest.raises(TypeError, match=r"^conv2d_relu_backward: "):
        F.conv2d_relu_backward(y, x, w, y.astype(np.float32))


# (N, C, H, W, K, kernel, padding, dilation): stride 1 with phase rows as long as the input's, so
# every image after a thread's first is split as one run per phase (split_rows_flat), the
# columns the run brings from the neighbouring rows zeroed again
FLAT_SPLIT_CASES = {
    "same-5x5-by-kernel-column": (4, 3, 6, 6, 32, 5, 2, 1),  # wph = OW = W, shifts -2..2
    "valid-stride-phases": (3, 2, 5, 17, 32, 3, 0, 1),  # wph = W (2 of 17 columns dropped)
    "kernel-columns-all-padding": (3, 2, 2, 3, 32, 7, 3, 1),  # shifts past the row: no run
    "same-dilated-rect": (3, 2, 7, 8, 32, (3, 5), "same", (2, 1)),
}


# id: (batch, C, size, K): batches past weight_grad_tasks chunks, so a chunk holds several images
# of few pixels, reduced per microkernel call over several images (up to KC / pixels); chunks
# of 2 and 3 images, a full and a half-width last panel of K
WEIGHT_IMAGES_CASES = {
    "chunks-of-2-and-3": (45, 5, 6, 20),
    "half-width-panel": (37, 3, 5, 12),
    "two-channel-blocks": (34, 40, 4, 40),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("forward", ["direct", "pixels"])
@pytest.mark.parametrize("case", list(FLAT_SPLIT_CASES.values()), ids=list(FLAT_SPLIT_CASES))
def test_conv2d_split_rows_in_one_run(case, forward, dtype, isa):
    """The forward passes and the transposed input gradient (a forward pass of dY) on later
    images of a thread against the reference on 1 thread, and bit for bit on 2."""
    n, c, h, w, k, kernel, padding, dilation = case
    rng = np.random.default_rng(17)
    x, weight, bias, kwargs, ref_args = _make((n, c, h, w, k, kernel, 1, padding, dilation, 1,
                                               True), dtype, rng)
    results = []
    for threads in (1, 2):
        with fastconv.num_threads(threads), _kernels.force_conv_algorithms(
                forward=forward, input="transposed"):
            if threads == 1:
                y = _check_forward(x, weight, bias, kwargs, ref_args)
                gy = rng.standard_normal(y.shape).astype(dtype)
                gx = _check_backward(x, weight, gy, kwargs, ref_args, passes=("input",))[0]
            results.append((F.conv2d(x, weight, bias, **kwargs),
                            F.conv2d_input(x.shape, weight, gy, **kwargs)))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(results[0][1], gx)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", [(3, 32, 14, 14, 64, 2), (2, 64, 14, 14, 32, 2),
                                  (2, 8, 5, 17, 32, (1, 2))],
                         ids=["convnet-5x5", "convnet-5x5-input", "tail-tile"])
def test_conv2d_pixels_tiles_are_direct_bit_for_bit(case, dtype, isa):
    """`pixels` gives direct's sums bit for bit whatever its tile's height: MR pixels, or 14 on
    AVX-512 (the 14 x 14 grid of a 5x5 'same' layer in 14 tiles; 3 x 17 = 51 pixels in 4 tiles,
    the last past the grid)."""
    n, c, h, w, k, padding = case
    rng = np.random.default_rng(21)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((k, c, 5, 5)).astype(dtype)
    bias = rng.standard_normal(k).astype(dtype)
    outputs = []
    for forward in ("direct", "pixels"):
        with _kernels.force_conv_algorithms(forward=forward):
            outputs.append(F.conv2d_relu(x, weight, bias, padding=padding))
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(WEIGHT_IMAGES_CASES.values()), ids=list(WEIGHT_IMAGES_CASES))
def test_conv2d_weight_gradient_images_per_call(case, dtype, isa):
    """Small images: each microkernel call sums over several images of a batch chunk; against a
    per-tap oracle and bit for bit on 1 and 2 threads."""
    n, c, size, k = case
    tuning = _kernels.tuning(isa, dtype)
    assert n > tuning["weight_grad_tasks"] and tuning["kc"] // (size * size) >= 2
    _check_weight_grad_3x3(np.random.default_rng(23), case, dtype)
