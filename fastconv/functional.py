"""Convolution, pooling and relu on NumPy arrays, with torch.nn.functional's names and semantics.

Every function takes NCHW arrays of float32 or float64 in any memory layout (strided, Fortran
order, negative strides, read-only), returns new arrays of the input's dtype (never a view of an
input), releases the GIL while its C kernel runs and uses up to ``fastconv.get_num_threads()``
OpenMP threads. All float arguments of one call must share a dtype (TypeError otherwise). Bad
arguments raise TypeError or ValueError naming the function and the argument.

Each op has a ``*_backward`` that returns the gradient of a scalar loss with respect to the
inputs, given ``grad_output`` (the loss's gradient with respect to the op's output).
"""

from __future__ import annotations

import numpy as np

from . import _kernels
from . import _validation as v
from ._config import get_num_threads

__all__ = [
    "conv2d", "conv2d_backward", "conv2d_input", "conv2d_weight",
    "max_pool2d", "max_pool2d_backward",
    "avg_pool2d", "avg_pool2d_backward",
    "lp_pool2d", "lp_pool2d_backward",
    "relu", "relu_backward",
]


# ---- convolution ---------------------------------------------------------------------------------

def _conv_setup(op, input_shape, weight_shape, stride, padding, dilation, groups):
    return v.conv_geometry(op, input_shape, weight_shape, stride, padding, dilation, groups)


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride=1,
           padding=0, dilation=1, groups: int = 1) -> np.ndarray:
    """2-D convolution (cross-correlation, as in PyTorch) over an NCHW batch.

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64
    weight : (K, C // groups, kH, kW), same dtype
    bias : (K,) or None
    stride, dilation : int or (int, int), default 1
    padding : int, (int, int), 'valid' (= 0) or 'same' (stride 1 only; output size = input size,
        the extra row/column of an odd total padding goes bottom/right). Zero padding.
    groups : int, default 1. C and K must be divisible by it; groups == C is depthwise.

    Returns
    -------
    (N, K, OH, OW) array, ``OH = (H + pad_top + pad_bottom - dilation*(kH - 1) - 1)//stride + 1``.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.ones((1, 1, 4, 4), np.float32); w = np.ones((2, 1, 3, 3), np.float32)
    >>> F.conv2d(x, w, padding=1)[0, 0]
    array([[4., 6., 6., 4.],
           [6., 9., 9., 6.],
           [6., 9., 9., 6.],
           [4., 6., 6., 4.]], dtype=float32)
    """
    op = "conv2d"
    x = v.float_array(op, "x", x, 4, "(N, C, H, W)")
    weight = v.float_array(op, "weight", weight, 4, "(K, C/groups, kH, kW)")
    if bias is not None:
        bias = v.float_array(op, "bias", bias, 1, "(K,)")
    v.same_dtype(op, x=x, weight=weight, bias=bias)
    g = _conv_setup(op, x.shape, weight.shape, stride, padding, dilation, groups)
    if bias is not None and bias.shape != (g.out_channels,):
        v.fail(op, f"bias must have shape ({g.out_channels},) (weight's out_channels), "
                   f"got {bias.shape}")
    y = np.empty(g.output_shape, x.dtype)
    if y.size:
        _kernels.conv2d_forward(g.kernel_args(), v.contiguous(x), v.contiguous(weight),
                                None if bias is None else v.contiguous(bias), y,
                                get_num_threads())
    return y


def conv2d_input(input_shape, weight: np.ndarray, grad_output: np.ndarray, stride=1, padding=0,
                 dilation=1, groups: int = 1) -> np.ndarray:
    """Gradient of conv2d with respect to its input, of shape `input_shape` (N, C, H, W).

    `grad_output` is (N, K, OH, OW), the shape conv2d gives for these arguments; the other
    arguments are conv2d's. Same as ``torch.nn.grad.conv2d_input``.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> w = np.ones((1, 1, 2, 2)); gy = np.ones((1, 1, 2, 2))
    >>> F.conv2d_input((1, 1, 3, 3), w, gy)[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    """
    op = "conv2d_input"
    input_shape = v.shape4(op, "input_shape", input_shape, "(N, C, H, W)")
    weight = v.float_array(op, "weight", weight, 4, "(K, C/groups, kH, kW)")
    grad_output = v.float_array(op, "grad_output", grad_output, 4, "(N, K, OH, OW)")
    dtype = v.same_dtype(op, weight=weight, grad_output=grad_output)
    g = _conv_setup(op, input_shape, weight.shape, stride, padding, dilation, groups)
    v.check_grad_output(op, grad_output, g.output_shape)
    return _conv_grad_input(g, grad_output, weight, dtype)


