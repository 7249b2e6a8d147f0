"""numpy-ml's 2-D convolution and pooling, on fastconv's kernels.

numpy-ml (``pip install numpy-ml==0.1.2``) builds networks from layer objects whose convolution
is im2col on NumPy and whose pooling is a Python loop over every output element. This module
has its ``conv2D`` with the same arguments and a backward pass for it, and ``install()`` makes
numpy-ml's own ``Conv2D`` and ``Pool2D`` layers (``numpy_ml.neural_nets.layers``) run their
forward and backward passes on fastconv::

    import fastconv.compat.numpy_ml; fastconv.compat.numpy_ml.install()

Conventions, as in numpy-ml:

- X ``(n_ex, in_rows, in_cols, in_ch)`` (NHWC); W ``(kernel_rows, kernel_cols, in_ch, out_ch)``;
  a bias b ``(1, 1, 1, out_ch)``; outputs ``(n_ex, out_rows, out_cols, out_ch)``.
- stride an int; dilation an int >= 0 counting the zeros inserted between kernel elements
  (numpy-ml's 0 is fastconv's and PyTorch's 1).
- pad an int, a pair (rows on both sides, columns on both sides), a 4-tuple (top, bottom, left,
  right) or ``'same'``: numpy-ml's 'same' keeps the output the input's size at every stride,
  with total padding ``stride * (in - 1) + effective_kernel - in`` per dimension, the odd row or
  column at the bottom/right. At stride 1 that is ``fastconv.functional.same_padding``; at a
  larger stride it is more (same_padding, TensorFlow's SAME, gives ``ceil(in / stride)``).
- Max pooling pads with -inf (PyTorch, TensorFlow, ONNX): numpy-ml pads with zeros, so where a
  window overlapping the padding holds only negative values numpy-ml gives 0 and fastconv their
  maximum; numpy-ml's backward pass with padding looks its windows up in the unpadded input
  (wrong elements, or a failure). A window lying wholly in the padding ('same' at stride > 1
  makes them) gives 0 and no gradient, as in numpy-ml. Average pooling counts the padding, as
  numpy-ml does (PyTorch's count_include_pad=True).
- dtypes follow NumPy's promotion (``np.result_type`` of each call's arrays; integers compute in
  float64): float32 data with numpy-ml's float64 weights computes in float64. A float32 input
  pools in float32 (numpy-ml's Pool2D returns float64 whatever its input, and its Conv2D's
  input gradient is float64 too).

numpy-ml 0.1.2 does ``from collections import Hashable``, which Python 3.10 removed:
``import_numpy_ml()`` (which ``install()`` calls) imports it with ``collections.Hashable`` set
to ``collections.abc.Hashable`` for the duration of the import only, so on Python >= 3.10
``import numpy_ml`` works after it and not before. site-packages is never edited.

Examples
--------
>>> import numpy as np
>>> from fastconv.compat.numpy_ml import conv2D, conv2D_backward
>>> X = np.random.default_rng(0).standard_normal((2, 7, 7, 3))
>>> W = np.ones((3, 3, 3, 4), np.float32)
>>> Z = conv2D(X, W, stride=2, pad="same")
>>> Z.shape, Z.dtype
((2, 7, 7, 4), dtype('float64'))
>>> [g.shape for g in conv2D_backward(np.ones_like(Z), X, W, 2, "same")]
[(2, 7, 7, 3), (3, 3, 3, 4), (1, 1, 1, 4)]
"""

from __future__ import annotations

import collections
import collections.abc
import importlib
import threading

import numpy as np

from .. import _validation as v
from .. import functional as F
from ._common import installation, named, promoted

__all__ = ["conv2D", "conv2D_backward", "import_numpy_ml",
           "install", "uninstall", "installed", "is_installed"]

_X_LAYOUT = "(n_ex, in_rows, in_cols, in_ch)"
_W_LAYOUT = "(kernel_rows, kernel_cols, in_ch, out_ch)"
_PAD_FORMS = "an int, a pair, a 4-tuple (top, bottom, left, right) or 'same'"


# ---- argument handling: numpy-ml's conventions as fastconv's arguments ---------------------------

def _dilation(op: str, dilation) -> int:
    """numpy-ml's dilation (zeros between kernel elements, >= 0) as fastconv's (>= 1)."""
    if not v._is_int(dilation) or not 0 <= dilation < v.MAX_PARAM:
        v.fail(op, f"dilation must be an int >= 0 (numpy-ml's: 0 is no dilation), got "
                   f"{dilation!r}", ValueError if v._is_int(dilation) else TypeError)
    return int(dilation) + 1


