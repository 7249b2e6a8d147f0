"""Argument validation of every public fastconv function, and the input layouts they accept.

Rejection tests run with ``fastconv.functional._kernels`` replaced by a tripwire, so they also
prove that bad input is refused *before* any C kernel runs. Every error must be a ValueError or
TypeError whose message starts with ``"<function>: "``, names the argument and shows what was
received (each case's regex checks the last two).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import KernelTripwire

import fastconv
import fastconv.functional as F
from fastconv import _kernels

ALL_OPS = [
    "conv2d", "conv2d_backward", "conv2d_input", "conv2d_weight",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "lp_pool2d", "lp_pool2d_backward", "relu", "relu_backward",
]
CONV_OPS = ALL_OPS[:4]
POOL_OPS = ALL_OPS[4:10]
AVG_OPS = ["avg_pool2d", "avg_pool2d_backward"]
LP_OPS = ["lp_pool2d", "lp_pool2d_backward"]
BACKWARD_OPS = ["conv2d_backward", "conv2d_input", "conv2d_weight", "max_pool2d_backward",
                "avg_pool2d_backward", "lp_pool2d_backward", "relu_backward"]

# The float array arguments of each op, in the order the op checks them.
ARRAY_ARGS = {
    "conv2d": ["x", "weight", "bias"],
    "conv2d_backward": ["grad_output", "x", "weight"],
    "conv2d_input": ["weight", "grad_output"],
    "conv2d_weight": ["x", "grad_output"],
    "max_pool2d": ["x"],
    "max_pool2d_backward": ["grad_output", "x"],
    "avg_pool2d": ["x"],
    "avg_pool2d_backward": ["grad_output", "x"],
    "lp_pool2d": ["x"],
    "lp_pool2d_backward": ["grad_output", "x"],
    "relu": ["x"],
    "relu_backward": ["grad_output", "x"],
}

# Base problem: x (N, 4, 6, 6); conv weight (3, 4, 3, 3) -> (N, 3, 4, 4);
# pools, kernel 2 -> (N, 4, 3, 3).
X_SHAPE = (2, 4, 6, 6)
W_SHAPE = (3, 4, 3, 3)
CONV_OUT = (2, 3, 4, 4)
POOL_OUT = (2, 4, 3, 3)


def make_kwargs(op: str, dtype=np.float64, n: int = 2, seed: int = 0) -> dict:
    """Valid keyword arguments for `op` (batch n)."""
    rng = np.random.default_rng(seed)

    def arr(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x = arr(n, 4, 6, 6)
    w = arr(*W_SHAPE)
    gy_conv = arr(n, 3, 4, 4)
    gy_pool = arr(n, 4, 3, 3)
    return {
        "conv2d": dict(x=x, weight=w, bias=arr(3)),
        "conv2d_backward": dict(grad_output=gy_conv, x=x, weight=w),
        "conv2d_input": dict(input_shape=x.shape, weight=w, grad_output=gy_conv),
        "conv2d_weight": dict(x=x, weight_shape=w.shape, grad_output=gy_conv),
        "max_pool2d": dict(x=x, kernel_size=2),
        "max_pool2d_backward": dict(grad_output=gy_pool, x=x, kernel_size=2),
        "avg_pool2d": dict(x=x, kernel_size=2),
        "avg_pool2d_backward": dict(grad_output=gy_pool, x=x, kernel_size=2),
        "lp_pool2d": dict(x=x, norm_type=2.0, kernel_size=2),
        "lp_pool2d_backward": dict(grad_output=gy_pool, x=x, norm_type=2.0, kernel_size=2),
        "relu": dict(x=x),
        "relu_backward": dict(grad_output=arr(*x.shape), x=x),
    }[op]


BASE = {op: make_kwargs(op) for op in ALL_OPS}


def call(op: str, **kwargs):
    return getattr(F, op)(**kwargs)


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.fixture
def no_kernels(monkeypatch):
    monkeypatch.setattr(F, "_kernels", KernelTripwire())


@pytest.fixture
def keep_threads():
    old = _kernels.process_threads()
    yield
    _kernels.set_process_threads(old)


def assert_message(exc_info, op: str, pattern: str) -> None:
    msg = str(exc_info.value)
    assert msg.startswith(f"{op}: "), f"message does not start with {op!r}: {msg!r}"
    assert re.search(pattern, msg), f"{pattern!r} not found in {msg!r}"


GROUPS_MESSAGE = r"\bgroups must be a positive int \(at most 2\*\*31 - 1\), got "
THREADS_MESSAGE = r"\bn must be a positive int \(at most 2\*\*31 - 1\), got "


# ---- the rejection table ---------------------------------------------------------------------

def case(op, desc, exc, pattern, xfail=None, **overrides):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(op, overrides, exc, pattern, id=f"{op}-{desc}", marks=marks)


def weight_override(op, shape, dtype=np.float64):
    """conv ops take the weight as an array, except conv2d_weight, which takes its shape."""
    if op == "conv2d_weight":
        return {"weight_shape": shape}
    return {"weight": np.zeros(shape, dtype)}


def _array_cases():
    """Per array argument: list, wrong dtypes, wrong ndim, mixed float32/float64."""
    out = []
    for op, names in ARRAY_ARGS.items():
        for name in names:
            good = BASE[op][name]
            out.append(case(op, f"{name}-list", TypeError,
                            rf"\b{name} must be a numpy\.ndarray, got list",
                            **{name: good.tolist()}))
            for dt in ["int32", "int64", "complex64", "float16", "object", "bool"]:
                out.append(case(op, f"{name}-{dt}", TypeError,
                                rf"\b{name} must have dtype float32 or float64, got {dt}\b",
                                **{name: good.astype(dt)}))
            if good.ndim == 4 and not op.startswith("relu"):  # relu takes any ndim
                out.append(case(op, f"{name}-3d", ValueError,
                                rf"\b{name} must be a 4-D .*got shape \({good.shape[1]}, ",
                                **{name: good[0]}))
                out.append(case(op, f"{name}-5d", ValueError,
                                rf"\b{name} must be a 4-D .*got shape \(1, {good.shape[0]}, ",
                                **{name: good[None]}))
            if len(names) > 1:
                out.append(case(op, f"{name}-mixed-float32", TypeError,
                                rf"(?=.*\b{name} has dtype|.*but {name} has dtype)"
                                r"(?=.*float32)(?=.*float64)",
                                **{name: good.astype(np.float32)}))
    out.append(case("conv2d", "bias-2d", ValueError, r"\bbias must be a 1-D .*got shape \(1, 3\)",
                    bias=np.zeros((1, 3))))
    out.append(case("relu", "python-float", TypeError, r"\bx must be a numpy\.ndarray, got float",
                    x=1.5))
    out.append(case("relu", "numpy-scalar", TypeError, r"\bx must be a numpy\.ndarray, got float64",
                    x=np.float64(1.5)))
    out.append(case("relu", "float128", TypeError, r"\bx must have dtype float32 or float64, got",
                    x=np.zeros(3, np.longdouble)))
    return out


BAD_INT_PARAM = [  # (description, value, exception, regex for "got ...")
    ("zero", 0, ValueError, r"got 0$"),
    ("negative", -2, ValueError, r"got -2$"),
    ("negative-in-pair", (1, -1), ValueError, r"got \(1, -1\)"),
    ("bool", True, (TypeError, ValueError), r"got True$"),
    ("float", 2.0, (TypeError, ValueError), r"got 2\.0$"),
    ("3-tuple", (1, 1, 1), (TypeError, ValueError), r"got \(1, 1, 1\)"),
    ("string", "2", TypeError, r"got '2'$"),
    ("none", None, TypeError, r"got None$"),
    ("2**31", 2**31, ValueError, r"at most 2\*\*31 - 1\), got 2147483648$"),
]


def _geometry_cases():
    out = []
    # stride / dilation on every conv op; kernel_size, stride, dilation on the pools
    params = [(op, p) for op in CONV_OPS for p in ("stride", "dilation")]
    params += [(op, p) for op in POOL_OPS for p in ("kernel_size", "stride")]
    params += [(op, "dilation") for op in ("max_pool2d", "max_pool2d_backward")]
    for op, p in params:
        for desc, value, exc, got in BAD_INT_PARAM:
            if p == "stride" and op in POOL_OPS and value is None:
                continue  # None is the pools' default stride
            out.append(case(op, f"{p}-{desc}", exc, rf"\b{p} must be a positive int .*{got}",
                            **{p: value}))
    # padding: conv ops and every pool, in every form
    forms = (r"padding must be 'same', 'valid', a non-negative int, a pair of them \(h, w\) or "
             r"a 4-tuple of them \(top, bottom, left, right\)")
    helper = r"; for SAME padding at any stride pass padding=fastconv\.functional\.same_padding"
    for op in CONV_OPS + POOL_OPS:
        for desc, value, exc, got in [
            ("negative", -1, ValueError, r"got -1$"),
            ("negative-in-pair", (0, -1), ValueError, r"got \(0, -1\)"),
            ("negative-in-4-tuple", (0, 0, -1, 0), ValueError, r"got \(0, 0, -1, 0\)"),
            ("1-tuple", (1,), ValueError, r"got \(1,\)"),
            ("3-tuple", (1, 1, 1), ValueError, r"got \(1, 1, 1\)"),
            ("5-tuple", (1, 1, 1, 1, 1), ValueError, r"got \(1, 1, 1, 1, 1\)"),
            ("float", 1.0, TypeError, r"got 1\.0$"),
            ("float-in-4-tuple", (0, 1.0, 0, 0), TypeError, r"got \(0, 1\.0, 0, 0\)"),
            ("bool-in-4-tuple", (0, True, 0, 0), TypeError, r"got \(0, True, 0, 0\)"),
            ("none", None, TypeError, r"got None$"),
            ("2**40", 2**40, ValueError, r"at most 2\*\*31 - 1\), got 1099511627776$"),
            ("2**31-in-4-tuple", (0, 0, 0, 2**31), ValueError, r"got \(0, 0, 0, 2147483648\)"),
            ("full", "full", ValueError, r"got 'full'$"),
            ("SAME", "SAME", ValueError, r"got 'SAME'$"),
        ]:
            out.append(case(op, f"padding-{desc}", exc, rf"^{op}: {forms} .*{got}",
                            padding=value))
        out += [
            case(op, "padding-same-stride2", ValueError,
                 r"padding='same' needs stride 1, got stride=\(2, 2\)" + helper,
                 padding="same", stride=2),
            case(op, "padding-same-stride-1-2", ValueError,
                 r"padding='same' needs stride 1, got stride=\(1, 2\)" + helper,
                 padding="same", stride=(1, 2)),
        ]
    for op in POOL_OPS:  # their stride defaults to the kernel
        out.append(case(op, "padding-same-default-stride", ValueError,
                        r"padding='same' needs stride 1, got stride=\(3, 3\)" + helper,
                        kernel_size=3, padding="same"))
    for op in CONV_OPS:
        out += [
            case(op, "groups-zero", ValueError, GROUPS_MESSAGE + r"0$", groups=0),
            case(op, "groups-negative", ValueError, GROUPS_MESSAGE + r"-1$", groups=-1),
            case(op, "groups-bool", TypeError, GROUPS_MESSAGE + r"True$", groups=True),
            case(op, "groups-float", TypeError, GROUPS_MESSAGE + r"1\.5$", groups=1.5),
            case(op, "groups-not-dividing-C", ValueError,
                 r"input channels \(4\) must be divisible by groups \(3\)", groups=3),
            case(op, "groups-not-dividing-K", ValueError,
                 r"out_channels \(3\) must be divisible by groups \(2\)", groups=2),
            case(op, "channel-mismatch", ValueError,
                 r"weight of shape \(3, 3, 3, 3\) expects 3 input channels .*the input has 4",
                 **weight_override(op, (3, 3, 3, 3))),
            case(op, "empty-kernel", ValueError,
                 r"weight must have a non-empty shape .*got \(3, 4, 0, 3\)",
                 **weight_override(op, (3, 4, 0, 3))),
            case(op, "kernel-larger-than-input", ValueError,
                 r"output size would be \(0, 0\): the kernel \(7, 7\) .*padded input \(6, 6\)",
                 **weight_override(op, (3, 4, 7, 7))),
            case(op, "dilated-kernel-larger-than-input", ValueError,
                 r"output size would be \(0, 0\): the kernel \(3, 3\) with dilation \(3, 3\)",
                 dilation=3),
            case(op, "dilation-2**31-1", ValueError, r"output size would be \(-\d+, -\d+\)",
                 dilation=2**31 - 1),
        ]
    # conv2d's bias
    out += [
        case("conv2d", "bias-wrong-length", ValueError,
             r"\bbias must have shape \(3,\) .*got \(4,\)", bias=np.zeros(4)),
        case("conv2d", "bias-empty", ValueError, r"\bbias must have shape \(3,\) .*got \(0,\)",
             bias=np.zeros(0)),
    ]
    # pools: padding above half the kernel, output below 1, ceil_mode
    for op in POOL_OPS:
        out += [
            case(op, "padding-above-half-kernel", ValueError,
                 r"padding must be at most half of kernel_size, got padding=\(2, 2\) "
                 r"for kernel_size=\(3, 3\) \(a 4-tuple \(top, bottom, left, right\) takes any "
                 r"padding\)$", kernel_size=3, padding=2),
            case(op, "padding-above-half-kernel-w", ValueError,
                 r"padding must be at most half .*padding=\(0, 2\) for kernel_size=\(2, 2\)",
                 padding=(0, 2)),
            case(op, "padding-4-tuple-output-below-1", ValueError,
                 r"output size would be \(0, 3\) for input size \(6, 6\) with "
                 r"kernel_size=\(9, 2\), stride=\(9, 2\), padding=\(1, 1, 0, 0\)",
                 kernel_size=(9, 2), padding=(1, 1, 0, 0)),
        ]
    for op in POOL_OPS:
        out += [
            case(op, "kernel-larger-than-input", ValueError,
                 r"output size would be \(0, 0\) for input size \(6, 6\) with kernel_size=\(7, 7\)",
                 kernel_size=7),
            case(op, "kernel-larger-than-input-h", ValueError,
                 r"output size would be \(0, 3\) for input size \(6, 6\) with kernel_size=\(7, 2\)",
                 kernel_size=(7, 2)),
            case(op, "ceil_mode-int", TypeError, r"\bceil_mode must be a bool, got 1$",
                 ceil_mode=1),
            case(op, "ceil_mode-str", TypeError, r"\bceil_mode must be a bool, got 'yes'$",
                 ceil_mode="yes"),
        ]
    for op in ("max_pool2d", "max_pool2d_backward"):
        out.append(case(op, "dilated-kernel-larger-than-input", ValueError,
                        r"output size would be \(0, 0\) .*dilation=\(6, 6\)", dilation=6))
    # avg: divisor_override
    for op in AVG_OPS:
        out += [
            case(op, "divisor-zero", ValueError,
                 r"\bdivisor_override must be None or a non-zero int .*got 0$", divisor_override=0),
            case(op, "divisor-float", TypeError, r"\bdivisor_override .*got 2\.0$",
                 divisor_override=2.0),
            case(op, "divisor-bool", TypeError, r"\bdivisor_override .*got True$",
                 divisor_override=True),
            case(op, "divisor-str", TypeError, r"\bdivisor_override .*got '2'$",
                 divisor_override="2"),
            case(op, "divisor-2**31", ValueError, r"\bdivisor_override .*got 2147483648$",
                 divisor_override=2**31),
        ]
    # lp: norm_type
    for op in LP_OPS:
        out += [
            case(op, "norm_type-zero", ValueError,
                 r"\bnorm_type must be a positive finite number, got 0(\.0)?$", norm_type=0),
            case(op, "norm_type-negative", ValueError, r"\bnorm_type .*got -1(\.0)?$",
                 norm_type=-1.0),
            case(op, "norm_type-inf", ValueError, r"\bnorm_type .*got inf$", norm_type=np.inf),
            case(op, "norm_type-minus-inf", ValueError, r"\bnorm_type .*got -inf$",
                 norm_type=-np.inf),
            case(op, "norm_type-nan", ValueError, r"\bnorm_type .*got nan$", norm_type=np.nan),
            case(op, "norm_type-str", TypeError, r"\bnorm_type .*got '2'$", norm_type="2"),
            case(op, "norm_type-bool", TypeError, r"\bnorm_type .*got True$", norm_type=True),
            case(op, "norm_type-none", TypeError, r"\bnorm_type .*got None$", norm_type=None),
            case(op, "norm_type-complex", TypeError, r"\bnorm_type .*got \(2\+0j\)$",
                 norm_type=2 + 0j),
        ]
    return out


def _grad_output_cases():
    out = []
    for op, expected in [("conv2d_backward", CONV_OUT), ("conv2d_input", CONV_OUT),
                         ("conv2d_weight", CONV_OUT), ("max_pool2d_backward", POOL_OUT),
                         ("avg_pool2d_backward", POOL_OUT), ("lp_pool2d_backward", POOL_OUT)]:
        exp = re.escape(str(expected))
        for desc, shape in [("too-big", (2, expected[1], 5, 5)), ("wrong-channels", (2, 1, 3, 3)),
                            ("wrong-batch", (1,) + expected[1:])]:
            out.append(case(op, f"grad_output-{desc}", ValueError,
                            rf"\bgrad_output must have the output's shape {exp}, "
                            rf"got {re.escape(str(shape))}", grad_output=np.zeros(shape)))
    # the grad_output of a geometry other than the one passed (stride 2 instead of 1)
    out.append(case("conv2d_backward", "grad_output-other-stride", ValueError,
                    r"output's shape \(2, 3, 2, 2\), got \(2, 3, 4, 4\)", stride=2))
    out.append(case("max_pool2d_backward", "grad_output-other-stride", ValueError,
                    r"output's shape \(2, 4, 5, 5\), got \(2, 4, 3, 3\)", stride=1))
    for desc, shape in [("fewer-dims", (4, 6, 6)), ("other-shape", (2, 4, 6, 5)),
                        ("broadcastable", (1, 4, 6, 6))]:
        out.append(case("relu_backward", f"grad_output-{desc}", ValueError,
                        rf"\bgrad_output must have the shape of x \(2, 4, 6, 6\), "
                        rf"got {re.escape(str(shape))}", grad_output=np.zeros(shape)))
    out.append(case("relu_backward", "x-other-shape", ValueError,
                    r"\bgrad_output must have the shape of x \(2, 4, 6, 7\), got \(2, 4, 6, 6\)",
                    x=np.zeros((2, 4, 6, 7))))
    return out


def _indices_cases():
    op = "max_pool2d_backward"
    good = np.zeros(POOL_OUT, np.int64)

    def with_value(v, dtype=np.int64):
        a = good.astype(dtype)
        a[1, 2, 0, 1] = v
        return a

    out = [
        case(op, "indices-wrong-shape", ValueError,
             r"\bindices must have the output's shape \(2, 4, 3, 3\), got \(2, 4, 2, 2\)",
             indices=np.zeros((2, 4, 2, 2), np.int64)),
        case(op, "indices-flat", ValueError,
             r"\bindices must have the output's shape .*got \(72,\)",
             indices=np.zeros(72, np.int64)),
        case(op, "indices-float", TypeError,
             r"\bindices must be an integer numpy\.ndarray .*got float64",
             indices=good.astype(np.float64)),
        case(op, "indices-float32", TypeError, r"\bindices must be an integer .*got float32",
             indices=good.astype(np.float32)),
        case(op, "indices-bool", TypeError, r"\bindices must be an integer .*got bool",
             indices=good.astype(bool)),
        case(op, "indices-list", TypeError, r"\bindices must be an integer .*got list",
             indices=good.tolist()),
        case(op, "indices-int32-below-minus-1", ValueError,
             r"\bindices must lie in \[-1, 36\) .*got values in \[-2, 0\]",
             indices=with_value(-2, np.int32)),
        case(op, "indices-uint64-2**63", ValueError, r"\bindices must lie in \[-1, 36\)",
             indices=with_value(2**63, np.uint64)),
        case(op, "indices-uint64-max", ValueError, r"\bindices must lie in \[-1, 36\)",
             indices=with_value(2**64 - 1, np.uint64)),
    ]
    # With batch 0 there is no work, but `indices` are still checked.
    empty = dict(grad_output=np.zeros((0, 4, 3, 3)), x=np.zeros((0, 4, 6, 6)))
    out += [
        case(op, "batch0-indices-float", TypeError, r"\bindices must be an integer .*got float64",
             indices=np.zeros((0, 4, 3, 3)), **empty),
        case(op, "batch0-indices-list", TypeError, r"\bindices must be an integer .*got list",
             indices=[1, 2], **empty),
        case(op, "batch0-indices-wrong-shape", ValueError,
             r"\bindices must have the output's shape \(0, 4, 3, 3\), got \(5,\)",
             indices=np.zeros(5, np.int64), **empty),
    ]
    return out


def _scatter_checked_index_cases():
    """int64 indices out of range: the kernel finds them as it scatters (a separate NumPy pass
    would cost a third of the backward), skips them and the function raises."""
    def with_value(v):
        a = np.zeros(POOL_OUT, np.int64)
        a[1, 2, 0, 1] = v
        return a

    return [
        pytest.param(with_value(-2), r"got values in \[-2, 0\]", id="below-minus-1"),
        pytest.param(with_value(36), r"got values in \[0, 36\]", id="equal-HW"),
        pytest.param(with_value(2**62), r"got values in \[0, 4611686018427387904\]",
                     id="huge"),
        pytest.param(with_value(2**63 - 1), r"got values in \[0, 9223372036854775807\]",
                     id="int64-max"),
        pytest.param(with_value(-2**63), r"got values in \[-9223372036854775808, 0\]",
                     id="int64-min"),
    ]


@pytest.mark.parametrize("indices, pattern", _scatter_checked_index_cases())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_backward_rejects_int64_indices_out_of_range(indices, pattern, dtype):
    kwargs = {**make_kwargs("max_pool2d_backward", dtype), "indices": indices}
    with pytest.raises(ValueError) as exc_info:
        F.max_pool2d_backward(**kwargs)
    assert_message(exc_info, "max_pool2d_backward", r"\bindices must lie in \[-1, 36\) "
                   r"\(flat positions in an input plane\), " + pattern)


def _shape_arg_cases():
    out = []
    for op, name, label in [("conv2d_input", "input_shape", "(N, C, H, W)"),
                            ("conv2d_weight", "weight_shape", "(K, C/groups, kH, kW)")]:
        full = BASE[op][name]
        for desc, value, exc in [
            ("3-tuple", full[:3], (TypeError, ValueError)),
            ("5-tuple", full + (1,), (TypeError, ValueError)),
            ("negative", full[:3] + (-1,), ValueError),
            ("float", full[:3] + (6.0,), (TypeError, ValueError)),
            ("bool", full[:3] + (True,), (TypeError, ValueError)),
            ("string", "abcd", (TypeError, ValueError)),
            ("none", None, (TypeError, ValueError)),
            ("int", 6, (TypeError, ValueError)),
        ]:
            out.append(case(op, f"{name}-{desc}", exc,
                            rf"\b{name} must be .*got {re.escape(repr(value))}$", **{name: value}))
        out.append(case(op, f"{name}-layout-in-message", ValueError, re.escape(label),
                        **{name: full[:3]}))
    out.append(case("conv2d_input", "input_shape-no-channels", ValueError,
                    r"input must have at least one channel, row and column .*"
                    r"got shape \(2, 0, 6, 6\)",
                    input_shape=(2, 0, 6, 6)))
    out.append(case("conv2d_weight", "weight_shape-zero-K", ValueError,
                    r"weight must have a non-empty shape .*got \(0, 4, 3, 3\)",
                    weight_shape=(0, 4, 3, 3)))
    return out


def _huge(shape, dtype=np.float32):
    """A read-only zero-stride view of any shape: no memory behind it."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def _overflow_cases():
    """Sizes whose index arithmetic would overflow; none allocates (the checks come first)."""
    w1 = np.ones((1, 1, 1, 1), np.float32)
    g1 = np.ones((1, 1, 1, 1), np.float32)
    lim = r"more than fastconv's limit of 2\*\*60"
    out = [
        case("conv2d", "output-over-2**60-by-padding", ValueError,
             r"the output of shape \(1, 1, 2147483649, 2147483649\) has 4611686022722355201 "
             r"elements, " + lim, x=_huge((1, 1, 1, 1)), weight=w1, bias=None, padding=2**30),
        case("conv2d", "output-over-2**60-by-channels", ValueError,
             r"the output of shape \(268435456, 4, 65536, 65536\) .*" + lim,
             x=_huge((2**28, 1, 2**16, 2**16)), weight=_huge((4, 1, 1, 1)), bias=None),
        case("conv2d_backward", "output-over-2**60", ValueError, r"the output of shape .*" + lim,
             grad_output=g1, x=_huge((1, 1, 1, 1)), weight=w1, padding=2**30),
        case("conv2d_input", "output-over-2**60", ValueError, r"the output of shape .*" + lim,
             input_shape=(2**62, 1, 1, 1), weight=w1, grad_output=g1),
        case("conv2d_input", "input-gradient-over-2**60", ValueError,
             r"the input gradient of shape \(1, 1, 2147483647, 2147483647\) .*" + lim,
             input_shape=(1, 1, 2**31 - 1, 2**31 - 1), weight=w1, grad_output=g1,
             stride=2**31 - 1),
        case("conv2d_weight", "output-over-2**60", ValueError, r"the output of shape .*" + lim,
             x=_huge((1, 1, 1, 1)), weight_shape=(1, 1, 1, 1), grad_output=g1, padding=2**30),
        case("conv2d_weight", "weight-gradient-over-2**60", ValueError,
             r"weight gradient .*" + lim,
             x=np.zeros((1, 1, 1, 1), np.float32), weight_shape=(1, 1, 2**31 - 1, 2**31 - 1),
             grad_output=np.zeros((1, 1, 3, 3), np.float32), padding=2**30),
        case("conv2d", "kernel-stride-2**40", ValueError, r"\bstride .*at most 2\*\*31 - 1",
             stride=2**40),
        case("conv2d_input", "dilation-pair-2**31", ValueError,
             r"\bdilation .*at most 2\*\*31 - 1\), got \(1, 2147483648\)", dilation=(1, 2**31)),
    ]
    for op in POOL_OPS:
        extra = {"grad_output": g1} if op.endswith("_backward") else {}
        out.append(case(op, "output-over-2**60", ValueError,
                        r"the output of shape \(1073741824, 1073741824, 2, 2\) .*" + lim,
                        x=_huge((2**30, 2**30, 1, 1)), kernel_size=2, stride=1, padding=1,
                        **extra))
        out.append(case(op, "padding-2**31", ValueError, r"\bpadding .*at most 2\*\*31 - 1",
                        kernel_size=2**31 - 1, padding=2**31))
    return out


