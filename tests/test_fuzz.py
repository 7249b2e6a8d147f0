"""Fuzzing every public op of fastconv.functional with random shapes and options, bad ones included.

Each draw is judged by a small oracle written here, independently of fastconv/_validation.py, from
PyTorch's rules (shared/ANCHORS.md) and fastconv's documented differences (4-D only, float32 and
float64 only, no promotion, lp_pool2d's norm_type positive and finite, batch_norm's eps positive).
A valid draw must give the reference's answer (fastconv.reference for conv, pooling and relu, a
NumPy formula for the rest) within the tolerances of helpers.py; an invalid draw must raise
ValueError or TypeError whose message starts with the op's name, and nothing else, never a crash.

Runs in the default test run with the "ci" hypothesis profile; for a long run:
``HYPOTHESIS_PROFILE=long pytest -m fuzz``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pytest
from helpers import assert_close
from hypothesis import assume, given
from hypothesis import strategies as st

import fastconv.functional as F
from fastconv import reference as ref

pytestmark = pytest.mark.fuzz

LIMIT = 2**31 - 1  # the largest geometry value fastconv accepts
COMPARE_LIMIT = 64  # above this, the reference would allocate huge padded arrays: check shapes
MAX_OUTPUT = 10**6  # a valid draw with a bigger output is skipped (it would only take memory)


def modest(shape) -> bool:
    """Whether arrays of `shape`, or of it with any zero replaced by one, are small."""
    return shape is None or math.prod(max(d, 1) for d in shape) <= MAX_OUTPUT


# ---- the oracle --------------------------------------------------------------------------------

def is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def as_pair(value, minimum):
    """(h, w) if `value` is an int or a 2-sequence of ints in [minimum, 2**31 - 1], else None."""
    if is_int(value):
        values = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) for v in value):
        values = (int(value[0]), int(value[1]))
    else:
        return None
    return values if minimum <= min(values) and max(values) <= LIMIT else None


def as_pad4(value, kernel, stride, dilation):
    """(top, bottom, left, right) from 'valid', 'same' (stride 1), an int, a pair or a 4-tuple
    of ints in [0, 2**31 - 1]; None if invalid."""
    if isinstance(value, str):
        if value == "valid":
            return (0, 0, 0, 0)
        if value != "same" or stride != (1, 1):
            return None
        th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    if isinstance(value, (tuple, list)) and len(value) == 4 and all(is_int(v) for v in value):
        return tuple(int(v) for v in value) if min(value) >= 0 and max(value) <= LIMIT else None
    p = as_pair(value, 0)
    return None if p is None else (p[0], p[0], p[1], p[1])


def is_float_array(a, ndim=None) -> bool:
    return (isinstance(a, np.ndarray) and a.dtype in (np.float32, np.float64)
            and (ndim is None or a.ndim == ndim))


def same_dtype(*arrays) -> bool:
    return len({a.dtype for a in arrays if a is not None}) == 1


def conv_oracle(x_shape, w_shape, stride, padding, dilation, groups):
    """PyTorch's conv2d rules: the output (N, K, OH, OW) and (stride, pad4, dilation), or None."""
    n, c, h, w = x_shape
    k, cg, kh, kw = w_shape
    stride, dilation = as_pair(stride, 1), as_pair(dilation, 1)
    if stride is None or dilation is None or not is_int(groups) or not 1 <= groups <= LIMIT:
        return None
    if min(k, cg, kh, kw, c, h, w) < 1 or c % groups or k % groups or cg * groups != c:
        return None  # only the batch may be empty
    pad = as_pad4(padding, (kh, kw), stride, dilation)
    if pad is None:
        return None
    oh = (h + pad[0] + pad[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + pad[2] + pad[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if oh < 1 or ow < 1 or n * k * oh * ow > 2**60:
        return None
    return (n, k, oh, ow), (stride, pad, dilation)


def pool_oracle(x_shape, kernel_size, stride, padding, dilation, ceil_mode):
    """PyTorch's pooling rules: (output shape, (kernel, stride, padding, dilation)) or None."""
    n, c, h, w = x_shape
    kernel = as_pair(kernel_size, 1)
    default = stride is None or (isinstance(stride, tuple) and stride == ())
    stride = kernel if default else as_pair(stride, 1)
    dilation = as_pair(dilation, 1)
    if None in (kernel, stride, dilation) or not isinstance(ceil_mode, bool):
        return None
    pads = as_pad4(padding, kernel, stride, dilation)
    if pads is None or min(c, h, w) < 1:  # only the batch may be empty
        return None
    # PyTorch's forms (an int, a pair) at most half the kernel; 4-tuples and 'same' any size
    if as_pair(padding, 0) is not None and any(2 * p > k for p, k in zip(pads[::2], kernel)):
        return None
    out = []
    for size, k, s, p0, p1, d in zip((h, w), kernel, stride, pads[::2], pads[1::2], dilation):
        o = (size + p0 + p1 - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (o - 1) * s >= size + p0:
            o -= 1
        out.append(o)
    if min(out) < 1 or n * c * out[0] * out[1] > 2**60:
        return None
    return (n, c, *out), (kernel, stride, pads, dilation)


def small(*params) -> bool:
    """Whether the reference can run this geometry without allocating a huge padded array."""
    flat = []
    for p in params:
        flat += list(p) if isinstance(p, tuple) else [p]
    return max(flat) <= COMPARE_LIMIT


# ---- drawing arguments -------------------------------------------------------------------------

BAD_SCALARS = [0, -1, True, 2.0, None, "2", (1, 1, 1), (1,), 2**31, np.float64(1.0)]


def pad_param(data):
    """A padding: an int, a pair, a 4-tuple (up to one past the largest kernel drawn), 'same',
    'valid', or a bad one."""
    small_int = st.integers(0, 4)
    return data.draw(st.one_of(
        small_int, st.tuples(small_int, small_int), st.tuples(*[small_int] * 4),
        st.sampled_from(["same", "valid", "same", "full", -1, (0, -1), (1, 2, 3), (0, 0, -1, 0),
                         (1, 1, 1, 1, 1), (0, 0, 1.0, 0), 1.0, None, 2**31, LIMIT])),
        label="padding")


def int_param(data, minimum, name, huge=True):
    """An int or pair for `name`: mostly valid small values, sometimes any bad or huge one."""
    small_int = st.integers(minimum, 3)
    choices = [small_int, small_int.map(np.int64), st.tuples(small_int, small_int),
               st.lists(small_int, min_size=2, max_size=2), st.sampled_from(BAD_SCALARS)]
    if huge:
        choices.append(st.sampled_from([LIMIT, (1, LIMIT), (LIMIT, 2)]))
    return data.draw(st.one_of(*choices), label=name)


def flag(data, name):
    return data.draw(st.one_of(st.booleans(), st.booleans(), st.sampled_from([1, "yes", None])),
                     label=name)


def make_array(data, rng, shape, dtype, name, corrupt=True):
    """A float array of `shape`, or (sometimes) something wrong in its place."""
    how = data.draw(st.sampled_from(["ok"] * 12 + ["list", "int32", "float16", "dims-1", "dims+1",
                                                   "other-dtype", "noncontiguous"])
                    if corrupt else st.just("ok"), label=f"{name} kind")
    a = rng.standard_normal(shape).astype(dtype)
    if how == "list":
        return a.tolist()
    if how in ("int32", "float16"):
        return a.astype(how)
    if how == "dims-1" and len(shape) >= 2:
        return a.reshape(shape[:-2] + (shape[-2] * shape[-1],))
    if how in ("dims-1", "dims+1"):
        return a[None]
    if how == "other-dtype":
        return a.astype(np.float64 if dtype == np.float32 else np.float32)
    if how == "noncontiguous" and shape:  # valid: any memory layout is accepted
        view = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)[..., ::2]
        view[...] = a
        return view
    return a


def draw_shape(data, name, n=(0, 2), c=(1, 4), hw=(1, 6)):
    """Mostly non-empty (N, C, H, W); sometimes a zero channel or spatial size."""
    n_ = data.draw(st.integers(*n), label=f"{name} N")
    c_ = data.draw(st.one_of(st.integers(*c), st.integers(*c), st.just(0)), label=f"{name} C")
    h = data.draw(st.one_of(st.integers(*hw), st.integers(*hw), st.just(0)), label=f"{name} H")
    w = data.draw(st.one_of(st.integers(*hw), st.integers(*hw), st.just(0)), label=f"{name} W")
    return (n_, c_, h, w)


def grad_for(data, rng, shape, dtype, name="grad_output"):
    """grad_output of `shape` (None: the output is invalid, so any shape), or a wrong one."""
    if shape is None:
        shape = tuple(data.draw(st.lists(st.integers(0, 3), min_size=4, max_size=4)))
    elif data.draw(st.integers(0, 9), label="grad_output wrong shape") == 0:
        shape = shape[:-1] + (shape[-1] + 1,)
    return make_array(data, rng, shape, dtype, name)


def expect_error(op, kwargs):
    with pytest.raises((ValueError, TypeError)) as exc_info:
        getattr(F, op)(**kwargs)
    assert str(exc_info.value).startswith(f"{op}: "), str(exc_info.value)


def arrays_ok(kwargs, names, ndim):
    arrays = [kwargs[n] for n in names]
    return all(is_float_array(a, ndim) for a in arrays) and same_dtype(*arrays)


# ---- conv2d, conv2d_backward, conv2d_input, conv2d_weight, conv2d_relu(_backward) ------------

def _conv_draw(data, rng):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    x_shape = draw_shape(data, "x")
    groups = data.draw(st.one_of(st.sampled_from([1, 1, 2, 3]), st.sampled_from(BAD_SCALARS)),
                       label="groups")
    g = groups if is_int(groups) and 1 <= groups <= 3 else 1
    k = g * data.draw(st.integers(1, 3), label="K/groups")
    c = x_shape[1]
    if c and c % g == 0 and data.draw(st.integers(0, 9), label="channel mismatch"):
        cg = c // g
    else:
        cg = data.draw(st.integers(0, 3), label="C/groups")
    kh = data.draw(st.one_of(st.integers(1, 3), st.integers(0, 3)), label="kH")
    kw = data.draw(st.one_of(st.integers(1, 3), st.integers(0, 3)), label="kW")
    padding = pad_param(data)
    kwargs = dict(stride=int_param(data, 1, "stride"), padding=padding,
                  dilation=int_param(data, 1, "dilation"), groups=groups)
    return dtype, x_shape, (k, cg, kh, kw), kwargs


def _conv_check(op, out, x, weight, bias, gy, out_shape, geometry, groups, output=None):
    """Compare every output of `op` with the reference (conv2d_relu_backward's given the
    forward `output` its ReLU mask is read from)."""
    outs = out if isinstance(out, tuple) else (out,)
    grads = [x.shape, weight.shape, weight.shape[:1]]
    shapes = {"conv2d": [out_shape], "conv2d_relu": [out_shape], "conv2d_backward": grads,
              "conv2d_relu_backward": grads, "conv2d_input": [x.shape],
              "conv2d_weight": [weight.shape]}[op]
    assert [o.shape for o in outs] == [tuple(s) for s in shapes]
    # the dtype of the arrays passed (conv2d_input takes no x, conv2d_weight no weight)
    dtype = (weight if op == "conv2d_input" else x).dtype
    assert all(o.dtype == dtype for o in outs)
    x, weight = x.astype(dtype), weight.astype(dtype)
    ref_args = (*geometry, groups)
    if op in ("conv2d", "conv2d_relu"):
        abs_bias = None if bias is None else np.abs(bias)
        expected = ref.conv2d(x, weight, bias, *ref_args)
        assert_close(out, ref.relu(expected) if op == "conv2d_relu" else expected,
                     int(np.prod(weight.shape[1:])),
                     ref.conv2d(np.abs(x), np.abs(weight), abs_bias, *ref_args))
        return
    if op == "conv2d_relu_backward":  # relu_backward's rule on the pre-activation
        gy = np.where((output > 0) | np.isnan(output), gy, 0).astype(gy.dtype)
    expected = ref.conv2d_backward(gy, x, weight, *ref_args)
    scale = ref.conv2d_backward(np.abs(gy), np.abs(x), np.abs(weight), *ref_args)
    per_pixel = gy.shape[0] * gy.shape[2] * gy.shape[3]
    lengths = [weight.shape[0] // groups * weight.shape[2] * weight.shape[3], per_pixel, per_pixel]
    pick = {"conv2d_backward": [0, 1, 2], "conv2d_relu_backward": [0, 1, 2], "conv2d_input": [0],
            "conv2d_weight": [1]}[op]
    for o, i in zip(outs, pick):
        assert_close(o, expected[i], lengths[i], scale[i])


CONV_OPS = ["conv2d", "conv2d_backward", "conv2d_input", "conv2d_weight", "conv2d_relu",
            "conv2d_relu_backward"]


@pytest.mark.parametrize("op", CONV_OPS)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_fuzz_conv(op, data, seed):
    rng = np.random.default_rng(seed)
    dtype, x_shape, w_shape, kwargs = _conv_draw(data, rng)
    judged = conv_oracle(x_shape, w_shape, kwargs["stride"], kwargs["padding"],
                         kwargs["dilation"], kwargs["groups"])
    out_shape, geometry = judged if judged else (None, None)
    assume(modest(out_shape))
    # valid but huge strides or dilations need huge kernel workspaces: test_large.py
    assume(judged is None or small(*geometry))
    # conv2d_input takes no x and conv2d_weight no weight: the reference still needs good ones
    x = make_array(data, rng, x_shape, dtype, "x", corrupt=op != "conv2d_input")
    weight = make_array(data, rng, w_shape, dtype, "weight", corrupt=op != "conv2d_weight")
    valid = judged is not None
    output = None
    if op in ("conv2d", "conv2d_relu"):
        bias_kind = data.draw(st.sampled_from(["none", "ok", "ok", "long", "2-D"]), label="bias")
        bias = None if bias_kind == "none" else make_array(
            data, rng, {"ok": (w_shape[0],), "long": (w_shape[0] + 1,),
                        "2-D": (1, w_shape[0])}[bias_kind], dtype, "bias")
        kwargs.update(x=x, weight=weight, bias=bias)
        valid = valid and arrays_ok(kwargs, ["x", "weight"], 4) and (
            bias is None or (is_float_array(bias, 1) and bias.shape == (w_shape[0],)
                             and same_dtype(x, bias)))
        gy = None
    else:
        gy = grad_for(data, rng, out_shape, dtype)
        kwargs["grad_output"] = gy
        if op == "conv2d_backward":
            kwargs.update(x=x, weight=weight)
            names = ["x", "weight", "grad_output"]
        elif op == "conv2d_relu_backward":  # any output: the mask is read from it
            output = grad_for(data, rng, out_shape, dtype, "output")
            kwargs.update(x=x, weight=weight, output=output)
            names = ["x", "weight", "grad_output", "output"]
            valid = valid and is_float_array(output, 4) and output.shape == out_shape
        elif op == "conv2d_input":
            kwargs.update(input_shape=data.draw(st.sampled_from(
                [x_shape, x_shape, x_shape, list(x_shape), x_shape[:3], (*x_shape[:3], -1),
                 (*x_shape[:3], 2.0)]), label="input_shape"), weight=weight)
            names = ["weight", "grad_output"]
            valid = valid and tuple(kwargs["input_shape"]) == x_shape
        else:
            kwargs.update(x=x, weight_shape=data.draw(st.sampled_from(
                [w_shape, w_shape, w_shape, list(w_shape), w_shape[:3], (*w_shape[:3], True)]),
                label="weight_shape"))
            names = ["x", "grad_output"]
            valid = valid and tuple(kwargs["weight_shape"]) == w_shape \
                and not isinstance(kwargs["weight_shape"][-1], bool)
        valid = valid and arrays_ok(kwargs, names, 4) and gy.shape == out_shape
    if not valid:
        expect_error(op, kwargs)
        return
    _conv_check(op, getattr(F, op)(**kwargs), x, weight, kwargs.get("bias"), gy, out_shape,
                geometry, kwargs["groups"], output)


# ---- conv_transpose2d, conv_transpose2d_backward -------------------------------------------------

def conv_transpose_oracle(x_shape, w_shape, stride, padding, output_padding, groups, dilation):
    """PyTorch's conv_transpose2d rules, 4-tuple paddings (ONNX's pads) too: the output
    (N, C_out, OH, OW) and the reference's (stride, pad4, output_padding, groups, dilation), or
    None."""
    n, c, h, w = x_shape
    c_in, kg, kh, kw = w_shape
    stride, dilation = as_pair(stride, 1), as_pair(dilation, 1)
    output_padding = as_pair(output_padding, 0)
    # an int, a pair or a 4-tuple, no 'same' or 'valid' (PyTorch takes no string)
    pad = None if isinstance(padding, str) else as_pad4(padding, None, None, None)
    if None in (stride, dilation, pad, output_padding) or not is_int(groups) \
            or not 1 <= groups <= LIMIT:
        return None
    if min(c_in, kg, kh, kw, c, h, w) < 1 or c_in != c or c % groups:
        return None
    if any(o >= s and o >= d for o, s, d in zip(output_padding, stride, dilation)):
        return None
    oh = (h - 1) * stride[0] - pad[0] - pad[1] + dilation[0] * (kh - 1) + output_padding[0] + 1
    ow = (w - 1) * stride[1] - pad[2] - pad[3] + dilation[1] * (kw - 1) + output_padding[1] + 1
    if oh < 1 or ow < 1 or n * kg * groups * oh * ow > 2**60:
        return None
    return (n, kg * groups, oh, ow), (stride, pad, output_padding, int(groups), dilation)


@pytest.mark.parametrize("op", ["conv_transpose2d", "conv_transpose2d_backward"])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_fuzz_conv_transpose(op, data, seed):
    rng = np.random.default_rng(seed)
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    x_shape = draw_shape(data, "x")
    groups = data.draw(st.one_of(st.sampled_from([1, 1, 2, 3]), st.sampled_from(BAD_SCALARS)),
                       label="groups")
    g = groups if is_int(groups) and 1 <= groups <= 3 else 1
    c_in = x_shape[1] if data.draw(st.integers(0, 9), label="channel mismatch") \
        else data.draw(st.integers(0, 4), label="C_in")
    w_shape = (c_in, data.draw(st.integers(0, 3), label="C_out/groups"),
               data.draw(st.integers(0, 3), label="kH"), data.draw(st.integers(0, 3), label="kW"))
    kwargs = dict(stride=int_param(data, 1, "stride"), padding=pad_param(data),
                  output_padding=int_param(data, 0, "output_padding", huge=False),
                  groups=groups, dilation=int_param(data, 1, "dilation"))
    judged = conv_transpose_oracle(x_shape, w_shape, **kwargs)
    out_shape, geometry = judged if judged else (None, None)
    assume(modest(out_shape))
    assume(judged is None or small(*geometry))
    x = make_array(data, rng, x_shape, dtype, "x")
    weight = make_array(data, rng, w_shape, dtype, "weight")
    kwargs.update(x=x, weight=weight)
    names = ["x", "weight"]
    if op == "conv_transpose2d":
        c_out = w_shape[1] * g
        bias_kind = data.draw(st.sampled_from(["none", "ok", "ok", "long"]), label="bias")
        bias = None if bias_kind == "none" else make_array(
            data, rng, (c_out + (bias_kind == "long"),), dtype, "bias")
        kwargs["bias"] = bias
        valid = judged is not None and arrays_ok(kwargs, names, 4) and (
            bias is None or (is_float_array(bias, 1) and bias.shape == (c_out,)
                             and same_dtype(x, bias)))
    else:
        kwargs["grad_output"] = gy = grad_for(data, rng, out_shape, dtype)
        valid = judged is not None and arrays_ok(kwargs, names + ["grad_output"], 4) \
            and gy.shape == out_shape
    if not valid:
        expect_error(op, kwargs)
        return
    out = getattr(F, op)(**kwargs)
    scaled = {"x": np.abs(x), "weight": np.abs(weight)}
    if op == "conv_transpose2d":
        expected = ref.conv_transpose2d(x, weight, bias, *geometry)
        scale = ref.conv_transpose2d(scaled["x"], scaled["weight"],
                                     None if bias is None else np.abs(bias), *geometry)
        assert out.shape == out_shape and out.dtype == x.dtype
        # each output sums C_in/groups * kH * kW products
        assert_close(out, expected, w_shape[0] // geometry[3] * w_shape[2] * w_shape[3], scale)
        return
    expected = ref.conv_transpose2d_backward(gy, x, weight, *geometry)
    scale = ref.conv_transpose2d_backward(np.abs(gy), scaled["x"], scaled["weight"], *geometry)
    lengths = [int(np.prod(w_shape[1:])), x_shape[0] * x_shape[2] * x_shape[3],
               out_shape[0] * out_shape[2] * out_shape[3]]
    for o, e, s, length in zip(out, expected, scale, lengths):
        assert o.shape == e.shape and o.dtype == x.dtype
        assert_close(o, e, length, s)


# ---- pooling ---------------------------------------------------------------------------------

POOL_OPS = ["max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
            "lp_pool2d", "lp_pool2d_backward"]


def _pool_draw(data, op):
    kwargs = dict(kernel_size=int_param(data, 1, "kernel_size"))
    stride = data.draw(st.one_of(st.none(), st.just(()), st.just(None)), label="stride default") \
        if data.draw(st.booleans(), label="default stride") else int_param(data, 1, "stride")
    if stride is not None:
        kwargs["stride"] = stride
    kwargs["padding"] = pad_param(data)
    if op.startswith("max"):
        kwargs["dilation"] = int_param(data, 1, "dilation")
    kwargs["ceil_mode"] = flag(data, "ceil_mode")
    if op.startswith("avg"):
        kwargs["count_include_pad"] = flag(data, "count_include_pad")
        kwargs["divisor_override"] = data.draw(st.one_of(
            st.none(), st.integers(-5, 5), st.sampled_from([2.0, True, "2", 2**31, -(2**31)])),
            label="divisor_override")
    if op.startswith("lp"):
        kwargs["norm_type"] = data.draw(st.one_of(
            st.sampled_from([1, 2, 3, 1.5, 0.5, np.float32(2.0)]),
            st.sampled_from([0, -1.0, np.inf, np.nan, "2", True, None, 2 + 0j])),
            label="norm_type")
    return kwargs


def _pool_options_ok(op, kwargs):
    if op.startswith("avg"):
        d = kwargs["divisor_override"]
        if not isinstance(kwargs["count_include_pad"], bool):
            return False
        if d is not None and not (is_int(d) and d != 0 and abs(d) <= LIMIT):
            return False
    if op.startswith("lp"):
        p = kwargs["norm_type"]
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real) \
                or not (math.isfinite(p) and p > 0):
            return False
    return True


def _pool_reference(op, x, kwargs, geometry, gy, indices):
    kernel, stride, padding, dilation = geometry
    ceil = kwargs["ceil_mode"]
    if op.startswith("max"):
        if op == "max_pool2d":
            return ref.max_pool2d(x, kernel, stride, padding, dilation, ceil)
        return ref.max_pool2d_backward(gy, x, kernel, stride, padding, dilation, ceil, indices)
    if op.startswith("avg"):
        args = (kernel, stride, padding, ceil, kwargs["count_include_pad"],
                kwargs["divisor_override"])
        return ref.avg_pool2d(x, *args) if op == "avg_pool2d" else \
            ref.avg_pool2d_backward(gy, x, *args)
    p = float(kwargs["norm_type"])
    return ref.lp_pool2d(x, p, kernel, stride, ceil, padding) if op == "lp_pool2d" else \
        ref.lp_pool2d_backward(gy, x, p, kernel, stride, ceil, padding)


@pytest.mark.parametrize("op", POOL_OPS)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_fuzz_pool(op, data, seed):
    rng = np.random.default_rng(seed)
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    x_shape = draw_shape(data, "x", hw=(1, 7))
    kwargs = _pool_draw(data, op)
    judged = pool_oracle(x_shape, kwargs["kernel_size"], kwargs.get("stride"),
                         kwargs.get("padding", 0), kwargs.get("dilation", 1), kwargs["ceil_mode"])
    out_shape, geometry = judged if judged else (None, None)
    assume(modest(out_shape))
    x = make_array(data, rng, x_shape, dtype, "x")
    if op.startswith("lp") and isinstance(x, np.ndarray) and x.dtype.kind == "f":
        x = np.abs(x) + x.dtype.type(0.1)  # x**p stays real for a fractional p
        p = kwargs["norm_type"]
        if x.size and isinstance(p, (int, float)) and p >= 1:
            x.flat[::5] = 0  # windows that sum to 0: gradient 0 (for p < 1, 0**(p-1) is inf)
    valid = judged is not None and _pool_options_ok(op, kwargs) and is_float_array(x, 4)
    kwargs["x"] = x
    gy = indices = None
    if op == "max_pool2d":
        kwargs["return_indices"] = flag(data, "return_indices")
        valid = valid and isinstance(kwargs["return_indices"], bool)
    elif op.endswith("_backward"):
        gy = kwargs["grad_output"] = grad_for(data, rng, out_shape, dtype)
        valid = valid and arrays_ok(kwargs, ["x", "grad_output"], 4) and gy.shape == out_shape
        if op == "max_pool2d_backward" and data.draw(st.booleans(), label="pass indices"):
            indices = _draw_indices(data, rng, x, out_shape, geometry, kwargs, valid)
            valid = valid and indices is not None and _indices_ok(indices, out_shape, x.shape)
            kwargs["indices"] = indices
    if not valid:
        expect_error(op, kwargs)
        return
    out = getattr(F, op)(**kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    shape = x.shape if op.endswith("_backward") else out_shape
    assert outs[0].shape == shape and outs[0].dtype == x.dtype
    if not small(*geometry):
        return
    expected = _pool_reference(op, x, kwargs, geometry, gy, indices)
    if op == "max_pool2d":
        np.testing.assert_array_equal(outs[0], expected[0])
        if kwargs["return_indices"]:
            assert outs[1].dtype == np.int64
            np.testing.assert_array_equal(outs[1], expected[1])
        return
    L = geometry[0][0] * geometry[0][1] * (4 if op.startswith("lp") else 1)
    assert_close_or_same_inf(outs[0], expected, L)


def assert_close_or_same_inf(actual, expected, reduction_length):
    """assert_close, with infinities (x ** (p - 1) of a 0 for p < 1) required to match exactly."""
    inf = np.isinf(expected)
    np.testing.assert_array_equal(actual[inf], expected[inf])
    assert_close(np.where(inf, 0, actual), np.where(inf, 0, expected), reduction_length)


def _draw_indices(data, rng, x, out_shape, geometry, kwargs, valid):
    """max_pool2d's own indices, or a corrupted copy (out of range, wrong dtype or shape)."""
    if valid and small(*geometry):
        good = ref.max_pool2d(x, *geometry, kwargs["ceil_mode"])[1]
    else:
        good = np.zeros(out_shape or (1, 1, 1, 1), np.int64)
    how = data.draw(st.sampled_from(["ok", "ok", "int32", "uint8", "too-big", "below-minus-1",
                                     "float", "list", "shape"]), label="indices kind")
    if how == "ok":
        return good
    if how in ("int32", "uint8"):  # integer dtypes are accepted; uint8 only where it fits
        return good.astype(how) if how == "int32" or good.size == 0 or \
            (good.min() >= 0 and good.max() < 256) else good.astype(np.int16)
    if how == "float":
        return good.astype(np.float64)
    if how == "list":
        return good.tolist()
    if how == "shape":
        return good.reshape(-1)
    bad = good.copy()
    if bad.size:
        plane = x.shape[2] * x.shape[3] if isinstance(x, np.ndarray) and x.ndim == 4 else 1
        bad.flat[rng.integers(bad.size)] = plane if how == "too-big" else -2
    return bad


def _indices_ok(indices, out_shape, x_shape):
    if not isinstance(indices, np.ndarray) or indices.dtype.kind not in "iu":
        return False
    if indices.shape != out_shape:
        return False
    return indices.size == 0 or (indices.min() >= -1 and indices.max() < x_shape[2] * x_shape[3])


# ---- relu and the NumPy ops -----------------------------------------------------------------

def any_shape(data, name, max_dims=4):
    return tuple(data.draw(st.lists(st.integers(0, 4), min_size=0, max_size=max_dims), label=name))


def _float_pair_op(data, rng, op):
    """relu/tanh/sigmoid (x), their backward (grad_output, x or output of one shape) and
    add_relu (a, b of one shape)."""
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    shape = any_shape(data, "shape")
    x = make_array(data, rng, shape, dtype, "x")
    if op != "add_relu" and not op.endswith("_backward"):
        return {"x": x}, is_float_array(x)
    first, second = {"add_relu": ("b", "a"), "relu_backward": ("grad_output", "x")}.get(
        op, ("grad_output", "output"))
    other_shape = shape if data.draw(st.integers(0, 5), label="same shape") else shape + (1,)
    gy = make_array(data, rng, other_shape, dtype, first)
    kwargs = {first: gy, second: x}
    valid = arrays_ok(kwargs, [first, second], None) and gy.shape == x.shape
    return kwargs, valid


ELEMENTWISE = {
    "relu": lambda kw: ref.relu(kw["x"]),
    "relu_backward": lambda kw: ref.relu_backward(kw["grad_output"], kw["x"]),
    "add_relu": lambda kw: ref.relu(np.add(kw["a"], kw["b"])),
    "tanh": lambda kw: np.tanh(kw["x"]),
    "tanh_backward": lambda kw: kw["grad_output"] * (1 - kw["output"] ** 2),
    "sigmoid": lambda kw: (1 / (1 + np.exp(-kw["x"].astype(np.float64)))).astype(kw["x"].dtype),
    "sigmoid_backward": lambda kw: kw["grad_output"] * kw["output"] * (1 - kw["output"]),
}


@pytest.mark.parametrize("op", list(ELEMENTWISE))
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_fuzz_elementwise(op, data, seed):
    kwargs, valid = _float_pair_op(data, np.random.default_rng(seed), op)
    if not valid:
        expect_error(op, kwargs)
        return
    out = getattr(F, op)(**kwargs)
    expected = ELEMENTWISE[op](kwargs)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    if "relu" in op:
        np.testing.assert_array_equal(out, expected)
    else:
        assert_close(out, expected, 4)


@pytest.mark.parametrize("op", ["linear", "linear_backward"])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_fuzz_linear(op, data, seed):
    rng = np.random.default_rng(seed)
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    lead = any_shape(data, "leading dims", 2)
    # in_features or out_features 0: see test_linear_with_no_features
    fin, fout = data.draw(st.integers(1, 5), label="in"), data.draw(st.integers(1, 4), label="out")
    x_fin = fin if data.draw(st.integers(0, 9), label="in mismatch") else fin + 1
    x = make_array(data, rng, lead + (x_fin,), dtype, "x")
    weight = make_array(data, rng, (fout, fin), dtype, "weight")
    valid = is_float_array(x) and is_float_array(weight, 2) and same_dtype(x, weight) \
        and x.ndim >= 1 and x.shape[-1] == fin
    if op == "linear":
        bias = data.draw(st.sampled_from([None, (fout,), (fout,), (fout + 1,)]), label="bias")
        bias = None if bias is None else make_array(data, rng, bias, dtype, "bias")
        kwargs = dict(x=x, weight=weight, bias=bias)
        valid = valid and (bias is None or (is_float_array(bias, 1) and bias.shape == (fout,)
                                            and same_dtype(x, bias)))
    else:
        out_shape = x.shape[:-1] + (fout,) if isinstance(x, np.ndarray) and x.ndim else (fout,)
        gy = grad_for(data, rng, out_shape, dtype)
        kwargs = dict(grad_output=gy, x=x, weight=weight)
        valid = valid and is_float_array(gy) and same_dtype(x, gy) and gy.shape == out_shape
    if not valid:
        expect_error(op, kwargs)
        return
    out = getattr(F, op)(**kwargs)
    dtype = x.dtype  # "other-dtype" draws are valid when every array has it
    x64, w64 = x.astype(np.float64), weight.astype(np.float64)
    if op == "linear":
        expected = x64 @ w64.T + (0 if kwargs["bias"] is None else kwargs["bias"])
        assert_close(out, expected.astype(dtype), fin + 1, np.abs(x64) @ np.abs(w64).T + 1)
        return
    go = kwargs["grad_output"].astype(np.float64).reshape(-1, fout)
    x2 = x64.reshape(-1, fin)
    expected = [(go @ w64).reshape(x.shape), go.T @ x2, go.sum(axis=0)]
    scales = [(np.abs(go) @ np.abs(w64)).reshape(x.shape), np.abs(go).T @ np.abs(x2),
              np.abs(go).sum(axis=0)]
    for o, e, scale, length in zip(out, expected, scales, [fout, go.shape[0], go.shape[0]]):
        assert_close(o, e.astype(dtype), length + 1, scale)


@pytest.mark.parametrize("op", ["dropout", "dropout_backward"])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_fuzz_dropout(op, data, seed):
    rng = np.random.default_rng(seed)
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    x = make_array(data, rng, any_shape(data, "shape"), dtype, "x")
    if op == "dropout":
        p = data.draw(st.one_of(st.floats(0, 1), st.sampled_from(
            [0, 1, -0.1, 1.5, np.nan, "0.5", True, None])), label="p")
        training = flag(data, "training")
        gen = data.draw(st.sampled_from(["generator", "none", "int"]), label="rng")
        kwargs = dict(x=x, p=p, training=training,
                      rng={"generator": np.random.default_rng(seed), "none": None, "int": 0}[gen])
        valid = is_float_array(x) and isinstance(training, bool) and gen != "int" \
            and isinstance(p, numbers.Real) and not isinstance(p, bool) and 0 <= p <= 1
        if not valid:
            expect_error(op, kwargs)
            return
        out, mask = F.dropout(**kwargs)
        if not training or p == 0:
            assert mask is None
            np.testing.assert_array_equal(out, x)
            return
        assert mask.shape == x.shape and mask.dtype == x.dtype
        keep = np.asarray(1 / (1 - p) if p < 1 else 0, x.dtype)
        assert np.all((mask == 0) | (mask == keep))
        np.testing.assert_array_equal(out, x * mask)
        return
    mask_kind = data.draw(st.sampled_from(["none", "ok", "ok", "shape"]), label="mask")
    shape = x.shape if isinstance(x, np.ndarray) else (1,)
    mask = None if mask_kind == "none" else make_array(
        data, rng, shape if mask_kind == "ok" else shape + (2,), dtype, "mask")
    kwargs = dict(grad_output=x, mask=mask)
    valid = is_float_array(x) and (mask is None or (is_float_array(mask) and same_dtype(x, mask)
                                                    and mask.shape == x.shape))
    if not valid:
        expect_error(op, kwargs)
        return
    out = F.dropout_backward(**kwargs)
    np.testing.assert_array_equal(out, x if mask is None else x * mask)
    assert not np.shares_memory(out, x)


def _batch_norm_expected(x, mean, var, weight, bias, training, eps):
    """(y, scale): y in float64 and the size of its terms (|x| + |mean|) / std * |w| + |b|."""
    x64 = x.astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if training:
        mean, var = x64.mean(axis=axes), x64.var(axis=axes)
    mean, std = np.reshape(mean, shape), np.sqrt(np.reshape(var, shape) + eps)
    y, scale = (x64 - mean) / std, (np.abs(x64) + np.abs(mean)) / std
    if weight is not None:
        y, scale = y * weight.reshape(shape), scale * np.abs(weight.reshape(shape))
    if bias is not None:
        y, scale = y + bias.reshape(shape), scale + np.abs(bias.reshape(shape))
    return y, scale


@pytest.mark.parametrize("op", ["batch_norm", "batch_norm_backward"])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_fuzz_batch_norm(op, data, seed):
    rng = np.random.default_rng(seed)
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    ndim = data.draw(st.sampled_from([2, 3, 4, 1]), label="ndim")
    shape = tuple(data.draw(st.integers(0 if i != 1 else 1, 4), label=f"dim{i}")
                  for i in range(ndim))
    c = shape[1] if ndim >= 2 else 1
    x = make_array(data, rng, shape, dtype, "x")
    per_channel = {}
    for name in ("running_mean", "running_var", "weight", "bias"):
        kind = data.draw(st.sampled_from(["ok", "ok", "none", "wrong"]), label=name)
        per_channel[name] = None if kind == "none" else make_array(
            data, rng, (c,) if kind == "ok" else (c + 1,), dtype, name, corrupt=False)
    if per_channel["running_var"] is not None:
        per_channel["running_var"] = np.abs(per_channel["running_var"]) + dtype(0.5)
    training = flag(data, "training")
    eps = data.draw(st.sampled_from([1e-5, 1e-3, 1.0, 0.0, -1e-5, np.nan, "1e-5"]), label="eps")
    kwargs = dict(x=x, **per_channel, training=training, eps=eps)
    if op == "batch_norm":
        kwargs["momentum"] = data.draw(st.sampled_from([0.1, 0.0, 1.0, -0.1, 1.5, None]),
                                       label="momentum")
    else:
        kwargs.pop("bias")
        kwargs["grad_output"] = grad_for(data, rng, shape, dtype)
    arrays = [a for k, a in kwargs.items()
              if k in ("x", "grad_output", *per_channel) and a is not None]
    stats = (kwargs["running_mean"], kwargs["running_var"])
    if isinstance(x, np.ndarray) and x.ndim >= 2:
        c = x.shape[1]  # a "dims-1" draw merges dims 1 and 2
    valid = (is_float_array(x) and x.ndim >= 2 and all(is_float_array(a) for a in arrays)
             and same_dtype(*arrays)
             and all(a is None or a.shape == (c,) for k, a in kwargs.items() if k in per_channel)
             and isinstance(training, bool) and (stats[0] is None) == (stats[1] is None)
             and (training or stats[0] is not None)
             and (not training or x.size // max(c, 1) > 1)
             and isinstance(eps, float) and eps > 0
             and (op != "batch_norm" or (isinstance(kwargs["momentum"], float)
                                         and 0 <= kwargs["momentum"] <= 1))
             and (op != "batch_norm_backward" or (is_float_array(kwargs["grad_output"])
                                                  and kwargs["grad_output"].shape == x.shape)))
    if not valid:
        expect_error(op, kwargs)
        return
    before = [None if s is None else s.copy() for s in stats]
    out = getattr(F, op)(**kwargs)
    dtype = x.dtype  # "other-dtype" draws are valid when every array has it
    n = x.size // max(c, 1)
    if op == "batch_norm":
        expected, scale = _batch_norm_expected(x, *before, kwargs["weight"], kwargs["bias"],
                                               training, eps)
        assert_close(out, expected.astype(dtype), n + 8, scale)
        if training and stats[0] is not None:
            m = kwargs["momentum"]
            axes = (0,) + tuple(range(2, x.ndim))
            x64 = x.astype(np.float64)
            assert_close(stats[0], ((1 - m) * before[0] + m * x64.mean(axis=axes)).astype(dtype),
                         n + 8, np.abs(x64).mean(axis=axes) + np.abs(before[0]))
            unbiased = x64.var(axis=axes) * n / (n - 1)
            assert_close(stats[1], ((1 - m) * before[1] + m * unbiased).astype(dtype), n + 8,
                         np.abs(before[1]) + unbiased + 1)
        return
    gx, gw, gb = out
    assert gx.shape == x.shape and gw.shape == gb.shape == (c,)
    assert gx.dtype == gw.dtype == gb.dtype == x.dtype
    gy = kwargs["grad_output"].astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    assert_close(gb, gy.sum(axis=axes).astype(dtype), n + 8, np.abs(gy).sum(axis=axes))


@pytest.mark.parametrize("op", ["cross_entropy", "cross_entropy_backward"])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_fuzz_cross_entropy(op, data, seed):
    rng = np.random.default_rng(seed)
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    n, c = data.draw(st.integers(0, 4), label="N"), data.draw(st.integers(0, 5), label="C")
    logits = make_array(data, rng, (n, c), dtype, "logits")
    kind = data.draw(st.sampled_from(["ok", "ok", "ok", "int32", "uint8", "float", "list",
                                      "too-big", "negative", "shape"]), label="target")
    target = rng.integers(0, max(c, 1), n)
    if kind in ("int32", "uint8", "float"):
        target = target.astype({"int32": np.int32, "uint8": np.uint8, "float": np.float64}[kind])
    elif kind == "list":
        target = target.tolist()
    elif kind in ("too-big", "negative") and n:
        target[0] = c if kind == "too-big" else -1
    elif kind == "shape":
        target = target[None]
    kwargs = dict(logits=logits, target=target)
    valid = is_float_array(logits, 2) and n >= 1 and c >= 1 and isinstance(target, np.ndarray) \
        and target.dtype.kind in "iu" and target.shape == (n,) \
        and (target.min() >= 0 and target.max() < c)
    if op == "cross_entropy_backward":
        go = data.draw(st.sampled_from([1.0, 0.5, 2, np.float32(1.0), "1", None, True, "array0",
                                        "array1"]), label="grad_output")
        go = {"array0": np.array(1.0), "array1": np.ones(1)}.get(go, go) \
            if isinstance(go, str) else go
        kwargs = dict(grad_output=go, **kwargs)
        valid = valid and ((isinstance(go, numbers.Real) and not isinstance(go, bool))
                           or (isinstance(go, np.ndarray) and go.shape == ()))
    if not valid:
        expect_error(op, kwargs)
        return
    out = getattr(F, op)(**kwargs)
    dtype = logits.dtype
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(n)
    assert out.dtype == dtype
    if op == "cross_entropy":
        assert out.shape == ()
        expected = -log_p[rows, target].mean()
        assert_close(out, np.asarray(expected, dtype), 4 * c, np.asarray(np.abs(log_p).max()))
        return
    grad = np.exp(log_p)
    grad[rows, target] -= 1
    grad *= float(kwargs["grad_output"]) / n
    assert_close(out, grad.astype(dtype), 4 * c, np.abs(grad) + 1)


def _updated_ok(a, param) -> bool:
    """An array an update may write in place: param's shape and dtype, C-contiguous."""
    return is_float_array(a) and a.flags.c_contiguous and a.shape == param.shape \
        and a.dtype == param.dtype


@pytest.mark.parametrize("op", ["adam_update", "sgd_update"])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_fuzz_optimizer_updates(op, data, seed):
    rng = np.random.default_rng(seed)
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    shape = any_shape(data, "shape", 3)
    param = make_array(data, rng, shape, dtype, "param")
    kwargs = dict(param=param, grad=make_array(data, rng, shape, dtype, "grad"))
    numbers_ok = []

    def hyper(name, choices, ok):
        kwargs[name] = data.draw(st.sampled_from(choices), label=name)
        numbers_ok.append(ok(kwargs[name]))

    def non_negative(x):
        return isinstance(x, float) and 0 <= x < math.inf

    hyper("lr", [1e-3, 0.5, 0.0, -1.0, math.nan, "0.1"], non_negative)
    hyper("weight_decay", [0.0, 0.1, -0.1, math.inf], non_negative)
    state = []
    if op == "adam_update":
        state = ["exp_avg", "exp_avg_sq"]
        hyper("step", [1, 3, 0, -1, 2.0, True], lambda x: is_int(x) and x >= 1)
        hyper("betas", [(0.9, 0.999), (0.0, 0.5), (1.0, 0.9), (0.9,), "ab"],
              lambda b: isinstance(b, tuple) and len(b) == 2 and all(0 <= x < 1 for x in b))
        hyper("eps", [1e-8, 0.0, -1e-8], non_negative)
    else:
        hyper("momentum", [0.0, 0.9, -0.5], non_negative)
        hyper("dampening", [0.0, 0.3, math.inf], lambda x: math.isfinite(x))
        hyper("nesterov", [False, True, 1], lambda x: isinstance(x, bool))
        if data.draw(st.booleans(), label="momentum buffer"):
            state = ["momentum_buffer"]
    for name in state:
        kwargs[name] = make_array(data, rng, shape, dtype, name)
        if name == "exp_avg_sq" and is_float_array(kwargs[name]):
            kwargs[name] = np.abs(kwargs[name])
    valid = is_float_array(param) and param.flags.c_contiguous and all(numbers_ok) \
        and is_float_array(kwargs["grad"]) and kwargs["grad"].shape == param.shape \
        and kwargs["grad"].dtype == param.dtype \
        and all(_updated_ok(kwargs[name], param) for name in state
                # without momentum the buffer is not used (torch.optim's rule too)
                if name != "momentum_buffer" or kwargs["momentum"])
    if not valid:
        expect_error(op, kwargs)
        return
    expected = {k: a.copy() if isinstance(a, np.ndarray) else a for k, a in kwargs.items()}
    out = getattr(F, op)(**kwargs)
    if op == "adam_update":
        ref.adam_update(*(expected[k] for k in ("param", "grad", "exp_avg", "exp_avg_sq", "step",
                                                "lr", "betas", "eps", "weight_decay")))
        assert out is None
    else:
        buf = ref.sgd_update(*(expected[k] for k in ("param", "grad", "lr", "momentum",
                                                     "dampening", "weight_decay", "nesterov")),
                             expected.get("momentum_buffer"))
        assert (out is None) == (buf is None) == (not kwargs["momentum"])
        if buf is not None:
            assert_close(out, buf, 4, np.abs(buf) + np.abs(expected["grad"]))
            if "momentum_buffer" in kwargs:
                assert out is kwargs["momentum_buffer"]
    used = [name for name in state if name != "momentum_buffer" or kwargs["momentum"]]
    for name in ["param", *used]:
        assert_close(kwargs[name], expected[name], 8,
                     np.abs(expected[name]) + np.abs(param) + 10 * kwargs["lr"])


@pytest.mark.parametrize("op, args, shapes", [
    ("linear", (np.ones((2, 0)), np.ones((3, 0)), np.ones(3)), [(2, 3)]),
    ("linear_backward", (np.ones((2, 3)), np.ones((2, 0)), np.ones((3, 0))),
     [(2, 0), (3, 0), (3,)]),
    ("linear_backward", (np.ones((2, 0)), np.ones((2, 3)), np.ones((0, 3))),
     [(2, 3), (0, 3), (0,)]),
], ids=["linear-in0", "linear_backward-in0", "linear_backward-out0"])
def test_linear_with_no_features(op, args, shapes):
    out = getattr(F, op)(*args)
    outs = out if isinstance(out, tuple) else (out,)
    assert [o.shape for o in outs] == shapes
    if op == "linear":  # no inputs: the bias alone
        np.testing.assert_array_equal(out, np.ones((2, 3)))


# ---- adaptive pooling ------------------------------------------------------------------------

ADAPTIVE_OPS = ["adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "adaptive_max_pool2d",
                "adaptive_max_pool2d_backward"]


def adaptive_oracle(x_shape, output_size):
    """PyTorch's adaptive pooling rules: the output shape, or None."""
    n, c, h, w = x_shape
    if is_int(output_size):
        out = (int(output_size),) * 2
    elif isinstance(output_size, (tuple, list)) and len(output_size) == 2 \
            and all(v is None or is_int(v) for v in output_size):
        out = tuple(size if v is None else int(v) for v, size in zip(output_size, (h, w)))
    else:
        return None
    if min(c, h, w) < 1 or min(out) < 0 or max(out) > LIMIT:
        return None
    return (n, c, *out)


@pytest.mark.parametrize("op", ADAPTIVE_OPS)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_fuzz_adaptive_pool(op, data, seed):
    rng = np.random.default_rng(seed)
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    x_shape = draw_shape(data, "x", hw=(1, 9))
    size = st.integers(0, 11)
    output_size = data.draw(st.one_of(
        size, st.tuples(size, size), st.tuples(st.none(), size), st.tuples(size, st.none()),
        st.sampled_from([(None, None), -1, (2, -1), (1, 2, 3), 2.0, "2", None, True, 2**31])),
        label="output_size")
    out_shape = adaptive_oracle(x_shape, output_size)
    assume(modest(out_shape))
    x = make_array(data, rng, x_shape, dtype, "x")
    kwargs = dict(x=x, output_size=output_size)
    valid = out_shape is not None and is_float_array(x, 4)
    gy = None
    if op == "adaptive_max_pool2d":
        kwargs["return_indices"] = flag(data, "return_indices")
        valid = valid and isinstance(kwargs["return_indices"], bool)
    elif op.endswith("_backward"):
        gy = kwargs["grad_output"] = grad_for(data, rng, out_shape, dtype)
        valid = valid and arrays_ok(kwargs, ["x", "grad_output"], 4) and gy.shape == out_shape
    if not valid:
        expect_error(op, kwargs)
        return
    out = getattr(F, op)(**kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    assert outs[0].shape == (x.shape if op.endswith("_backward") else out_shape)
    assert outs[0].dtype == x.dtype
    hw = out_shape[2:]
    if op == "adaptive_max_pool2d":
        expected, indices = ref.adaptive_max_pool2d(x, hw)
        np.testing.assert_array_equal(outs[0], expected)
        if kwargs["return_indices"]:
            np.testing.assert_array_equal(outs[1], indices)
        return
    expected = {"adaptive_avg_pool2d": lambda: ref.adaptive_avg_pool2d(x, hw),
                "adaptive_avg_pool2d_backward": lambda: ref.adaptive_avg_pool2d_backward(gy, x),
                "adaptive_max_pool2d_backward":
                    lambda: ref.adaptive_max_pool2d_backward(gy, x)}[op]()
    assert_close(outs[0], expected, (x.shape[2] + 1) * (x.shape[3] + 1))


# ---- same_padding ------------------------------------------------------------------------------

@given(data=st.data())
def test_fuzz_same_padding(data):
    """Valid draws give SAME padding: conv2d with it outputs ceil(size / stride), its total is
    the least that does, and the odd one sits at the end (upper) or the start (lower)."""
    kwargs = dict(input_size=int_param(data, 1, "input_size", huge=False),
                  kernel_size=int_param(data, 1, "kernel_size", huge=False),
                  stride=int_param(data, 1, "stride", huge=False),
                  dilation=int_param(data, 1, "dilation", huge=False),
                  mode=data.draw(st.sampled_from(["upper", "lower", "UPPER", "same", None]),
                                 label="mode"))
    parts = [as_pair(kwargs[name], 1) for name in ("input_size", "kernel_size", "stride",
                                                   "dilation")]
    if None in parts or kwargs["mode"] not in ("upper", "lower"):
        expect_error("same_padding", kwargs)
        return
    pads = F.same_padding(**kwargs)
    assert len(pads) == 4 and all(isinstance(p, int) and p >= 0 for p in pads)
    for size, k, s, d, (begin, end) in zip(*parts, (pads[:2], pads[2:])):
        out = -(-size // s)
        covered = (out - 1) * s + d * (k - 1) + 1  # what the windows of `out` outputs span
        assert begin + end == max(0, covered - size)
        assert end - begin == ((begin + end) % 2) * (1 if kwargs["mode"] == "upper" else -1)
        assert (size + begin + end - d * (k - 1) - 1) // s + 1 == out


# ---- every public op is fuzzed -------------------------------------------------------------

FUZZED = set(CONV_OPS + POOL_OPS + ADAPTIVE_OPS + list(ELEMENTWISE) + [
    "conv_transpose2d", "conv_transpose2d_backward",
    "linear", "linear_backward", "dropout", "dropout_backward", "batch_norm",
    "batch_norm_backward", "cross_entropy", "cross_entropy_backward", "adam_update",
    "sgd_update", "same_padding"])


def test_every_public_op_is_fuzzed():
    assert set(F.__all__) == FUZZED


# ---- only the batch may be empty, as in PyTorch ---------------------------------------------

EMPTY_DIM_CASES = [
    pytest.param("conv2d", dict(x=np.zeros((1, 1, 0, 4)), weight=np.ones((1, 1, 1, 1)),
                                padding=1), id="conv2d-H0-padded"),
    pytest.param("conv2d", dict(x=np.zeros((1, 1, 3, 0)), weight=np.ones((1, 1, 1, 1)),
                                padding=(0, 1)), id="conv2d-W0-padded"),
    pytest.param("max_pool2d", dict(x=np.zeros((1, 1, 0, 4)), kernel_size=2, padding=1),
                 id="max_pool2d-H0-padded"),
    pytest.param("avg_pool2d", dict(x=np.zeros((1, 1, 0, 4)), kernel_size=2, padding=1),
                 id="avg_pool2d-H0-padded"),
    pytest.param("max_pool2d", dict(x=np.zeros((1, 0, 4, 4)), kernel_size=2), id="max_pool2d-C0"),
    pytest.param("avg_pool2d", dict(x=np.zeros((1, 0, 4, 4)), kernel_size=2), id="avg_pool2d-C0"),
    pytest.param("lp_pool2d", dict(x=np.zeros((1, 0, 4, 4)), norm_type=2, kernel_size=2),
                 id="lp_pool2d-C0"),
]


@pytest.mark.parametrize("op, kwargs", EMPTY_DIM_CASES)
def test_empty_spatial_dims_rejected_as_in_pytorch(op, kwargs):
    expect_error(op, kwargs)
