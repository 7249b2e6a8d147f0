"""Thread count, instruction-set selection and build introspection."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

from . import _kernels
from ._validation import byte_count, fail, positive_int

_num_threads: int | None = None


def set_num_threads(n: int | None) -> None:
    """Use at most `n` threads in every kernel; None goes back to the OpenMP default.

    The default is OpenMP's (``omp_get_max_threads()``): OMP_NUM_THREADS and
    ``threadpoolctl.threadpool_limits`` set it. An explicit ``set_num_threads`` wins over both.

    >>> import fastconv
    >>> fastconv.set_num_threads(1); fastconv.get_num_threads()
    1
    >>> fastconv.set_num_threads(None)
    """
    global _num_threads
    _num_threads = None if n is None else positive_int("set_num_threads", "n", n)


def get_num_threads() -> int:
    """The most threads a kernel will use now (small problems use fewer)."""
    return _num_threads if _num_threads is not None else max(1, _kernels.default_num_threads())


@contextlib.contextmanager
def num_threads(n: int | None):
    """Context manager: ``with fastconv.num_threads(1): ...`` restores the old setting after."""
    global _num_threads
    old = _num_threads
    set_num_threads(n)
    try:
        yield
    finally:
        _num_threads = old


DEFAULT_CACHE_MB = 256


def set_cache_limit(nbytes: int) -> None:
    """Keep up to `nbytes` of freed fastconv output buffers for reuse; 0 turns the cache off and
    releases what it holds.

    A new multi-megabyte array costs a page fault and a page of kernel zeroing per 4 KiB on its
    first write, as much time as a pooling pass over it. fastconv allocates its outputs (each of
    at least 1 MiB) through a NumPy memory handler that keeps such buffers when they are freed
    and hands them back for the next output of about the same size, as in a training loop.
    The default limit is 256 MiB, or FASTCONV_CACHE_MB at import.

    >>> import fastconv
    >>> fastconv.set_cache_limit(64 * 2**20); fastconv.cache_info()["limit"]
    67108864
    >>> fastconv.set_cache_limit(256 * 2**20)
    """
    nbytes = byte_count("set_cache_limit", "nbytes", nbytes)
    _kernels.set_cache_limit(min(nbytes, 2**63 - 1))


def cache_info() -> dict:
    """The output cache now: limit, held (bytes kept), blocks, hits and misses (requests of at
    least 1 MiB served from a kept buffer or from malloc)."""
    return _kernels.cache_info()


def _cache_limit_from_env() -> int:
    raw = os.environ.get("FASTCONV_CACHE_MB", "").strip()
    if raw:
        try:
            mb = int(raw)
            if mb >= 0:
                return mb * 2**20
        except ValueError:
            pass
        warnings.warn(f"fastconv: FASTCONV_CACHE_MB must be an int >= 0 (megabytes), got "
                      f"{raw!r}; using {DEFAULT_CACHE_MB}", stacklevel=2)
    return DEFAULT_CACHE_MB * 2**20


set_cache_limit(_cache_limit_from_env())


def available_isas() -> list[str]:
    """The convolution paths this build and CPU can run, scalar first."""
    return [name for name in _kernels.isa_names() if _kernels.isa_supported(name)]


def selected_isa() -> str:
    return _kernels.selected_isa()


def use_isa(name: str):
    """Run the convolution kernels on the `name` path (e.g. 'avx2') inside a ``with`` block.

    Raises ValueError at once if this build or CPU cannot run it. Not thread-safe: meant for
    tests and benchmarks. FASTCONV_ISA=name chooses the path at import instead.
    """
    if not isinstance(name, str) or name not in available_isas():
        fail("use_isa", f"name must be one of {available_isas()} on this machine, got {name!r}")
    return _isa_switched(name)


@contextlib.contextmanager
def _isa_switched(name: str):
    old = _kernels.selected_isa()
    _kernels.select_isa(name)
    try:
        yield
    finally:
        _kernels.select_isa(old)


def show_config(file=None) -> None:
    """Print the version, OpenMP status, thread count, SIMD paths and build configuration."""
    from . import __version__

    out = file or sys.stdout
    names = _kernels.isa_names()
    print(f"fastconv {__version__}", file=out)
    print(f"  OpenMP:   {'on' if _kernels.openmp_enabled() else 'off (serial build)'}", file=out)
    print(f"  threads:  {get_num_threads()}"
          f"{' (set_num_threads)' if _num_threads is not None else ' (OpenMP default)'}", file=out)
    print(f"  compiled: {', '.join(n for n in names if _kernels.isa_compiled(n))}", file=out)
    print(f"  CPU runs: {', '.join(available_isas())}", file=out)
    print(f"  selected: {selected_isa()}", file=out)
    print(f"  cache:    {cache_info()['limit'] // 2**20} MiB for output buffers", file=out)
    try:
        from ._build_info import CONFIG as build
    except ImportError:  # a build made before setup.py recorded its configuration
        return
    print(f"  compiler: {build['compiler']}", file=out)
    print(f"  flags:    {' '.join(build['compile_args'])}", file=out)
    kind = "debug" if build["debug"] else "release"
    if build["sanitize"]:
        kind += f", sanitize={build['sanitize']}"
    print(f"  build:    {kind}, configuration {build['hash']} (NumPy {build['numpy']}, "
          f"Cython {build['cython']})", file=out)