def _same(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """numpy-ml's 'same' padding (begin, end) of one dimension (numpy-ml's calc_pad_dims_2D):
    output size = input size at any stride; `dilation` is fastconv's."""
    total = stride * (size - 1) + dilation * (kernel - 1) + 1 - size
    return total // 2, total - total // 2


def _pads(op: str, pad, size, kernel, stride: int, dilation: int) -> tuple[int, int, int, int]:
    """numpy-ml's pad argument as (top, bottom, left, right), for input rows and columns `size`
    and a kernel `kernel` (pairs)."""
    if isinstance(pad, str):
        if pad != "same":
            v.fail(op, f"pad must be {_PAD_FORMS}, got {pad!r}")
        return tuple(p for n, k in zip(size, kernel) for p in _same(n, k, stride, dilation))
    if v._is_int(pad):
        pad = (pad,) * 4
    elif not isinstance(pad, (tuple, list)) or not all(v._is_int(p) for p in pad):
        v.fail(op, f"pad must be {_PAD_FORMS}, got {pad!r}", TypeError)
    if len(pad) == 2:
        pad = (pad[0], pad[0], pad[1], pad[1])
    if len(pad) != 4 or min(pad) < 0 or max(pad) > v.MAX_PARAM:
        v.fail(op, f"pad must be {_PAD_FORMS} of ints >= 0, got {pad!r}")
    return tuple(int(p) for p in pad)


def _nchw(shape) -> tuple[int, int, int, int]:
    n, h, w, c = shape
    return (n, c, h, w)


def _check_grad(op: str, name: str, grad: np.ndarray, expected) -> None:
    if grad.shape != tuple(expected):
        v.fail(op, f"{name} must have the output's shape {tuple(expected)}, got {grad.shape}")


def _conv_args(op: str, X, W, stride, pad, dilation):
    """X, W and the geometry checked: (X, W, stride, pads, fastconv's dilation, output shape)."""
    X = v.float_array(op, "X", X, 4, _X_LAYOUT)
    W = v.float_array(op, "W", W, 4, _W_LAYOUT)
    stride = v.positive_int(op, "stride", stride)
    dilation = _dilation(op, dilation)
    if W.shape[2] != X.shape[3]:
        v.fail(op, f"W of shape {W.shape} expects {W.shape[2]} input channels, but X has "
                   f"{X.shape[3]} (shape {X.shape})")
    pads = _pads(op, pad, X.shape[1:3], W.shape[:2], stride, dilation)
    kernel_rows, kernel_cols, in_ch, out_ch = W.shape
    g = v.conv_geometry(op, _nchw(X.shape), (out_ch, in_ch, kernel_rows, kernel_cols), stride,
                        pads, dilation, 1)
    return X, W, stride, pads, dilation, (g.batch, g.out_h, g.out_w, g.out_channels)


def conv2D(X: np.ndarray, W: np.ndarray, stride: int, pad, dilation: int = 0,
           b: np.ndarray | None = None) -> np.ndarray:
    """numpy-ml's ``conv2D`` (cross-correlation, as numpy-ml and PyTorch compute it), plus an
    optional bias added in the same pass.

    Parameters
    ----------
    X : (n_ex, in_rows, in_cols, in_ch) array
    W : (kernel_rows, kernel_cols, in_ch, out_ch) array
    stride : int >= 1
    pad : int, (rows, cols), (top, bottom, left, right) or 'same' (numpy-ml's: output size =
        input size at any stride, the odd extra row/column at the bottom/right)
    dilation : int >= 0, zeros inserted between kernel elements; default 0
    b : (1, 1, 1, out_ch) array or None (default); any shape of out_ch elements is taken

    Returns
    -------
    Z : (n_ex, out_rows, out_cols, out_ch), ``out_rows = (in_rows + top + bottom -
    effective_rows) // stride + 1`` with ``effective_rows = kernel_rows * (dilation + 1) -
    dilation``; dtype NumPy's result type of X, W and b (float64 for integers).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.compat.numpy_ml import conv2D
    >>> X = np.ones((1, 4, 4, 1)); W = np.ones((3, 3, 1, 2))
    >>> conv2D(X, W, 1, 1, b=np.array([[[[0.0, 100.0]]]]))[0, :, :, 0]
    array([[4., 6., 6., 4.],
           [6., 9., 9., 6.],
           [6., 9., 9., 6.],
           [4., 6., 6., 4.]])
    >>> conv2D(X, W, 1, 1, dilation=1).shape   # a 5x5 effective kernel
    (1, 2, 2, 2)
    """
    op = "conv2D"
    X, W, b = promoted(X, W, b)
    X, W, stride, pads, dilation, _ = _conv_args(op, X, W, stride, pad, dilation)
    if b is not None:
        b = v.float_array(op, "b", b)
        if b.size != W.shape[3]:
            v.fail(op, f"b must have out_ch = {W.shape[3]} elements, shape (1, 1, 1, "
                       f"{W.shape[3]}), got shape {b.shape}")
        b = b.reshape(-1)
    with named(op):
        return _conv_nhwc_hwio(X, W, b, stride, pads, dilation)


def conv2D_backward(dLdZ: np.ndarray, X: np.ndarray, W: np.ndarray, stride: int, pad,
                    dilation: int = 0):
    """Gradients of ``conv2D(X, W, stride, pad, dilation) + b``: ``(dX, dW, dB)``.

    dLdZ is the loss's gradient with respect to the output, (n_ex, out_rows, out_cols, out_ch);
    dX has X's shape, dW W's and dB is (1, 1, 1, out_ch), as numpy-ml's Conv2D keeps its bias
    gradient. The other arguments are conv2D's; dtype NumPy's result type of dLdZ, X and W.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.compat.numpy_ml import conv2D_backward
    >>> X = np.ones((2, 5, 5, 3)); W = np.ones((3, 3, 3, 4))
    >>> dX, dW, dB = conv2D_backward(np.ones((2, 3, 3, 4)), X, W, 1, 0)
    >>> dX.shape, dW.shape, dB.ravel()
    ((2, 5, 5, 3), (3, 3, 3, 4), array([18., 18., 18., 18.]))
    """
    op = "conv2D_backward"
    dLdZ, X, W = promoted(dLdZ, X, W)
    X, W, stride, pads, dilation, out_shape = _conv_args(op, X, W, stride, pad, dilation)
    dLdZ = v.float_array(op, "dLdZ", dLdZ, 4, "(n_ex, out_rows, out_cols, out_ch)")
    _check_grad(op, "dLdZ", dLdZ, out_shape)
    with named(op):
        dX, dW, dB = _conv_nhwc_hwio_backward(dLdZ, X, W, stride, pads, dilation)
    return dX, dW, dB.reshape(1, 1, 1, -1)


_POOL_MODES = {"max": "max_pool2d", "average": "avg_pool2d"}


def _pool_args(op: str, X, kernel_shape, stride, pad, mode):
    """Pool2D's arguments checked: (X, kernel, stride, pads, output shape)."""
    X = v.float_array(op, "X", X, 4, _X_LAYOUT)
    kernel = v.pair(op, "kernel_shape", kernel_shape, 1, "a positive")
    stride = v.positive_int(op, "stride", stride)
    if mode not in _POOL_MODES:
        v.fail(op, f"mode must be 'max' or 'average', got {mode!r}")
    pads = _pads(op, pad, X.shape[1:3], kernel, stride, 1)
    g = v.pool_geometry(op, _nchw(X.shape), kernel, stride, pads, 1, False)
    return X, kernel, stride, pads, (g.batch, g.out_h, g.out_w, g.channels)


def _in_padding(out: int, size: int, kernel: int, stride: int, begin: int) -> np.ndarray:
    """Which of `out` windows along one dimension lie wholly in the padding."""
    start = np.arange(out) * stride - begin
    return (start + kernel <= 0) | (start >= size)


def _pool2D(op: str, X, kernel_shape, stride, pad, mode) -> np.ndarray:
    (X,) = promoted(X)
    X, kernel, stride, pads, out_shape = _pool_args(op, X, kernel_shape, stride, pad, mode)
    with named(op):
        Y = _pool_nhwc(X, mode, kernel, stride, pads)
    if mode == "max":
        # numpy-ml's 'same' at stride > 1 makes windows of padding alone: 0 there, as numpy-ml
        # gives (fastconv's -inf would poison the next layer; PyTorch has no such windows)
        Y[:, _in_padding(out_shape[1], X.shape[1], kernel[0], stride, pads[0])] = 0
        Y[:, :, _in_padding(out_shape[2], X.shape[2], kernel[1], stride, pads[2])] = 0
    return Y


def _pool2D_backward(op: str, dLdY, X, kernel_shape, stride, pad, mode) -> np.ndarray:
    dLdY, X = promoted(dLdY, X)
    X, kernel, stride, pads, out_shape = _pool_args(op, X, kernel_shape, stride, pad, mode)
    dLdY = v.float_array(op, "dLdY", dLdY, 4, "(n_ex, out_rows, out_cols, out_ch)")
    _check_grad(op, "dLdY", dLdY, out_shape)
    with named(op):
        return _pool_nhwc_backward(dLdY, X, mode, kernel, stride, pads)


# ---- layout: the one place where NHWC meets fastconv's NCHW --------------------------------------
# Each op family transposes to NCHW (views, which fastconv copies to contiguous buffers), calls
# fastconv and transposes its results back (views again). Arguments arrive checked, padding as
# (top, bottom, left, right) and dilation as fastconv's.

def _conv_nhwc_hwio(x, w, b, stride, padding, dilation):
    """conv2d of NHWC x with HWIO w and a (K,) bias or None: NHWC output."""
    y = F.conv2d(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), b, stride=stride,
                 padding=padding, dilation=dilation)
    return y.transpose(0, 2, 3, 1)


