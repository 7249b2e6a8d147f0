"""The output cache (src/runtime/output_cache.c): freed fastconv outputs of >= 1 MiB are kept up
to a byte limit and handed back to the next output of about the same size, never with stale
values, never beyond the limit, and safely from many threads."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fastconv
import fastconv.functional as F
from fastconv import reference as R

try:
    from numpy._core.multiarray import get_handler_name
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import get_handler_name

MIB = 2**20
BIG = (4, 8, 128, 128)  # 2 MiB of float32


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.fixture
def cache(request):
    """Start empty with `limit` (default 64 MiB); restore the import-time limit after."""
    old = fastconv.cache_info()["limit"]
    fastconv.set_cache_limit(0)
    fastconv.set_cache_limit(getattr(request, "param", 64 * MIB))
    yield
    fastconv.set_cache_limit(0)
    fastconv.set_cache_limit(old)


def test_outputs_come_from_the_cache_handler(cache):
    x = np.ones(BIG, np.float32)
    assert get_handler_name(F.relu(x)) == "fastconv_output_cache"
    fastconv.set_cache_limit(0)
    assert get_handler_name(F.relu(x)) != "fastconv_output_cache"


def test_a_freed_output_is_reused_with_fresh_values(cache):
    rng = np.random.default_rng(0)
    x1, x2 = (rng.standard_normal(BIG).astype(np.float32) for _ in range(2))
    y = F.relu(x1)
    nbytes = y.nbytes
    del y
    info = fastconv.cache_info()
    assert (info["blocks"], info["held"]) == (1, nbytes)
    y2 = F.max_pool2d(x2, 1)  # same size: takes the kept block, whose old values must not show
    after = fastconv.cache_info()
    assert after["hits"] == info["hits"] + 1 and after["blocks"] == 0
    np.testing.assert_array_equal(y2, x2)  # a 1x1 max pool is the identity


@pytest.mark.parametrize("op", [
    lambda x: F.conv2d(x, np.ones((8, 8, 3, 3), x.dtype), padding=1),
    lambda x: F.max_pool2d(x, 2, return_indices=True),
    lambda x: F.avg_pool2d_backward(np.ones((4, 8, 64, 64), x.dtype), x, 2),
    lambda x: F.max_pool2d_backward(np.ones((4, 8, 64, 64), x.dtype), x, 2),
], ids=["conv2d", "max_pool2d-indices", "avg_pool2d_backward", "max_pool2d_backward"])
def test_repeated_calls_agree_once_buffers_are_recycled(cache, op):
    x = np.random.default_rng(1).standard_normal(BIG)
    first = [a.copy() for a in as_tuple(op(x))]
    hits = fastconv.cache_info()["hits"]
    for _ in range(3):
        for a, b in zip(first, as_tuple(op(x)), strict=True):
            np.testing.assert_array_equal(a, b)
    assert fastconv.cache_info()["hits"] > hits


def test_small_outputs_are_not_kept(cache):
    del_me = F.relu(np.ones((1, 1, 8, 8), np.float32))
    del del_me
    assert fastconv.cache_info()["blocks"] == 0


@pytest.mark.parametrize("cache", [3 * MIB], indirect=True)
def test_the_limit_bounds_what_is_held(cache):
    outs = [F.relu(np.ones(BIG, np.float32)) for _ in range(4)]  # 4 x 2 MiB
    del outs
    info = fastconv.cache_info()
    assert info["held"] <= 3 * MIB and info["blocks"] == 1
    fastconv.set_cache_limit(MIB)  # lowering the limit releases at once
    assert fastconv.cache_info()["held"] == 0


def test_a_block_of_about_the_same_size_is_reused_but_not_a_much_bigger_one(cache):
    del_me = F.relu(np.ones((4, 8, 128, 128), np.float32))  # 2 MiB kept
    del del_me
    hits = fastconv.cache_info()["hits"]
    F.relu(np.ones((4, 8, 120, 128), np.float32))  # 1.875 MiB: within a quarter, reused
    assert fastconv.cache_info()["hits"] == hits + 1
    hits = fastconv.cache_info()["hits"]
    F.relu(np.ones((4, 8, 64, 128), np.float32))  # 1 MiB from a 2 MiB block: not reused
    assert fastconv.cache_info()["hits"] == hits


def test_resizing_an_output_keeps_its_values(cache):
    """ndarray.resize goes through the handler's realloc: growing, and shrinking a lot."""
    x = np.arange(np.prod(BIG), dtype=np.float32).reshape(BIG)
    y = F.relu(x)
    y.resize(2 * y.size, refcheck=False)
    np.testing.assert_array_equal(y[: x.size], x.ravel())
    y.resize(100, refcheck=False)
    np.testing.assert_array_equal(y, x.ravel()[:100])


def test_many_threads_share_it_safely(cache):
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal(BIG).astype(np.float32) for _ in range(4)]
    expected = [R.relu(x) for x in inputs]

    def work(i):
        for _ in range(20):
            y = F.relu(inputs[i % 4])
            if not np.array_equal(y, expected[i % 4]):
                return False
        return True

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, range(16)))
    info = fastconv.cache_info()
    assert info["held"] <= info["limit"] and info["held"] == info["blocks"] * inputs[0].nbytes


@pytest.mark.parametrize("value, exc, pattern", [
    (-1, ValueError, r"-1$"), (1.5, TypeError, r"1\.5$"), (True, TypeError, r"True$"),
    ("64", TypeError, r"'64'$"),
], ids=["negative", "float", "bool", "string"])
def test_set_cache_limit_rejects(cache, value, exc, pattern):
    with pytest.raises(exc, match=r"^set_cache_limit: nbytes must be an int >= 0 \(bytes\), got "
                       + pattern):
        fastconv.set_cache_limit(value)


@pytest.mark.parametrize("env, limit, warns", [
    ("0", 0, False), ("16", 16 * MIB, False), ("", 256 * MIB, False),
    ("lots", 256 * MIB, True), ("-5", 256 * MIB, True),
], ids=["off", "16MB", "unset", "not-a-number", "negative"])
def test_fastconv_cache_mb_sets_the_limit_at_import(env, limit, warns):
    parent = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c",
         "import fastconv; print(fastconv.cache_info()['limit'])"],
        env={**os.environ, "PYTHONPATH": parent, "FASTCONV_CACHE_MB": env},
        capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    assert int(result.stdout) == limit
    assert ("FASTCONV_CACHE_MB must be an int >= 0" in result.stderr) == warns
