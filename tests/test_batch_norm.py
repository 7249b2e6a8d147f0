"""The batch normalisation kernels (src/kernels/batchnorm.h) against fastconv.reference, on
every ISA path: a case table over the layouts ((N, C) columns around the 64-channel block,
planes, planes cut into several pieces), training and evaluation, with and without weight and
bias, the running statistics' update (also into non-contiguous arrays), the statistics handed
from forward to backward, accuracy where the mean dwarfs the spread, and bit-identical results
for any thread count."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DTYPES, assert_close, isa_params, random

import fastconv
import fastconv.functional as F
from fastconv import reference as ref


@pytest.fixture(params=isa_params())
def isa(request):
    with fastconv.use_isa(request.param):
        yield request.param


BN_CASES = {  # name: x's shape
    "columns": (7, 5),
    "columns-63": (4, 63),
    "columns-65": (3, 65),
    "columns-3d-inner-1": (5, 3, 1),
    "inner-2": (3, 4, 2),
    "planes": (4, 3, 5, 6),
    "planes-lanes+1": (2, 2, 17),
    "planes-one-image": (1, 3, 4, 4),
    "pieces": (2, 2, 70, 61),  # 4270 values per plane: two pieces each
    "pieces-of-planes": (9, 2, 33, 31),  # 1023 values per plane: pieces of 4, 4 and 1 planes
    "resnet-stage": (8, 16, 8, 8),
    # 8 channels: one at a time on 1 or 2 threads, in two phases on 3 (train_fwd and bwd)
    "by-channel-or-two-phase": (10, 8, 48, 48),
}


def _bn_inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (random(rng, shape, dtype) * 3 + 1.5).astype(dtype)
    c = shape[1]
    weight, bias = random(rng, (c,), dtype), random(rng, (c,), dtype)
    mean, var = random(rng, (c,), dtype), (np.abs(random(rng, (c,), dtype)) + 0.5).astype(dtype)
    return x, weight, bias, mean, var, random(rng, shape, dtype)


def _values_per_channel(x):
    return x.size // x.shape[1]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", BN_CASES)
def test_batch_norm_matches_reference(name, training, affine, dtype, isa):
    x, weight, bias, mean, var, gy = _bn_inputs(BN_CASES[name], dtype)
    if not affine:
        weight = bias = None
    n = _values_per_channel(x) + 8
    ours, theirs = (mean.copy(), var.copy()), (mean.copy(), var.copy())
    y = F.batch_norm(x, *ours, weight, bias, training, 0.3, 1e-3)
    expected = ref.batch_norm(x, *theirs, weight, bias, training, 0.3, 1e-3)
    assert_close(y, expected, n, np.abs(expected) + 4)
    for got, want in zip(ours, theirs):  # the running statistics, updated in training only
        assert_close(got, want, n, np.abs(want) + 1)
    eval_stats = (mean, var) if not training else (None, None)
    got = F.batch_norm_backward(gy, x, *eval_stats, weight, training, 1e-3)
    want = ref.batch_norm_backward(gy, x, *eval_stats, weight, training, 1e-3)
    for g, w in zip(got, want):
        assert_close(g, w, n, np.abs(w) + np.abs(gy).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_stats_pass_from_forward_to_backward(training, dtype):
    x, weight, bias, mean, var, gy = _bn_inputs((4, 3, 5, 5), dtype)
    y, batch_mean, batch_var = F.batch_norm(x, mean, var, weight, bias, training,
                                            return_stats=True)
    axes = (0, 2, 3)
    if training:
        assert_close(batch_mean, x.mean(axis=axes), 100)
        assert_close(batch_var, x.var(axis=axes), 100)
    else:  # copies of the running statistics
        np.testing.assert_array_equal(batch_mean, mean)
        assert not np.shares_memory(batch_mean, mean)
    given = F.batch_norm_backward(gy, x, mean, var, weight, training,
                                  stats=(batch_mean, batch_var))
    recomputed = F.batch_norm_backward(gy, x, mean, var, weight, training)
    for a, b in zip(given, recomputed):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("stats, error, message", [
    ((np.zeros(3),), TypeError, "stats must be the \\(mean, var\\) pair"),
    ((np.zeros(3), np.zeros(4)), ValueError, r"stats' var must have shape \(3,\)"),
    ((np.zeros(3, np.float32), np.zeros(3)), ValueError, "stats' mean .* dtype float64"),
    ((np.zeros(3), [1.0, 1.0, 1.0]), TypeError, "stats' var must be a numpy.ndarray"),
])
def test_batch_norm_backward_checks_the_stats(stats, error, message):
    with pytest.raises(error, match=f"^batch_norm_backward: {message}"):
        F.batch_norm_backward(np.ones((2, 3)), np.ones((2, 3)), None, None, training=True,
                              stats=stats)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_updates_non_contiguous_running_statistics(dtype):
    x, weight, bias, mean, var, _ = _bn_inputs((5, 3, 2, 2), dtype)
    store = np.zeros((2, 3), dtype)
    store[0], store[1] = mean, var
    ours = np.asfortranarray(store)
    running = (ours[0], ours[1])
    assert not running[0].flags.c_contiguous
    F.batch_norm(x, *running, weight, bias, training=True)
    theirs = (mean.copy(), var.copy())
    ref.batch_norm(x, *theirs, weight, bias, True, 0.1, 1e-5)
    for got, want in zip(running, theirs):
        assert_close(got, want, 30, np.abs(want) + 1)


@pytest.mark.parametrize("shape", [(64, 3), (16, 2, 9, 9)])
def test_batch_norm_float32_statistics_are_exact_despite_a_large_mean(shape):
    """float32 values of mean 1e4 and spread 1: the variance, taken in float64, keeps its
    digits (a float32 one-pass E[x^2] - E[x]^2 would keep none)."""
    rng = np.random.default_rng(3)
    x = (1e4 + rng.standard_normal(shape)).astype(np.float32)
    mean, var = np.zeros(shape[1], np.float32), np.ones(shape[1], np.float32)
    _, batch_mean, batch_var = F.batch_norm(x, mean, var, training=True, return_stats=True)
    axes = (0,) + tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(batch_mean, x64.mean(axis=axes), rtol=1e-7)
    np.testing.assert_allclose(batch_var, x64.var(axis=axes), rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("name", ["columns-65", "pieces", "resnet-stage",
                                  "by-channel-or-two-phase"])
def test_batch_norm_same_result_for_1_2_and_3_threads(name, relu, dtype, isa):
    x, weight, bias, mean, var, gy = _bn_inputs(BN_CASES[name], dtype)
    results = []
    for n in (1, 2, 3):
        running = (mean.copy(), var.copy())
        with fastconv.num_threads(n):
            y, m, v = F.batch_norm(x, *running, weight, bias, True, return_stats=True,
                                   relu=relu)
            results.append([y, m, v, *running, *F.batch_norm_backward(
                gy, x, None, None, weight, True, stats=(m, v), output=y if relu else None)])
    for other in results[1:]:
        for one, two in zip(results[0], other):
            np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", BN_CASES)
def test_batch_norm_relu_is_the_two_ops_bit_for_bit(name, training, dtype, isa):
    """batch_norm(relu=True) and its backward given the output are relu(batch_norm(...)) and
    batch_norm_backward(relu_backward(...)) exactly: outputs, running statistics, gradients,
    with a NaN and values normalised to exactly 0 in x, on 1 and 2 threads."""
    x, weight, bias, mean, var, gy = _bn_inputs(BN_CASES[name], dtype)
    x.flat[1] = np.nan  # a NaN output passes its gradient, as relu_backward's
    bias[0] = 0.0
    if not training:
        x[:, 0] = mean[0]  # channel 0 normalised to exactly 0
    results = []
    for threads in (1, 2):
        with fastconv.num_threads(threads):
            ours, theirs = (mean.copy(), var.copy()), (mean.copy(), var.copy())
            y = F.batch_norm(x, *ours, weight, bias, training, 0.3, 1e-3, relu=True)
            z = F.batch_norm(x, *theirs, weight, bias, training, 0.3, 1e-3)
            np.testing.assert_array_equal(y, F.relu(z))
            for got, want in zip(ours, theirs):
                np.testing.assert_array_equal(got, want)
            stats = (mean, var) if not training else (None, None)
            got = F.batch_norm_backward(gy, x, *stats, weight, training, 1e-3, output=y)
            want = F.batch_norm_backward(F.relu_backward(gy, z), x, *stats, weight, training,
                                         1e-3)
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)
            results.append((y, *got))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_batch_norm_backward_checks_the_output():
    x = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match=r"^batch_norm_backward: output must have the shape of "
                                         r"x \(2, 3, 4\), got \(2, 3\)"):
        F.batch_norm_backward(x, x, None, None, training=True, output=np.ones((2, 3)))
    with pytest.raises(TypeError, match="^batch_norm_backward: "):
        F.batch_norm_backward(x, x, None, None, training=True, output=x.astype(np.float32))
    with pytest.raises(TypeError, match="^batch_norm: relu must be a bool"):
        F.batch_norm(x, None, None, training=True, relu=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", BN_CASES)
def test_batch_norm_add_is_the_two_ops_bit_for_bit(name, training, relu, dtype, isa):
    """batch_norm(add=a) is batch_norm(...) + a, with relu add_relu(batch_norm(...), a), exactly
    (running statistics too), with a NaN, an infinity and -0.0 sums in the addend, on 1 and 2
    threads."""
    x, weight, bias, mean, var, a = _bn_inputs(BN_CASES[name], dtype)
    a.flat[0], a.flat[-1] = np.nan, -np.inf
    bias[0] = 0.0
    if not training:
        # channel 0 normalised to exactly -0 (a negative scale, bias -0): -0 + -0 must stay -0
        x[:, 0], weight[0], bias[0] = mean[0], -abs(weight[0]), -0.0
        a[:, 0] = -0.0
    results = []
    for threads in (1, 2):
        with fastconv.num_threads(threads):
            ours, theirs = (mean.copy(), var.copy()), (mean.copy(), var.copy())
            y = F.batch_norm(x, *ours, weight, bias, training, 0.3, 1e-3, relu=relu, add=a)
            z = F.batch_norm(x, *theirs, weight, bias, training, 0.3, 1e-3)
            want = F.add_relu(z, a) if relu else z + a
            assert training or relu or np.signbit(want[:, 0]).all()  # the -0 case holds
            np.testing.assert_array_equal(y, want)
            np.testing.assert_array_equal(np.signbit(y), np.signbit(want))
            for got, expected in zip(ours, theirs):
                np.testing.assert_array_equal(got, expected)
            results.append(y)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_add_takes_any_layout(dtype):
    """A transposed or strided addend is read as the values it holds."""
    x, weight, bias, mean, var, a = _bn_inputs((4, 3, 5, 6), dtype)
    for view in (np.asfortranarray(a), np.repeat(a, 2, axis=3)[..., ::2]):
        np.testing.assert_array_equal(
            F.batch_norm(x, mean, var, weight, bias, add=view),
            F.batch_norm(x, mean, var, weight, bias) + a)


@pytest.mark.parametrize("add, error, message", [
    (np.ones((2, 3)), ValueError, r"add must have the shape of x \(2, 3, 4\), got \(2, 3\)"),
    (np.ones((2, 3, 4), np.float32), TypeError, "add"),
    ([[[1.0] * 4] * 3] * 2, TypeError, "add must be"),
])
def test_batch_norm_checks_the_addend(add, error, message):
    with pytest.raises(error, match="^batch_norm: " + message):
        F.batch_norm(np.ones((2, 3, 4)), None, None, training=True, add=add)
    layer = fastconv.nn.BatchNorm1d(3, dtype=np.float64)
    with pytest.raises(error, match="^BatchNorm1d: " + message.replace("add", "shortcut")):
        layer(np.ones((2, 3, 4)), shortcut=add)