def _upper_limit_message_cases():
    """Ints above 2**31 - 1 are refused with a message that names the limit."""
    limit = r"at most 2\*\*31 - 1.*got 2147483648"
    out = [case(op, "groups-2**31-message", ValueError, limit, groups=2**31) for op in CONV_OPS]
    out += [case(op, "divisor-2**31-message", ValueError, limit, divisor_override=2**31)
            for op in AVG_OPS]
    return out


def _type_policy_cases():
    """_validation's docstring: TypeError for a wrong type, ValueError for a wrong value."""
    return [
        case("conv2d", "stride-float-is-TypeError", TypeError, r"\bstride .*got 2\.0",
             stride=2.0),
        case("max_pool2d", "kernel_size-bool-is-TypeError", TypeError,
             r"\bkernel_size .*got True", kernel_size=True),
        case("conv2d_input", "input_shape-none-is-TypeError", TypeError,
             r"\binput_shape .*got None", input_shape=None),
    ]


def _flag_cases():
    """Boolean flags must be bools, like ceil_mode."""
    out = [case(op, "count_include_pad-str", TypeError, r"\bcount_include_pad .*got 'no'",
                count_include_pad="no") for op in AVG_OPS]
    out.append(case("max_pool2d", "return_indices-str", TypeError, r"\breturn_indices .*got 'no'",
                    return_indices="no"))
    return out


