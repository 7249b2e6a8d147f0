"""Thread count, instruction-set selection and build introspection."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings

from . import _kernels
from ._validation import byte_count, fail, positive_int

# The `with` forms (num_threads, use_isa) hold their setting per thread, so that blocks in two
# threads that overlap in time never leave either thread, or the process, on the other's. The
# thread counts live in the compiled module, whose fast path reads them on every call.
_this_thread = threading.local()


def set_num_threads(n: int | None) -> None:
    """Use at most `n` threads in every kernel, in every Python thread; None goes back to the
    OpenMP default.

    The default is OpenMP's (``omp_get_max_threads()``): OMP_NUM_THREADS and
    ``threadpoolctl.threadpool_limits`` set it. An explicit ``set_num_threads`` wins over both,
    and a ``with fastconv.num_threads(...)`` block wins over it in its own thread.

    >>> import fastconv
    >>> fastconv.set_num_threads(1); fastconv.get_num_threads()
    1
    >>> fastconv.set_num_threads(None)
    """
    _kernels.set_process_threads(0 if n is None else positive_int("set_num_threads", "n", n))


def get_num_threads() -> int:
    """The most threads a kernel called from this thread will use now (small problems use
    fewer)."""
    return _kernels.current_threads()


@contextlib.contextmanager
def num_threads(n: int | None):
    """Context manager: kernels called from this thread use at most `n` threads inside the block
    (None: the process's setting), and the thread's previous setting comes back after it.

    Per thread: other threads keep their own setting, so blocks in several threads may overlap
    freely. ``set_num_threads`` changes the process's setting for every thread instead.

    >>> import fastconv
    >>> with fastconv.num_threads(1):
    ...     fastconv.get_num_threads()
    1
    """
    n = None if n is None else positive_int("num_threads", "n", n)
    settings = _kernels.thread_settings
    old = settings.num_threads
    settings.num_threads = n
    try:
        yield
    finally:
        settings.num_threads = old


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
    """The kernel path that calls from this thread run on."""
    return _kernels.selected_isa()


def use_isa(name: str):
    """Run the kernels called from this thread on the `name` path (e.g. 'avx2') inside a
    ``with`` block; the thread's previous path comes back after it.

    Per thread: other threads stay on their own path, so blocks in several threads may overlap
    freely. Raises ValueError at once if this build or CPU cannot run `name`. FASTCONV_ISA=name
    chooses the process's path at import instead.

    >>> import fastconv
    >>> with fastconv.use_isa("scalar"):
    ...     fastconv.selected_isa()
    'scalar'
    """
    if not isinstance(name, str) or name not in available_isas():
        fail("use_isa", f"name must be one of {available_isas()} on this machine, got {name!r}")
    return _isa_switched(name)


@contextlib.contextmanager
def _isa_switched(name: str):
    old = getattr(_this_thread, "isa", None)  # None: the process's path
    _kernels.select_isa_for_thread(name)
    _this_thread.isa = name
    try:
        yield
    finally:
        _kernels.select_isa_for_thread(old)
        _this_thread.isa = old


def show_config(file=None) -> None:
    """Print the version, OpenMP status, thread count, SIMD paths and build configuration."""
    from . import __version__

    out = file or sys.stdout
    names = _kernels.isa_names()
    print(f"fastconv {__version__}", file=out)
    print(f"  OpenMP:   {'on' if _kernels.openmp_enabled() else 'off (serial build)'}", file=out)
    source = "set_num_threads" if _kernels.process_threads() else "OpenMP default"
    print(f"  threads:  {get_num_threads()} ({source})", file=out)
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
