"""fastconv against PyTorch itself, where PyTorch is installed (never a dependency).

The reference is the specification the kernels are tested against; these tests check that the
specification is PyTorch's: output sizes (ceil_mode), 'same' padding, divisors, tie and NaN rules,
indices, and every gradient. Computed in float64 so only semantics, not rounding, can differ.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastconv.functional as F

torch = pytest.importorskip("torch")
tf = torch.nn.functional


def _t(a, grad=False):
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.requires_grad_(True) if grad else t


def _close(a, b):
    np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-10)


CONV = [  # (input shape, weight shape, kwargs)
    ((2, 4, 9, 8), (6, 2, 3, 2), dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)),
    ((1, 3, 7, 6), (4, 3, 2, 4), dict(padding="same")),
    ((1, 3, 8, 8), (2, 3, 3, 3), dict(padding="same", dilation=2)),
    ((2, 3, 10, 9), (5, 3, 4, 3), dict(padding="valid", stride=3)),
    ((2, 4, 6, 6), (8, 1, 3, 3), dict(padding=(0, 2), groups=4)),
]


@pytest.mark.parametrize("xs, ws, kwargs", CONV)
def test_conv2d_matches_torch(xs, ws, kwargs):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    tx, tw, tb = _t(x, True), _t(w, True), _t(b, True)
    ty = tf.conv2d(tx, tw, tb, **kwargs)
    y = F.conv2d(x, w, b, **kwargs)
    _close(y, ty)
    gy = rng.standard_normal(y.shape)
    ty.backward(_t(gy))
    for mine, theirs in zip(F.conv2d_backward(gy, x, w, **kwargs), (tx.grad, tw.grad, tb.grad)):
        _close(mine, theirs)


POOL = [  # (input shape, kernel, stride, padding, dilation, ceil_mode)
    ((2, 3, 8, 8), 2, None, 0, 1, False),
    ((2, 3, 9, 9), 3, 2, 1, 1, True),
    ((1, 2, 10, 7), (3, 2), (2, 3), (1, 1), (2, 1), True),
    ((1, 2, 5, 5), 2, 2, 1, 1, True),  # ceil_mode drops the window that starts in the padding
    ((1, 1, 6, 11), (1, 4), (1, 3), (0, 2), 1, True),
]


@pytest.mark.parametrize("shape, k, s, p, d, ceil", POOL)
def test_max_pool2d_matches_torch(shape, k, s, p, d, ceil):
    rng = np.random.default_rng(1)
    x = rng.integers(-2, 3, size=shape).astype(np.float64)  # many ties
    x.flat[::13] = np.nan
    tx = _t(x, True)
    ty, tidx = tf.max_pool2d(tx, k, s, p, d, ceil_mode=ceil, return_indices=True)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    gy = rng.standard_normal(y.shape)
    ty.backward(_t(gy))
    _close(F.max_pool2d_backward(gy, x, k, s, p, d, ceil), tx.grad)


@pytest.mark.parametrize("include", [True, False])
@pytest.mark.parametrize("divisor", [None, 3])
@pytest.mark.parametrize("shape, k, s, p, d, ceil", POOL)
def test_avg_pool2d_matches_torch(shape, k, s, p, d, ceil, include, divisor):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    tx = _t(x, True)
    ty = tf.avg_pool2d(tx, k, s, p, ceil, include, divisor)
    y = F.avg_pool2d(x, k, s, p, ceil, include, divisor)
    _close(y, ty)
    gy = rng.standard_normal(y.shape)
    ty.backward(_t(gy))
    _close(F.avg_pool2d_backward(gy, x, k, s, p, ceil, include, divisor), tx.grad)


@pytest.mark.parametrize("norm", [1, 2, 3.0, 1.5])
@pytest.mark.parametrize("shape, k, s, ceil", [((2, 3, 8, 8), 2, None, False),
                                               ((1, 2, 9, 10), 3, 2, True),
                                               ((1, 2, 7, 7), (2, 3), (2, 1), True)])
def test_lp_pool2d_matches_torch(shape, k, s, ceil, norm):
    rng = np.random.default_rng(3)
    x = np.abs(rng.standard_normal(shape)) + 0.1
    x[0, 0, :3, :3] = 0  # a window whose sum is zero: gradient 0 in both
    tx = _t(x, True)
    ty = tf.lp_pool2d(tx, norm, k, s, ceil)
    y = F.lp_pool2d(x, norm, k, s, ceil)
    _close(y, ty)
    gy = rng.standard_normal(y.shape)
    ty.backward(_t(gy))
    _close(F.lp_pool2d_backward(gy, x, norm, k, s, ceil), tx.grad)


def test_relu_matches_torch():
    x = np.array([-1.0, 0.0, 2.0, np.nan, -np.inf, np.inf])
    tx = _t(x, True)
    ty = torch.relu(tx)
    np.testing.assert_array_equal(F.relu(x), ty.detach().numpy())
    gy = np.arange(1.0, 7.0)
    ty.backward(_t(gy))
    np.testing.assert_array_equal(F.relu_backward(gy, x), tx.grad.numpy())


def test_output_sizes_match_torch_exhaustively():
    """Every small pooling geometry PyTorch accepts gives the same output shape here."""
    x = np.zeros((1, 1, 1, 1))
    for size in range(1, 9):
        x = np.zeros((1, 1, 1, size))
        tx = torch.zeros((1, 1, 1, size), dtype=torch.float64)
        for k in range(1, 5):
            for s in range(1, 4):
                for p in range(0, k // 2 + 1):
                    for d in range(1, 3):
                        for ceil in (False, True):
                            args = ((1, k), (1, s), (0, p), (1, d), ceil)
                            try:
                                expected = tf.max_pool2d(tx, *args).shape
                            except RuntimeError:
                                with pytest.raises(ValueError):
                                    F.max_pool2d(x, *args)
                                continue
                            assert F.max_pool2d(x, *args).shape == expected, args
