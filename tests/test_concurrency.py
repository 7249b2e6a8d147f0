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
        # the transposed convolution back from gy's shape to x's, on the same kernels
        F.conv_transpose2d(gy, w, b[:8], output_padding=1, **conv),
        *F.conv_transpose2d_backward(x, gy, w, output_padding=1, **conv),
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


def test_set_num_threads_is_process_wide():
    """set_num_threads sets the process's value: kernels in every thread use it."""
    seen = []
    old = fastconv._kernels.process_threads()
    try:
        fastconv.set_num_threads(1)
        t = threading.Thread(target=lambda: seen.append(fastconv.get_num_threads()))
        t.start()
        t.join(TIMEOUT)
    finally:
        fastconv.set_num_threads(old or None)
    assert seen == [1]


def _overlapping_blocks(enter, read, first, second):
    """Two threads whose `with enter(value)` blocks overlap in time, exited in the order they were
    not entered (A enters, B enters, A exits, B exits): returns what each thread read before its
    block, inside it after the other changed things, and after it."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        seen["a before"] = read()
        with enter(first):
            a_in.set()
            assert b_in.wait(TIMEOUT)
            seen["a inside"] = read()
        a_out.set()
        seen["a after"] = read()

    def b():
        seen["b before"] = read()
        assert a_in.wait(TIMEOUT)
        with enter(second):
            b_in.set()
            assert a_out.wait(TIMEOUT)
            seen["b inside, after a left"] = read()
        seen["b after"] = read()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    return seen


def test_num_threads_blocks_are_per_thread_and_never_leak():
    default = fastconv.get_num_threads()
    seen = _overlapping_blocks(fastconv.num_threads, fastconv.get_num_threads, 1, 3)
    assert seen["a inside"] == 1 and seen["b inside, after a left"] == 3
    assert seen["a after"] == seen["a before"] and seen["b after"] == seen["b before"]
    assert fastconv.get_num_threads() == default


def test_use_isa_blocks_are_per_thread_and_never_leak():
    isas = fastconv.available_isas()
    if len(isas) < 2:
        pytest.skip("this machine runs one kernel path only")
    default = fastconv.selected_isa()
    seen = _overlapping_blocks(fastconv.use_isa, fastconv.selected_isa, isas[0], isas[1])
    assert seen == {"a before": default, "b before": default, "a inside": isas[0],
                    "b inside, after a left": isas[1], "a after": default, "b after": default}
    assert fastconv.selected_isa() == default


def test_use_isa_runs_each_threads_kernels_on_its_own_path():
    """Kernels called inside a thread's use_isa block run on that path while another thread
    runs on another: the scalar and SIMD paths sum in different orders, so their last bits
    differ, and each thread's results must equal its own path's bit for bit."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 16, 9, 9)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    expected = {}
    for isa in fastconv.available_isas():
        with fastconv.use_isa(isa):
            expected[isa] = F.conv2d(x, w, padding=1)
    if len({y.tobytes() for y in expected.values()}) < 2:
        pytest.skip("every kernel path gives the same bits here: nothing to tell apart")
    results = {}

    def run(isa):
        with fastconv.use_isa(isa):
            results[isa] = [F.conv2d(x, w, padding=1) for _ in range(20)]

    threads = [threading.Thread(target=run, args=(isa,)) for isa in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    for isa, ys in results.items():
        for y in ys:
            np.testing.assert_array_equal(y, expected[isa])


def test_threadpoolctl_limits_openmp_default():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not fastconv._kernels.openmp_enabled():
        pytest.skip("serial build: no OpenMP pool to limit")
    with fastconv.num_threads(None), threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert fastconv.get_num_threads() == 1
        expected = _all_ops(3)
    _assert_same(_all_ops(3), expected)