def _conv_nhwc_hwio_backward(dy, x, w, stride, padding, dilation):
    """conv2d_backward with NHWC dy and x and HWIO w: (NHWC dx, HWIO dw, (K,) db)."""
    dx, dw, db = F.conv2d_backward(dy.transpose(0, 3, 1, 2), x.transpose(0, 3, 1, 2),
                                   w.transpose(3, 2, 0, 1), stride=stride, padding=padding,
                                   dilation=dilation)
    return dx.transpose(0, 2, 3, 1), dw.transpose(2, 3, 1, 0), db


def _pool_nhwc(x, mode, kernel, stride, padding):
    """max_pool2d or avg_pool2d (count_include_pad, PyTorch's default) of NHWC x: NHWC."""
    pool = getattr(F, _POOL_MODES[mode])
    return pool(x.transpose(0, 3, 1, 2), kernel, stride, padding).transpose(0, 2, 3, 1)


def _pool_nhwc_backward(dy, x, mode, kernel, stride, padding):
    """The input gradient of _pool_nhwc, NHWC."""
    backward = getattr(F, f"{_POOL_MODES[mode]}_backward")
    return backward(dy.transpose(0, 3, 1, 2), x.transpose(0, 3, 1, 2), kernel, stride,
                    padding).transpose(0, 2, 3, 1)


