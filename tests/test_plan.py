"""The convolution plan (src/kernels/conv2d_plan.c) and the tuning table it reads
(src/kernels/fc_tuning.c): which algorithm each pass runs on which geometry, on every ISA path,
what forcing an algorithm does, and that the microkernels' compile-time register tiles agree with
the table.

The conv tests (test_conv2d.py) run every algorithm on every case; these test the choice itself,
at the thresholds: Winograd from 16 channels per group on both sides, the input gradient as a
forward pass from MR channels per group, the depthwise passes for one input channel per group
and fewer than MR output channels, the grouped weight gradient up to grouped_max_channels output
channels per group, the plain loops where the stride phases would not fit.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DTYPES, isa_params, pair

from fastconv import _kernels
from fastconv import _validation as v

BIG = 2**31 - 1


def _geometry(c=16, k=16, size=8, kernel=3, stride=1, padding=1, dilation=1, groups=1):
    return v.conv_geometry("conv2d", (2, c, size, size), (k, c // groups, kernel, kernel), stride,
                           padding, dilation, groups)


# id: (geometry arguments, forward, input gradient, weight gradient), each a pair
# (algorithm, fallback when the data holds Inf or NaN); "MR" stands for the ISA's register rows
PLAN_CASES = {
    "winograd": (dict(), ("winograd", "direct"), ("transposed", "col2im"),
                 ("direct", "plain")),
    "winograd-15-in": (dict(c=15), ("direct", "direct"), ("transposed", "col2im"),
                       ("direct", "plain")),
    "winograd-15-out": (dict(k=15), ("direct", "direct"), ("transposed", "col2im"),
                        ("direct", "plain")),
    "winograd-per-group": (dict(c=32, k=32, groups=2), ("winograd", "direct"),
                           ("transposed", "col2im"), ("direct", "plain")),
    "winograd-15-per-group": (dict(c=30, k=32, groups=2), ("direct", "direct"),
                              ("transposed", "col2im"), ("direct", "plain")),
    "winograd-one-output-column": (dict(size=3, padding=(1, 0)), ("direct", "direct"),
                                   ("transposed", "col2im"), ("direct", "plain")),
    "winograd-not-5x5": (dict(kernel=5, padding=2), ("direct", "direct"),
                         ("transposed", "col2im"), ("direct", "plain")),
    "winograd-not-strided": (dict(stride=2), ("direct", "direct"), ("col2im", "col2im"),
                             ("direct", "plain")),
    "winograd-not-dilated": (dict(dilation=2, padding=2), ("direct", "direct"),
                             ("transposed", "col2im"), ("direct", "plain")),
    "transposed-at-MR": (dict(c="MR", k=4, kernel=5, padding=2), ("direct", "direct"),
                         ("transposed", "col2im"), ("direct", "plain")),
    "col2im-below-MR": (dict(c="MR-1", k=4, kernel=5, padding=2), ("direct", "direct"),
                        ("col2im", "col2im"), ("direct", "plain")),
    "depthwise": (dict(c=16, k=16, groups=16), ("depthwise", "depthwise"),
                  ("depthwise", "col2im"), ("depthwise", "plain")),
    "depthwise-strided": (dict(c=16, k=16, groups=16, stride=2), ("depthwise", "depthwise"),
                          ("depthwise", "col2im"), ("depthwise", "plain")),
    # one input channel: the depthwise passes while K stays below the GEMM tile's MR rows
    "one-channel-below-MR": (dict(c=1, k="MR-1"), ("depthwise", "depthwise"),
                             ("depthwise", "col2im"), ("depthwise", "plain")),
    "one-channel-at-MR": (dict(c=1, k="MR"), ("direct", "direct"), ("col2im", "col2im"),
                          ("direct", "plain")),
    # the depthwise passes' dense grid holds one output row and column here, where the
    # direct passes' sH x sW phases would not fit; a dilation this large fits neither
    "depthwise-huge-stride": (dict(c=2, k=2, groups=2, size=2, kernel=1, stride=BIG,
                                   padding=0), ("depthwise", "depthwise"),
                              ("depthwise", "col2im"), ("depthwise", "plain")),
    "grouped-huge-stride": (dict(c=4, k=4, groups=2, size=2, kernel=1, stride=BIG, padding=0),
                            ("plain", "plain"), ("col2im", "col2im"), ("grouped", "plain")),
    # few output channels per group: the weight gradient as dots of whole planes
    "grouped": (dict(c=24, k=32, groups=8), ("direct", "direct"), ("col2im", "col2im"),
                ("grouped", "plain")),
    "grouped-at-max": (dict(c=16, k=16, groups=2), ("direct", "direct"),
                       ("transposed", "col2im"), ("grouped", "plain")),
    "grouped-past-max": (dict(c=18, k=18, groups=2), ("direct", "direct"),
                         ("transposed", "col2im"), ("direct", "plain")),
    "grouped-not-ungrouped": (dict(c=3, k=4), ("direct", "direct"), ("col2im", "col2im"),
                              ("direct", "plain")),
    "depthwise-dilation-too-big": (dict(c=2, k=2, groups=2, size=3, dilation=BIG, padding=BIG),
                                   ("plain", "plain"), ("col2im", "col2im"),
                                   ("plain", "plain")),
    "phases-too-big": (dict(c=2, k=2, size=2, kernel=1, stride=BIG, padding=0),
                       ("plain", "plain"), ("col2im", "col2im"), ("plain", "plain")),
    "dilation-too-big": (dict(c=16, k=2, size=3, dilation=BIG, padding=BIG),
                         ("plain", "plain"), ("transposed", "col2im"), ("plain", "plain")),
}


def _arguments(spec, mr):
    return {key: mr + int(val[2:] or 0) if isinstance(val, str) else val
            for key, val in spec.items()}


def _gemm_forward(g, row):
    """The GEMM forward pass the plan runs: `pixels` where a group's output channels fill whole
    NR-lane panels, the phase grid is one forward tile and the reduction at least KC deep (a 1x1
    layer with stride 1 and no padding excepted), else `direct`."""
    pointwise = (g.kernel == (1, 1) and g.stride == (1, 1) and g.padding == (0, 0, 0, 0)
                 and (g.out_h, g.out_w) == (g.in_h, g.in_w))
    grid = g.out_h * (g.out_w + (g.kernel[1] - 1) * g.dilation[1] / g.stride[1])
    reduction = g.in_channels // g.groups * g.kernel[0] * g.kernel[1]
    fills = ((g.out_channels // g.groups) % row["nr"] == 0 and not pointwise
             and grid <= row["tile_pixels"] and reduction >= row["kc"])
    return ("pixels", "pixels") if fills else ("direct", "direct")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(PLAN_CASES.values()), ids=list(PLAN_CASES))
def test_plan_chooses(case, dtype, isa):
    spec, forward, input_grad, weight_grad = case
    row = _kernels.tuning(isa, dtype)
    g = _geometry(**_arguments(spec, row["mr"]))
    if forward == ("direct", "direct"):
        forward = _gemm_forward(g, row)
    for which, expected in zip(_kernels.CONV_PASSES, (forward, input_grad, weight_grad)):
        assert _kernels.conv_plan(g, which, dtype) == expected, which


def _nhwc_geometry(c, k, groups):
    return v.conv_geometry("conv2d", (2, 8, 8, c), (3, 3, c // groups, k), 1, 1, 1, groups,
                           "NHWC", "HWIO")


CHANNELWISE = (("depthwise", "direct"), ("depthwise", "col2im"), ("depthwise", "direct"))
# the GEMM passes; "few": by the input channels per group, up to the tuning row's field the first
# plan, else the second (FEW_PLANS): the forward im2col (one panel row per pixel) or direct, the
# input gradient pixels (dY's pixels as the GEMM's rows; direct where a dY row is whole NR-column
# panels, _few_plan) or col2im (stride 1 and as few channels as these)
GEMMS = ("few", "few", ("direct", "direct"))
FEW_PLANS = {"forward": ("im2col_max_channels", "im2col", "direct"),
             "input": ("direct_input_max_channels", "pixels", "col2im")}


def _few_plan(which, row):
    """FEW_PLANS' few-channel plan for _nhwc_geometry (8 output pixels a row): the input
    gradient's is direct where those are whole NR-column panels (NR = 8)."""
    few = FEW_PLANS[which][1]
    return "direct" if few == "pixels" and 8 % row["nr"] == 0 else few
