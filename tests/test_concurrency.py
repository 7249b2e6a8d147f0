"""Calling fastconv from many Python threads at once.

The kernels release the GIL and each call starts its own OpenMP team, so Python threads really run
kernels concurrently (nested in OpenMP's sense: up to threads x teams OS threads). Every call must
still give exactly the single-threaded answer (the kernels split work independently of the thread
count, so results are bit-identical), and nothing may deadlock: every wait here has a timeout.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastconv
import fastconv.functional as F

TIMEOUT = 120  # seconds for any one wait; a deadlock fails the test instead of hanging it
N_THREADS = 8


def _problem(seed, dtype=np.float32):
    """Different data per thread; one conv and one pool geometry shared by all."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 8, 20, 20)).astype(dtype)
    w = rng.standard_normal((12, 4, 3, 3)).astype(dtype)
    b = rng.standard_normal(12).astype(dtype)
    gy = rng.standard_normal((2, 12, 10, 10)).astype(dtype)
    gp = rng.standard_normal((2, 8, 10, 10)).astype(dtype)
    return x, w, b, gy, gp


def _all_ops(seed, dtype=np.float32):
    """Every kernel, forward and backward, on thread `seed`'s data: a list of arrays."""
    x, w, b, gy, gp = _problem(seed, dtype)
    conv = dict(stride=2, padding=1, groups=2)
    y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    return [
        F.conv2d(x, w, b, **conv),
        *F.conv2d_backward(gy, x, w, **conv),
        y, idx,
        F.max_pool2d_backward(gp, x, 3, 2, 1),
        F.max_pool2d_backward(gp, x, 3, 2, 1, indices=idx),
        F.avg_pool2d(x, 3, 2, 1),
        F.avg_pool2d_backward(gp, x, 3, 2, 1),
        F.lp_pool2d(x, 2, 2),
        F.lp_pool2d_backward(gp, x, 2, 2),
        F.relu(x),
        F.relu_backward(x, x),
    ]


def _assert_same(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def _run_together(fn, n_threads, *args_per_thread):
    """Run fn(*args) on n_threads threads released together by a barrier; results in order."""
    barrier = threading.Barrier(n_threads, timeout=TIMEOUT)

    def task(args):
        barrier.wait()
        return fn(*args)

    with ThreadPoolExecutor(n_threads) as pool:
        futures = [pool.submit(task, args) for args in zip(*args_per_thread)]
        return [f.result(timeout=TIMEOUT) for f in futures]


@pytest.mark.parametrize("omp_threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_python_threads_get_single_threaded_results(omp_threads, dtype):
    seeds = list(range(N_THREADS))
    with fastconv.num_threads(1):
        expected = [_all_ops(s, dtype) for s in seeds]
    with fastconv.num_threads(omp_threads):
        for _ in range(3):
            got = _run_together(_all_ops, N_THREADS, seeds, [dtype] * N_THREADS)
            for g, e in zip(got, expected):
                _assert_same(g, e)


def test_same_input_shared_by_all_threads():
    """Read-only inputs shared between threads are never written (outputs are fresh arrays)."""
    x, w, b, gy, gp = _problem(99)
    x.flags.writeable = False
    before = x.copy()
    expected = F.conv2d(x, w, b, padding=1, groups=2)
    got = _run_together(lambda _: F.conv2d(x, w, b, padding=1, groups=2), N_THREADS,
                        range(N_THREADS))
    for g in got:
        np.testing.assert_array_equal(g, expected)
    np.testing.assert_array_equal(x, before)


def test_thread_pool_while_a_big_openmp_kernel_runs():
    """A ThreadPoolExecutor's small calls interleave with a large multi-threaded kernel started
    from another thread: no deadlock, no change in anyone's results."""
    rng = np.random.default_rng(5)
    big_x = rng.standard_normal((8, 32, 40, 40)).astype(np.float32)
    big_w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    with fastconv.num_threads(1):
        big_expected = F.conv2d(big_x, big_w, padding=1)
        small_expected = [_all_ops(s) for s in range(N_THREADS)]

    with fastconv.num_threads(2), ThreadPoolExecutor(1) as big_pool, \
            ThreadPoolExecutor(4) as pool:
        big = big_pool.submit(lambda: [F.conv2d(big_x, big_w, padding=1) for _ in range(3)])
        small = [pool.submit(_all_ops, s) for s in range(N_THREADS)]
        for f, e in zip(small, small_expected):
            _assert_same(f.result(timeout=TIMEOUT), e)
        for y in big.result(timeout=TIMEOUT):
            np.testing.assert_array_equal(y, big_expected)


def test_num_threads_is_process_wide():
    """set_num_threads / num_threads set one process-wide value (documented in the README):
    a setting made in one thread is what kernels in every thread use."""
    seen = []
    with fastconv.num_threads(1):
        t = threading.Thread(target=lambda: seen.append(fastconv.get_num_threads()))
        t.start()
        t.join(TIMEOUT)
    assert seen == [1]


def test_threadpoolctl_limits_openmp_default():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not fastconv._kernels.openmp_enabled():
        pytest.skip("serial build: no OpenMP pool to limit")
    with fastconv.num_threads(None), threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert fastconv.get_num_threads() == 1
        expected = _all_ops(3)
    _assert_same(_all_ops(3), expected)