REJECT_CASES = (_array_cases() + _geometry_cases() + _grad_output_cases() + _indices_cases()
                + _shape_arg_cases() + _overflow_cases() + _upper_limit_message_cases()
                + _type_policy_cases() + _flag_cases())


@pytest.mark.parametrize("op, overrides, exc, pattern", REJECT_CASES)
def test_rejects_bad_input_before_any_kernel(no_kernels, op, overrides, exc, pattern):
    kwargs = {**BASE[op], **overrides}
    with pytest.raises(exc) as exc_info:
        call(op, **kwargs)
    assert_message(exc_info, op, pattern)


@pytest.mark.parametrize("op", ALL_OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_base_arguments_are_valid(op, dtype):
    """The table's starting point is accepted, so each case fails for its own override only."""
    outs = as_tuple(call(op, **make_kwargs(op, dtype)))
    assert all(o.dtype == dtype for o in outs)


# ---- set_num_threads / use_isa -----------------------------------------------------------------

@pytest.mark.parametrize("n, exc, pattern", [
    (0, ValueError, THREADS_MESSAGE + r"0$"),
    (-1, ValueError, THREADS_MESSAGE + r"-1$"),
    (1.5, TypeError, THREADS_MESSAGE + r"1\.5$"),
    (2.0, TypeError, THREADS_MESSAGE + r"2\.0$"),
    (True, TypeError, THREADS_MESSAGE + r"True$"),
    ("2", TypeError, THREADS_MESSAGE + r"'2'$"),
    pytest.param(2**31, ValueError, r"\bn must be .*at most 2\*\*31 - 1.*got 2147483648$"),
], ids=["zero", "negative", "float", "float-integral", "bool", "string", "2**31-message"])
def test_set_num_threads_rejects(keep_threads, n, exc, pattern):
    before = fastconv.get_num_threads()
    with pytest.raises(exc) as exc_info:
        fastconv.set_num_threads(n)
    assert_message(exc_info, "set_num_threads", pattern)
    assert fastconv.get_num_threads() == before


@pytest.mark.parametrize("name", ["nope", "AVX2", "", 3, None])
def test_use_isa_rejects_unknown_name(name):
    before = fastconv.selected_isa()
    with pytest.raises(ValueError) as exc_info, fastconv.use_isa(name):
        pass
    assert_message(exc_info, "use_isa", r"\bname must be one of \[.*'scalar'.*\].*got "
                   + re.escape(repr(name)))
    assert fastconv.selected_isa() == before


def test_use_isa_rejects_unknown_name_when_called():
    with pytest.raises(ValueError, match=r"^use_isa: name must be one of"):
        fastconv.use_isa("nope")


# ---- acceptance --------------------------------------------------------------------------------

def _noncontiguous(a):
    b = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    b[..., ::2] = a
    out = b[..., ::2]
    assert not out.flags.c_contiguous or a.shape[-1] <= 1
    return out


def _negative_strides(a):
    flip = (slice(None, None, -1),) * a.ndim
    out = np.ascontiguousarray(a[flip])[flip]
    assert min(out.strides) < 0
    return out


def _readonly(a):
    out = a.copy()
    out.flags.writeable = False
    return out


LAYOUTS = {
    "noncontiguous": _noncontiguous,
    "fortran": np.asfortranarray,
    "negative-strides": _negative_strides,
    "readonly": _readonly,
    "big-endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
}


def _kwargs_with_indices(op, dtype=np.float32, n=2):
    kwargs = make_kwargs(op, dtype, n)
    if op == "max_pool2d_backward":
        kwargs["indices"] = F.max_pool2d(kwargs["x"], 2, return_indices=True)[1]
    if op == "max_pool2d":
        kwargs["return_indices"] = True
    return kwargs


ACCEPT_OPS = ALL_OPS + ["max_pool2d_backward-with-indices", "conv2d-same-groups"]


def _accept_kwargs(name):
    if name == "max_pool2d_backward-with-indices":
        return "max_pool2d_backward", _kwargs_with_indices("max_pool2d_backward")
    if name == "conv2d-same-groups":
        kw = make_kwargs("conv2d", np.float32)
        kw.update(weight=np.random.default_rng(1).standard_normal((6, 2, 2, 3)).astype(np.float32),
                  bias=np.ones(6, np.float32), padding="same", dilation=(2, 1), groups=2)
        return "conv2d", kw
    return name, _kwargs_with_indices(name)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", ACCEPT_OPS)
def test_accepts_any_layout(name, layout):
    op, kwargs = _accept_kwargs(name)
    expected = as_tuple(call(op, **kwargs))
    variant = {k: LAYOUTS[layout](v) if isinstance(v, np.ndarray) else v
               for k, v in kwargs.items()}
    got = as_tuple(call(op, **variant))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype and g.dtype.isnative
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6)
    # the inputs were not written to
    for k, v in kwargs.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(variant[k], v)