# channels last, id: (channels per group, output channels per group, groups, the three plans);
# "NR/4" stands for a quarter of the ISA's register columns
NHWC_PLAN_CASES = {
    "depthwise": (1, 1, 16, CHANNELWISE),
    "one-channel": (1, 1, 1, CHANNELWISE),
    "depthwise-multiplier-2": (1, 2, 16, GEMMS),
    "grouped-at-quarter-NR": ("NR/4", "NR/4", 3, CHANNELWISE),
    "grouped-past-quarter-NR": ("NR/4+1", "NR/4+1", 3, GEMMS),
    "three-channels": (3, 8, 1, GEMMS),
}


def _per_group(spec, nr):
    return nr // 4 + int(spec[4:] or 0) if isinstance(spec, str) else spec


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(NHWC_PLAN_CASES.values()), ids=list(NHWC_PLAN_CASES))
def test_nhwc_plan_chooses(case, dtype, isa):
    cg, kg, groups, expected = case
    nr = _kernels.tuning(isa, dtype)["nr"]
    c = _per_group(cg, nr)
    g = _nhwc_geometry(c * groups, _per_group(kg, nr) * groups, groups)
    row = _kernels.tuning(isa, dtype)
    for which, plan in zip(_kernels.CONV_PASSES, expected):
        if plan == "few":
            field, _, many = FEW_PLANS[which]
            few = _few_plan(which, row)
            plan = (few, few) if c <= row[field] else (many, many)
        assert _kernels.conv_plan(g, which, dtype) == plan, which


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("which", list(FEW_PLANS))
def test_nhwc_few_channel_algorithms_up_to_their_max_channels(which, dtype, isa):
    """The channels-last forward runs im2col, the input gradient pixels, for up to the tuning
    row's input channels, and not past them."""
    row = _kernels.tuning(isa, dtype)
    field = FEW_PLANS[which][0]
    few, cutoff = _few_plan(which, row), row[field]
    assert _kernels.conv_plan(_nhwc_geometry(cutoff, row["nr"], 1), which, dtype)[0] == few
    assert _kernels.conv_plan(_nhwc_geometry(cutoff + 1, row["nr"], 1), which, dtype)[0] != few


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("width, stride, expected", [
    ("NR-1", 1, "pixels"), ("NR", 1, "direct"), ("NR+1", 1, "pixels"), ("2NR", 1, "direct"),
    ("NR-1", (1, 2), "direct"), ("NR-1", (2, 1), "pixels")],
    ids=["ragged", "one-panel", "past-one-panel", "two-panels", "strided-w", "strided-h"])
