"""Threads, ISA selection, build introspection and the GIL."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

import fastconv
import fastconv.functional as F
from fastconv import _kernels


def _run(code: str, **env) -> str:
    """Run `code` in a fresh interpreter with extra environment variables; return its stdout."""
    full_env = {**os.environ, **env}
    for key, value in env.items():
        if value is None:
            full_env.pop(key)
    # the folder fastconv was imported from (site-packages, or a checkout built in place)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    full_env["PYTHONPATH"] = os.pathsep.join(
        [package_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    # run outside the source tree, so the same fastconv is imported, not whatever ./fastconv is
    out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                         text=True, check=True, cwd=tempfile.gettempdir())
    return out.stdout.strip()


def test_set_and_get_num_threads():
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(3)
        assert fastconv.get_num_threads() == 3
        with fastconv.num_threads(1):
            assert fastconv.get_num_threads() == 1
        assert fastconv.get_num_threads() == 3
    finally:
        fastconv.set_num_threads(None)
    assert fastconv.get_num_threads() == old


@pytest.mark.skipif(not _kernels.openmp_enabled(), reason="serial build: no OpenMP runtime")
def test_omp_num_threads_is_respected():
    code = "import fastconv; print(fastconv.get_num_threads())"
    assert _run(code, OMP_NUM_THREADS="1") == "1"
    assert _run(code, OMP_NUM_THREADS="3") == "3"


@pytest.mark.skipif(not _kernels.openmp_enabled(), reason="serial build: no OpenMP runtime")
def test_threadpoolctl_limits_the_default():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert fastconv.get_num_threads() == 1
    with fastconv.num_threads(None), threadpoolctl.threadpool_limits(limits=2, user_api="openmp"):
        assert fastconv.get_num_threads() == 2


def test_openmp_as_the_build_expects():
    """CI sets FASTCONV_EXPECT_OPENMP=1 for the default build (a silent serial fallback fails) and
    0 for the FASTCONV_NO_OPENMP=1 build (the switch must really turn OpenMP off)."""
    expected = os.environ.get("FASTCONV_EXPECT_OPENMP")
    if expected not in ("0", "1"):
        pytest.skip("FASTCONV_EXPECT_OPENMP is not set")
    assert _kernels.openmp_enabled() == (expected == "1")
    assert fastconv.get_num_threads() >= 1


def test_show_config_reports_the_build():
    buf = io.StringIO()
    fastconv.show_config(file=buf)
    text = buf.getvalue()
    assert fastconv.__version__ in text
    assert ("OpenMP:   on" in text) == _kernels.openmp_enabled()
    assert f"selected: {fastconv.selected_isa()}" in text
    assert f"threads:  {fastconv.get_num_threads()}" in text
    for name in fastconv.available_isas():
        assert name in text
    from fastconv._build_info import CONFIG  # written by setup.py beside the extension
    assert f"configuration {CONFIG['hash']}" in text
    assert ("-fopenmp" in text or "/openmp" in text) == _kernels.openmp_enabled()


def test_scalar_path_is_always_available():
    assert fastconv.available_isas()[0] == "scalar"


@pytest.mark.parametrize("name", ["scalar", "avx2", "avx512"])
def test_fastconv_isa_environment_variable(name):
    if name not in fastconv.available_isas():
        pytest.skip(f"{name} is not available on this build/CPU")
    code = "import fastconv; print(fastconv.selected_isa())"
    assert _run(code, FASTCONV_ISA=name) == name


def test_use_isa_switches_and_restores():
    before = fastconv.selected_isa()
    with fastconv.use_isa("scalar"):
        assert fastconv.selected_isa() == "scalar"
    assert fastconv.selected_isa() == before


def test_best_isa_selected_by_default():
    code = "import fastconv; print(fastconv.selected_isa())"
    assert _run(code, FASTCONV_ISA=None) == fastconv.available_isas()[-1]


def _spin_rate(keep_going) -> float:
    """Python loop iterations per second while keep_going() holds."""
    spins, start = 0, time.perf_counter()
    while keep_going():
        spins += 1
    return spins / (time.perf_counter() - start)


def test_kernels_release_the_gil():
    """While one thread is inside long kernels, another thread keeps running Python code.

    If the kernels held the GIL, the main thread could only run in the worker's short Python
    stretches between calls, a small fraction of its free speed.
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 32, 64, 64)).astype(np.float32)
    w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    started = threading.Event()

    def work():
        started.set()
        with fastconv.num_threads(1):
            for _ in range(6):
                F.conv2d(x, w, padding=1)

    sleeper = threading.Thread(target=time.sleep, args=(0.2,))
    sleeper.start()
    free_rate = _spin_rate(sleeper.is_alive)  # the same loop while another thread only sleeps
    worker = threading.Thread(target=work)
    worker.start()
    started.wait()
    busy_rate = _spin_rate(worker.is_alive)
    worker.join()
    assert busy_rate > 0.25 * free_rate, (busy_rate, free_rate)