def test_mixed_byte_order_of_one_dtype_is_accepted():
    x = np.random.default_rng(2).standard_normal((1, 2, 5, 5)).astype(">f4")
    w = np.ones((3, 2, 3, 3), "<f4")
    y = F.conv2d(x, w)
    np.testing.assert_allclose(y, F.conv2d(x.astype(np.float32), w), rtol=1e-6)
    assert y.dtype == np.float32 and y.dtype.isnative


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ACCEPT_OPS)
def test_outputs_are_never_views_of_inputs(name, dtype):
    op, kwargs = _accept_kwargs(name)
    kwargs = {k: v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
              for k, v in kwargs.items()}
    outs = as_tuple(call(op, **kwargs))
    for o in outs:
        assert o.flags.c_contiguous and o.flags.writeable and o.flags.owndata
        for v in kwargs.values():
            if isinstance(v, np.ndarray):
                assert not np.shares_memory(o, v)


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4, 5), ()])
def test_relu_of_contiguous_input_is_a_new_array(shape):
    x = np.asarray(np.random.default_rng(3).standard_normal(shape))
    y = F.relu(x)
    assert not np.shares_memory(y, x)
    y[...] = 123.0
    assert not (x == 123.0).any()
    gx = F.relu_backward(x, x)
    assert not np.shares_memory(gx, x)


