"""Shared test helpers: the tolerances (in one place), argument normalisation for the reference,
and the instruction-set parametrisation."""

from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _kernels

DTYPES = [np.float32, np.float64]

# Per-dtype unit roundoff; a sum of L products may drift by about L * eps relative to the size
# of its terms, so tolerances grow with the reduction length (C/groups * kH * kW for conv).
EPS = {np.dtype(np.float32): 2.0**-24, np.dtype(np.float64): 2.0**-53}


def tolerance(dtype, reduction_length: int) -> float:
    return 8 * EPS[np.dtype(dtype)] * (reduction_length + 8)


def assert_close(actual: np.ndarray, expected: np.ndarray, reduction_length: int,
                 scale: np.ndarray | None = None) -> None:
    """|actual - expected| <= tol * scale, where scale is the sum of |terms| (or |expected|)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if scale is None:
        scale = np.abs(expected)
    bound = tolerance(actual.dtype, reduction_length) * (np.abs(scale) + 1.0)
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    both_nan = np.isnan(actual) & np.isnan(expected)
    bad = ~(err <= bound) & ~both_nan
    assert not bad.any(), (
        f"{bad.sum()} of {bad.size} elements differ; worst error {np.nanmax(np.where(bad, err, 0))}"
        f" vs bound {bound.max() if np.ndim(bound) else bound}")


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def padding4(padding, kernel, dilation=(1, 1)):
    """A padding argument of conv2d or a pool as the reference's (top, bottom, left, right)."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        out = []
        for k, d in zip(pair(kernel), pair(dilation)):
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return tuple(out)
    if len(pair(padding)) == 4:
        return tuple(padding)
    ph, pw = pair(padding)
    return (ph, ph, pw, pw)


def random(rng, shape, dtype, layout="C"):
    """A standard-normal array of `shape` in the given memory layout:
    'C', 'F' (Fortran order), 'strided' (every other element), 'reversed' (negative strides),
    'readonly'."""
    a = rng.standard_normal(shape)
    if layout == "F":
        return np.asfortranarray(a.astype(dtype))
    if layout == "strided":
        big = np.zeros(tuple(2 * s for s in shape), dtype)
        view = big[tuple(slice(None, None, 2) for _ in shape)]
        view[...] = a
        return view
    if layout == "reversed":
        return np.ascontiguousarray(a[..., ::-1, ::-1].astype(dtype))[..., ::-1, ::-1]
    out = a.astype(dtype)
    if layout == "readonly":
        out.flags.writeable = False
    return out


def isa_params():
    """Every ISA name, skipped with a stated reason where this build or CPU lacks it."""
    params = []
    for name in _kernels.isa_names():
        if not _kernels.isa_compiled(name):
            reason = f"{name} path not compiled into this build"
        elif not _kernels.isa_supported(name):
            reason = f"this CPU cannot run the {name} path"
        else:
            reason = None
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def numerical_gradient(loss, array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d loss() / d array by central differences, perturbing `array` in place one element at a
    time (it must be C-contiguous so that the flat view writes through). For float64 checks."""
    assert array.flags.c_contiguous
    flat = array.reshape(-1)
    grad = np.empty(flat.shape)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        up = loss()
        flat[i] = saved - eps
        down = loss()
        flat[i] = saved
        grad[i] = (up - down) / (2 * eps)
    return grad.reshape(array.shape)


def assert_same_for_1_and_2_threads(calls) -> None:
    """Each call (no arguments; an array or a tuple of them) gives bit-identical results on 1
    and on 2 threads."""
    for call in calls:
        with fastconv.num_threads(1):
            one = call()
        with fastconv.num_threads(2):
            two = call()
        for a, b in zip(one if isinstance(one, tuple) else (one,),
                        two if isinstance(two, tuple) else (two,)):
            np.testing.assert_array_equal(a, b)


class KernelTripwire:
    """Stands in for fastconv._kernels in fastconv.functional, for tests of bad input: any use
    means a kernel was reached before the input was rejected. An op's compiled fast path
    (`fast_<op>`) may be offered the input, and must decline it (return None) without running
    anything, leaving the rejection to the Python path."""

    def __getattr__(self, name):
        if name.startswith("fast_"):
            def declines(*args):
                result = getattr(_kernels, name)(*args)
                assert result is None, f"_kernels.{name} accepted input the Python path rejects"

            return declines
        raise AssertionError(f"kernel _kernels.{name} was reached before the input was rejected")
