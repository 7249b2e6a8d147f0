"""The compiled fast path of fastconv.functional (fastconv/_fastpath.pxi).

Each op first offers its arguments to `_kernels.fast_<op>`, which runs the common case or
returns None for the Python path. Tested here: on a case table of every op and argument form the
fast path takes, it is taken and gives the Python path's result bit for bit (NaNs, signed zeros
and infinities in the data); valid input it does not take (other layouts, NumPy scalars as
arguments, empty batches) falls through to the same result; every rejection of
test_validation's table and every forced-algorithm error is raised with the same message with
the fast path on and off. test_validation's and test_conv_transpose2d's bad-input tests also
check, through helpers.KernelTripwire, that the fast path declines each rejected input.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_validation import BASE, REJECT_CASES

import fastconv
import fastconv.functional as F
from fastconv import _kernels


def data(rng, shape, dtype):
    """Normal values with a NaN, an Inf, a -Inf, a -0.0 and a 0.0 in them where there is room."""
    a = rng.standard_normal(shape).astype(dtype)
    flat = a.reshape(-1)
    for i, special in enumerate([np.nan, np.inf, -np.inf, -0.0, 0.0]):
        if flat.size > 8 * (i + 1):
            flat[8 * (i + 1) - 3] = special
    return a


def positive(rng, shape, dtype):
    return (np.abs(rng.standard_normal(shape)) + 0.25).astype(dtype)


def _conv(x_shape, w_shape, bias=False, **kwargs):
    def make(rng, dtype):
        args = dict(x=data(rng, x_shape, dtype), weight=data(rng, w_shape, dtype), **kwargs)
        if bias:
            args["bias"] = data(rng, w_shape[:1], dtype)
        return args
    return make


CONV = {
    "tiny": _conv((1, 1, 4, 4), (1, 1, 3, 3)),
    "pad1-bias": _conv((1, 8, 8, 8), (8, 8, 3, 3), bias=True, padding=1),
    "pad-pair": _conv((2, 3, 7, 6), (4, 3, 3, 2), padding=(1, 2)),
    "pad-list": _conv((2, 3, 7, 6), (4, 3, 3, 2), padding=[2, 0]),
    "pad-4": _conv((2, 3, 7, 6), (4, 3, 3, 3), padding=(0, 1, 2, 1)),
    "same": _conv((1, 3, 5, 6), (2, 3, 4, 3), padding="same", dilation=(1, 2)),
    "valid": _conv((1, 3, 5, 6), (2, 3, 3, 3), padding="valid"),
    "stride2": _conv((2, 4, 9, 8), (5, 4, 3, 3), bias=True, stride=2, padding=1),
    "stride-pair": _conv((1, 2, 9, 8), (3, 2, 2, 3), stride=(2, 1), dilation=(1, 2)),
    "groups": _conv((2, 4, 7, 7), (6, 2, 3, 3), groups=2, padding=1),
    "depthwise": _conv((1, 6, 6, 6), (6, 1, 3, 3), groups=6, stride=[1, 2]),
    "pointwise": _conv((3, 16, 5, 5), (8, 16, 1, 1), bias=True),
    "winograd": _conv((2, 16, 9, 9), (16, 16, 3, 3), bias=True, padding=1),
}


def _transpose(x_shape, w_shape, bias=False, **kwargs):
    def make(rng, dtype):
        args = dict(x=data(rng, x_shape, dtype), weight=data(rng, w_shape, dtype), **kwargs)
        if bias:
            args["bias"] = data(rng, (w_shape[1] * kwargs.get("groups", 1),), dtype)
        return args
    return make


CONV_TRANSPOSE = {
    "tiny": _transpose((1, 1, 4, 4), (1, 1, 3, 3)),
    "stride2-op1": _transpose((2, 4, 5, 5), (4, 3, 3, 3), bias=True, stride=2, padding=1,
                              output_padding=1),
    "pad-4": _transpose((1, 3, 4, 5), (3, 2, 4, 4), stride=2, padding=(1, 0, 2, 1)),
    "groups-dilation": _transpose((1, 4, 5, 5), (4, 3, 3, 3), groups=2, dilation=2,
                                  padding=[1, 2]),
}

POOL_GEOMETRY = {  # (input shape, kwargs) for every pooling kind
    "k2": ((1, 1, 4, 4), dict(kernel_size=2)),
    "k3s2p1": ((2, 3, 9, 8), dict(kernel_size=3, stride=2, padding=1)),
    "k-pair": ((1, 2, 7, 9), dict(kernel_size=(2, 3), stride=(1, 2))),
    "stride-empty": ((1, 2, 6, 6), dict(kernel_size=[3, 2], stride=())),
    "pad-4": ((1, 2, 6, 7), dict(kernel_size=2, stride=1, padding=(1, 0, 0, 2))),
    "same": ((1, 2, 5, 6), dict(kernel_size=3, stride=1, padding="same")),
    "ceil": ((2, 2, 7, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
}
MAX_ONLY = {"dilation": ((1, 3, 9, 9), dict(kernel_size=3, stride=2, dilation=2, padding=1))}
AVG_ONLY = {
    "exclude-pad": ((1, 2, 7, 7), dict(kernel_size=3, stride=2, padding=1,
                                       count_include_pad=False)),
    "divisor": ((1, 2, 6, 6), dict(kernel_size=2, divisor_override=3)),
    "divisor-negative": ((1, 2, 6, 6), dict(kernel_size=3, stride=1, divisor_override=-2)),
}
LP_NORMS = {"l2": 2.0, "l1.5": 1.5, "int3": 3}
ADAPTIVE = {"global": ((2, 3, 5, 7), 1), "3": ((1, 2, 7, 7), 3),
            "pair-None": ((1, 2, 7, 5), (2, None)), "list": ((1, 2, 6, 7), [4, 3])}


def _pool_cases():
    out = []
    for name, (shape, kw) in {**POOL_GEOMETRY, **MAX_ONLY}.items():
        for indices in (False, True):
            out.append((f"max_pool2d-{name}-{indices}", "max_pool2d", shape,
                        {**kw, "return_indices": indices}))
        for given in ("indices", "no-indices"):
            out.append((f"max_pool2d_backward-{name}-{given}", "max_pool2d_backward", shape,
                        {**kw, "indices": given == "indices"}))
    for name, (shape, kw) in {**POOL_GEOMETRY, **AVG_ONLY}.items():
        out.append((f"avg_pool2d-{name}", "avg_pool2d", shape, kw))
        out.append((f"avg_pool2d_backward-{name}", "avg_pool2d_backward", shape, kw))
    for name, (shape, kw) in POOL_GEOMETRY.items():
        kw = {k: v for k, v in kw.items() if k != "padding"} if name == "same" else kw
        for norm_name, norm in LP_NORMS.items():
            out.append((f"lp_pool2d-{name}-{norm_name}", "lp_pool2d", shape,
                        {**kw, "norm_type": norm}))
            out.append((f"lp_pool2d_backward-{name}-{norm_name}", "lp_pool2d_backward", shape,
                        {**kw, "norm_type": norm}))
    for name, (shape, size) in ADAPTIVE.items():
        for kind in ("avg", "max"):
            out.append((f"adaptive_{kind}-{name}", f"adaptive_{kind}_pool2d", shape,
                        {"output_size": size}))
            out.append((f"adaptive_{kind}_backward-{name}", f"adaptive_{kind}_pool2d_backward",
                        shape, {"output_size": size}))
        out.append((f"adaptive_max-{name}-indices", "adaptive_max_pool2d", shape,
                    {"output_size": size, "return_indices": True}))
    return out


def _pool_maker(op, shape, kw):
    forward = getattr(F, op.replace("_backward", ""))

    def make(rng, dtype):
        make_x = positive if op.startswith("lp_pool2d") else data
        args = dict(x=make_x(rng, shape, dtype), **kw)
        if op.endswith("_backward"):
            forward_kw = {k: v for k, v in args.items() if k != "indices"}
            y = forward(**forward_kw, **({"return_indices": True} if "max" in op else {}))
            y, indices = y if isinstance(y, tuple) else (y, None)
            args["grad_output"] = data(rng, y.shape, dtype)
            if "indices" in args:
                args["indices"] = indices if args["indices"] else None
        return args
    return make


def _with_grad_output(forward, make):
    """The arguments of `forward`'s backward: make's without the bias, and a grad_output of the
    forward output's shape."""
    def backward(rng, dtype):
        args = make(rng, dtype)
        args.pop("bias", None)
        return {**args, "grad_output": data(rng, forward(**args).shape, dtype)}
    return backward


