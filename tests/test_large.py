"""Index arithmetic past 32 bits, and allocations that fail.

Always run: geometries whose index products exceed 2**31 (offsets like oh * stride, i * dilation,
kH * kW, the padded extent) while every array stays tiny; the answers are known in closed form.
Memory failures: an output numpy cannot allocate, and a kernel workspace malloc that fails (under
an address-space limit in a subprocess), both MemoryError.

With FASTCONV_TEST_LARGE=1 (by hand; 9 to 18 GB of memory, about a minute): a plane of more than
2**31 elements, so flat element indices themselves exceed 32 bits (pooling and relu; a conv on it
would need another 8-12 GB of stride-phase workspace).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import fastconv
import fastconv.functional as F

BIG = 2**31 - 1  # the largest geometry value fastconv accepts
HALF = BIG // 2  # the largest pool padding for kernel BIG
SANITIZED = os.environ.get("FASTCONV_SANITIZED") == "1"


def _x(shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---- pooling with a kernel of 2**31 - 1 over a small input -----------------------------------
# kernel BIG with padding HALF covers any input smaller than it: one global window whose padded
# extent, kH * kW (about 2**62) and offsets all pass 2**31.

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_with_a_kernel_of_2_31(dtype):
    x = _x((2, 3, 5, 7), dtype)
    y, idx = F.max_pool2d(x, BIG, padding=HALF, return_indices=True)
    assert y.shape == idx.shape == (2, 3, 1, 1)
    flat = x.reshape(2, 3, -1)
    np.testing.assert_array_equal(y[..., 0, 0], flat.max(axis=2))
    np.testing.assert_array_equal(idx[..., 0, 0], flat.argmax(axis=2))
    gy = _x(y.shape, dtype, 1)
    gx = F.max_pool2d_backward(gy, x, BIG, padding=HALF)
    expected = np.zeros_like(flat)
    np.put_along_axis(expected, flat.argmax(axis=2)[..., None], gy.reshape(2, 3, 1), axis=2)
    np.testing.assert_array_equal(gx, expected.reshape(x.shape))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_with_a_kernel_of_2_31(dtype, count_include_pad):
    x = _x((2, 3, 5, 7), dtype)
    y = F.avg_pool2d(x, BIG, padding=HALF, count_include_pad=count_include_pad)
    # the window clipped to the padded input is BIG x BIG (the padded input is 2**31 + 4 tall)
    divisor = float(BIG) * BIG if count_include_pad else 35.0
    expected = x.astype(np.float64).sum(axis=(2, 3), keepdims=True) / divisor
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, expected.astype(dtype), rtol=rtol)
    gy = _x(y.shape, dtype, 1)
    gx = F.avg_pool2d_backward(gy, x, BIG, padding=HALF, count_include_pad=count_include_pad)
    np.testing.assert_allclose(gx, np.broadcast_to(gy / dtype(divisor), x.shape), rtol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lp_pool_partial_window_of_2_31(dtype):
    """ceil_mode keeps one partial window: S * kH * kW / area with kH * kW about 2**62."""
    x = np.abs(_x((1, 2, 3, 4), dtype)) + dtype(0.5)
    y = F.lp_pool2d(x, 2, BIG, ceil_mode=True)
    assert y.shape == (1, 2, 1, 1)
    mean_sq = (x.astype(np.float64) ** 2).mean(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(y, (np.sqrt(mean_sq) * BIG).astype(dtype), rtol=1e-5)
    gx = F.lp_pool2d_backward(np.ones_like(y), x, 2, BIG, ceil_mode=True)
    # d/dx_i sqrt(sum x^2 * k^2 / area) = x_i * k^2 / (area * out)
    expected = x * (float(BIG) * BIG / 12) / (np.sqrt(mean_sq) * BIG)
    np.testing.assert_allclose(gx, expected.astype(dtype), rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_pool_stride_2_31_with_ceil_mode(dtype):
    """stride BIG: the second window (dropped by PyTorch's ceil_mode rule) would start at 2**31."""
    x = _x((1, 1, 3, 3), dtype)
    y = F.avg_pool2d(x, 3, stride=BIG, padding=1, ceil_mode=True)
    assert y.shape == (1, 1, 1, 1)
    np.testing.assert_allclose(y[0, 0, 0, 0], x[0, 0, :2, :2].sum() / 9, rtol=1e-6)


# ---- convolution with strides and dilations of 2**31 - 1 -------------------------------------
# Valid, with tiny outputs that PyTorch computes; every output pixel but the centre reads only
# padding, so the answer is a 1x1 convolution. Stride phases would be as large as
# stride_h * stride_w * (out + (k - 1) * dilation / stride) here (and that product passes 2**63),
# so the kernels must take their plain-loop path for such geometries.


def _centre_conv(x, w, b):
    """conv2d where only weight tap (i, j) = centre ever meets the input."""
    kh, kw = w.shape[2] // 2, w.shape[3] // 2
    return np.einsum("nchw,kc->nkhw", x, w[:, :, kh, kw]) + b[None, :, None, None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_dilation_2_31(dtype):
    """3x3 kernel, dilation and padding BIG: taps at offsets 0, 2**31 - 1, 2**32 - 2."""
    x, w, b = _x((1, 2, 2, 3), dtype), _x((3, 2, 3, 3), dtype, 1), _x(3, dtype, 2)
    y = F.conv2d(x, w, b, dilation=BIG, padding=BIG)
    assert y.shape == (1, 3, 2, 3)
    np.testing.assert_allclose(y, _centre_conv(x, w, b), rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_stride_2_31(dtype):
    """1x1 kernel, stride and padding BIG: output 3x3, row 2 starts at 2 * (2**31 - 1)."""
    x, w, b = _x((1, 2, 1, 1), dtype), _x((3, 2, 1, 1), dtype, 1), _x(3, dtype, 2)
    y = F.conv2d(x, w, b, stride=BIG, padding=BIG)
    expected = np.broadcast_to(b[None, :, None, None], (1, 3, 3, 3)).copy()
    expected[:, :, 1, 1] = _centre_conv(x, w, b)[:, :, 0, 0]
    np.testing.assert_allclose(y, expected, rtol=1e-5)


def test_conv_backward_dilation_2_31():
    x, w = _x((1, 2, 2, 3)), _x((3, 2, 3, 3), seed=1)
    gy = _x((1, 3, 2, 3), seed=2)
    gx, gw, gb = F.conv2d_backward(gy, x, w, dilation=BIG, padding=BIG)
    centre = np.zeros_like(w)
    centre[:, :, 1, 1] = w[:, :, 1, 1]
    np.testing.assert_allclose(gx, np.einsum("nkhw,kc->nchw", gy, w[:, :, 1, 1]), rtol=1e-12)
    expected_gw = np.zeros_like(w)
    expected_gw[:, :, 1, 1] = np.einsum("nkhw,nchw->kc", gy, x)
    np.testing.assert_allclose(gw, expected_gw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, gy.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_conv_large_padding_without_big_products():
    """Padding 2**20 with dilation 2**20: offsets stay below 2**31, the answer is known."""
    x, w, b = _x((1, 2, 4, 4)), _x((3, 2, 3, 3), seed=1), _x(3, seed=2)
    y = F.conv2d(x, w, b, dilation=2**20, padding=2**20)
    np.testing.assert_allclose(y, _centre_conv(x, w, b), rtol=1e-12)


# ---- allocations that fail ---------------------------------------------------------------------

def test_output_too_big_to_allocate_is_memory_error():
    """Valid (fewer than 2**60 elements) but about 2**46 bytes: numpy's MemoryError."""
    x = np.ones((1, 1, 1, 1), np.float32)
    w = np.ones((1, 1, 1, 1), np.float32)
    with pytest.raises(MemoryError):
        F.conv2d(x, w, padding=2**21)
    with pytest.raises(MemoryError):
        F.max_pool2d(np.broadcast_to(np.float32(0), (2**22, 2**22, 2, 2)), 1)


_WORKSPACE_SCRIPT = textwrap.dedent("""
    import resource
    import numpy as np
    import fastconv.functional as F
    from fastconv import reference as ref
    rng = np.random.default_rng(0)
    # a 32 MB input, a 16 kB output: the stride phases of the input need 33 MB more
    x = rng.standard_normal((1, 512, 128, 128), dtype=np.float32)
    w = rng.standard_normal((1, 512, 3, 3), dtype=np.float32)
    used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + (1 << 20), resource.RLIM_INFINITY))
    try:
        F.conv2d(x, w, stride=2, padding=1)
    except MemoryError as exc:
        print("MemoryError:", exc)
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    y = F.conv2d(x, w, stride=2, padding=1)  # works again
    expected = ref.conv2d(x, w, None, (2, 2), (1, 1, 1, 1), (1, 1), 1)
    np.testing.assert_allclose(y, expected, rtol=1e-3, atol=1e-3)
    print("recovered")
""")


@pytest.mark.skipif(SANITIZED, reason="ASan needs terabytes of address space for its shadow")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and RLIMIT_AS")
def test_kernel_workspace_allocation_failure_is_memory_error():
    """_kernels' FC_ENOMEM path: a workspace malloc fails -> MemoryError, and the process (and
    the next call) carry on normally."""
    # the fastconv under test (installed, or a checkout built in place), run from outside the
    # source tree so ./fastconv cannot shadow it
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": package_parent}
    result = subprocess.run([sys.executable, "-c", _WORKSPACE_SCRIPT], capture_output=True,
                            text=True, timeout=120, env=env, cwd=tempfile.gettempdir())
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MemoryError: fastconv: could not allocate a kernel workspace" in result.stdout, \
        result.stdout + result.stderr[-3000:]
    assert "recovered" in result.stdout


# ---- more than 2**31 elements (by hand: FASTCONV_TEST_LARGE=1) -------------------------------

large = pytest.mark.skipif(os.environ.get("FASTCONV_TEST_LARGE") != "1",
                           reason="needs 9-18 GB: set FASTCONV_TEST_LARGE=1 to run")

ELEMENTS = 2**31 + 2**10  # one plane of (2, 2**30 + 2**9): flat indices past 2**31


def _memory_available():
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0


def _big_plane():
    """(1, 1, 2, 2**30 + 2**9) float32 (8.6 GB): 0, but -2 at flat 7 and 5 at 2**31 + 2**10 - 3."""
    if _memory_available() < 10 * 2**30:
        pytest.skip("needs 10 GB of free memory")
    x = np.zeros((1, 1, 2, ELEMENTS // 2), np.float32)
    x[0, 0, 0, 7] = -2.0
    x[0, 0, 1, -3] = 5.0
    return x


@pytest.mark.slow
@large
def test_pooling_forward_past_2_31_elements():
    x = _big_plane()
    y, idx = F.max_pool2d(x, (2, 64), return_indices=True)
    assert y.shape == (1, 1, 1, ELEMENTS // 128)
    assert y[0, 0, 0, -1] == 5.0 and idx[0, 0, 0, -1] == ELEMENTS - 3
    assert y[0, 0, 0, 0] == 0.0 and idx[0, 0, 0, 0] == 0
    a = F.avg_pool2d(x, (2, 64))
    assert a[0, 0, 0, -1] == np.float32(5.0 / 128) and a[0, 0, 0, 0] == np.float32(-2.0 / 128)
    assert np.count_nonzero(a) == 2


@pytest.mark.slow
@large
def test_pooling_backward_and_relu_past_2_31_elements():
    """Another 8.6 GB for the gradient / relu output (about 18 GB in all)."""
    x = _big_plane()
    if _memory_available() < 10 * 2**30:
        pytest.skip("needs 18 GB of free memory")
    y, idx = F.max_pool2d(x, (2, 64), return_indices=True)
    gx = F.max_pool2d_backward(np.ones_like(y), x, (2, 64), indices=idx)
    assert gx[0, 0, 1, -3] == 1.0 and gx.sum(dtype=np.float64) == y.size
    del gx
    r = F.relu(x)
    assert r[0, 0, 1, -3] == 5.0 and r[0, 0, 0, 7] == 0.0 and np.count_nonzero(r) == 1