# (op, expected output shapes for batch 0)
BATCH0 = [
    ("conv2d", [(0, 3, 4, 4)]),
    ("conv2d_backward", [(0, 4, 6, 6), W_SHAPE, (3,)]),
    ("conv2d_input", [(0, 4, 6, 6)]),
    ("conv2d_weight", [W_SHAPE]),
    ("max_pool2d", [(0, 4, 3, 3), (0, 4, 3, 3)]),
    ("max_pool2d_backward", [(0, 4, 6, 6)]),
    ("avg_pool2d", [(0, 4, 3, 3)]),
    ("avg_pool2d_backward", [(0, 4, 6, 6)]),
    ("lp_pool2d", [(0, 4, 3, 3)]),
    ("lp_pool2d_backward", [(0, 4, 6, 6)]),
    ("relu", [(0, 4, 6, 6)]),
    ("relu_backward", [(0, 4, 6, 6)]),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op, shapes", BATCH0)
def test_batch_zero_gives_empty_output(op, shapes, dtype):
    kwargs = make_kwargs(op, dtype, n=0)
    if op == "max_pool2d":
        kwargs["return_indices"] = True
    outs = as_tuple(call(op, **kwargs))
    assert [o.shape for o in outs] == shapes
    for o in outs:
        assert o.dtype == (np.int64 if o is not outs[0] and op == "max_pool2d" else dtype)
        if o.size:  # conv2d_backward's / conv2d_weight's weight and bias gradients
            assert np.all(o == 0)


def test_batch_zero_conv2d_backward_gradients_are_zero_filled():
    x = np.zeros((0, 4, 6, 6), np.float32)
    w = np.ones((6, 2, 3, 3), np.float32)
    gx, gw, gb = F.conv2d_backward(np.zeros((0, 6, 2, 2), np.float32), x, w, stride=2, groups=2)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == (6,)
    assert not gw.any() and not gb.any()


@pytest.mark.parametrize("op", POOL_OPS)
@pytest.mark.parametrize("kernel_size", [2, (2, 3), [3, 1]])
def test_pool_stride_none_equals_kernel_size(op, kernel_size):
    kwargs = make_kwargs(op, np.float64)
    kwargs["kernel_size"] = kernel_size
    forward = op.replace("_backward", "")
    fwd_kwargs = {k: v for k, v in kwargs.items() if k != "grad_output"}
    out_shape = call(forward, **fwd_kwargs).shape
    if "grad_output" in kwargs:
        kwargs["grad_output"] = np.random.default_rng(4).standard_normal(out_shape)
    explicit = call(op, **kwargs, stride=kernel_size)
    for stride in (None, ()):
        np.testing.assert_array_equal(call(op, **kwargs, stride=stride), explicit)
    np.testing.assert_array_equal(call(op, **kwargs), explicit)  # the default