def _relu_case(op, shape):
    def make(rng, dtype):
        args = dict(x=data(rng, shape, dtype))
        return {**args, "grad_output": data(rng, shape, dtype)} if op == "relu_backward" else args
    return pytest.param(op, make, id=f"{op}-{len(shape)}d")


CASES = (
    [pytest.param(op, make, id=f"{op}-{name}") for op in ("conv2d", "conv2d_relu")
     for name, make in CONV.items()]
    + [pytest.param("conv2d_backward", _with_grad_output(F.conv2d, make),
                    id=f"conv2d_backward-{name}") for name, make in CONV.items()]
    + [pytest.param("conv_transpose2d", make, id=f"conv_transpose2d-{name}")
       for name, make in CONV_TRANSPOSE.items()]
    + [pytest.param("conv_transpose2d_backward", _with_grad_output(F.conv_transpose2d, make),
                    id=f"conv_transpose2d_backward-{name}")
       for name, make in CONV_TRANSPOSE.items()]
    + [pytest.param(op, _pool_maker(op, shape, kw), id=name)
       for name, op, shape, kw in _pool_cases()]
    + [_relu_case(op, shape) for op in ("relu", "relu_backward")
       for shape in [(7,), (3, 5), (1, 1, 4, 4), (2, 3, 4, 5)]]
)


