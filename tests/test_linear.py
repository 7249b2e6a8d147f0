"""The fully connected kernels (src/kernels/linear.h) against fastconv.reference, on every ISA
path: a case table at the GEMM's tile edges (rows and columns around MR and NR, reductions past
one KC slice, one row: the dot-product path), the empty sizes, in-place accumulation into given
gradients, any memory layout, and bit-identical results for any thread count."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DTYPES, assert_close, isa_params, random

import fastconv
import fastconv.functional as F
from fastconv import _kernels
from fastconv import reference as ref


@pytest.fixture(params=isa_params())
def isa(request):
    with fastconv.use_isa(request.param):
        yield request.param


def _tile(isa, dtype):
    t = _kernels.tuning(isa, dtype)
    return t["mr"], t["nr"], t["kc"]


# (rows, in_features, out_features) relative to the tile: "mr", "nr", "kc" +- a delta
LINEAR_CASES = {
    "one-row": (1, 37, 5),
    "rows-mr-1": ("mr-1", 9, 3),
    "rows-mr": ("mr", 16, "nr"),
    "rows-mr+1": ("mr+1", 7, "nr+1"),
    "cols-nr-1": (5, 11, "nr-1"),
    "k-1": (9, 1, 6),
    "k-kc": (3, "kc", 2),
    "k-kc+1": ("mr+1", "kc+1", "nr-1"),
    "k-2kc+3": (17, "2kc+3", 33),
    "many-tiles": ("3mr+2", 40, "2nr+5"),
    "convnet-fc1": (32, 3136, 128),
}


def _size(spec, tile):
    if isinstance(spec, int):
        return spec
    name = next(n for n in ("mr", "nr", "kc") if n in spec)
    times, _, delta = spec.partition(name)
    return (int(times) if times else 1) * tile[("mr", "nr", "kc").index(name)] + int(delta or 0)


def _case(name, isa, dtype, seed=0):
    tile = _tile(isa, dtype)
    m, k, n = (_size(s, tile) for s in LINEAR_CASES[name])
    rng = np.random.default_rng(seed)
    return (random(rng, (m, k), dtype), random(rng, (n, k), dtype), random(rng, (n,), dtype),
            random(rng, (m, n), dtype))


def _scale(a, b):
    return np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LINEAR_CASES)
def test_linear_matches_reference(name, dtype, isa):
    x, w, b, gy = _case(name, isa, dtype)
    k = x.shape[1]
    assert_close(F.linear(x, w, b), ref.linear(x, w, b), k + 1, _scale(x, w.T) + np.abs(b))
    assert_close(F.linear(x, w), ref.linear(x, w, None), k, _scale(x, w.T))
    gx, gw, gb = F.linear_backward(gy, x, w)
    egx, egw, egb = ref.linear_backward(gy, x, w)
    assert_close(gx, egx, w.shape[0], _scale(gy, w))
    assert_close(gw, egw, x.shape[0], _scale(gy.T, x))
    assert_close(gb, egb, x.shape[0], np.abs(gy).sum(axis=0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("given", ["both", "weight", "bias"])
def test_linear_backward_adds_to_given_gradients(given, dtype, isa):
    x, w, b, gy = _case("rows-mr+1", isa, dtype)
    rng = np.random.default_rng(1)
    start_w, start_b = random(rng, w.shape, dtype), random(rng, b.shape, dtype)
    into_w, into_b = start_w.copy(), start_b.copy()
    kwargs = {"grad_weight": into_w if given != "bias" else None,
              "grad_bias": into_b if given != "weight" else None}
    _, gw, gb = F.linear_backward(gy, x, w, **kwargs)
    _, egw, egb = ref.linear_backward(gy, x, w)
    for got, into, start, expected in ((gw, into_w, start_w, egw), (gb, into_b, start_b, egb)):
        is_given = got is into
        assert is_given == (kwargs["grad_weight" if got is gw else "grad_bias"] is not None)
        assert_close(got, expected + start if is_given else expected, x.shape[0] + 1,
                     np.abs(expected) + np.abs(start))
        if not is_given:
            np.testing.assert_array_equal(into, start)  # untouched


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["F", "strided", "reversed", "readonly"])
def test_linear_any_memory_layout(layout, dtype):
    rng = np.random.default_rng(2)
    x, w = random(rng, (2, 5, 7), dtype, layout), random(rng, (3, 7), dtype, layout)
    b, gy = random(rng, (1, 3), dtype, layout)[0], random(rng, (2, 5, 3), dtype, layout)
    assert_close(F.linear(x, w, b), ref.linear(x, w, b), 8)
    for got, expected in zip(F.linear_backward(gy, x, w), ref.linear_backward(gy, x, w)):
        assert_close(got, expected, 11)


@pytest.mark.parametrize("m, k, n", [(0, 3, 2), (2, 0, 3), (2, 3, 0), (0, 0, 0)])
def test_linear_empty_sizes(m, k, n):
    x, w, b, gy = np.ones((m, k)), np.ones((n, k)), np.ones(n), np.ones((m, n))
    np.testing.assert_array_equal(F.linear(x, w, b), ref.linear(x, w, b))
    for got, expected in zip(F.linear_backward(gy, x, w), ref.linear_backward(gy, x, w)):
        np.testing.assert_array_equal(got, expected)
    gw, gb = np.full((n, k), 2.0), np.full(n, 3.0)
    _, got_w, got_b = F.linear_backward(gy, x, w, grad_weight=gw, grad_bias=gb)
    np.testing.assert_array_equal(got_w, 2.0 + ref.linear_backward(gy, x, w)[1])
    np.testing.assert_array_equal(got_b, 3.0 + m)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["one-row", "many-tiles", "convnet-fc1"])
def test_linear_same_result_for_1_and_2_threads(name, dtype, isa):
    x, w, b, gy = _case(name, isa, dtype)
    results = []
    for n in (1, 2):
        with fastconv.num_threads(n):
            results.append([F.linear(x, w, b), *F.linear_backward(gy, x, w)])
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("kwargs, message", [
    (dict(grad_weight=np.zeros((4, 3), np.float32)), "grad_weight must be a writeable, "
                                                     "C-contiguous float64 array of shape"),
    (dict(grad_weight=np.zeros((3, 4))), r"grad_weight .* of shape \(4, 3\)"),
    (dict(grad_weight=np.zeros((4, 3), order="F")), "grad_weight .* not writeable, C-contiguous"),
    (dict(grad_bias=np.zeros(4)[::2]), r"grad_bias .* of shape \(4,\)"),
])
def test_linear_backward_refuses_unusable_accumulators(kwargs, message):
    with pytest.raises(ValueError, match=f"^linear_backward: {message}"):
        F.linear_backward(np.ones((2, 4)), np.ones((2, 3)), np.ones((4, 3)), **kwargs)
    with pytest.raises(TypeError, match="^linear_backward: grad_bias must be a numpy.ndarray"):
        F.linear_backward(np.ones((2, 4)), np.ones((2, 3)), np.ones((4, 3)), grad_bias=[0.0])
