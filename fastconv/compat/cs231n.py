"""The cache-style layer functions of the Stanford cs231n assignments, on fastconv's kernels.

The cs231n assignments build networks from layer functions that take parameter dicts and return
``(out, cache)``: fast convolution and pooling in ``cs231n.fast_layers``, composite layers in
``cs231n.layer_utils``. This module has the same functions, with the same arguments, returns and
caches, computed by ``fastconv.functional``; ``install()`` makes code that imports those two
modules get them::

    import fastconv.compat.cs231n; fastconv.compat.cs231n.install()

Conventions, as in the assignments:

- x ``(N, C, H, W)``; conv weights w ``(F, C, HH, WW)`` and bias b ``(F,)``;
  ``conv_param = {'stride': s, 'pad': p}`` (p zero rows and columns on every side);
  ``pool_param = {'pool_height': ph, 'pool_width': pw, 'stride': s}`` (no padding); dout is the
  loss's gradient with respect to out. relu takes any shape.
- Output sizes are floored, ``1 + (H + 2 * pad - HH) // stride`` and
  ``1 + (H - pool_height) // stride``, for any geometry: windows may overlap, skip input or leave
  rows over, where cs231n's own fast layers assert that they tile.
- Caches are laid out as the naive layers lay them out: conv ``(x, w, b, conv_param)``, pool
  ``(x, pool_param)``, relu ``x``, conv_relu ``(conv_cache, relu_cache)``, conv_relu_pool
  ``(conv_cache, relu_cache, pool_cache)``, so a naive forward pass's cache works with a backward
  pass here and the other way round. The pool cache also carries each window's argmax, so that
  its backward pass need not search the windows again: it is a tuple subclass that still unpacks
  as ``(x, pool_param)`` (a plain ``(x, pool_param)`` tuple is searched again). Do not write
  into x between the two passes; the argmax would be stale.
- dtypes follow NumPy's promotion: the arrays of a call are converted to their
  ``np.result_type`` (float32 weights with float64 data compute in float64), and an integer or
  bool result computes in float64. Outputs and gradients have that dtype. fastconv.functional
  itself never promotes; only this adapter converts.
- Max pooling sends each window's gradient to its first maximum in row-major order (as PyTorch
  and an ``np.argmax``-based naive layer do); relu_backward passes the gradient where x is NaN
  (PyTorch's rule; ``dout * (x > 0)`` gives 0 there).
- Bad input raises TypeError or ValueError; fastconv's messages get this module's function name
  in front, e.g. ``max_pool_forward_fast: max_pool2d: output size would be (0, 1) ...``.

Examples
--------
>>> import numpy as np
>>> from fastconv.compat.cs231n import conv_relu_pool_forward, conv_relu_pool_backward
>>> x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
>>> w = np.ones((4, 3, 3, 3), np.float32); b = np.zeros(4, np.float32)
>>> out, cache = conv_relu_pool_forward(x, w, b, {'stride': 1, 'pad': 1},
...                                     {'pool_height': 2, 'pool_width': 2, 'stride': 2})
>>> out.shape, out.dtype
((2, 4, 4, 4), dtype('float64'))
>>> [g.shape for g in conv_relu_pool_backward(np.ones_like(out), cache)]
[(2, 3, 8, 8), (4, 3, 3, 3), (4,)]
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import threading
import types
from collections.abc import Mapping

import numpy as np

from .. import functional as F
from .._validation import fail
from ._common import installation, named, promoted

# what install() puts in cs231n.fast_layers and cs231n.layer_utils (both export _FAST_LAYERS, as
# cs231n's layer_utils re-exports fast_layers)
_FAST_LAYERS = (
    "conv_forward_fast", "conv_backward_fast",
    "conv_forward_strides", "conv_backward_strides",
    "conv_forward_im2col", "conv_backward_im2col",
    "max_pool_forward_fast", "max_pool_backward_fast",
    "max_pool_forward_reshape", "max_pool_backward_reshape",
    "max_pool_forward_im2col", "max_pool_backward_im2col",
)
# attributes of the installed fast_layers but not exported by `import *`: a notebook that
# star-imports fast_layers after cs231n.layers keeps its own naive layers to compare against
_NAIVE = (
    "conv_forward_naive", "conv_backward_naive",
    "max_pool_forward_naive", "max_pool_backward_naive",
)
_LAYER_UTILS = (
    "relu_forward", "relu_backward",
    "conv_relu_forward", "conv_relu_backward",
    "conv_relu_pool_forward", "conv_relu_pool_backward",
)

__all__ = [*_FAST_LAYERS, *_NAIVE, *_LAYER_UTILS,
           "install", "uninstall", "installed", "is_installed"]


# ---- argument handling ---------------------------------------------------------------------------

def _params(op: str, name: str, params, keys: tuple[str, ...]) -> tuple:
    """The values of `keys` in the parameter dict `params`, in that order."""
    wanted = ", ".join(repr(k) for k in keys)
    if not isinstance(params, Mapping):
        fail(op, f"{name} must be a dict with the keys {wanted}, got {type(params).__name__}",
             TypeError)
    if any(k not in params for k in keys):
        fail(op, f"{name} must have the keys {wanted}, got {params!r}")
    return tuple(params[k] for k in keys)


def _unpack(op: str, cache, names: tuple[str, ...]) -> tuple:
    """`cache` checked to be the tuple of `names` that the forward pass returns."""
    layout = f"({', '.join(names)})"
    if not isinstance(cache, (tuple, list)):
        fail(op, f"cache must be the {layout} tuple the forward pass returns, got "
                 f"{type(cache).__name__}", TypeError)
    if len(cache) != len(names):
        fail(op, f"cache must be the {layout} tuple the forward pass returns, got a "
                 f"{type(cache).__name__} of {len(cache)} items")
    return tuple(cache)


# ---- convolution ---------------------------------------------------------------------------------

def conv_forward_fast(x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict):
    """Convolution forward pass: ``(out, cache)``.

    Parameters
    ----------
    x : (N, C, H, W) array
    w : (F, C, HH, WW) filters
    b : (F,) biases
    conv_param : ``{'stride': s, 'pad': p}``; p rows and columns of zeros on every side

    Returns
    -------
    out : (N, F, H', W') with ``H' = 1 + (H + 2 * p - HH) // s``, ``W' = 1 + (W + 2 * p - WW) // s``
    cache : ``(x, w, b, conv_param)``, the arguments as given

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.compat.cs231n import conv_forward_fast
    >>> out, cache = conv_forward_fast(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)),
    ...                                np.zeros(1), {'stride': 2, 'pad': 1})
    >>> out[0, 0]
    array([[4., 6.],
           [6., 9.]])
    """
    op = "conv_forward_fast"
    stride, pad = _params(op, "conv_param", conv_param, ("stride", "pad"))
    xc, wc, bc = promoted(x, w, b)
    with named(op):
        out = F.conv2d(xc, wc, bc, stride=stride, padding=pad)
    return out, (x, w, b, conv_param)


def conv_backward_fast(dout: np.ndarray, cache):
    """Convolution backward pass: ``(dx, dw, db)``, shaped like x, w and b.

    `cache` is the ``(x, w, b, conv_param)`` of a convolution forward pass (this module's or a
    naive one's); dout has the shape of that pass's out.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.compat.cs231n import conv_forward_fast, conv_backward_fast
    >>> out, cache = conv_forward_fast(np.ones((2, 3, 5, 5)), np.ones((4, 3, 3, 3)),
    ...                                np.zeros(4), {'stride': 1, 'pad': 1})
    >>> dx, dw, db = conv_backward_fast(np.ones_like(out), cache)
    >>> dx.shape, dw.shape, db
    ((2, 3, 5, 5), (4, 3, 3, 3), array([50., 50., 50., 50.]))
    """
    op = "conv_backward_fast"
    x, w, _, conv_param = _unpack(op, cache, ("x", "w", "b", "conv_param"))
    stride, pad = _params(op, "conv_param", conv_param, ("stride", "pad"))
    dout, x, w = promoted(dout, x, w)
    with named(op):
        return F.conv2d_backward(dout, x, w, stride=stride, padding=pad)


# ---- max pooling ---------------------------------------------------------------------------------

class _PoolCache(tuple):
    """A max-pooling cache ``(x, pool_param)`` that also holds the forward pass's argmax
    `indices` and the `window` ((pool_height, pool_width), stride) they were found for."""

    def __new__(cls, items, window=None, indices=None):
        cache = super().__new__(cls, items)
        cache.window = window
        cache.indices = indices
        return cache


def _pool_window(op: str, pool_param) -> tuple:
    height, width, stride = _params(op, "pool_param", pool_param,
                                    ("pool_height", "pool_width", "stride"))
    return (height, width), stride


def max_pool_forward_fast(x: np.ndarray, pool_param: dict):
    """Max pooling forward pass: ``(out, cache)``.

    Parameters
    ----------
    x : (N, C, H, W) array
    pool_param : ``{'pool_height': ph, 'pool_width': pw, 'stride': s}``; no padding. Any
        geometry: windows may overlap (s < ph) or skip input (s > ph).

    Returns
    -------
    out : (N, C, H', W') with ``H' = 1 + (H - ph) // s``, ``W' = 1 + (W - pw) // s``
    cache : unpacks as ``(x, pool_param)``; it also holds each window's argmax for
        max_pool_backward_fast

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.compat.cs231n import max_pool_forward_fast
    >>> x = np.arange(25.0).reshape(1, 1, 5, 5)
    >>> out, (x_cached, pool_param) = max_pool_forward_fast(
    ...     x, {'pool_height': 3, 'pool_width': 3, 'stride': 2})
    >>> out[0, 0]
    array([[12., 14.],
           [22., 24.]])
    """
    op = "max_pool_forward_fast"
    kernel, stride = _pool_window(op, pool_param)
    (xc,) = promoted(x)
    with named(op):
        out, indices = F.max_pool2d(xc, kernel, stride, return_indices=True)
    return out, _PoolCache((x, pool_param), (kernel, stride), indices)


def max_pool_backward_fast(dout: np.ndarray, cache) -> np.ndarray:
    """Max pooling backward pass: dx, shaped like x.

    `cache` is the ``(x, pool_param)`` of a max pooling forward pass, this module's or a naive
    one's. Each window's gradient goes to its first maximum in row-major order; overlapping
    windows add up.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.compat.cs231n import max_pool_backward_fast
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> pool_param = {'pool_height': 2, 'pool_width': 2, 'stride': 2}
    >>> max_pool_backward_fast(np.ones((1, 1, 2, 2)), (x, pool_param))[0, 0]
    array([[0., 0., 0., 0.],
           [0., 1., 0., 1.],
           [0., 0., 0., 0.],
           [0., 1., 0., 1.]])
    """
    op = "max_pool_backward_fast"
    x, pool_param = _unpack(op, cache, ("x", "pool_param"))
    kernel, stride = _pool_window(op, pool_param)
    # the argmax of the forward pass, unless pool_param has changed since
    same_window = getattr(cache, "window", None) == (kernel, stride)
    indices = cache.indices if same_window else None
    dout, x = promoted(dout, x)
    with named(op):
        return F.max_pool2d_backward(dout, x, kernel, stride, indices=indices)


conv_forward_strides = conv_forward_im2col = conv_forward_naive = conv_forward_fast
conv_backward_strides = conv_backward_im2col = conv_backward_naive = conv_backward_fast
max_pool_forward_reshape = max_pool_forward_im2col = max_pool_forward_naive = \
    max_pool_forward_fast
max_pool_backward_reshape = max_pool_backward_im2col = max_pool_backward_naive = \
    max_pool_backward_fast


# ---- relu and the composite layers ---------------------------------------------------------------

def relu_forward(x: np.ndarray):
    """ReLU forward pass, any shape: ``(max(x, 0), x)``; NaN stays NaN.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.compat.cs231n import relu_forward
    >>> relu_forward(np.array([[-1.0, 2.0]]))
    (array([[0., 2.]]), array([[-1.,  2.]]))
    """
    (xc,) = promoted(x)
    with named("relu_forward"):
        return F.relu(xc), x


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """ReLU backward pass: dout where x > 0 (or x is NaN), else 0; `cache` is x.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.compat.cs231n import relu_backward
    >>> relu_backward(np.ones(3), np.array([-1.0, 0.0, 2.0]))
    array([0., 0., 1.])
    """
    dout, x = promoted(dout, cache)
    with named("relu_backward"):
        return F.relu_backward(dout, x)


def conv_relu_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict):
    """Convolution then ReLU: ``(out, (conv_cache, relu_cache))``; arguments as
    conv_forward_fast.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.compat.cs231n import conv_relu_forward
    >>> out, cache = conv_relu_forward(np.ones((1, 1, 3, 3)), -np.ones((2, 1, 3, 3)),
    ...                                np.array([10.0, 0.0]), {'stride': 1, 'pad': 0})
    >>> out.ravel()
    array([1., 0.])
    """
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout: np.ndarray, cache):
    """Backward pass of conv_relu_forward: ``(dx, dw, db)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.compat.cs231n import conv_relu_forward, conv_relu_backward
    >>> out, cache = conv_relu_forward(np.ones((1, 1, 3, 3)), -np.ones((2, 1, 3, 3)),
    ...                                np.array([10.0, 0.0]), {'stride': 1, 'pad': 0})
    >>> conv_relu_backward(np.ones_like(out), cache)[2]   # only the first filter is active
    array([1., 0.])
    """
    conv_cache, relu_cache = _unpack("conv_relu_backward", cache, ("conv_cache", "relu_cache"))
    return conv_backward_fast(relu_backward(dout, relu_cache), conv_cache)


def conv_relu_pool_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict,
                           pool_param: dict):
    """Convolution, ReLU, then max pooling: ``(out, (conv_cache, relu_cache, pool_cache))``;
    arguments as conv_forward_fast and max_pool_forward_fast.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.compat.cs231n import conv_relu_pool_forward
    >>> out, cache = conv_relu_pool_forward(
    ...     np.ones((1, 3, 6, 6)), np.ones((2, 3, 3, 3)), np.zeros(2), {'stride': 1, 'pad': 1},
    ...     {'pool_height': 2, 'pool_width': 2, 'stride': 2})
    >>> out.shape
    (1, 2, 3, 3)
    """
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    s, relu_cache = relu_forward(a)
    out, pool_cache = max_pool_forward_fast(s, pool_param)
    return out, (conv_cache, relu_cache, pool_cache)


def conv_relu_pool_backward(dout: np.ndarray, cache):
    """Backward pass of conv_relu_pool_forward: ``(dx, dw, db)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.compat.cs231n import conv_relu_pool_forward, conv_relu_pool_backward
    >>> out, cache = conv_relu_pool_forward(
    ...     np.ones((1, 3, 6, 6)), np.ones((2, 3, 3, 3)), np.zeros(2), {'stride': 1, 'pad': 1},
    ...     {'pool_height': 2, 'pool_width': 2, 'stride': 2})
    >>> [g.shape for g in conv_relu_pool_backward(np.ones_like(out), cache)]
    [(1, 3, 6, 6), (2, 3, 3, 3), (2,)]
    """
    conv_cache, relu_cache, pool_cache = _unpack(
        "conv_relu_pool_backward", cache, ("conv_cache", "relu_cache", "pool_cache"))
    da = relu_backward(max_pool_backward_fast(dout, pool_cache), relu_cache)
    return conv_backward_fast(da, conv_cache)


# ---- install() -----------------------------------------------------------------------------------

_PACKAGE = "cs231n"
_MISSING = object()
_lock = threading.RLock()
# what install() changed, as functions that put it back; None when not installed
_undo: list | None = None


def install() -> None:
    """Make ``cs231n.fast_layers`` and ``cs231n.layer_utils`` this module's functions.

    After ``install()``, ``from cs231n.fast_layers import *``, ``from cs231n.layer_utils import
    *``, ``import cs231n.fast_layers`` and ``from cs231n import layer_utils`` give fastconv's
    layers, so existing assignment code runs on fastconv unchanged. Call it before that code is
    imported: names a module has already imported keep the functions they were bound to.

    - ``cs231n.fast_layers`` exports the conv_* and max_pool_* functions (``_fast``, ``_strides``,
      ``_im2col``, ``_reshape``); the ``_naive`` names are attributes but are not exported by
      ``import *``, so a notebook's own naive layers stay in place beside them.
    - ``cs231n.layer_utils`` exports those and relu_*, conv_relu_* and conv_relu_pool_*.
    - Without a ``cs231n`` package on ``sys.path``, a stand-in package holding only these two
      modules is put in ``sys.modules``. With one (the assignment's own), it is imported and its
      ``fast_layers`` and ``layer_utils`` attributes and ``sys.modules`` entries are replaced.
      Its ``layer_utils`` keeps everything it defines (affine_relu_forward and so on) beside
      these functions: it is imported, after fastconv's fast_layers is in place, if it was not
      already, and fastconv's module starts as a copy of its namespace.

    Idempotent, and safe to call from several threads. ``uninstall()`` puts everything back.
    If importing the user's ``cs231n`` or ``layer_utils`` raises, nothing stays changed and the
    error propagates.

    Examples
    --------
    >>> import fastconv.compat.cs231n
    >>> fastconv.compat.cs231n.install()
    >>> from cs231n.fast_layers import conv_forward_fast
    >>> conv_forward_fast is fastconv.compat.cs231n.conv_forward_fast
    True
    >>> fastconv.compat.cs231n.uninstall()
    """
    global _undo
    with _lock:
        if _undo is not None:
            return
        undo: list = []
        try:
            _install(undo)
        except BaseException:
            _revert(undo)
            raise
        _undo = undo


def uninstall() -> None:
    """Undo ``install()``: the ``sys.modules`` entries and package attributes it replaced are
    restored to exactly what they were (or removed where there were none), and a stand-in
    ``cs231n`` package is removed. The user's own ``cs231n`` package, if install() imported it,
    stays imported. Does nothing when not installed."""
    global _undo
    with _lock:
        if _undo is None:
            return
        undo, _undo = _undo, None
        _revert(undo)


def is_installed() -> bool:
    """Whether ``install()`` is in effect."""
    return _undo is not None


def installed():
    """``install()`` for the duration of a with block; on leaving it, ``uninstall()`` unless it
    was already installed on entering.

    Examples
    --------
    >>> import fastconv.compat.cs231n
    >>> with fastconv.compat.cs231n.installed():
    ...     from cs231n.layer_utils import conv_relu_pool_forward
    >>> fastconv.compat.cs231n.is_installed()
    False
    """
    return installation(_lock, install, uninstall, is_installed)


def _install(undo: list) -> None:
    package = _user_package()
    if package is None:
        package = types.ModuleType(_PACKAGE, "A stand-in cs231n package holding fastconv's "
                                             "fast_layers and layer_utils (fastconv.compat.cs231n)")
        package.__path__ = []
        package.__spec__ = importlib.machinery.ModuleSpec(_PACKAGE, None, is_package=True)
        _save(sys.modules, _PACKAGE, undo)
        sys.modules[_PACKAGE] = package
    # recorded before anything below (importing the user's layer_utils included) changes them
    for name in ("fast_layers", "layer_utils"):
        _save(sys.modules, f"{_PACKAGE}.{name}", undo)
        _save(vars(package), name, undo)
    user_utils = sys.modules.get(f"{_PACKAGE}.layer_utils")
    _put(package, _module("fast_layers", _FAST_LAYERS, _NAIVE))
    if user_utils is None:
        user_utils = _user_module(package, "layer_utils")  # binds its fast layers to fastconv's
    _put(package, _module("layer_utils", _FAST_LAYERS + _LAYER_UTILS, base=user_utils))


def _user_package():
    """The user's cs231n package (imported if need be), or None if there is none."""
    package = sys.modules.get(_PACKAGE)
    if package is not None:
        return package
    if _PACKAGE in sys.modules or importlib.util.find_spec(_PACKAGE) is None:
        return None  # None in sys.modules: imports of it are blocked
    return importlib.import_module(_PACKAGE)


def _user_module(package, name: str):
    """The package's own submodule `name`, imported, or None where it has none."""
    if not hasattr(package, "__path__") or \
            importlib.util.find_spec(f"{_PACKAGE}.{name}") is None:
        return None
    return importlib.import_module(f"{_PACKAGE}.{name}")


def _module(name: str, exported: tuple[str, ...], hidden: tuple[str, ...] = (), base=None):
    """A new module cs231n.`name` holding this module's functions `exported` (its __all__) and
    `hidden`, over a copy of `base`'s namespace when given (its exports stay exported)."""
    full = f"{_PACKAGE}.{name}"
    module = types.ModuleType(full, f"fastconv's {full}, put here by fastconv.compat.cs231n."
                                    "install()")
    module.__spec__ = importlib.machinery.ModuleSpec(full, None)
    names = set(exported)
    if base is not None:
        module.__dict__.update({k: v for k, v in vars(base).items()
                                if not (k.startswith("__") and k.endswith("__"))})
        names.update(getattr(base, "__all__", None) or
                     [k for k in vars(base) if not k.startswith("_")])
    own = globals()
    module.__dict__.update({k: own[k] for k in exported + hidden})
    module.__all__ = sorted(names)
    return module


def _put(package, module) -> None:
    sys.modules[module.__name__] = module
    setattr(package, module.__name__.rpartition(".")[2], module)


def _save(namespace: dict, key: str, undo: list) -> None:
    """Record how to restore `namespace[key]` (a sys.modules entry or a module attribute) to what
    it is now, absent included."""
    old = namespace.get(key, _MISSING)
    if old is _MISSING:
        undo.append(lambda: namespace.pop(key, None))
    else:
        undo.append(lambda: namespace.__setitem__(key, old))


def _revert(undo: list) -> None:
    for step in reversed(undo):
        step()