def _conv_grad_input(g, grad_output, weight, dtype):
    v.check_elements("conv2d_input", "the input gradient", g.input_shape)
    gx = np.empty(g.input_shape, dtype)
    if gx.size:
        _kernels.conv2d_backward_input(g.kernel_args(), v.contiguous(grad_output),
                                       v.contiguous(weight), gx, get_num_threads())
    return gx


def conv2d_weight(x: np.ndarray, weight_shape, grad_output: np.ndarray, stride=1, padding=0,
                  dilation=1, groups: int = 1) -> np.ndarray:
    """Gradient of conv2d with respect to its weight, of shape `weight_shape` (K, C/groups, kH, kW).

    Same as ``torch.nn.grad.conv2d_weight``; the sum runs over the batch and output pixels.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3); gy = np.ones((1, 1, 2, 2))
    >>> F.conv2d_weight(x, (1, 1, 2, 2), gy)[0, 0]
    array([[ 8., 12.],
           [20., 24.]])
    """
    op = "conv2d_weight"
    x = v.float_array(op, "x", x, 4, "(N, C, H, W)")
    weight_shape = v.shape4(op, "weight_shape", weight_shape, "(K, C/groups, kH, kW)")
    grad_output = v.float_array(op, "grad_output", grad_output, 4, "(N, K, OH, OW)")
    dtype = v.same_dtype(op, x=x, grad_output=grad_output)
    g = _conv_setup(op, x.shape, weight_shape, stride, padding, dilation, groups)
    v.check_grad_output(op, grad_output, g.output_shape)
    return _conv_grad_weight(g, x, grad_output, dtype, want_bias=False)[0]


def _conv_grad_weight(g, x, grad_output, dtype, want_bias):
    v.check_elements("conv2d_weight", "the weight gradient", g.weight_shape)
    gw = np.empty(g.weight_shape, dtype)
    gb = np.empty((g.out_channels,), dtype) if want_bias else None
    if g.batch == 0:
        gw[...] = 0
        if gb is not None:
            gb[...] = 0
    else:
        _kernels.conv2d_backward_weight(g.kernel_args(), v.contiguous(grad_output),
                                        v.contiguous(x), gw, gb, get_num_threads())
    return gw, gb


def conv2d_backward(grad_output: np.ndarray, x: np.ndarray, weight: np.ndarray, stride=1,
                    padding=0, dilation=1, groups: int = 1):
    """Gradients of conv2d: ``(grad_input, grad_weight, grad_bias)``.

    Shapes: grad_input like x (N, C, H, W), grad_weight like weight, grad_bias (K,) (the sum of
    grad_output over N, OH, OW; returned whether or not the forward pass had a bias).

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.ones((2, 3, 5, 5)); w = np.ones((4, 3, 3, 3))
    >>> gy = np.ones_like(F.conv2d(x, w))
    >>> [a.shape for a in F.conv2d_backward(gy, x, w)]
    [(2, 3, 5, 5), (4, 3, 3, 3), (4,)]
    """
    op = "conv2d_backward"
    grad_output = v.float_array(op, "grad_output", grad_output, 4, "(N, K, OH, OW)")
    x = v.float_array(op, "x", x, 4, "(N, C, H, W)")
    weight = v.float_array(op, "weight", weight, 4, "(K, C/groups, kH, kW)")
    dtype = v.same_dtype(op, x=x, weight=weight, grad_output=grad_output)
    g = _conv_setup(op, x.shape, weight.shape, stride, padding, dilation, groups)
    v.check_grad_output(op, grad_output, g.output_shape)
    grad_output = v.contiguous(grad_output)
    gx = _conv_grad_input(g, grad_output, weight, dtype)
    gw, gb = _conv_grad_weight(g, x, grad_output, dtype, want_bias=True)
    return gx, gw, gb


# ---- pooling -------------------------------------------------------------------------------------

def _pool_input(op, x):
    return v.float_array(op, "x", x, 4, "(N, C, H, W)")