# ---- numpy-ml's layers on fastconv ---------------------------------------------------------------
# These replace methods of numpy_ml.neural_nets.layers.Conv2D and Pool2D while installed. They
# keep numpy-ml's caches (self.X and derived_variables Z, out_rows, out_cols), its gradient
# accumulation (Conv2D.backward, kept, adds _bwd's dW and dB into self.gradients) and its
# returns (one array for one input, else a list).

def _conv_layer_forward(self, X, retain_derived=True):
    """Conv2D.forward on fastconv: ``act_fn(conv2D(X, W, stride, pad, dilation) + b)``."""
    if not self.is_initialized:
        self.in_ch = X.shape[3]
        self._init_params()
    op = "Conv2D.forward"
    with named(op):
        Z = conv2D(X, self.parameters["W"], self.stride, self.pad, self.dilation,
                   b=self.parameters["b"])
    Y = self.act_fn(Z)
    if retain_derived:
        self.X.append(X)
        self.derived_variables["Z"].append(Z)
        self.derived_variables["out_rows"].append(Z.shape[1])
        self.derived_variables["out_cols"].append(Z.shape[2])
    return Y


def _conv_layer_bwd(self, dLdy, X, Z):
    """Conv2D._bwd on fastconv: (dX, dW, dB) for one input X and its pre-activation Z."""
    dLdZ = dLdy * self.act_fn.grad(Z)
    with named("Conv2D.backward"):
        return conv2D_backward(dLdZ, X, self.parameters["W"], self.stride, self.pad,
                               self.dilation)


def _pool_layer_forward(self, X, retain_derived=True):
    """Pool2D.forward on fastconv."""
    if not self.is_initialized:
        self.in_ch = self.out_ch = X.shape[3]
        self._init_params()
    Y = _pool2D("Pool2D.forward", X, self.kernel_shape, self.stride, self.pad, self.mode)
    if retain_derived:
        self.X.append(X)
        self.derived_variables["out_rows"].append(Y.shape[1])
        self.derived_variables["out_cols"].append(Y.shape[2])
    return Y


