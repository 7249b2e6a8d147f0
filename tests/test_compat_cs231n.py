"""fastconv.compat.cs231n against naive cs231n-style layers written from the assignment's
definitions (tests/cs231n_naive.py, themselves checked by finite differences).

Case tables: convolution and pooling geometries (strides, padding, overlapping and skipping
pools, rows left over by the floored sizes, batch 1, odd sizes) times dtype mixes (float32,
float64, float32 parameters with float64 data, integers); caches interchanged both ways for every
layer; the pool cache's argmax; errors; install()/uninstall() with no cs231n package and over a
user's own package in a temporary folder; and a small ThreeLayerConvNet-style network trained a
few SGD steps with the naive layers and with fastconv's, from the same weights.
"""

from __future__ import annotations

import copy
import importlib.util
import pickle
import sys
import textwrap
import threading

import cs231n_naive as naive
import numpy as np
import pytest
from helpers import assert_close, numerical_gradient

import fastconv.functional
from fastconv.compat import cs231n as fc

f32, f64 = np.float32, np.float64


def make(rng, shape, dtype):
    """Standard normal values, or small integers for an integer dtype."""
    if np.dtype(dtype).kind in "iu":
        return rng.integers(0, 5, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def computed_dtype(*arrays):
    """The dtype the adapter computes in: NumPy's result type, float64 for an integer one."""
    dtype = np.result_type(*arrays)
    return dtype if dtype.kind == "f" else np.dtype(f64)


def as64(*arrays):
    return tuple(a.astype(f64) for a in arrays)


def absolute(*arrays):
    return tuple(np.abs(a.astype(f64)) for a in arrays)


# ---- convolution ---------------------------------------------------------------------------------

# x shape (N, C, H, W), w shape (F, C, HH, WW), stride, pad
CONV_CASES = {
    "3x3-pad1": ((2, 3, 7, 7), (4, 3, 3, 3), 1, 1),
    "stride2-batch1": ((1, 3, 8, 8), (2, 3, 3, 3), 2, 1),
    "rows-left-over": ((2, 2, 9, 7), (3, 2, 4, 2), 3, 0),  # (9 - 4) % 3, (7 - 2) % 3: floored
    "filter-as-large-as-input": ((3, 1, 5, 6), (2, 1, 5, 6), 1, 0),
    "pad-beyond-filter": ((2, 2, 4, 5), (3, 2, 2, 2), 1, 3),
    "rect-stride2-pad2": ((2, 4, 11, 10), (5, 4, 3, 5), 2, 2),
    "1x1": ((2, 5, 3, 4), (3, 5, 1, 1), 1, 0),
    "16-channels-3x3": ((2, 16, 6, 7), (16, 16, 3, 3), 1, 1),  # fastconv's Winograd path
    "input-1x1": ((1, 1, 1, 1), (1, 1, 1, 1), 1, 0),
}

# dtypes of x, w, b
CONV_DTYPES = {
    "float64": (f64, f64, f64),
    "float32": (f32, f32, f32),
    "float32-params-float64-data": (f64, f32, f32),
    "float64-params-float32-data": (f32, f64, f64),
    "int64-data-float32-params": (np.int64, f32, f32),  # NumPy: float64
    "uint8-data-float32-params": (np.uint8, f32, f32),  # NumPy: float32
    "int32": (np.int32, np.int32, np.int32),  # computed in float64
}


def conv_inputs(case, dtypes, rng):
    x_shape, w_shape, stride, pad = case
    shapes = (x_shape, w_shape, w_shape[:1])
    x, w, b = (make(rng, shape, dtype) for shape, dtype in zip(shapes, dtypes))
    return x, w, b, {"stride": stride, "pad": pad}


@pytest.mark.parametrize("dtypes", CONV_DTYPES.values(), ids=CONV_DTYPES)
@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES)
def test_conv_matches_naive(case, dtypes):
    rng = np.random.default_rng(0)
    x, w, b, conv_param = conv_inputs(case, dtypes, rng)
    dtype = computed_dtype(x, w, b)
    n, f, hh, ww = x.shape[0], *w.shape[:1], *w.shape[2:]

    out, cache = fc.conv_forward_fast(x, w, b, conv_param)
    expected, _ = naive.conv_forward_naive(*as64(x, w, b), conv_param)
    scale, _ = naive.conv_forward_naive(*absolute(x, w, b), conv_param)
    assert out.dtype == dtype
    assert_close(out, expected.astype(dtype), w.shape[1] * hh * ww, scale)
    assert len(cache) == 4 and all(c is a for c, a in zip(cache, (x, w, b, conv_param)))

    dout = make(rng, out.shape, dtype)
    grads = fc.conv_backward_fast(dout, cache)
    expected = naive.conv_backward_naive(*as64(dout), (*as64(x, w, b), conv_param))
    scales = naive.conv_backward_naive(*absolute(dout), (*absolute(x, w, b), conv_param))
    pixels = n * out.shape[2] * out.shape[3]
    for grad, like, exp, s, length in zip(grads, (x, w, b), expected, scales,
                                          (f * hh * ww, pixels, pixels)):
        assert grad.shape == like.shape and grad.dtype == dtype
        assert_close(grad, exp.astype(dtype), length, s)


