"""fastconv: fast, correct convolution and pooling for NumPy on the CPU.

C kernels (OpenMP threads, AVX-512/AVX2 chosen at run time) behind torch.nn.functional's names
and semantics. ``fastconv.functional`` holds the ops, ``fastconv.reference`` the pure-NumPy
specification they are tested against.
"""

__version__ = "0.1.0"

try:
    from . import _kernels  # noqa: F401
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "fastconv's compiled extension (fastconv._kernels) is missing or failed to load. "
        "Build it with `pip install .` (needs a C compiler), or `python setup.py build_ext "
        f"--inplace` in a source checkout. Original error: {exc}"
    ) from exc

from . import functional, init, nn, optim, reference  # noqa: E402
from ._config import (  # noqa: E402
    available_isas,
    cache_info,
    get_num_threads,
    num_threads,
    selected_isa,
    set_cache_limit,
    set_num_threads,
    show_config,
    use_isa,
)

__all__ = [
    "functional", "init", "nn", "optim", "reference", "available_isas", "cache_info",
    "get_num_threads", "num_threads", "selected_isa", "set_cache_limit", "set_num_threads",
    "show_config", "use_isa", "__version__",
]