def _pool_grad_output(op, grad_output, x, g):
    grad_output = v.float_array(op, "grad_output", grad_output, 4, "(N, C, OH, OW)")
    v.same_dtype(op, x=x, grad_output=grad_output)
    v.check_grad_output(op, grad_output, g.output_shape)
    return v.contiguous(grad_output)


def max_pool2d(x: np.ndarray, kernel_size, stride=None, padding=0, dilation=1,
               ceil_mode: bool = False, return_indices: bool = False):
    """2-D max pooling over an NCHW batch, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64
    kernel_size : int or (int, int)
    stride : int or (int, int), default kernel_size
    padding : int or (int, int), default 0; implicit -inf, at most kernel_size // 2
    dilation : int or (int, int), default 1
    ceil_mode : round the output size up (a last window may start in the input or the left
        padding, never wholly in the right padding)
    return_indices : also return int64 flat indices ``h * W + w`` of each maximum in its plane

    Returns
    -------
    (N, C, OH, OW) array, or ``(out, indices)``. Ties keep the first maximum in row-major window
    order; NaN propagates. A dilated window lying wholly in the padding (possible with ceil_mode)
    gives -inf with index -1 and no gradient (PyTorch crashes there).

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> F.max_pool2d(x, 2)[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    op = "max_pool2d"
    x = _pool_input(op, x)
    g = v.pool_geometry(op, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    return_indices = v.boolean(op, "return_indices", return_indices)
    y = np.empty(g.output_shape, x.dtype)
    indices = np.empty(g.output_shape, np.int64) if return_indices else None
    if y.size:
        _kernels.maxpool2d_forward(g.kernel_args(), v.contiguous(x), y, indices, get_num_threads())
    return (y, indices) if return_indices else y


def max_pool2d_backward(grad_output: np.ndarray, x: np.ndarray, kernel_size, stride=None,
                        padding=0, dilation=1, ceil_mode: bool = False,
                        indices: np.ndarray | None = None) -> np.ndarray:
    """Gradient of max_pool2d with respect to x (shape of x).

    Each output's gradient goes to its maximum. Pass the `indices` that
    ``max_pool2d(..., return_indices=True)`` gave to skip recomputing them; they must have the
    output's shape and lie in [-1, H*W).

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> F.max_pool2d_backward(np.ones((1, 1, 2, 2)), x, 2)[0, 0]
    array([[0., 0., 0., 0.],
           [0., 1., 0., 1.],
           [0., 0., 0., 0.],
           [0., 1., 0., 1.]])
    """
    op = "max_pool2d_backward"
    x = _pool_input(op, x)
    g = v.pool_geometry(op, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    grad_output = _pool_grad_output(op, grad_output, x, g)
    if indices is not None:
        indices = v.max_pool_indices(op, indices, g.output_shape, g.in_h * g.in_w)
    gx = np.empty(x.shape, x.dtype)
    if gx.size == 0:
        return gx
    if indices is None:
        indices = np.empty(g.output_shape, np.int64)
        _kernels.maxpool2d_forward(g.kernel_args(), v.contiguous(x), np.empty_like(grad_output),
                                   indices, get_num_threads())
    _kernels.maxpool2d_backward(g.kernel_args(), grad_output, indices, gx, get_num_threads())
    return gx


def avg_pool2d(x: np.ndarray, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> np.ndarray:
    """2-D average pooling over an NCHW batch, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64
    kernel_size : int or (int, int); stride : default kernel_size
    padding : int or (int, int), zeros, at most kernel_size // 2
    ceil_mode : round the output size up
    count_include_pad : divide by the window size including padding (default) or by the number
        of input elements in the window. A ceil_mode window that runs past the right padding is
        divided by its size clipped to the padded input, as PyTorch does.
    divisor_override : a non-zero int to divide by instead

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> F.avg_pool2d(x, 2)[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    op = "avg_pool2d"
    x = _pool_input(op, x)
    g = v.pool_geometry(op, x.shape, kernel_size, stride, padding, 1, ceil_mode)
    div = v.divisor(op, divisor_override)
    include = v.boolean(op, "count_include_pad", count_include_pad)
    y = np.empty(g.output_shape, x.dtype)
    if y.size:
        _kernels.avgpool2d_forward(g.kernel_args(), include, div, v.contiguous(x),
                                   y, get_num_threads())
    return y


def avg_pool2d_backward(grad_output: np.ndarray, x: np.ndarray, kernel_size, stride=None,
                        padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
                        divisor_override: int | None = None) -> np.ndarray:
    """Gradient of avg_pool2d with respect to x (shape of x); arguments as avg_pool2d.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> F.avg_pool2d_backward(np.ones((1, 1, 1, 1)), np.zeros((1, 1, 2, 2)), 2)[0, 0]
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    op = "avg_pool2d_backward"
    x = _pool_input(op, x)
    g = v.pool_geometry(op, x.shape, kernel_size, stride, padding, 1, ceil_mode)
    div = v.divisor(op, divisor_override)
    include = v.boolean(op, "count_include_pad", count_include_pad)
    grad_output = _pool_grad_output(op, grad_output, x, g)
    gx = np.empty(x.shape, x.dtype)
    if gx.size:
        _kernels.avgpool2d_backward(g.kernel_args(), include, div, grad_output, gx,
                                    get_num_threads())
    return gx


def lp_pool2d(x: np.ndarray, norm_type: float, kernel_size, stride=None,
              ceil_mode: bool = False) -> np.ndarray:
    """2-D power-average (L^p) pooling, as ``torch.nn.functional.lp_pool2d``.

    ``out = (sum over the window of x**p * kH*kW / window_area) ** (1/p)``: the plain p-norm of
    each full window (L2 pooling is norm_type=2); a partial ceil_mode window is scaled up by
    kH*kW / its area, as PyTorch does. No padding. norm_type must be positive and finite.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.full((1, 1, 2, 2), 3.0)
    >>> F.lp_pool2d(x, 2, 2)[0, 0]
    array([[6.]])
    """
    op = "lp_pool2d"
    x = _pool_input(op, x)
    p = v.norm_type(op, norm_type)
    g = v.pool_geometry(op, x.shape, kernel_size, stride, 0, 1, ceil_mode)
    y = np.empty(g.output_shape, x.dtype)
    if y.size:
        _kernels.lppool2d_forward(g.kernel_args(), p, v.contiguous(x), y, get_num_threads())
    return y


def lp_pool2d_backward(grad_output: np.ndarray, x: np.ndarray, norm_type: float, kernel_size,
                       stride=None, ceil_mode: bool = False) -> np.ndarray:
    """Gradient of lp_pool2d with respect to x (shape of x); zero where a window's sum is zero.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.full((1, 1, 2, 2), 3.0)
    >>> F.lp_pool2d_backward(np.ones((1, 1, 1, 1)), x, 2, 2)[0, 0]
    array([[0.5, 0.5],
           [0.5, 0.5]])
    """
    op = "lp_pool2d_backward"
    x = _pool_input(op, x)
    p = v.norm_type(op, norm_type)
    g = v.pool_geometry(op, x.shape, kernel_size, stride, 0, 1, ceil_mode)
    grad_output = _pool_grad_output(op, grad_output, x, g)
    gx = np.empty(x.shape, x.dtype)
    if gx.size:
        _kernels.lppool2d_backward(g.kernel_args(), p, grad_output, v.contiguous(x), gx,
                                   get_num_threads())
    return gx


# ---- element-wise --------------------------------------------------------------------------------

def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0) element-wise, any shape; NaN stays NaN.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> F.relu(np.array([-1.0, 0.0, 2.0]))
    array([0., 0., 2.])
    """
    x = v.float_array("relu", "x", x)
    y = np.empty(x.shape, x.dtype)
    _kernels.relu_forward(v.contiguous(x), y, get_num_threads())
    return y


def relu_backward(grad_output: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Gradient of relu: grad_output where x > 0 (or x is NaN, as in PyTorch), else 0.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> F.relu_backward(np.ones(3), np.array([-1.0, 0.0, 2.0]))
    array([0., 0., 1.])
    """
    op = "relu_backward"
    grad_output = v.float_array(op, "grad_output", grad_output)
    x = v.float_array(op, "x", x)
    v.same_dtype(op, x=x, grad_output=grad_output)
    v.check_same_shape(op, "grad_output", grad_output, "x", x)
    gx = np.empty(x.shape, x.dtype)
    _kernels.relu_backward(v.contiguous(grad_output), v.contiguous(x), gx, get_num_threads())
    return gx
