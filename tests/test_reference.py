"""Tests for the pure-NumPy reference ops in ``fastconv.reference``.

Three kinds of check:
* tiny hand-computed cases (expected arrays written out by hand);
* forward results against naive per-output scalar loops written independently here;
* central finite-difference checks (float64) of every backward against its forward.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import numerical_gradient

from fastconv import reference as ref

nan, inf = np.nan, np.inf


def a4(rows) -> np.ndarray:
    """2-D nested list -> (1, 1, H, W) float64 array."""
    return np.array(rows, dtype=np.float64)[None, None]


# --------------------------------------------------------------------------- helpers


def assert_grad_close(analytic: np.ndarray, numeric: np.ndarray) -> None:
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


def naive_conv2d(x, w, b, stride, padding, dilation, groups):
    """Scalar-loop conv, straight from the defining formula."""
    N, C, H, W = x.shape
    K, Cg, kH, kW = w.shape
    top, bottom, left, right = padding
    OH = (H + top + bottom - dilation[0] * (kH - 1) - 1) // stride[0] + 1
    OW = (W + left + right - dilation[1] * (kW - 1) - 1) // stride[1] + 1
    Kg = K // groups
    out = np.zeros((N, K, OH, OW))
    for n in range(N):
        for k in range(K):
            g = k // Kg
            for oh in range(OH):
                for ow in range(OW):
                    s = 0.0 if b is None else b[k]
                    for cc in range(Cg):
                        c = g * Cg + cc
                        for i in range(kH):
                            for j in range(kW):
                                h = oh * stride[0] + i * dilation[0] - top
                                ww = ow * stride[1] + j * dilation[1] - left
                                if 0 <= h < H and 0 <= ww < W:
                                    s += w[k, cc, i, j] * x[n, c, h, ww]
                    out[n, k, oh, ow] = s
    return out


def naive_max_pool2d(x, k, s, p, d, ceil_mode):
    """Transcription of PyTorch's CPU max-pool loop (plus index -1 for empty windows), p being
    (top, bottom, left, right)."""
    N, C, H, W = x.shape
    OH = ref.pool_output_size(H, k[0], s[0], p[0], p[1], d[0], ceil_mode)
    OW = ref.pool_output_size(W, k[1], s[1], p[2], p[3], d[1], ceil_mode)
    out = np.full((N, C, OH, OW), -inf)
    idx = np.full((N, C, OH, OW), -1, dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    hs = [oh * s[0] - p[0] + i * d[0] for i in range(k[0])]
                    ws = [ow * s[1] - p[2] + j * d[1] for j in range(k[1])]
                    hs = [h for h in hs if 0 <= h < H]
                    ws = [w for w in ws if 0 <= w < W]
                    if not hs or not ws:
                        continue
                    best, bi = -inf, hs[0] * W + ws[0]
                    for h in hs:
                        for w in ws:
                            v = x[n, c, h, w]
                            if v > best or math.isnan(v):
                                best, bi = v, h * W + w
                    out[n, c, oh, ow], idx[n, c, oh, ow] = best, bi
    return out, idx


def naive_avg_pool2d(x, k, s, p, ceil_mode, cip, dov):
    N, C, H, W = x.shape
    OH = ref.pool_output_size(H, k[0], s[0], p[0], p[1], 1, ceil_mode)
    OW = ref.pool_output_size(W, k[1], s[1], p[2], p[3], 1, ceil_mode)
    out = np.zeros((N, C, OH, OW))
    for oh in range(OH):
        for ow in range(OW):
            h0, w0 = oh * s[0] - p[0], ow * s[1] - p[2]
            h1, w1 = min(h0 + k[0], H + p[1]), min(w0 + k[1], W + p[3])
            pool_size = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, H), min(w1, W)
            if h0 >= h1 or w0 >= w1:
                continue
            div = dov if dov is not None else pool_size if cip else (h1 - h0) * (w1 - w0)
            out[:, :, oh, ow] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / div
    return out


# --------------------------------------------------------------------------- conv2d


X33 = a4([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
W22 = a4([[1, 2], [3, 4]])


def test_conv2d_hand_basic_with_bias():
    out = ref.conv2d(X33, W22, np.array([10.0]), (1, 1), (0, 0, 0, 0), (1, 1), 1)
    np.testing.assert_array_equal(out, a4([[37, 47], [67, 77]]))


def test_conv2d_hand_padding_stride():
    out = ref.conv2d(X33, W22, None, (2, 2), (1, 1, 1, 1), (1, 1), 1)
    np.testing.assert_array_equal(out, a4([[0, 11], [30, 67]]))


def test_conv2d_hand_dilation():
    out = ref.conv2d(X33, W22, None, (1, 1), (0, 0, 0, 0), (2, 2), 1)
    np.testing.assert_array_equal(out, a4([[54]]))  # 0*1 + 2*2 + 6*3 + 8*4


def test_conv2d_hand_asymmetric_padding():
    # top=0, bottom=1, left=1, right=0; 2x2 box filter
    out = ref.conv2d(X33, np.ones((1, 1, 2, 2)), None, (1, 1), (0, 1, 1, 0), (1, 1), 1)
    np.testing.assert_array_equal(out, a4([[3, 8, 12], [9, 20, 24], [6, 13, 15]]))


def test_conv2d_hand_groups():
    x = np.concatenate([X33, np.ones_like(X33)], axis=1)  # (1, 2, 3, 3)
    w = np.array([1.0, -1.0, 2.0, 10.0]).reshape(4, 1, 1, 1)
    out = ref.conv2d(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 2)
    expected = np.concatenate([X33, -X33, 2 * np.ones_like(X33), 10 * np.ones_like(X33)], axis=1)
    np.testing.assert_array_equal(out, expected)


def test_conv2d_backward_hand():
    go = np.ones((1, 1, 2, 2))
    gi, gw, gb = ref.conv2d_backward(go, X33, W22, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    np.testing.assert_array_equal(gi, a4([[1, 3, 2], [4, 10, 6], [3, 7, 4]]))
    np.testing.assert_array_equal(gw, a4([[8, 12], [20, 24]]))
    np.testing.assert_array_equal(gb, [4.0])


# (N, C, H, W, K, kH, kW, stride, padding, dilation, groups)
CONV_CASES = [
    (2, 2, 5, 5, 3, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    (1, 4, 6, 5, 4, 2, 3, (2, 1), (1, 1, 0, 2), (1, 2), 2),
    (2, 6, 7, 6, 3, 3, 2, (2, 3), (0, 1, 1, 0), (2, 1), 3),
    (1, 4, 5, 5, 4, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 4),
    (1, 4, 4, 5, 8, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 4),
    (1, 2, 4, 4, 2, 2, 2, (3, 3), (1, 1, 1, 1), (1, 1), 1),
    (1, 1, 6, 6, 1, 3, 3, (2, 2), (2, 0, 0, 2), (2, 2), 1),
    (1, 2, 4, 5, 2, 2, 3, (1, 2), (3, 0, 0, 4), (1, 1), 1),  # padding past the kernel
]


def _conv_inputs(case, seed=0):
    N, C, H, W, K, kH, kW, stride, padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C // groups, kH, kW))
    b = rng.standard_normal(K)
    return x, w, b, stride, padding, dilation, groups


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_naive(case):
    x, w, b, s, p, d, g = _conv_inputs(case)
    np.testing.assert_allclose(ref.conv2d(x, w, b, s, p, d, g), naive_conv2d(x, w, b, s, p, d, g),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref.conv2d(x, w, None, s, p, d, g),
                               naive_conv2d(x, w, None, s, p, d, g), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_backward_finite_difference(case):
    x, w, b, s, p, d, g = _conv_inputs(case)
    G = np.random.default_rng(1).standard_normal(ref.conv2d(x, w, b, s, p, d, g).shape)
    loss = lambda: float(np.sum(ref.conv2d(x, w, b, s, p, d, g) * G))  # noqa: E731
    gi, gw, gb = ref.conv2d_backward(G, x, w, s, p, d, g)
    assert gi.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape
    assert_grad_close(gi, numerical_gradient(loss, x))
    assert_grad_close(gw, numerical_gradient(loss, w))
    assert_grad_close(gb, numerical_gradient(loss, b))


# --------------------------------------------------------------------------- pool_output_size


@pytest.mark.parametrize(
    "size, k, s, p, d, ceil_mode, expected",
    [
        (5, 2, 2, (0, 0), 1, False, 2),
        (5, 2, 2, (0, 0), 1, True, 3),   # partial last window kept
        (4, 2, 2, (0, 0), 1, False, 2),
        (4, 2, 2, (0, 0), 1, True, 2),   # exact fit: ceil changes nothing
        (6, 3, 2, (1, 1), 1, False, 3),
        (6, 3, 2, (1, 1), 1, True, 4),
        (5, 2, 2, (1, 1), 1, False, 3),
        (5, 2, 2, (1, 1), 1, True, 3),   # raw ceil gives 4, last window would start in padding
        (7, 3, 3, (0, 0), 2, False, 1),
        (7, 3, 3, (0, 0), 2, True, 2),
        (2, 2, 1, (1, 1), 3, True, 1),
        (1, 1, 1, (0, 0), 1, True, 1),
        (10, 3, 1, (0, 0), 1, True, 8),
        # (begin, end) padding: the end's pad only adds windows, the begin's shifts them
        (5, 2, 2, (0, 1), 1, True, 3),   # the last window ends in the end's padding
        (4, 2, 2, (0, 1), 1, True, 2),   # raw ceil gives 3, whose window starts in it: dropped
        (4, 2, 2, (1, 0), 1, True, 3),   # windows start at -1, 1, 3
        (5, 3, 1, (2, 0), 1, False, 5),
        (5, 2, 1, (3, 4), 1, False, 11),  # past the kernel (4-tuples): windows in the padding
    ],
)
def test_pool_output_size(size, k, s, p, d, ceil_mode, expected):
    assert ref.pool_output_size(size, k, s, *p, d, ceil_mode) == expected


# --------------------------------------------------------------------------- max_pool2d


def test_max_pool2d_hand_basic():
    x = a4([[1, 5, 2, 0], [3, 4, 8, 1], [0, 0, 6, 7], [9, 2, 3, 3]])
    out, idx = ref.max_pool2d(x, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False)
    np.testing.assert_array_equal(out, a4([[5, 8], [9, 7]]))
    np.testing.assert_array_equal(idx, np.array([[[[1, 6], [12, 11]]]]))
    assert idx.dtype == np.int64


def test_max_pool2d_hand_ties_keep_first():
    out, idx = ref.max_pool2d(a4([[2, 2], [2, 2]]), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False)
    assert out.item() == 2 and idx.item() == 0
    out, idx = ref.max_pool2d(a4([[1, 3], [3, 3]]), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False)
    assert out.item() == 3 and idx.item() == 1


def test_max_pool2d_hand_nan_propagates_last_nan():
    out, idx = ref.max_pool2d(a4([[nan, 1], [nan, 2]]), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False)
    assert np.isnan(out.item()) and idx.item() == 2
    out, idx = ref.max_pool2d(a4([[1, nan], [5, 2]]), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False)
    assert np.isnan(out.item()) and idx.item() == 1


def test_max_pool2d_hand_all_minus_inf_first_in_bounds():
    x = a4([[-inf, -inf], [-inf, -inf]])
    out, idx = ref.max_pool2d(x, (2, 2), (1, 1), (1, 1, 1, 1), (1, 1), False)
    assert out.shape == (1, 1, 3, 3) and np.all(out == -inf)
    np.testing.assert_array_equal(idx[0, 0], [[0, 0, 1], [0, 0, 1], [2, 2, 3]])


def test_max_pool2d_hand_padding_never_selected():
    x = a4([[-1, -2], [-3, -4]])
    out, idx = ref.max_pool2d(x, (2, 2), (2, 2), (1, 1, 1, 1), (1, 1), False)
    np.testing.assert_array_equal(out, a4([[-1, -2], [-3, -4]]))
    np.testing.assert_array_equal(idx[0, 0], [[0, 1], [2, 3]])


def test_max_pool2d_hand_dilation():
    out, idx = ref.max_pool2d(X33, (2, 2), (1, 1), (0, 0, 0, 0), (2, 2), False)
    assert out.item() == 8 and idx.item() == 8
    x = a4([[9, 0, 1], [0, 0, 0], [2, 0, 3]])
    out, idx = ref.max_pool2d(x, (2, 2), (1, 1), (0, 0, 0, 0), (2, 2), False)
    assert out.item() == 9 and idx.item() == 0


def test_max_pool2d_window_wholly_in_padding():
    # H=2, k=2, dilation 3, pad 1: the single window touches rows -1 and 2 only.
    x = a4([[5], [6]])
    args = ((2, 1), (1, 1), (1, 1, 0, 0), (3, 1), True)
    out, idx = ref.max_pool2d(x, *args)
    assert out.shape == (1, 1, 1, 1)
    assert out.item() == -inf and idx.item() == -1
    gi = ref.max_pool2d_backward(np.ones((1, 1, 1, 1)), x, *args)
    np.testing.assert_array_equal(gi, np.zeros_like(x))


def test_max_pool2d_ceil_mode_partial_window():
    x = a4([[1, 2, 3, 4, 9]])
    out, idx = ref.max_pool2d(x, (1, 2), (1, 2), (0, 0, 0, 0), (1, 1), True)
    np.testing.assert_array_equal(out, a4([[2, 4, 9]]))
    np.testing.assert_array_equal(idx[0, 0], [[1, 3, 4]])
    out, _ = ref.max_pool2d(x, (1, 2), (1, 2), (0, 0, 0, 0), (1, 1), False)
    np.testing.assert_array_equal(out, a4([[2, 4]]))


def test_max_pool2d_backward_hand_overlapping():
    x = a4([[0, 1, 0], [0, 9, 0], [0, 0, 0]])
    gi = ref.max_pool2d_backward(a4([[1, 2], [3, 4]]), x, (2, 2), (1, 1), (0, 0, 0, 0), (1, 1),
                                 False)
    np.testing.assert_array_equal(gi, a4([[0, 0, 0], [0, 10, 0], [0, 0, 0]]))


def test_max_pool2d_backward_uses_given_indices():
    x = np.zeros((1, 2, 2, 2))
    indices = np.array([[[[3]], [[1]]]], dtype=np.int64)
    gi = ref.max_pool2d_backward(np.array([[[[5.0]], [[7.0]]]]), x, (2, 2), (2, 2), (0, 0, 0, 0),
                                 (1, 1), False, indices)
    np.testing.assert_array_equal(gi, [[[[0, 0], [0, 5]], [[0, 7], [0, 0]]]])


# (H, W, kernel, stride, padding (top, bottom, left, right), dilation, ceil_mode)
MAX_CASES = [
    (4, 4, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    (5, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), False),
    (5, 5, (2, 3), (2, 2), (1, 1, 1, 1), (1, 1), True),
    (7, 6, (3, 2), (2, 3), (1, 1, 0, 0), (2, 1), True),
    (6, 7, (3, 3), (3, 2), (0, 0, 1, 1), (2, 2), False),
    (6, 7, (3, 3), (3, 2), (0, 0, 1, 1), (2, 2), True),
    (2, 5, (2, 2), (1, 2), (1, 1, 1, 1), (3, 1), True),
    # asymmetric, and past the kernel: windows wholly in the padding
    (5, 6, (3, 2), (2, 1), (2, 0, 0, 1), (1, 1), True),
    (4, 5, (2, 2), (1, 2), (3, 1, 0, 4), (1, 1), False),
    (6, 5, (2, 3), (2, 2), (0, 3, 2, 0), (2, 1), True),
]


@pytest.mark.parametrize("case", MAX_CASES)
def test_max_pool2d_matches_naive(case):
    H, W, k, s, p, d, cm = case
    rng = np.random.default_rng(2)
    x = rng.integers(-3, 4, size=(2, 3, H, W)).astype(np.float64)  # many ties
    x[rng.random(x.shape) < 0.1] = nan
    x[rng.random(x.shape) < 0.1] = -inf
    out, idx = ref.max_pool2d(x, k, s, p, d, cm)
    nout, nidx = naive_max_pool2d(x, k, s, p, d, cm)
    np.testing.assert_array_equal(out, nout)
    np.testing.assert_array_equal(idx, nidx)


@pytest.mark.parametrize("case", MAX_CASES)
def test_max_pool2d_backward_finite_difference(case):
    H, W, k, s, p, d, cm = case
    rng = np.random.default_rng(3)
    n = 2 * 2 * H * W
    x = (rng.permutation(n) * 0.1).reshape(2, 2, H, W)  # distinct values, gaps >> eps
    out, idx = ref.max_pool2d(x, k, s, p, d, cm)
    G = rng.standard_normal(out.shape)
    G[~np.isfinite(out)] = 0  # windows wholly in the padding: -inf output, no gradient

    def loss():
        o = ref.max_pool2d(x, k, s, p, d, cm)[0]
        return float(np.sum(np.where(G != 0, o, 0) * G))

    num = numerical_gradient(loss, x)
    assert_grad_close(ref.max_pool2d_backward(G, x, k, s, p, d, cm), num)
    assert_grad_close(ref.max_pool2d_backward(G, x, k, s, p, d, cm, idx), num)


# --------------------------------------------------------------------------- avg_pool2d


def test_avg_pool2d_hand_basic():
    out = ref.avg_pool2d(X33, (2, 2), (1, 1), (0, 0, 0, 0), False, True, None)
    np.testing.assert_array_equal(out, a4([[2, 3], [5, 6]]))


@pytest.mark.parametrize(
    "cip, dov, expected",
    [
        (True, None, [[0, 0.75], [2.25, 6]]),
        (False, None, [[0, 1.5], [4.5, 6]]),
        (True, 3, [[0, 1], [3, 8]]),
        (False, 3, [[0, 1], [3, 8]]),
    ],
)
def test_avg_pool2d_hand_padding(cip, dov, expected):
    out = ref.avg_pool2d(X33, (2, 2), (2, 2), (1, 1, 1, 1), False, cip, dov)
    np.testing.assert_array_equal(out, a4(expected))


@pytest.mark.parametrize(
    "cip, dov, expected",
    [
        # windows over [1,2,3,4] (left pad 1): cols [0,2) [1,4) [3,4);
        # pool sizes clipped to padded input: 3, 3, 2; clipped to input: 2, 3, 1
        (True, None, [[1, 3, 2]]),
        (False, None, [[1.5, 3, 4]]),
        (True, 2, [[1.5, 4.5, 2]]),
    ],
)
def test_avg_pool2d_hand_ceil_mode(cip, dov, expected):
    out = ref.avg_pool2d(a4([[1, 2, 3, 4]]), (1, 3), (1, 2), (0, 0, 1, 1), True, cip, dov)
    np.testing.assert_array_equal(out, a4(expected))


@pytest.mark.parametrize(
    "cip, expected",
    [
        # top 1, right 1: row 0's windows hold one input row, column 2's one input column
        (True, [[0.25, 0.75, 0.5], [2, 3, 1.75], [5, 6, 3.25]]),
        (False, [[0.5, 1.5, 2], [2, 3, 3.5], [5, 6, 6.5]]),
    ],
)
def test_avg_pool2d_hand_asymmetric_padding(cip, expected):
    out = ref.avg_pool2d(X33, (2, 2), (1, 1), (1, 0, 0, 1), False, cip, None)
    np.testing.assert_array_equal(out, a4(expected))


def test_lp_pool2d_hand_padding():
    # left and right padding 1: windows [pad, 3] and [4, pad], the p-norm of each with its zero
    out = ref.lp_pool2d(a4([[3, 4]]), 2, (1, 2), (1, 2), False, (0, 0, 1, 1))
    np.testing.assert_allclose(out, a4([[3, 4]]), rtol=1e-14)


def test_avg_pool2d_backward_hand():
    go = a4([[4, 8], [12, 16]])
    gi = ref.avg_pool2d_backward(go, X33, (2, 2), (1, 1), (0, 0, 0, 0), False, True, None)
    np.testing.assert_array_equal(gi, a4([[1, 3, 2], [4, 10, 6], [3, 7, 4]]))
    go = np.ones((1, 1, 2, 2))
    gi = ref.avg_pool2d_backward(go, X33, (2, 2), (2, 2), (1, 1, 1, 1), False, False, None)
    np.testing.assert_array_equal(gi, a4([[1, 0.5, 0.5], [0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]))


# (H, W, kernel, stride, padding (top, bottom, left, right), ceil_mode, count_include_pad,
#  divisor_override)
AVG_CASES = [
    (4, 4, (2, 2), (2, 2), (0, 0, 0, 0), False, True, None),
    (5, 6, (3, 3), (1, 1), (1, 1, 1, 1), False, True, None),
    (5, 6, (3, 3), (1, 1), (1, 1, 1, 1), False, False, None),
    (5, 5, (2, 3), (2, 2), (1, 1, 1, 1), True, True, None),
    (5, 5, (2, 3), (2, 2), (1, 1, 1, 1), True, False, None),
    (7, 6, (3, 2), (2, 3), (1, 1, 0, 0), True, True, 4),
    (7, 6, (3, 2), (2, 3), (1, 1, 0, 0), True, False, 7),
    (6, 7, (4, 3), (3, 2), (2, 2, 1, 1), True, False, None),
    # asymmetric, and past the kernel: windows wholly in the padding
    (5, 6, (3, 2), (2, 1), (2, 0, 0, 1), True, True, None),
    (5, 6, (3, 2), (2, 1), (0, 2, 1, 0), True, False, None),
    (4, 5, (2, 2), (1, 2), (3, 1, 0, 4), False, True, None),
    (4, 5, (2, 2), (1, 2), (3, 1, 0, 4), False, False, None),
]


@pytest.mark.parametrize("case", AVG_CASES)
def test_avg_pool2d_matches_naive(case):
    H, W, k, s, p, cm, cip, dov = case
    x = np.random.default_rng(4).standard_normal((2, 3, H, W))
    np.testing.assert_allclose(ref.avg_pool2d(x, k, s, p, cm, cip, dov),
                               naive_avg_pool2d(x, k, s, p, cm, cip, dov), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", AVG_CASES)
def test_avg_pool2d_backward_finite_difference(case):
    H, W, k, s, p, cm, cip, dov = case
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, H, W))
    G = rng.standard_normal(ref.avg_pool2d(x, k, s, p, cm, cip, dov).shape)
    loss = lambda: float(np.sum(ref.avg_pool2d(x, k, s, p, cm, cip, dov) * G))  # noqa: E731
    assert_grad_close(ref.avg_pool2d_backward(G, x, k, s, p, cm, cip, dov),
                      numerical_gradient(loss, x))


# --------------------------------------------------------------------------- lp_pool2d


def test_lp_pool2d_hand():
    x = a4([[3, 4, 2]])
    # second window is partial (ceil_mode): area 1, scaled by kH*kW/area = 2
    out = ref.lp_pool2d(x, 2, (1, 2), (1, 2), True)
    np.testing.assert_allclose(out, a4([[5, math.sqrt(8)]]), rtol=1e-14)
    out = ref.lp_pool2d(x, 1, (1, 2), (1, 2), True)
    np.testing.assert_allclose(out, a4([[7, 4]]), rtol=1e-14)
    out = ref.lp_pool2d(x, 2, (1, 2), (1, 2), False)
    np.testing.assert_allclose(out, a4([[5]]), rtol=1e-14)


def test_lp_pool2d_backward_hand():
    x = a4([[3, 4, 2]])
    gi = ref.lp_pool2d_backward(np.ones((1, 1, 1, 2)), x, 2, (1, 2), (1, 2), True)
    np.testing.assert_allclose(gi, a4([[0.6, 0.8, math.sqrt(2)]]), rtol=1e-14)


def test_lp_pool2d_backward_zero_window_is_zero():
    x = a4([[0, 0, 1, 1], [0, 0, 1, 1]])
    gi = ref.lp_pool2d_backward(np.ones((1, 1, 1, 2)), x, 2, (2, 2), (2, 2), False)
    np.testing.assert_array_equal(gi, a4([[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]]))


# (H, W, norm_type, kernel, stride, ceil_mode, padding (top, bottom, left, right))
LP_CASES = [
    (4, 4, 2, (2, 2), (2, 2), False, (0, 0, 0, 0)),
    (5, 5, 2, (2, 2), (2, 2), True, (0, 0, 0, 0)),
    (5, 6, 1, (3, 2), (2, 2), True, (0, 0, 0, 0)),
    (6, 5, 3, (2, 3), (1, 2), False, (0, 0, 0, 0)),
    (7, 5, 1.5, (3, 3), (2, 3), True, (0, 0, 0, 0)),
    (5, 7, 4.0, (2, 2), (3, 3), True, (0, 0, 0, 0)),
    # padding, fastconv's extension: zeros counted in the window's area
    (5, 6, 2, (3, 2), (2, 2), True, (1, 0, 1, 1)),
    (6, 5, 3, (2, 3), (1, 2), True, (0, 1, 2, 0)),
]


@pytest.mark.parametrize("case", LP_CASES)
def test_lp_pool2d_backward_finite_difference(case):
    H, W, pn, k, s, cm, pad = case
    rng = np.random.default_rng(6)
    x = rng.uniform(0.5, 2.0, size=(2, 2, H, W))
    G = rng.standard_normal(ref.lp_pool2d(x, pn, k, s, cm, pad).shape)
    loss = lambda: float(np.sum(ref.lp_pool2d(x, pn, k, s, cm, pad) * G))  # noqa: E731
    assert_grad_close(ref.lp_pool2d_backward(G, x, pn, k, s, cm, pad),
                      numerical_gradient(loss, x))


@pytest.mark.parametrize("case", LP_CASES)
def test_lp_pool2d_is_scaled_power_mean(case):
    H, W, pn, k, s, cm, pad = case
    x = np.random.default_rng(7).uniform(0.5, 2.0, size=(1, 2, H, W))
    sums = naive_avg_pool2d(x ** pn, k, s, pad, cm, False, 1)  # plain window sums
    inside = naive_avg_pool2d(np.ones_like(x), k, s, pad, cm, False, 1)  # in-bounds areas
    share = naive_avg_pool2d(np.ones_like(x), k, s, pad, cm, True, None)  # inside / padded area
    expected = (sums * (k[0] * k[1]) * share / inside) ** (1 / pn)
    np.testing.assert_allclose(ref.lp_pool2d(x, pn, k, s, cm, pad), expected, rtol=1e-12)


# --------------------------------------------------------------------------- relu


def test_relu_hand():
    x = np.array([-1.0, 0.0, 2.0, nan, -inf, inf, -0.5, 1e-30])
    np.testing.assert_array_equal(ref.relu(x), [0, 0, 2, nan, 0, inf, 0, 1e-30])


def test_relu_backward_hand():
    x = np.array([nan, -1.0, 0.0, 1.0, 1e-30])
    g = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # NaN passes the gradient through, as PyTorch's threshold_backward (x <= 0 ? 0 : g) does.
    np.testing.assert_array_equal(ref.relu_backward(g, x), [1, 0, 0, 4, 5])


def test_relu_backward_finite_difference():
    rng = np.random.default_rng(8)
    x = rng.choice([-1, 1], size=(2, 3, 4, 4)) * rng.uniform(0.1, 1.0, size=(2, 3, 4, 4))
    G = rng.standard_normal(x.shape)
    loss = lambda: float(np.sum(ref.relu(x) * G))  # noqa: E731
    assert_grad_close(ref.relu_backward(G, x), numerical_gradient(loss, x))


# --------------------------------------------------------------------------- dtypes, empty batch


def _all_ops(x):
    """Run every op on ``x`` (N, 2, 5, 5); return list of (name, array)."""
    dt = x.dtype
    w = np.ones((4, 1, 3, 3), dtype=dt)
    b = np.ones(4, dtype=dt)
    res = []
    out = ref.conv2d(x, w, b, (1, 1), (1, 0, 0, 1), (1, 1), 2)
    res.append(("conv2d", out))
    res += list(zip(("conv_gi", "conv_gw", "conv_gb"),
                    ref.conv2d_backward(np.ones_like(out), x, w, (1, 1), (1, 0, 0, 1), (1, 1), 2)))
    mp = (x, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True)
    out, idx = ref.max_pool2d(*mp)
    res += [("max", out), ("max_bw", ref.max_pool2d_backward(np.ones_like(out), *mp))]
    ap = (x, (3, 3), (2, 2), (1, 1, 1, 1), True, False, None)
    out = ref.avg_pool2d(*ap)
    res += [("avg", out), ("avg_bw", ref.avg_pool2d_backward(np.ones_like(out), *ap))]
    lp = (x, 2.0, (2, 2), (2, 2), True)
    out = ref.lp_pool2d(*lp)
    res += [("lp", out), ("lp_bw", ref.lp_pool2d_backward(np.ones_like(out), *lp))]
    res += [("relu", ref.relu(x)), ("relu_bw", ref.relu_backward(np.ones_like(x), x))]
    return res


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(dtype):
    x = np.random.default_rng(9).uniform(0.5, 1.5, size=(2, 2, 5, 5)).astype(dtype)
    for name, arr in _all_ops(x):
        assert arr.dtype == dtype, name
        assert np.all(np.isfinite(arr)), name
    assert ref.max_pool2d(x, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False)[1].dtype == np.int64


def test_float32_close_to_float64():
    x = np.random.default_rng(10).uniform(0.5, 1.5, size=(2, 2, 5, 5))
    for (name, a32), (_, a64) in zip(_all_ops(x.astype(np.float32)), _all_ops(x)):
        np.testing.assert_allclose(a32, a64, rtol=1e-5, atol=1e-5, err_msg=name)


def test_empty_batch():
    full = dict(_all_ops(np.ones((1, 2, 5, 5))))
    for name, arr in _all_ops(np.ones((0, 2, 5, 5))):
        expected = full[name].shape
        if name not in ("conv_gw", "conv_gb"):
            expected = (0,) + expected[1:]
        assert arr.shape == expected, name
    gi, gw, gb = ref.conv2d_backward(np.ones((0, 4, 4, 4)), np.ones((0, 2, 5, 5)),
                                     np.ones((4, 1, 3, 3)), (1, 1), (1, 0, 0, 1), (1, 1), 2)
    assert not gw.any() and not gb.any()