def _pool_layer_backward(self, dLdY, retain_grads=True):
    """Pool2D.backward on fastconv: the gradient for each input of the forward passes."""
    assert self.trainable, "Layer is frozen"  # numpy-ml's own check and error, kept
    if not isinstance(dLdY, list):
        dLdY = [dLdY]
    dXs = [_pool2D_backward("Pool2D.backward", dy, X, self.kernel_shape, self.stride, self.pad,
                            self.mode) for X, dy in zip(self.X, dLdY)]
    return dXs[0] if len(self.X) == 1 else dXs


# (class, method): what install() puts there
_METHODS = {
    ("Conv2D", "forward"): _conv_layer_forward,
    ("Conv2D", "_bwd"): _conv_layer_bwd,
    ("Pool2D", "forward"): _pool_layer_forward,
    ("Pool2D", "backward"): _pool_layer_backward,
}


# ---- importing numpy-ml, install() ---------------------------------------------------------------

_lock = threading.RLock()
# the methods install() replaced, as (class, name, original); None when not installed
_originals: list | None = None


def import_numpy_ml():
    """Import and return the ``numpy_ml`` package, on any Python.

    numpy-ml 0.1.2 does ``from collections import Hashable`` (numpy_ml/utils/data_structures.py),
    which Python 3.10 removed. Where ``collections`` has no ``Hashable``, it is set to
    ``collections.abc.Hashable`` for this import only and removed after it, even if the import
    fails. Once imported, ``import numpy_ml`` and its submodules work as usual. Raises
    ImportError (ModuleNotFoundError) when numpy-ml is not installed.

    Examples
    --------
    >>> from fastconv.compat.numpy_ml import import_numpy_ml
    >>> import_numpy_ml().neural_nets.layers.Conv2D.__name__
    'Conv2D'
    """
    with _lock:
        alias = "Hashable" not in vars(collections)
        if alias:
            collections.Hashable = collections.abc.Hashable
        try:
            return importlib.import_module("numpy_ml")
        finally:
            if alias:
                del collections.Hashable


def install() -> None:
    """Make numpy-ml's ``Conv2D`` and ``Pool2D`` layers compute on fastconv.

    Imports numpy-ml (``import_numpy_ml()``) and replaces, on the classes in
    ``numpy_ml.neural_nets.layers``, ``Conv2D.forward``, ``Conv2D._bwd`` (the gradient of one
    input; numpy-ml's ``Conv2D.backward`` stays and calls it), ``Pool2D.forward`` and
    ``Pool2D.backward``. Layers made before install() change too, as do subclasses that do not
    override these methods. Caches, accumulated gradients and returns are numpy-ml's; the
    arithmetic is fastconv's (see the module's notes for what differs).

    Idempotent and safe to call from several threads; ``uninstall()`` restores numpy-ml's own
    methods. Raises ImportError, changing nothing, when numpy-ml is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv.compat.numpy_ml
    >>> fastconv.compat.numpy_ml.install()
    >>> from numpy_ml.neural_nets.layers import Conv2D
    >>> Conv2D(8, (3, 3), pad="same").forward(np.ones((2, 5, 5, 3))).shape
    (2, 5, 5, 8)
    >>> fastconv.compat.numpy_ml.uninstall()
    """
    global _originals
    with _lock:
        if _originals is not None:
            return
        layers = import_numpy_ml().neural_nets.layers
        originals = []
        for (class_name, name), method in _METHODS.items():
            cls = getattr(layers, class_name)
            originals.append((cls, name, vars(cls)[name]))
            setattr(cls, name, method)
        _originals = originals


def uninstall() -> None:
    """Undo ``install()``: numpy-ml's own methods are back on its classes. Does nothing when
    not installed."""
    global _originals
    with _lock:
        if _originals is None:
            return
        for cls, name, original in _originals:
            setattr(cls, name, original)
        _originals = None


def is_installed() -> bool:
    """Whether ``install()`` is in effect."""
    return _originals is not None


def installed():
    """``install()`` for the duration of a with block; on leaving it, by an exception too,
    ``uninstall()`` unless it was already installed on entering.

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv.compat.numpy_ml
    >>> with fastconv.compat.numpy_ml.installed():
    ...     from numpy_ml.neural_nets.layers import Pool2D
    ...     Pool2D((2, 2), stride=2).forward(np.ones((1, 4, 4, 3))).shape
    (1, 2, 2, 3)
    >>> fastconv.compat.numpy_ml.is_installed()
    False
    """
    return installation(_lock, install, uninstall, is_installed)