class FastPathSpy:
    """Stands in for fastconv._kernels in fastconv.functional and records, per `fast_<op>` it
    is asked for, whether that took the call (returned a result) or declined it (None)."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        attr = getattr(_kernels, name)
        if not name.startswith("fast_"):
            return attr

        def spied(*args):
            result = attr(*args)
            self.calls.append((name, result is not None))
            return result
        return spied


def run_both(monkeypatch, op, kwargs):
    """(fast result, fast path's calls, Python path's result) of F.<op>(**kwargs)."""
    spy = FastPathSpy()
    with monkeypatch.context() as m:
        m.setattr(F, "_kernels", spy)
        fast = getattr(F, op)(**kwargs)
    with _kernels.fast_path(False):
        slow = getattr(F, op)(**kwargs)
    return fast, spy.calls, slow


def assert_bits_equal(a, b):
    a, b = (x if isinstance(x, tuple) else (x,) for x in (a, b))
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert type(u) is np.ndarray and u.dtype == v.dtype and u.shape == v.shape
        assert u.flags.c_contiguous and u.flags.writeable
        assert u.tobytes() == v.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op, make", CASES)
def test_fast_path_takes_the_case_and_equals_the_python_path(monkeypatch, op, make, dtype):
    kwargs = make(np.random.default_rng(0), dtype)
    fast, calls, slow = run_both(monkeypatch, op, kwargs)
    assert calls == [(f"fast_{FAST_PATH_OF.get(op, op)}", True)]
    assert_bits_equal(fast, slow)


FAST_PATH_OF = {"conv2d_relu": "conv2d"}  # ops run by another op's fast path


class Subclass(np.ndarray):
    pass


def _declined_cases():
    """Valid input the fast path leaves to the Python path: (id, op, kwargs)."""
    rng = np.random.default_rng(1)
    x = data(rng, (2, 3, 6, 6), np.float32)
    w = data(rng, (4, 3, 3, 3), np.float32)
    big_endian = x.astype(">f4")
    return [
        ("fortran-order", "conv2d", dict(x=np.asfortranarray(x), weight=w)),
        ("strided-view", "max_pool2d", dict(x=x[:, :, ::2], kernel_size=2)),
        ("big-endian", "avg_pool2d", dict(x=big_endian, kernel_size=2)),
        ("big-endian-weight", "conv2d", dict(x=x, weight=w.astype(">f4"))),
        ("subclass", "relu", dict(x=x.view(Subclass))),
        ("numpy-int-stride", "conv2d", dict(x=x, weight=w, stride=np.int64(2))),
        ("numpy-int-in-pair", "max_pool2d", dict(x=x, kernel_size=(2, np.int32(2)))),
        ("numpy-bool", "max_pool2d", dict(x=x, kernel_size=2, ceil_mode=np.bool_(True))),
        ("numpy-float-norm", "lp_pool2d", dict(x=np.abs(x), norm_type=np.float64(2),
                                               kernel_size=2)),
        ("batch-0", "conv2d", dict(x=x[:0], weight=w)),
        ("batch-0-pool", "avg_pool2d_backward", dict(x=x[:0], grad_output=x[:0, :, :3, :3],
                                                     kernel_size=2)),
        ("output-size-0", "adaptive_avg_pool2d", dict(x=x, output_size=(0, 2))),
        ("int32-indices", "max_pool2d_backward",
         dict(x=x, grad_output=x[:, :, :3, :3].copy(), kernel_size=2,
              indices=F.max_pool2d(x, 2, return_indices=True)[1].astype(np.int32))),
    ]


@pytest.mark.parametrize("op, kwargs", [c[1:] for c in _declined_cases()],
                         ids=[c[0] for c in _declined_cases()])
def test_fast_path_declines_other_forms_which_give_the_same_result(monkeypatch, op, kwargs):
    fast, calls, slow = run_both(monkeypatch, op, kwargs)
    assert calls == [(f"fast_{op}", False)]
    assert_bits_equal(fast, slow)


def _channels_last_cases():
    """Channels-last calls and their NCHW equivalents: (id, op, NHWC kwargs, NCHW kwargs)."""
    rng = np.random.default_rng(2)
    x = data(rng, (2, 3, 6, 6), np.float32)
    w = data(rng, (4, 3, 3, 3), np.float32)
    gy = data(rng, (2, 4, 4, 4), np.float32)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return [
        ("conv2d-oihw", "conv2d", dict(x=nhwc, weight=w, data_format="NHWC"),
         dict(x=x, weight=w)),
        ("conv2d-hwio", "conv2d",
         dict(x=nhwc, weight=np.ascontiguousarray(w.transpose(2, 3, 1, 0)), data_format="NHWC",
              weight_format="HWIO"), dict(x=x, weight=w)),
        ("conv2d_backward", "conv2d_backward",
         dict(grad_output=np.ascontiguousarray(gy.transpose(0, 2, 3, 1)), x=nhwc, weight=w,
              data_format="NHWC"), dict(grad_output=gy, x=x, weight=w)),
        ("max_pool2d", "max_pool2d", dict(x=nhwc, kernel_size=2, data_format="NHWC"),
         dict(x=x, kernel_size=2)),
        ("avg_pool2d", "avg_pool2d", dict(x=nhwc, kernel_size=3, padding=1, data_format="NHWC"),
         dict(x=x, kernel_size=3, padding=1)),
        ("lp_pool2d", "lp_pool2d", dict(x=nhwc, norm_type=2, kernel_size=2, data_format="NHWC"),
         dict(x=x, norm_type=2, kernel_size=2)),
    ]


@pytest.mark.parametrize("op, channels_last, nchw", [c[1:] for c in _channels_last_cases()],
                         ids=[c[0] for c in _channels_last_cases()])
def test_channels_last_calls_take_the_python_path(monkeypatch, op, channels_last, nchw):
    """The fast path knows NCHW only: an NHWC call must not reach it (it would read the array
    as NCHW), and gives the NCHW call's result, channels last."""
    spy = FastPathSpy()
    with monkeypatch.context() as m:
        m.setattr(F, "_kernels", spy)
        got = getattr(F, op)(**channels_last)
    assert spy.calls == []
    want = getattr(F, op)(**nchw)
    if op == "conv2d_backward":
        got = (got[0].transpose(0, 3, 1, 2), *got[1:])
        want = tuple(want)
    else:
        got = got.transpose(0, 3, 1, 2)
    for g, w_ in zip(got if isinstance(got, tuple) else (got,),
                     want if isinstance(want, tuple) else (want,)):
        np.testing.assert_allclose(g, w_, rtol=1e-5, atol=1e-5)