# ---- max pooling ---------------------------------------------------------------------------------

# x shape, pool_height, pool_width, stride
POOL_CASES = {
    "2x2-tiling": ((2, 3, 8, 8), 2, 2, 2),
    "3x3-stride2-overlapping": ((1, 2, 7, 7), 3, 3, 2),
    "2x3-stride1": ((2, 2, 9, 6), 2, 3, 1),
    "stride-past-window": ((3, 1, 7, 9), 2, 2, 3),
    "rows-left-over": ((1, 1, 5, 7), 2, 2, 2),
    "one-window": ((2, 1, 4, 4), 4, 4, 1),
    "1x1-batch1": ((1, 4, 3, 3), 1, 1, 1),
    "4x1-stride2": ((2, 2, 10, 5), 4, 1, 2),
}

# dtypes of x and dout (integer x: many tied maxima)
POOL_DTYPES = {
    "float64": (f64, f64),
    "float32": (f32, f32),
    "float32-data-float64-grad": (f32, f64),
    "int16-data": (np.int16, f64),
}


def pool_param(case):
    _, height, width, stride = case
    return {"pool_height": height, "pool_width": width, "stride": stride}


@pytest.mark.parametrize("dtypes", POOL_DTYPES.values(), ids=POOL_DTYPES)
@pytest.mark.parametrize("case", POOL_CASES.values(), ids=POOL_CASES)
def test_max_pool_matches_naive(case, dtypes):
    rng = np.random.default_rng(1)
    x, param = make(rng, case[0], dtypes[0]), pool_param(case)
    out, cache = fc.max_pool_forward_fast(x, param)
    expected, _ = naive.max_pool_forward_naive(x.astype(f64), param)
    assert out.dtype == computed_dtype(x)
    np.testing.assert_array_equal(out, expected)
    x_cached, param_cached = cache
    assert x_cached is x and param_cached is param

    dout = make(rng, out.shape, dtypes[1])
    dx = fc.max_pool_backward_fast(dout, cache)
    expected = naive.max_pool_backward_naive(dout.astype(f64), (x.astype(f64), param))
    assert dx.shape == x.shape and dx.dtype == computed_dtype(dout, x)
    _, height, width, stride = case
    windows_per_input = -(-height // stride) * -(-width // stride)  # overlapping windows add up
    assert_close(dx, expected.astype(dx.dtype), windows_per_input)
    if windows_per_input == 1:
        np.testing.assert_array_equal(dx, expected)


def test_pool_cache_is_a_tuple_that_survives_copies():
    """The cache unpacks as (x, pool_param); copies, pickles and the plain tuple all work, and
    only the cache as returned skips the argmax search."""
    rng = np.random.default_rng(2)
    x, param = rng.standard_normal((2, 3, 6, 6)), {"pool_height": 3, "pool_width": 2, "stride": 2}
    out, cache = fc.max_pool_forward_fast(x, param)
    dout = rng.standard_normal(out.shape)
    expected = naive.max_pool_backward_naive(dout, (x, param))
    assert isinstance(cache, tuple) and len(cache) == 2
    for variant in (cache, copy.deepcopy(cache), pickle.loads(pickle.dumps(cache)),
                    tuple(cache), list(cache)):
        np.testing.assert_array_equal(fc.max_pool_backward_fast(dout, variant), expected)


def test_pool_backward_uses_the_forward_argmax(monkeypatch):
    calls = []

    def spy(*args, indices=None, **kwargs):
        calls.append(indices is not None)
        return original(*args, indices=indices, **kwargs)

    original = fastconv.functional.max_pool2d_backward
    monkeypatch.setattr(fastconv.functional, "max_pool2d_backward", spy)
    x = np.random.default_rng(3).standard_normal((1, 2, 4, 4))
    out, cache = fc.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    fc.max_pool_backward_fast(np.ones_like(out), cache)
    fc.max_pool_backward_fast(np.ones_like(out), tuple(cache))
    assert calls == [True, False]


def test_pool_backward_after_pool_param_changed():
    """The argmax is for the forward pass's windows: a pool_param changed since (here to
    windows with the same output size) is searched again, as the naive layer does."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 2, 4, 4))
    param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = fc.max_pool_forward_fast(x, param)
    dout = rng.standard_normal(out.shape)
    stale = naive.max_pool_backward_naive(dout, (x, dict(param)))
    param.update(pool_height=3, pool_width=3, stride=1)
    expected = naive.max_pool_backward_naive(dout, (x, param))
    assert not np.array_equal(stale, expected)
    np.testing.assert_array_equal(fc.max_pool_backward_fast(dout, cache), expected)


# ---- relu ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtypes", [(f64, f64), (f32, f32), (f32, f64), (np.int64, f64)],
                         ids=["float64", "float32", "float32-data-float64-grad", "int64-data"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (7, 9), (1,)])
def test_relu_matches_naive(shape, dtypes):
    rng = np.random.default_rng(5)
    x = make(rng, shape, dtypes[0]) - (2 if dtypes[0] == np.int64 else 0)
    out, cache = fc.relu_forward(x)
    assert cache is x and out.dtype == computed_dtype(x)
    np.testing.assert_array_equal(out, naive.relu_forward(x.astype(f64))[0])
    dout = make(rng, shape, dtypes[1])
    dx = fc.relu_backward(dout, cache)
    assert dx.dtype == computed_dtype(dout, x)
    np.testing.assert_array_equal(dx, naive.relu_backward(dout.astype(f64), x))


# ---- caches interchanged -------------------------------------------------------------------------

CONV = {"stride": 2, "pad": 1}
POOL = {"pool_height": 3, "pool_width": 2, "stride": 2}


def _conv_args(rng):
    return rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3)), \
        rng.standard_normal(4), CONV


# layer: (fastconv forward, fastconv backward, naive forward, naive backward, its arguments)
INTERCHANGE = {
    "conv": (fc.conv_forward_fast, fc.conv_backward_fast, naive.conv_forward_naive,
             naive.conv_backward_naive, _conv_args),
    "max_pool": (fc.max_pool_forward_fast, fc.max_pool_backward_fast,
                 naive.max_pool_forward_naive, naive.max_pool_backward_naive,
                 lambda rng: (rng.standard_normal((2, 3, 9, 8)), POOL)),
    "relu": (fc.relu_forward, fc.relu_backward, naive.relu_forward, naive.relu_backward,
             lambda rng: (rng.standard_normal((4, 5)),)),
    "conv_relu": (fc.conv_relu_forward, fc.conv_relu_backward, naive.conv_relu_forward,
                  naive.conv_relu_backward, _conv_args),
    "conv_relu_pool": (fc.conv_relu_pool_forward, fc.conv_relu_pool_backward,
                       naive.conv_relu_pool_forward, naive.conv_relu_pool_backward,
                       lambda rng: (*_conv_args(rng), POOL)),
}


def layout(cache):
    """The structure of a cache: nested tuples of array shapes and parameter dicts."""
    if isinstance(cache, tuple):
        return tuple(layout(c) for c in cache)
    return cache.shape if isinstance(cache, np.ndarray) else cache


def assert_same_gradients(actual, expected):
    actual, expected = (g if isinstance(g, tuple) else (g,) for g in (actual, expected))
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert_close(a, e, 64)


@pytest.mark.parametrize("layer", INTERCHANGE)
def test_caches_interchange_with_the_naive_layers(layer):
    fast_forward, fast_backward, naive_forward, naive_backward, args = INTERCHANGE[layer]
    inputs = args(np.random.default_rng(6))
    out, fast_cache = fast_forward(*inputs)
    naive_out, naive_cache = naive_forward(*inputs)
    assert layout(fast_cache) == layout(naive_cache)
    assert_close(out, naive_out, 64)
    dout = np.random.default_rng(7).standard_normal(out.shape)
    expected = naive_backward(dout, naive_cache)
    assert_same_gradients(fast_backward(dout, naive_cache), expected)
    assert_same_gradients(naive_backward(dout, fast_cache), expected)


# ---- the naive layers by finite differences ------------------------------------------------------

@pytest.mark.parametrize("case", ["stride2-batch1", "rows-left-over", "pad-beyond-filter"])
def test_naive_conv_gradients(case):
    rng = np.random.default_rng(8)
    x, w, b, conv_param = conv_inputs(CONV_CASES[case], (f64, f64, f64), rng)
    dout = rng.standard_normal(naive.conv_forward_naive(x, w, b, conv_param)[0].shape)

    def loss():
        return np.sum(naive.conv_forward_naive(x, w, b, conv_param)[0] * dout)

    _, cache = naive.conv_forward_naive(x, w, b, conv_param)
    for grad, array in zip(naive.conv_backward_naive(dout, cache), (x, w, b)):
        np.testing.assert_allclose(grad, numerical_gradient(loss, array), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", ["3x3-stride2-overlapping", "stride-past-window",
                                  "rows-left-over", "2x3-stride1"])
def test_naive_max_pool_gradient(case):
    rng = np.random.default_rng(9)
    x, param = rng.standard_normal(POOL_CASES[case][0]), pool_param(POOL_CASES[case])
    out, cache = naive.max_pool_forward_naive(x, param)
    dout = rng.standard_normal(out.shape)

    def loss():
        return np.sum(naive.max_pool_forward_naive(x, param)[0] * dout)

    np.testing.assert_allclose(naive.max_pool_backward_naive(dout, cache),
                               numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)


def test_naive_relu_gradient():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3, 4))
    x[np.abs(x) < 1e-3] = 0.5  # no kink within the finite-difference step
    dout = rng.standard_normal(x.shape)
    np.testing.assert_allclose(
        naive.relu_backward(dout, x),
        numerical_gradient(lambda: np.sum(naive.relu_forward(x)[0] * dout), x), rtol=1e-6)


# ---- errors --------------------------------------------------------------------------------------

_X = np.ones((2, 3, 6, 6))
_W = np.ones((4, 3, 3, 3))
_B = np.zeros(4)
_OUT, _CACHE = fc.conv_forward_fast(_X, _W, _B, {"stride": 1, "pad": 1})
_POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}

# (call, exception, start of the message)
ERRORS = {
    "conv-param-missing-key": (lambda: fc.conv_forward_fast(_X, _W, _B, {"stride": 1}),
                               ValueError, "conv_forward_fast: conv_param must have the keys "
                                           "'stride', 'pad', got {'stride': 1}"),
    "conv-param-not-a-dict": (lambda: fc.conv_forward_fast(_X, _W, _B, (1, 1)), TypeError,
                              "conv_forward_fast: conv_param must be a dict with the keys "
                              "'stride', 'pad', got tuple"),
    "conv-stride-0": (lambda: fc.conv_forward_fast(_X, _W, _B, {"stride": 0, "pad": 0}),
                      ValueError, "conv_forward_fast: conv2d: stride must be a positive int"),
    "conv-channels": (lambda: fc.conv_forward_fast(_X[:, :2], _W, _B, {"stride": 1, "pad": 0}),
                      ValueError, "conv_forward_fast: conv2d: weight of shape (4, 3, 3, 3) "
                                  "expects 3 input channels"),
    "conv-complex": (lambda: fc.conv_forward_fast(_X + 0j, _W, _B, {"stride": 1, "pad": 0}),
                     TypeError, "conv_forward_fast: conv2d: x must have dtype float32 or "
                                "float64, got complex128"),
    "conv-list": (lambda: fc.conv_forward_fast(_X.tolist(), _W, _B, {"stride": 1, "pad": 0}),
                  TypeError, "conv_forward_fast: conv2d: x must be a numpy.ndarray, got list"),
    "conv-cache-short": (lambda: fc.conv_backward_fast(_OUT, _CACHE[:3]), ValueError,
                         "conv_backward_fast: cache must be the (x, w, b, conv_param) tuple the "
                         "forward pass returns, got a tuple of 3 items"),
    "conv-dout-shape": (lambda: fc.conv_backward_fast(_OUT[:1], _CACHE), ValueError,
                        "conv_backward_fast: conv2d_backward: grad_output must have the "
                        "output's shape (2, 4, 6, 6)"),
    "pool-window-too-big": (lambda: fc.max_pool_forward_fast(_X, {**_POOL, "pool_height": 7}),
                            ValueError, "max_pool_forward_fast: max_pool2d: output size would "
                                        "be (0, 3)"),
    "pool-param-missing-key": (lambda: fc.max_pool_forward_fast(_X, {"stride": 2}), ValueError,
                               "max_pool_forward_fast: pool_param must have the keys "
                               "'pool_height', 'pool_width', 'stride'"),
    "pool-cache-not-a-tuple": (lambda: fc.max_pool_backward_fast(_X, _X), TypeError,
                               "max_pool_backward_fast: cache must be the (x, pool_param) tuple "
                               "the forward pass returns, got ndarray"),
    "relu-shapes": (lambda: fc.relu_backward(np.ones(3), np.ones(4)), ValueError,
                    "relu_backward: grad_output must have the shape of x (4,), got (3,)"),
    "relu-string": (lambda: fc.relu_forward(np.array(["a"])), TypeError,
                    "relu_forward: relu: x must have dtype float32 or float64, got <U1"),
    "composite-cache": (lambda: fc.conv_relu_pool_backward(_OUT, _CACHE), ValueError,
                        "conv_relu_pool_backward: cache must be the (conv_cache, relu_cache, "
                        "pool_cache) tuple the forward pass returns, got a tuple of 4 items"),
}


@pytest.mark.parametrize("case", ERRORS.values(), ids=ERRORS)
def test_errors_name_the_function(case):
    call, exception, message = case
    with pytest.raises(exception) as info:
        call()
    assert str(info.value).startswith(message), str(info.value)


# ---- install() -----------------------------------------------------------------------------------

FAST_LAYERS = ["conv_forward_fast", "conv_backward_fast", "conv_forward_strides",
               "conv_backward_strides", "conv_forward_im2col", "conv_backward_im2col",
               "max_pool_forward_fast", "max_pool_backward_fast", "max_pool_forward_reshape",
               "max_pool_backward_reshape", "max_pool_forward_im2col", "max_pool_backward_im2col"]
NAIVE = ["conv_forward_naive", "conv_backward_naive", "max_pool_forward_naive",
         "max_pool_backward_naive"]
LAYER_UTILS = ["relu_forward", "relu_backward", "conv_relu_forward", "conv_relu_backward",
               "conv_relu_pool_forward", "conv_relu_pool_backward"]
MISSING = object()


def _cs231n_modules():
    return [name for name in sys.modules if name == "cs231n" or name.startswith("cs231n.")]


@pytest.fixture
def clean():
    """Not installed and no cs231n module imported, before and after the test."""
    def clear():
        fc.uninstall()
        for name in _cs231n_modules():
            del sys.modules[name]
    clear()
    yield
    clear()


@pytest.fixture
def no_package(clean):
    if importlib.util.find_spec("cs231n") is not None:
        pytest.skip("a cs231n package is importable here")


USER_FILES = {
    "__init__.py": "",
    "layers.py": """
        def affine_forward(x, w, b):
            return "user's affine_forward"

        def relu_forward(x):
            return "user's relu_forward"
        """,
    "fast_layers.py": """
        def conv_forward_fast(x, w, b, conv_param):
            return "user's conv_forward_fast", None
        """,
    "layer_utils.py": """
        from .layers import *
        from .fast_layers import *

        def affine_relu_forward(x, w, b):
            return "user's affine_relu_forward"

        def conv_relu_forward(x, w, b, conv_param):
            return "user's conv_relu_forward"

        def conv_twice_forward(x, w, b, conv_param):
            out, _ = conv_forward_fast(x, w, b, conv_param)
            return conv_forward_fast(out, w, b, conv_param)
        """,
}


def write_package(folder, files):
    package = folder / "cs231n"
    package.mkdir()
    for name, text in files.items():
        (package / name).write_text(textwrap.dedent(text))


@pytest.fixture
def user_package(clean, tmp_path, monkeypatch):
    """A user's own cs231n package (layers, fast_layers, layer_utils) first on sys.path."""
    write_package(tmp_path, USER_FILES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def star_import(module):
    namespace = {}
    exec(f"from {module} import *", namespace)
    return namespace


def test_install_without_a_cs231n_package(no_package):
    fc.install()
    assert fc.is_installed()
    fast = star_import("cs231n.fast_layers")
    assert {k: v for k, v in fast.items() if k != "__builtins__"} == \
        {name: getattr(fc, name) for name in FAST_LAYERS}
    import cs231n.fast_layers
    assert all(getattr(cs231n.fast_layers, name) is getattr(fc, name) for name in NAIVE)
    utils = star_import("cs231n.layer_utils")
    assert all(utils[name] is getattr(fc, name) for name in FAST_LAYERS + LAYER_UTILS)
    from cs231n import layer_utils
    assert layer_utils is sys.modules["cs231n.layer_utils"]

    args = _conv_args(np.random.default_rng(11)) + (POOL,)
    np.testing.assert_array_equal(utils["conv_relu_pool_forward"](*args)[0],
                                  naive.conv_relu_pool_forward(*args)[0])
    fc.uninstall()
    assert not fc.is_installed() and _cs231n_modules() == []
    with pytest.raises(ModuleNotFoundError):
        import cs231n  # noqa: F401


def test_install_is_idempotent(no_package):
    fc.install()
    module = sys.modules["cs231n.fast_layers"]
    fc.install()
    assert sys.modules["cs231n.fast_layers"] is module
    fc.uninstall()
    assert _cs231n_modules() == []
    fc.uninstall()
    assert not fc.is_installed()


def test_installed_context(no_package):
    with fc.installed():
        assert star_import("cs231n.layer_utils")["relu_forward"] is fc.relu_forward
    assert not fc.is_installed() and _cs231n_modules() == []
    fc.install()
    with fc.installed():
        pass
    assert fc.is_installed()  # installed before the with block: still installed after it


def _in_threads(work, count=8):
    """Run work() in `count` threads started together; re-raise the first error."""
    start, errors = threading.Barrier(count), []

    def run():
        start.wait()
        try:
            work()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]


def test_install_from_many_threads(no_package):
    def churn():
        for _ in range(50):
            fc.install()
            fc.uninstall()

    _in_threads(churn)
    assert not fc.is_installed() and _cs231n_modules() == []
    seen = []
    _in_threads(lambda: (fc.install(), seen.append(sys.modules["cs231n.fast_layers"])))
    assert len(seen) == 8 and all(module is seen[0] for module in seen)  # installed once
    fc.uninstall()
    assert _cs231n_modules() == []


def _snapshot(package):
    return {name: (sys.modules.get(f"cs231n.{name}", MISSING), vars(package).get(name, MISSING))
            for name in ("fast_layers", "layer_utils")}


@pytest.mark.parametrize("imported_before", [False, True], ids=["fresh", "imported-before"])
def test_install_over_a_user_package(user_package, imported_before):
    import cs231n
    if imported_before:
        import cs231n.layer_utils  # also imports the user's fast_layers
    before = _snapshot(cs231n)

    fc.install()
    assert sys.modules["cs231n"] is cs231n  # the user's package, not a stand-in
    fast = star_import("cs231n.fast_layers")
    assert all(fast[name] is getattr(fc, name) for name in FAST_LAYERS)
    assert cs231n.fast_layers is sys.modules["cs231n.fast_layers"]
    utils = star_import("cs231n.layer_utils")
    assert all(utils[name] is getattr(fc, name) for name in FAST_LAYERS + LAYER_UTILS)
    # the user's own layers stay beside fastconv's
    assert utils["affine_relu_forward"](None, None, None) == "user's affine_relu_forward"
    assert utils["affine_forward"](None, None, None) == "user's affine_forward"
    rng = np.random.default_rng(12)
    x, w, b = rng.standard_normal((1, 3, 5, 5)), rng.standard_normal((3, 3, 3, 3)), np.zeros(3)
    conv_param = {"stride": 1, "pad": 1}
    twice, _ = utils["conv_twice_forward"](x, w, b, conv_param)
    if imported_before:  # its fast_layers names were bound before install()
        assert twice == "user's conv_forward_fast"
    else:  # imported by install(), with fastconv's fast_layers in place
        once, _ = fc.conv_forward_fast(x, w, b, conv_param)
        np.testing.assert_array_equal(twice, fc.conv_forward_fast(once, w, b, conv_param)[0])

    fc.uninstall()
    assert _snapshot(cs231n) == before
    assert sys.modules["cs231n"] is cs231n
    from cs231n.fast_layers import conv_forward_fast
    assert conv_forward_fast(None, None, None, None)[0] == "user's conv_forward_fast"


def test_install_over_an_empty_user_package(clean, tmp_path, monkeypatch):
    write_package(tmp_path, {"__init__.py": ""})
    monkeypatch.syspath_prepend(str(tmp_path))
    import cs231n
    fc.install()
    assert cs231n.layer_utils.relu_forward is fc.relu_forward
    assert sorted(star_import("cs231n.layer_utils")) == \
        sorted(FAST_LAYERS + LAYER_UTILS + ["__builtins__"])
    fc.uninstall()
    assert _snapshot(cs231n) == {name: (MISSING, MISSING)
                                 for name in ("fast_layers", "layer_utils")}


def test_install_changes_nothing_when_the_user_layer_utils_fails(clean, tmp_path, monkeypatch):
    write_package(tmp_path, {"__init__.py": "", "layer_utils.py": "raise RuntimeError('broken')"})
    monkeypatch.syspath_prepend(str(tmp_path))
    import cs231n
    with pytest.raises(RuntimeError, match="broken"):
        fc.install()
    assert not fc.is_installed()
    assert _snapshot(cs231n) == {name: (MISSING, MISSING)
                                 for name in ("fast_layers", "layer_utils")}


# ---- a ThreeLayerConvNet-style network -----------------------------------------------------------

def three_layer_loss(layers, params, x, y, reg):
    """Loss and gradients of conv - relu - 2x2 max pool - affine - relu - affine - softmax, the
    conv, relu and pool layers taken from `layers` (the naive module or fastconv's)."""
    w1, b1, w2, b2, w3, b3 = (params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    conv_param = {"stride": 1, "pad": (w1.shape[2] - 1) // 2}
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    h1, cache1 = layers.conv_relu_pool_forward(x, w1, b1, conv_param, pool_param)
    a2, cache2 = naive.affine_forward(h1, w2, b2)
    h2, cache3 = layers.relu_forward(a2)
    scores, cache4 = naive.affine_forward(h2, w3, b3)
    loss, dscores = naive.softmax_loss(scores, y)
    loss += 0.5 * reg * sum(np.sum(params[k].astype(f64) ** 2) for k in ("W1", "W2", "W3"))

    grads = {}
    dh2, grads["W3"], grads["b3"] = naive.affine_backward(dscores, cache4)
    dh1, grads["W2"], grads["b2"] = naive.affine_backward(layers.relu_backward(dh2, cache3),
                                                          cache2)
    _, grads["W1"], grads["b1"] = layers.conv_relu_pool_backward(dh1, cache1)
    for k in ("W1", "W2", "W3"):
        grads[k] += reg * params[k]
    return loss, grads


@pytest.mark.parametrize("param_dtype", [f64, f32], ids=["float64", "float32-params"])
def test_three_layer_convnet_trains_as_with_naive_layers(param_dtype):
    """Same initial weights, same batch, five SGD steps: the losses agree to float64 rounding at
    every step (float32 parameters meet float64 data, as in the assignment, and are promoted)."""
    rng = np.random.default_rng(13)
    x, y = rng.standard_normal((8, 3, 16, 16)), rng.integers(0, 10, 8)
    initial = {"W1": 0.1 * rng.standard_normal((6, 3, 5, 5)), "b1": np.zeros(6),
               "W2": 0.05 * rng.standard_normal((6 * 8 * 8, 20)), "b2": np.zeros(20),
               "W3": 0.1 * rng.standard_normal((20, 10)), "b3": np.zeros(10)}
    losses = {}
    for name, layers in (("naive", naive), ("fastconv", fc)):
        params = {k: v.astype(param_dtype) for k, v in initial.items()}
        losses[name] = []
        for _ in range(5):
            loss, grads = three_layer_loss(layers, params, x, y, reg=1e-3)
            losses[name].append(loss)
            for k in params:
                params[k] -= 0.1 * grads[k]
        assert all(p.dtype == param_dtype for p in params.values())
    np.testing.assert_allclose(losses["fastconv"], losses["naive"], rtol=1e-12, atol=0)
    assert losses["naive"][-1] < losses["naive"][0] - 0.1  # it learns