def test_nhwc_few_channel_input_gradient_pixels_or_direct(width, stride, expected, dtype, isa):
    """With few input channels the channels-last input gradient runs pixels at stride 1 along W,
    direct where dY's rows are whole NR-pixel panels (direct's columns) or strided along W."""
    nr = _kernels.tuning(isa, dtype)["nr"]
    ow = {"NR-1": nr - 1, "NR": nr, "NR+1": nr + 1, "2NR": 2 * nr}[width]
    sh, sw = pair(stride)
    # 3x3, padding 1: OW = (W - 1) // sW + 1
    g = v.conv_geometry("conv2d", (2, 9, (ow - 1) * sw + 1, 3), (3, 3, 3, 16), stride, 1, 1, 1,
                        "NHWC", "HWIO")
    assert g.out_w == ow
    assert _kernels.conv_plan(g, "input", dtype) == (expected, expected)


@pytest.mark.parametrize("which", _kernels.CONV_PASSES)
def test_nhwc_depthwise_refuses_a_channel_multiplier(which, isa):
    with _kernels.force_conv_algorithms(**{which: "depthwise"}), pytest.raises(
            ValueError, match=rf"^conv2d \({which} pass\): the forced algorithm 'depthwise' cannot "
                              r"run this geometry: it needs as many output as input channels per "
                              r"group"):
        _kernels.conv_plan(_nhwc_geometry(16, 32, 16), which, np.float32)


# (pass, algorithm, geometry arguments, what the message says)
REFUSALS = [
    ("forward", "winograd", dict(kernel=5, padding=2), "needs a 3x3 kernel, stride 1"),
    ("forward", "winograd", dict(stride=2), "needs a 3x3 kernel, stride 1"),
    ("forward", "direct", dict(kernel=1, stride=BIG, padding=0), "stride phases would dwarf"),
    ("weight", "direct", dict(kernel=1, stride=BIG, padding=0), "stride phases would dwarf"),
    ("forward", "pixels", dict(kernel=1, stride=BIG, padding=0), "stride phases would dwarf"),
    ("input", "pixels", dict(), "not an input-gradient algorithm"),
    ("weight", "pixels", dict(), "not a weight-gradient algorithm"),
    ("input", "transposed", dict(stride=2), "needs stride 1"),
    ("forward", "col2im", dict(), "not a forward algorithm"),
    ("forward", "transposed", dict(), "not a forward algorithm"),
    ("forward", "im2col", dict(), "not a forward algorithm"),
    ("input", "direct", dict(), "not an input-gradient algorithm"),
    ("input", "winograd", dict(), "not an input-gradient algorithm"),
    ("weight", "winograd", dict(), "not a weight-gradient algorithm"),
    ("weight", "col2im", dict(), "not a weight-gradient algorithm"),
    ("forward", "depthwise", dict(c=16, k=16, groups=8), "needs one input channel per group"),
    ("input", "depthwise", dict(), "needs one input channel per group"),
    ("weight", "depthwise", dict(c=2, k=2, groups=2, size=3, dilation=BIG, padding=BIG),
     "padded channels would dwarf"),
    ("weight", "grouped", dict(c=4, k=4, groups=2, size=3, dilation=BIG, padding=BIG),
     "padded channels would dwarf"),
    ("forward", "grouped", dict(), "not a forward algorithm"),
    ("input", "grouped", dict(), "not an input-gradient algorithm"),
]