def _outcome(op, kwargs):
    try:
        getattr(F, op)(**kwargs)
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize("op, overrides, exc, pattern", REJECT_CASES)
def test_every_rejection_has_the_same_message_with_the_fast_path(op, overrides, exc, pattern):
    kwargs = {**BASE[op], **overrides}
    on = _outcome(op, kwargs)
    with _kernels.fast_path(False):
        off = _outcome(op, kwargs)
    assert on is not None and issubclass(on[0], exc) and on == off


def test_max_pool_backward_out_of_range_indices_raise_the_same_error():
    """Only the kernel sees an int64 index out of range: the fast path hands the call back."""
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    indices = np.array([[[[0, 3], [16, 2]]]])
    kwargs = dict(grad_output=np.ones((1, 1, 2, 2)), x=x, kernel_size=2, indices=indices)
    assert _kernels.fast_max_pool2d_backward(*kwargs.values(), None, 0, 1, False) is None
    on = _outcome("max_pool2d_backward", kwargs)
    with _kernels.fast_path(False):
        off = _outcome("max_pool2d_backward", kwargs)
    assert on == off == (ValueError, "max_pool2d_backward: indices must lie in [-1, 16) (flat "
                                     "positions in an input plane), got values in [0, 16]")


def test_forced_algorithms_hold_on_the_fast_path(monkeypatch):
    """The fast path runs the algorithm force_conv_algorithms sets, and raises its error for a
    geometry it cannot run, as the Python path does."""
    kwargs = CONV["winograd"](np.random.default_rng(2), np.float32)
    results = {}
    for algorithm in ("direct", "winograd", "plain"):
        with _kernels.force_conv_algorithms(forward=algorithm):
            fast, calls, slow = run_both(monkeypatch, "conv2d", kwargs)
        assert calls == [("fast_conv2d", True)]
        assert_bits_equal(fast, slow)
        results[algorithm] = fast.tobytes()
    assert len(set(results.values())) > 1  # the algorithms round differently: forcing shows
    with _kernels.force_conv_algorithms(forward="winograd"):
        bad = dict(kwargs, weight=kwargs["weight"][:, :, :1, :1].copy())
        on = _outcome("conv2d", bad)
        with _kernels.fast_path(False):
            off = _outcome("conv2d", bad)
    assert on == off and on[0] is ValueError and "forced algorithm 'winograd'" in on[1]


def test_thread_settings_reach_the_fast_path():
    """fastconv.num_threads and set_num_threads set what the compiled layer reads."""
    old = _kernels.process_threads()
    try:
        fastconv.set_num_threads(3)
        assert _kernels.current_threads() == fastconv.get_num_threads() == 3
        with fastconv.num_threads(1):
            assert _kernels.current_threads() == 1
        assert _kernels.current_threads() == 3
    finally:
        fastconv.set_num_threads(old or None)


def test_large_outputs_come_from_the_output_cache():
    """A fast-path output the cache may keep is allocated through it: freed, it is reused."""
    old = fastconv.cache_info()["limit"]
    x = np.ones((4, 64, 32, 32), np.float32)  # 1 MiB
    try:
        fastconv.set_cache_limit(64 * 2**20)
        F.relu(x)  # freed at once, kept by the cache
        hits = fastconv.cache_info()["hits"]
        F.relu(x)
        assert fastconv.cache_info()["hits"] == hits + 1
    finally:
        fastconv.set_cache_limit(old)
