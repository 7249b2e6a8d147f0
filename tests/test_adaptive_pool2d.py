"""Adaptive and global pooling (adaptive_avg_pool2d, adaptive_max_pool2d, their backward passes
and nn layers) against fastconv.reference on every ISA path, the reference against finite
differences, and both against PyTorch where it is installed.

Case table: output sizes that divide the input (the kernels run narrow windows as plain
pooling), that do not (windows of varying size that overlap), larger than the input (windows
that repeat), 1 x 1 (global pooling: a reduction per plane, planes whose sizes sit around the 16
lanes), None (keep that input size) and 0 (an empty output). Max pooling must match exactly
(values, bits and int64 indices, ties, NaN, -inf); average pooling within the tolerance of its
window's sum.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    DTYPES,
    assert_close,
    assert_same_for_1_and_2_threads,
    numerical_gradient,
    random,
)

import fastconv.functional as F
from fastconv import nn
from fastconv import reference as ref

# (N, C, H, W, output_size)
CASES = {
    "divides": (2, 3, 8, 12, (4, 3)),  # windows 2 x 4: the adaptive kernels
    "divides-narrow": (2, 3, 8, 9, (4, 3)),  # windows 2 x 3: the pool2d kernels
    "divides-identity": (1, 2, 5, 6, (None, None)),
    "not-dividing": (2, 3, 7, 10, (3, 4)),
    "not-dividing-square": (2, 2, 13, 13, 6),
    "larger-than-input": (1, 2, 3, 4, (5, 7)),
    "larger-one-side": (2, 2, 9, 4, (2, 6)),
    "none-h": (2, 2, 6, 5, (None, 3)),
    "none-w": (1, 3, 9, 7, (4, None)),
    "row-input": (2, 2, 1, 9, (1, 4)),
    "wide-rows": (1, 2, 3, 70, (2, 17)),
    "output-1-by-n": (2, 2, 6, 10, (1, 3)),
    "global-7x7": (2, 4, 7, 7, 1),
    "global-1x1": (2, 3, 1, 1, 1),
    "global-lanes-minus-1": (1, 3, 3, 5, 1),
    "global-lanes": (1, 3, 4, 4, 1),
    "global-lanes-plus-1": (1, 3, 1, 17, 1),
    "global-big": (1, 2, 33, 35, (1, 1)),
    "batch0": (0, 3, 5, 5, 2),
    "output-0": (1, 2, 5, 5, (0, 3)),
}
IDS = ["f32", "f64"]


def _make(case, dtype, rng, values):
    n, c, h, w, output_size = case
    if values == "normal":
        x = random(rng, (n, c, h, w), dtype)
    else:  # ties, NaN of both signs, -inf and signed zeros
        x = rng.integers(-2, 3, size=(n, c, h, w)).astype(dtype)
        mask = rng.random(x.shape)
        x[mask < 0.04] = np.nan
        x[mask < 0.02] = -np.nan
        x[(mask >= 0.04) & (mask < 0.08)] = -np.inf
        x[(x == 0) & (mask > 0.5)] = -0.0
    out = tuple(size if o is None else o for o, size in
                zip(output_size if isinstance(output_size, tuple) else (output_size,) * 2,
                    (h, w)))
    return x, output_size, out


def _bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("values", ["normal", "ties-nan-inf"])
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_adaptive_max_pool2d_matches_reference_exactly(case, values, dtype, isa):
    rng = np.random.default_rng(1)
    x, output_size, out = _make(case, dtype, rng, values)
    y, idx = F.adaptive_max_pool2d(x, output_size, return_indices=True)
    ry, ridx = ref.adaptive_max_pool2d(x, out)
    assert y.shape == x.shape[:2] + out and idx.dtype == np.int64
    np.testing.assert_array_equal(_bits(y), _bits(ry))
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(_bits(F.adaptive_max_pool2d(x, output_size)), _bits(y))
    gy = random(rng, y.shape, dtype)
    expected = ref.adaptive_max_pool2d_backward(gy, x, ridx)
    np.testing.assert_array_equal(F.adaptive_max_pool2d_backward(gy, x, output_size), expected)
    np.testing.assert_array_equal(
        F.adaptive_max_pool2d_backward(gy, x, output_size, indices=idx), expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_adaptive_avg_pool2d_matches_reference(case, dtype, isa):
    rng = np.random.default_rng(2)
    x, output_size, out = _make(case, dtype, rng, "normal")
    # the widest window: ceil(size / out) + 1 per dimension
    window = (-(-x.shape[2] // max(out[0], 1)) + 1) * (-(-x.shape[3] // max(out[1], 1)) + 1)
    y = F.adaptive_avg_pool2d(x, output_size)
    assert y.shape == x.shape[:2] + out
    assert_close(y, ref.adaptive_avg_pool2d(x, out), window,
                 ref.adaptive_avg_pool2d(np.abs(x), out))
    gy = random(rng, y.shape, dtype)
    assert_close(F.adaptive_avg_pool2d_backward(gy, x, output_size),
                 ref.adaptive_avg_pool2d_backward(gy, x), window,
                 ref.adaptive_avg_pool2d_backward(np.abs(gy), x))


@pytest.mark.parametrize("name", ["not-dividing", "global-big", "divides", "larger-than-input"])
def test_adaptive_pools_same_result_for_1_and_2_threads(name):
    rng = np.random.default_rng(3)
    n, c, h, w, output_size = CASES[name]
    x = random(rng, (4 * n, 8 * c, h, w), np.float32)
    y = F.adaptive_avg_pool2d(x, output_size)
    gy = random(rng, y.shape, np.float32)
    calls = [lambda: F.adaptive_avg_pool2d(x, output_size),
             lambda: F.adaptive_avg_pool2d_backward(gy, x, output_size),
             lambda: F.adaptive_max_pool2d(x, output_size, return_indices=True),
             lambda: F.adaptive_max_pool2d_backward(gy, x, output_size)]
    assert_same_for_1_and_2_threads(calls)


def test_adaptive_pools_accept_any_memory_layout():
    rng = np.random.default_rng(4)
    for layout in ("F", "strided", "reversed", "readonly"):
        x = random(rng, (2, 3, 9, 7), np.float64, layout)
        c = np.ascontiguousarray(x)
        for size in ((4, 3), 1):
            np.testing.assert_array_equal(F.adaptive_avg_pool2d(x, size),
                                          F.adaptive_avg_pool2d(c, size))
            np.testing.assert_array_equal(F.adaptive_max_pool2d(x, size),
                                          F.adaptive_max_pool2d(c, size))


# ---- the reference: hand-computed cases and finite differences ---------------------------------

def test_reference_windows_by_hand():
    x = np.arange(15.0).reshape(1, 1, 3, 5)
    # columns [0, 3) and [2, 5) overlap in column 2; rows [0, 2) and [1, 3) in row 1
    np.testing.assert_array_equal(ref.adaptive_avg_pool2d(x, (2, 2))[0, 0],
                                  [[(0 + 1 + 2 + 5 + 6 + 7) / 6, (2 + 3 + 4 + 7 + 8 + 9) / 6],
                                   [(5 + 6 + 7 + 10 + 11 + 12) / 6,
                                    (7 + 8 + 9 + 12 + 13 + 14) / 6]])
    y, idx = ref.adaptive_max_pool2d(x, (2, 2))
    np.testing.assert_array_equal(idx[0, 0], [[7, 9], [12, 14]])
    # an output larger than the input repeats windows: row 0 of 2 feeds outputs 0 and 1 of 3
    y, idx = ref.adaptive_max_pool2d(np.array([[[[1.0], [2.0]]]]), (3, 1))
    np.testing.assert_array_equal(idx[0, 0, :, 0], [0, 1, 1])  # windows [0,1) [0,2) [1,2)


@pytest.mark.parametrize("name", ["not-dividing", "larger-than-input", "global-7x7", "none-w"])
def test_reference_gradients_match_finite_differences(name):
    rng = np.random.default_rng(5)
    n, c, h, w, output_size = CASES[name]
    x, _, out = _make((1, 2, h, w, output_size), np.float64, rng, "normal")
    x = (rng.permutation(x.size) * 0.1).reshape(x.shape)  # distinct values, gaps >> eps
    gy = rng.standard_normal((1, 2) + out)
    forwards = {"avg": lambda: ref.adaptive_avg_pool2d(x, out),
                "max": lambda: ref.adaptive_max_pool2d(x, out)[0]}
    backwards = {"avg": lambda: ref.adaptive_avg_pool2d_backward(gy, x),
                 "max": lambda: ref.adaptive_max_pool2d_backward(gy, x)}
    for kind, forward in forwards.items():
        numeric = numerical_gradient(lambda f=forward: float(np.sum(f() * gy)), x)
        np.testing.assert_allclose(backwards[kind](), numeric, rtol=1e-5, atol=1e-7)


# ---- nn layers ---------------------------------------------------------------------------------

def test_nn_adaptive_layers():
    x = np.random.default_rng(6).standard_normal((2, 3, 7, 9))
    avg = nn.AdaptiveAvgPool2d((3, None))
    np.testing.assert_array_equal(avg(x), F.adaptive_avg_pool2d(x, (3, None)))
    gy = np.ones((2, 3, 3, 9))
    np.testing.assert_array_equal(avg.backward(gy),
                                  F.adaptive_avg_pool2d_backward(gy, x, (3, None)))
    mx = nn.AdaptiveMaxPool2d(2, return_indices=True)
    y, idx = mx(x)
    np.testing.assert_array_equal(idx, F.adaptive_max_pool2d(x, 2, return_indices=True)[1])
    np.testing.assert_array_equal(mx.backward(np.ones_like(y)),
                                  F.adaptive_max_pool2d_backward(np.ones_like(y), x, 2, idx))
    assert repr(mx) == "AdaptiveMaxPool2d(output_size=2, return_indices=True)"
    assert nn.AdaptiveMaxPool2d(1)(x).shape == (2, 3, 1, 1)


# ---- bad arguments -----------------------------------------------------------------------------

X = np.zeros((1, 2, 5, 6))
BAD = [  # (op, kwargs, exception, message)
    ("adaptive_avg_pool2d", dict(output_size=-1), ValueError, r"output_size must be .*got -1$"),
    ("adaptive_avg_pool2d", dict(output_size=(2, 3, 4)), ValueError,
     r"output_size must be .*got \(2, 3, 4\)$"),
    ("adaptive_max_pool2d", dict(output_size=2.0), TypeError, r"output_size must be .*got 2\.0$"),
    ("adaptive_max_pool2d", dict(output_size=None), TypeError, r"output_size .*got None$"),
    ("adaptive_max_pool2d", dict(output_size=(None, -2)), ValueError,
     r"output_size .*got \(None, -2\)$"),
    ("adaptive_avg_pool2d", dict(output_size=(True, 2)), TypeError,
     r"output_size .*got \(True, 2\)$"),
    ("adaptive_avg_pool2d", dict(output_size=2**31), ValueError,
     r"output_size .*at most 2\*\*31 - 1\), got 2147483648$"),
    ("adaptive_max_pool2d", dict(output_size=2, return_indices=1), TypeError,
     r"return_indices must be a bool, got 1$"),
    ("adaptive_avg_pool2d", dict(x=np.zeros((2, 5, 6)), output_size=2), ValueError,
     r"x must be a 4-D .*got shape \(2, 5, 6\)"),
    ("adaptive_max_pool2d", dict(x=np.zeros((1, 2, 0, 6)), output_size=2), ValueError,
     r"input must have at least one channel, row and column"),
    ("adaptive_avg_pool2d", dict(x=np.zeros((1, 2, 5, 6), np.int64), output_size=2), TypeError,
     r"x must have dtype float32 or float64, got int64"),
    ("adaptive_avg_pool2d_backward", dict(grad_output=np.zeros((1, 2, 3, 3)), output_size=2),
     ValueError, r"grad_output must have the output's shape \(1, 2, 2, 2\), got \(1, 2, 3, 3\)"),
    ("adaptive_max_pool2d_backward",
     dict(grad_output=np.zeros((1, 2, 2, 2), np.float32), output_size=2), TypeError,
     r"grad_output has dtype float32 but x has dtype float64"),
    ("adaptive_max_pool2d_backward",
     dict(grad_output=np.zeros((1, 2, 2, 2)), output_size=2,
          indices=np.full((1, 2, 2, 2), 30, np.int64)), ValueError,
     r"indices must lie in \[-1, 30\) .*got values in \[30, 30\]"),
    ("adaptive_max_pool2d_backward",
     dict(grad_output=np.zeros((1, 2, 2, 2)), output_size=2, indices=np.zeros((1, 2, 2, 2))),
     TypeError, r"indices must be an integer numpy.ndarray"),
]


@pytest.mark.parametrize("op, kwargs, exc, message", BAD,
                         ids=[f"{op}-{i}" for i, (op, *_) in enumerate(BAD)])
def test_adaptive_pools_bad_arguments(op, kwargs, exc, message):
    kwargs = {"x": X, **kwargs}
    with pytest.raises(exc, match=rf"^{op}: " + message):
        getattr(F, op)(**kwargs)


def test_adaptive_empty_output_gives_zero_gradient():
    x = np.ones((1, 2, 5, 5))
    for op in (F.adaptive_avg_pool2d_backward, F.adaptive_max_pool2d_backward):
        np.testing.assert_array_equal(op(np.zeros((1, 2, 0, 3)), x, (0, 3)), np.zeros_like(x))


# ---- PyTorch -----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_adaptive_pools_match_torch(case):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    rng = np.random.default_rng(7)
    x, output_size, _ = _make(case, np.float64, rng, "ties-nan-inf")
    tx = torch.tensor(x, requires_grad=True)
    ty, tidx = tf.adaptive_max_pool2d(tx, output_size, return_indices=True)
    y, idx = F.adaptive_max_pool2d(x, output_size, return_indices=True)
    np.testing.assert_array_equal(_bits(y), _bits(ty.detach().numpy()))
    np.testing.assert_array_equal(idx, tidx.numpy())
    gy = rng.standard_normal(y.shape)
    if x.size and y.size:
        ty.backward(torch.tensor(gy))
        np.testing.assert_allclose(F.adaptive_max_pool2d_backward(gy, x, output_size),
                                   tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    x = rng.standard_normal(x.shape)
    tx = torch.tensor(x, requires_grad=True)
    ty = tf.adaptive_avg_pool2d(tx, output_size)
    y = F.adaptive_avg_pool2d(x, output_size)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    if x.size and y.size:
        ty.backward(torch.tensor(gy))
        np.testing.assert_allclose(F.adaptive_avg_pool2d_backward(gy, x, output_size),
                                   tx.grad.numpy(), rtol=1e-12, atol=1e-12)