@pytest.mark.parametrize("which, algorithm, spec, reason", REFUSALS,
                         ids=[f"{w}-{a}-{r.split()[-1]}" for w, a, _, r in REFUSALS])
def test_forcing_an_algorithm_that_cannot_run_is_an_error(which, algorithm, spec, reason, isa):
    g = _geometry(**spec)
    with _kernels.force_conv_algorithms(**{which: algorithm}), pytest.raises(
            ValueError, match=rf"^conv2d \({which} pass\): the forced algorithm '{algorithm}' "
                              rf"cannot run this geometry: .*{reason}"):
        _kernels.conv_plan(g, which, np.float32)


def test_forcing_sets_each_pass_and_restores_on_exit():
    g = _geometry()
    with pytest.raises(RuntimeError), _kernels.force_conv_algorithms(forward="plain",
                                                                     weight="plain"):
        assert _kernels.conv_plan(g, "forward", np.float32) == ("plain", "plain")
        assert _kernels.conv_plan(g, "input", np.float32) == ("transposed", "col2im")
        assert _kernels.conv_plan(g, "weight", np.float32) == ("plain", "plain")
        raise RuntimeError
    assert _kernels.conv_plan(g, "forward", np.float32) == ("winograd", "direct")
    assert _kernels.conv_plan(g, "weight", np.float32) == ("direct", "plain")


def test_forcing_an_unknown_algorithm_is_an_error():
    with pytest.raises(ValueError):
        _kernels.force_conv_algorithms(forward="fft")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", [p.values[0] for p in isa_params()],
                         ids=[p.values[0] for p in isa_params()])
def test_tuning_table_agrees_with_the_microkernels(name, dtype):
    """The templates' compile-time register tile (fc_isa_<isa>.h) is the table's, and KC keeps
    one KC x NR panel of B within 24 KB of L1."""
    if not _kernels.isa_supported(name):
        pytest.skip(f"this build or CPU has no {name} path")
    row = _kernels.tuning(name, dtype)
    table = _kernels.ukernel_table(name, dtype)
    assert (row["mr"], row["nr"]) == (table.mr, table.nr)
    assert row["kc"] * row["nr"] * np.dtype(dtype).itemsize <= 24576 and row["kc"] >= 64
    assert row["winograd_block"] == 4 * row["nr"]


# (input channels, output channels in NR, extra output channels, image size, kernel size,
# padding, forward plan): pixels on whole NR panels, a grid of one tile, a reduction of KC or more
PIXELS_CASES = {
    "one-panel": (32, 1, 0, 8, 5, 2, "pixels"),
    "two-panels": (32, 2, 0, 8, 5, 2, "pixels"),
    "panel-and-one": (32, 1, 1, 8, 5, 2, "direct"),
    "panel-less-one": (32, 1, -1, 8, 5, 2, "direct"),
    "one-input-channel": (1, 1, 0, 8, 5, 2, "direct"),
    "grid-past-a-tile": (32, 1, 0, 24, 5, 2, "direct"),
    "pointwise": (1024, 1, 0, 8, 1, 0, "direct"),
    "1x1-padded": (1024, 1, 0, 8, 1, 1, "pixels"),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(PIXELS_CASES.values()), ids=list(PIXELS_CASES))
def test_forward_pixels_where_channels_fill_panels(case, dtype, isa):
    c, panels, extra, size, kernel, padding, expected = case
    nr = _kernels.tuning(isa, dtype)["nr"]
    g = _geometry(c=c, k=panels * nr + extra, size=size, kernel=kernel, padding=padding)
    assert _kernels.conv_plan(g, "forward", dtype) == (expected, expected)
