"""Convolution, pooling and relu on NumPy arrays, with torch.nn.functional's names and semantics.

Every function takes NCHW arrays of float32 or float64 in any memory layout (strided, Fortran
order, negative strides, read-only), returns new arrays of the input's dtype (never a view of an
input), releases the GIL while its C kernel runs and uses up to ``fastconv.get_num_threads()``
OpenMP threads. Convolution and pooling also take channels-last arrays, ``data_format="NHWC"``
(fastconv's extension, TensorFlow's name; PyTorch has no such argument): (N, H, W, C) in,
(N, OH, OW, C) out, computed on that layout by kernels of its own, and convolution then takes
TensorFlow's (kH, kW, C/groups, K) weights too, ``weight_format="HWIO"``. All float arguments
of one call must share a dtype (TypeError otherwise). Bad
arguments raise TypeError or ValueError naming the function and the argument.

Each op has a ``*_backward`` that returns the gradient of a scalar loss with respect to the
inputs, given ``grad_output`` (the loss's gradient with respect to the op's output).

Each op on the C kernels first offers its arguments to its compiled fast path
(``_kernels.fast_<op>``, fastconv/_fastpath.pxi): the common case (C-contiguous native arrays of
one dtype, ints and tuples of them, the defaults) is checked and run there, which keeps a call on
a tiny input cheap; anything else returns None and takes the Python path below, which converts,
validates and raises as documented. The two give the same results, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from . import _kernels
from . import _validation as v
from . import init as _init
from ._config import get_num_threads

__all__ = [
    "conv2d", "conv2d_backward", "conv2d_input", "conv2d_weight", "same_padding",
    "conv2d_relu", "conv2d_relu_backward",
    "conv_transpose2d", "conv_transpose2d_backward",
    "max_pool2d", "max_pool2d_backward",
    "avg_pool2d", "avg_pool2d_backward",
    "lp_pool2d", "lp_pool2d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d", "adaptive_max_pool2d_backward",
    "relu", "relu_backward", "add_relu",
    "linear", "linear_backward",
    "tanh", "tanh_backward", "sigmoid", "sigmoid_backward",
    "dropout", "dropout_backward",
    "batch_norm", "batch_norm_backward",
    "cross_entropy", "cross_entropy_backward",
    "adam_update", "sgd_update",
]


# ---- convolution ---------------------------------------------------------------------------------

# the layouts of a convolution's and a pooling's output, by data_format
_CONV_OUTPUT = {"NCHW": "(N, K, OH, OW)", "NHWC": "(N, OH, OW, K)"}
_POOL_OUTPUT = {"NCHW": "(N, C, OH, OW)", "NHWC": "(N, OH, OW, C)"}


# The layouts the compiled fast path (_kernels.fast_*) takes: an op given others, or given them in
# another form (lower case, say), takes the Python path, which checks and converts them.
_DEFAULT_FORMATS = ("NCHW", "OIHW")


def _default_layout(data_format, weight_format="OIHW"):
    """Whether a call asks for NCHW activations and PyTorch's weights, spelt as the defaults."""
    return (type(data_format) is str and data_format == "NCHW"
            and type(weight_format) is str and weight_format == "OIHW")


def _conv_formats(op, data_format, weight_format):
    if _default_layout(data_format, weight_format):
        return _DEFAULT_FORMATS
    fmt = v.data_format(op, data_format)
    return fmt, v.weight_format(op, weight_format, fmt)


def _conv_setup(op, input_shape, weight_shape, stride, padding, dilation, groups,
                formats=_DEFAULT_FORMATS):
    return v.conv_geometry(op, input_shape, weight_shape, stride, padding, dilation, groups,
                           *formats)


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride=1,
           padding=0, dilation=1, groups: int = 1, *, data_format: str = "NCHW",
           weight_format: str = "OIHW") -> np.ndarray:
    """2-D convolution (cross-correlation, as in PyTorch) over an NCHW (or NHWC) batch.

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64; (N, H, W, C) with data_format='NHWC'
    weight : (K, C // groups, kH, kW), same dtype; (kH, kW, C // groups, K) with
        weight_format='HWIO'
    bias : (K,) or None
    stride, dilation : int or (int, int), default 1
    padding : int, (int, int), (top, bottom, left, right), 'valid' (= 0) or 'same' (stride 1
        only; output size = input size, the extra row/column of an odd total padding goes
        bottom/right; ``same_padding`` gives SAME at any stride). Zero padding, never copied.
    groups : int, default 1. C and K must be divisible by it; groups == C is depthwise.
    data_format : 'NCHW' (default, PyTorch's) or 'NHWC' (channels last, TensorFlow's name):
        the layout of x and of the result, keyword only. fastconv's extension: NHWC runs on
        kernels of its own, with no transposed copy of x (a C-contiguous NHWC array is read
        in place; a transposed view of an NCHW array is copied once, as any non-contiguous
        input is).
    weight_format : 'OIHW' (default, PyTorch's) or 'HWIO' (TensorFlow, Keras and numpy-ml's),
        keyword only; HWIO needs data_format='NHWC'.

    Returns
    -------
    (N, K, OH, OW) array ((N, OH, OW, K) for NHWC),
    ``OH = (H + pad_top + pad_bottom - dilation*(kH - 1) - 1)//stride + 1``.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.ones((1, 1, 4, 4), np.float32); w = np.ones((2, 1, 3, 3), np.float32)
    >>> F.conv2d(x, w, padding=1)[0, 0]
    array([[4., 6., 6., 4.],
           [6., 9., 9., 6.],
           [6., 9., 9., 6.],
           [4., 6., 6., 4.]], dtype=float32)
    >>> x_nhwc = np.ones((1, 4, 4, 1), np.float32); w_hwio = np.ones((3, 3, 1, 2), np.float32)
    >>> F.conv2d(x_nhwc, w_hwio, padding=1, data_format="NHWC", weight_format="HWIO")[0, :, :, 0]
    array([[4., 6., 6., 4.],
           [6., 9., 9., 6.],
           [6., 9., 9., 6.],
           [4., 6., 6., 4.]], dtype=float32)
    """
    return _conv2d("conv2d", x, weight, bias, stride, padding, dilation, groups, relu=False,
                   formats=_conv_formats("conv2d", data_format, weight_format))


def _conv2d(op, x, weight, bias, stride, padding, dilation, groups, relu, formats=_DEFAULT_FORMATS):
    if formats is _DEFAULT_FORMATS:
        y = _kernels.fast_conv2d(x, weight, bias, stride, padding, dilation, groups, relu)
        if y is not None:
            return y
    x = v.float_array(op, "x", x, 4, v.LAYOUTS[formats[0]])
    weight = v.float_array(op, "weight", weight, 4, v.LAYOUTS[formats[1]])
    if bias is not None:
        bias = v.float_array(op, "bias", bias, 1, "(K,)")
    v.same_dtype(op, x=x, weight=weight, bias=bias)
    g = _conv_setup(op, x.shape, weight.shape, stride, padding, dilation, groups, formats)
    if bias is not None and bias.shape != (g.out_channels,):
        v.fail(op, f"bias must have shape ({g.out_channels},) (weight's out_channels), "
                   f"got {bias.shape}")
    y = _kernels.empty(g.output_shape, x.dtype)
    if y.size:
        _kernels.conv2d_forward(g, v.contiguous(x), v.contiguous(weight),
                                None if bias is None else v.contiguous(bias), y,
                                get_num_threads(), relu)
    return y


def conv2d_relu(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride=1,
                padding=0, dilation=1, groups: int = 1) -> np.ndarray:
    """``relu(conv2d(x, weight, bias, ...))`` in one pass: the convolution adds the bias and
    applies ReLU as it writes each output (a fused epilogue), so the output is written once and
    never read back. Bit for bit what the two ops give; arguments and shapes as ``conv2d``.
    Its gradients are ``conv2d_relu_backward``.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.array([[[[1.0, -2.0], [3.0, -4.0]]]]); w = np.ones((2, 1, 1, 1)); w[1] = -1
    >>> F.conv2d_relu(x, w)[0]
    array([[[1., 0.],
            [3., 0.]],
    <BLANKLINE>
           [[0., 2.],
            [0., 4.]]])
    """
    return _conv2d("conv2d_relu", x, weight, bias, stride, padding, dilation, groups, relu=True)


def conv2d_relu_backward(grad_output: np.ndarray, x: np.ndarray, weight: np.ndarray,
                         output: np.ndarray, stride=1, padding=0, dilation=1, groups: int = 1, *,
                         input_grad: bool = True):
    """Gradients of ``conv2d_relu``: ``(grad_input, grad_weight, grad_bias)``, given its
    ``output``. With ``input_grad=False`` (keyword only) grad_input is None and is not computed
    (a network's first layer: nothing needs the gradient of the images).

    ReLU's gradient is taken from the output (grad_output passes where output > 0 or is NaN,
    exactly where the pre-activation is, as ``relu_backward`` on it), in the same pass over
    grad_output that sums the bias gradient; the input and weight gradients then run on the
    masked gradient. Equal to ``conv2d_backward(relu_backward(grad_output, z), x, weight, ...)``
    with z the convolution before ReLU. Shapes as ``conv2d_backward``; ``output`` has
    grad_output's.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.array([[[[1.0, -2.0]]]]); w = np.ones((1, 1, 1, 1))
    >>> y = F.conv2d_relu(x, w)
    >>> gx, gw, gb = F.conv2d_relu_backward(np.ones_like(y), x, w, y)
    >>> gx[0, 0], gw.ravel(), gb
    (array([[1., 0.]]), array([1.]), array([1.]))
    """
    op = "conv2d_relu_backward"
    input_grad = v.boolean(op, "input_grad", input_grad)
    grad_output = v.float_array(op, "grad_output", grad_output, 4, "(N, K, OH, OW)")
    x = v.float_array(op, "x", x, 4, "(N, C, H, W)")
    weight = v.float_array(op, "weight", weight, 4, "(K, C/groups, kH, kW)")
    output = v.float_array(op, "output", output, 4, "(N, K, OH, OW)")
    dtype = v.same_dtype(op, x=x, weight=weight, grad_output=grad_output, output=output)
    g = _conv_setup(op, x.shape, weight.shape, stride, padding, dilation, groups)
    v.check_grad_output(op, grad_output, g.output_shape)
    v.check_same_shape(op, "output", output, "grad_output", grad_output)
    grad_z = _kernels.empty(g.output_shape, dtype)
    gb = np.empty((g.out_channels,), dtype)
    _kernels.conv2d_relu_backward(g, v.contiguous(grad_output), v.contiguous(output), grad_z,
                                  gb, get_num_threads())
    gx = _conv_grad_input(g, grad_z, weight, dtype) if input_grad else None
    gw, _ = _conv_grad_weight(g, x, grad_z, dtype, want_bias=False)
    return gx, gw, gb


def conv2d_input(input_shape, weight: np.ndarray, grad_output: np.ndarray, stride=1, padding=0,
                 dilation=1, groups: int = 1, *, data_format: str = "NCHW",
                 weight_format: str = "OIHW") -> np.ndarray:
    """Gradient of conv2d with respect to its input, of shape `input_shape` (N, C, H, W), or
    (N, H, W, C) with data_format='NHWC'.

    `grad_output` is (N, K, OH, OW) ((N, OH, OW, K) for NHWC), the shape conv2d gives for these
    arguments; the other arguments are conv2d's. Same as ``torch.nn.grad.conv2d_input``.

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
    formats = _conv_formats(op, data_format, weight_format)
    input_shape = v.shape4(op, "input_shape", input_shape, v.LAYOUTS[formats[0]])
    weight = v.float_array(op, "weight", weight, 4, v.LAYOUTS[formats[1]])
    grad_output = v.float_array(op, "grad_output", grad_output, 4, _CONV_OUTPUT[formats[0]])
    dtype = v.same_dtype(op, weight=weight, grad_output=grad_output)
    g = _conv_setup(op, input_shape, weight.shape, stride, padding, dilation, groups, formats)
    v.check_grad_output(op, grad_output, g.output_shape)
    return _conv_grad_input(g, grad_output, weight, dtype)


def _conv_grad_input(g, grad_output, weight, dtype):
    v.check_elements("conv2d_input", "the input gradient", g.input_shape)
    gx = _kernels.empty(g.input_shape, dtype)
    if gx.size:
        _kernels.conv2d_backward_input(g, v.contiguous(grad_output), v.contiguous(weight), None,
                                       gx, get_num_threads())
    return gx


def conv2d_weight(x: np.ndarray, weight_shape, grad_output: np.ndarray, stride=1, padding=0,
                  dilation=1, groups: int = 1, *, data_format: str = "NCHW",
                  weight_format: str = "OIHW") -> np.ndarray:
    """Gradient of conv2d with respect to its weight, of shape `weight_shape` (K, C/groups, kH, kW),
    or (kH, kW, C/groups, K) with weight_format='HWIO'.

    Same as ``torch.nn.grad.conv2d_weight``; the sum runs over the batch and output pixels.
    x and grad_output in data_format, as conv2d.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3); gy = np.ones((1, 1, 2, 2))
    >>> F.conv2d_weight(x, (1, 1, 2, 2), gy)[0, 0]
    array([[ 8., 12.],
           [20., 24.]])
    """
    op = "conv2d_weight"
    formats = _conv_formats(op, data_format, weight_format)
    x = v.float_array(op, "x", x, 4, v.LAYOUTS[formats[0]])
    weight_shape = v.shape4(op, "weight_shape", weight_shape, v.LAYOUTS[formats[1]])
    grad_output = v.float_array(op, "grad_output", grad_output, 4, _CONV_OUTPUT[formats[0]])
    dtype = v.same_dtype(op, x=x, grad_output=grad_output)
    g = _conv_setup(op, x.shape, weight_shape, stride, padding, dilation, groups, formats)
    v.check_grad_output(op, grad_output, g.output_shape)
    return _conv_grad_weight(g, x, grad_output, dtype, want_bias=False)[0]


def _conv_grad_weight(g, x, grad_output, dtype, want_bias):
    v.check_elements("conv2d_weight", "the weight gradient", g.weight_shape)
    gw = _kernels.empty(g.weight_shape, dtype)
    gb = np.empty((g.out_channels,), dtype) if want_bias else None
    if g.batch == 0:
        gw[...] = 0
        if gb is not None:
            gb[...] = 0
    else:
        _kernels.conv2d_backward_weight(g, v.contiguous(grad_output),
                                        v.contiguous(x), gw, gb, get_num_threads())
    return gw, gb


def conv2d_backward(grad_output: np.ndarray, x: np.ndarray, weight: np.ndarray, stride=1,
                    padding=0, dilation=1, groups: int = 1, *, data_format: str = "NCHW",
                    weight_format: str = "OIHW", input_grad: bool = True):
    """Gradients of conv2d: ``(grad_input, grad_weight, grad_bias)``.

    Shapes: grad_input like x (N, C, H, W), grad_weight like weight, grad_bias (K,) (the sum of
    grad_output over N, OH, OW; returned whether or not the forward pass had a bias). With
    data_format='NHWC', x, grad_output and grad_input are channels last, and with
    weight_format='HWIO' weight and grad_weight are (kH, kW, C/groups, K), as in conv2d. With
    ``input_grad=False`` grad_input is None and is not computed (a network's first layer).

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.ones((2, 3, 5, 5)); w = np.ones((4, 3, 3, 3))
    >>> gy = np.ones_like(F.conv2d(x, w))
    >>> [a.shape for a in F.conv2d_backward(gy, x, w)]
    [(2, 3, 5, 5), (4, 3, 3, 3), (4,)]
    """
    if input_grad is True and _default_layout(data_format, weight_format):
        grads = _kernels.fast_conv2d_backward(grad_output, x, weight, stride, padding, dilation,
                                              groups)
        if grads is not None:
            return grads
    op = "conv2d_backward"
    input_grad = v.boolean(op, "input_grad", input_grad)
    formats = _conv_formats(op, data_format, weight_format)
    grad_output = v.float_array(op, "grad_output", grad_output, 4, _CONV_OUTPUT[formats[0]])
    x = v.float_array(op, "x", x, 4, v.LAYOUTS[formats[0]])
    weight = v.float_array(op, "weight", weight, 4, v.LAYOUTS[formats[1]])
    dtype = v.same_dtype(op, x=x, weight=weight, grad_output=grad_output)
    g = _conv_setup(op, x.shape, weight.shape, stride, padding, dilation, groups, formats)
    v.check_grad_output(op, grad_output, g.output_shape)
    grad_output = v.contiguous(grad_output)
    gx = _conv_grad_input(g, grad_output, weight, dtype) if input_grad else None
    gw, gb = _conv_grad_weight(g, x, grad_output, dtype, want_bias=True)
    return gx, gw, gb


def same_padding(input_size, kernel_size, stride=1, dilation=1,
                 mode: str = "upper") -> tuple[int, int, int, int]:
    """SAME padding at any stride and dilation, as ``(top, bottom, left, right)`` for the
    ``padding`` argument of conv2d and the pools.

    The output size is ``ceil(input / stride)``; the total padding of a dimension is
    ``max(0, (out - 1) * stride + dilation * (kernel - 1) + 1 - input)``, TensorFlow's formula.
    An odd total puts the extra row/column at the end (``mode="upper"``: TensorFlow, ONNX
    SAME_UPPER) or at the start (``mode="lower"``: ONNX SAME_LOWER). At stride 1 it is
    PyTorch's ``padding='same'`` and numpy-ml's ``'same'``; above stride 1 numpy-ml's keeps the
    output the input's size (``fastconv.compat.numpy_ml`` computes it).

    Parameters
    ----------
    input_size : int or (int, int), the input's (H, W)
    kernel_size, stride, dilation : int or (int, int)
    mode : "upper" (default) or "lower"

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> F.same_padding((7, 8), 3, stride=2)
    (1, 1, 0, 1)
    >>> F.same_padding(8, 2, stride=1, mode="lower")
    (1, 0, 1, 0)
    >>> x = np.ones((1, 1, 7, 8)); w = np.ones((1, 1, 3, 3))
    >>> F.conv2d(x, w, stride=2, padding=F.same_padding(x.shape[2:], 3, stride=2)).shape
    (1, 1, 4, 4)
    """
    op = "same_padding"
    size = v.pair(op, "input_size", input_size, 1, "a positive")
    kernel = v.pair(op, "kernel_size", kernel_size, 1, "a positive")
    stride = v.pair(op, "stride", stride, 1, "a positive")
    dilation = v.pair(op, "dilation", dilation, 1, "a positive")
    if mode not in ("upper", "lower"):
        v.fail(op, f"mode must be 'upper' or 'lower', got {mode!r}")
    return tuple(p for n, k, s, d in zip(size, kernel, stride, dilation)
                 for p in v.same_pads(n, k, s, d, upper=mode == "upper"))


# A transposed convolution is the input gradient of the conv2d that v.conv_transpose_geometry
# describes, so its passes run on the conv2d kernels: forward on that conv2d's input-gradient
# pass, grad_input on its forward pass, grad_weight on its weight-gradient pass with the roles
# of input and output swapped.

def _conv_transpose_arrays(op, x, weight):
    x = v.float_array(op, "x", x, 4, "(N, C_in, H, W)")
    weight = v.float_array(op, "weight", weight, 4, "(C_in, C_out/groups, kH, kW)")
    return x, weight


def conv_transpose2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride=1,
                     padding=0, output_padding=0, groups: int = 1, dilation=1) -> np.ndarray:
    """2-D transposed convolution over an NCHW batch, as ``torch.nn.functional.conv_transpose2d``
    (the gradient of conv2d with respect to its input; sometimes called deconvolution).

    Each input pixel (h, w) spreads ``x[n, c, h, w] * weight[c, k]`` over the output window at
    ``(h*stride - padding, w*stride - padding)``, its taps ``dilation`` apart.

    Parameters
    ----------
    x : (N, C_in, H, W) float32 or float64
    weight : (C_in, C_out // groups, kH, kW), same dtype (PyTorch's layout: input channels first)
    bias : (C_out,) or None
    stride, dilation : int or (int, int), default 1
    padding : int, (int, int) or (top, bottom, left, right) (ONNX ConvTranspose's pads), default
        0: rows and columns cropped off the sides of the uncropped output (seen as a
        convolution, ``dilation*(k - 1) - padding`` of zero padding around x); no 'same'/'valid'
        (PyTorch takes neither)
    output_padding : int or (int, int), default 0: extra rows and columns at the bottom and
        right, each smaller than stride or dilation (they choose among the input sizes a
        strided conv2d maps to H, W)
    groups : int, default 1; C_in and C_out split into groups; groups == C_in is depthwise.

    Returns
    -------
    (N, C_out, OH, OW) array,
    ``OH = (H - 1)*stride - pad_top - pad_bottom + dilation*(kH - 1) + output_padding + 1``.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]]); w = np.ones((1, 1, 2, 2))
    >>> F.conv_transpose2d(x, w, stride=2)[0, 0]
    array([[1., 1., 2., 2.],
           [1., 1., 2., 2.],
           [3., 3., 4., 4.],
           [3., 3., 4., 4.]])
    >>> F.conv_transpose2d(np.ones((1, 8, 14, 14)), np.ones((8, 4, 3, 3)), stride=2, padding=1,
    ...                    output_padding=1).shape
    (1, 4, 28, 28)
    """
    y = _kernels.fast_conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups,
                                       dilation)
    if y is not None:
        return y
    op = "conv_transpose2d"
    x, weight = _conv_transpose_arrays(op, x, weight)
    if bias is not None:
        bias = v.float_array(op, "bias", bias, 1, "(C_out,)")
    v.same_dtype(op, x=x, weight=weight, bias=bias)
    g = v.conv_transpose_geometry(op, x.shape, weight.shape, stride, padding, output_padding,
                                  groups, dilation)
    if bias is not None and bias.shape != (g.in_channels,):
        v.fail(op, f"bias must have shape ({g.in_channels},) (weight's C_out/groups times "
                   f"groups), got {bias.shape}")
    y = _kernels.empty(g.input_shape, x.dtype)
    if y.size:
        _kernels.conv2d_backward_input(g, v.contiguous(x), v.contiguous(weight),
                                       None if bias is None else v.contiguous(bias), y,
                                       get_num_threads())
    return y


def conv_transpose2d_backward(grad_output: np.ndarray, x: np.ndarray, weight: np.ndarray,
                              stride=1, padding=0, output_padding=0, groups: int = 1,
                              dilation=1):
    """Gradients of conv_transpose2d: ``(grad_input, grad_weight, grad_bias)``.

    Arguments as conv_transpose2d's; grad_output has its output's shape (N, C_out, OH, OW).
    Shapes: grad_input like x, grad_weight like weight, grad_bias (C_out,) (the sum of
    grad_output over N, OH, OW; returned whether or not the forward pass had a bias).
    grad_input is the conv2d of grad_output with the same weight, stride, padding, dilation
    and groups.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.ones((2, 4, 5, 5)); w = np.ones((4, 3, 3, 3))
    >>> gy = np.ones_like(F.conv_transpose2d(x, w, stride=2, output_padding=1))
    >>> [a.shape for a in F.conv_transpose2d_backward(gy, x, w, stride=2, output_padding=1)]
    [(2, 4, 5, 5), (4, 3, 3, 3), (3,)]
    """
    grads = _kernels.fast_conv_transpose2d_backward(grad_output, x, weight, stride, padding,
                                                    output_padding, groups, dilation)
    if grads is not None:
        return (*grads, _transposed_bias_gradient(grad_output))
    op = "conv_transpose2d_backward"
    grad_output = v.float_array(op, "grad_output", grad_output, 4, "(N, C_out, OH, OW)")
    x, weight = _conv_transpose_arrays(op, x, weight)
    dtype = v.same_dtype(op, x=x, weight=weight, grad_output=grad_output)
    g = v.conv_transpose_geometry(op, x.shape, weight.shape, stride, padding, output_padding,
                                  groups, dilation)
    v.check_grad_output(op, grad_output, g.input_shape)
    grad_output, x, weight = v.contiguous(grad_output), v.contiguous(x), v.contiguous(weight)
    nthreads = get_num_threads()
    gx = _kernels.empty(x.shape, dtype)
    gw = _kernels.empty(weight.shape, dtype)
    if g.batch == 0:
        gw[...] = 0
    else:
        _kernels.conv2d_forward(g, grad_output, weight, None, gx, nthreads)
        _kernels.conv2d_backward_weight(g, x, grad_output, gw, None, nthreads)
    return gx, gw, _transposed_bias_gradient(grad_output)


def _transposed_bias_gradient(grad_output):
    """conv_transpose2d's grad_bias: grad_output summed over N, H and W."""
    n, c, h, w = grad_output.shape
    # pairwise sums along each plane; Inf and NaN in grad_output give Inf and NaN, no warnings
    with np.errstate(invalid="ignore", over="ignore"):
        return grad_output.reshape(n, c, h * w).sum(axis=2).sum(axis=0)


# ---- pooling -------------------------------------------------------------------------------------

def _pool_input(op, x, data_format="NCHW"):
    """x checked, and its data_format; the adaptive pools take NCHW only."""
    fmt = v.data_format(op, data_format)
    return v.float_array(op, "x", x, 4, v.LAYOUTS[fmt]), fmt


def _pool_grad_output(op, grad_output, x, g):
    grad_output = v.float_array(op, "grad_output", grad_output, 4, _POOL_OUTPUT[g.data_format])
    v.same_dtype(op, x=x, grad_output=grad_output)
    v.check_grad_output(op, grad_output, g.output_shape)
    return v.contiguous(grad_output)


def max_pool2d(x: np.ndarray, kernel_size, stride=None, padding=0, dilation=1,
               ceil_mode: bool = False, return_indices: bool = False, *,
               data_format: str = "NCHW"):
    """2-D max pooling over an NCHW (or NHWC) batch, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64; (N, H, W, C) with data_format='NHWC'
    kernel_size : int or (int, int)
    stride : int or (int, int), default kernel_size
    padding : int or (int, int) (at most kernel_size // 2, as PyTorch), (top, bottom, left,
        right) (any size, as ONNX's pads), 'valid' or 'same' (stride 1; fastconv's extension, as
        conv2d's); default 0; implicit -inf
    dilation : int or (int, int), default 1
    ceil_mode : round the output size up (a last window may start in the input or the top/left
        padding, never in the bottom/right padding)
    return_indices : also return int64 flat indices ``h * W + w`` of each maximum in its plane
        (the (n, c) plane in either layout, so NCHW and NHWC give the same numbers)
    data_format : 'NCHW' (default) or 'NHWC' (channels last; keyword only, fastconv's
        extension, as conv2d's)

    Returns
    -------
    (N, C, OH, OW) array ((N, OH, OW, C) for NHWC; indices alike), or ``(out, indices)``.
    Ties keep the first maximum in row-major window
    order; NaN propagates. A window lying wholly in the padding (a dilated one with ceil_mode, or
    a 4-tuple padding of at least the kernel) gives -inf with index -1 and no gradient (PyTorch
    crashes there).

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> F.max_pool2d(x, 2)[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    if _default_layout(data_format):
        out = _kernels.fast_max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode,
                                       return_indices)
        if out is not None:
            return out
    op = "max_pool2d"
    x, fmt = _pool_input(op, x, data_format)
    g = v.pool_geometry(op, x.shape, kernel_size, stride, padding, dilation, ceil_mode, fmt)
    return_indices = v.boolean(op, "return_indices", return_indices)
    y = _kernels.empty(g.output_shape, x.dtype)
    indices = _kernels.empty(g.output_shape, np.int64) if return_indices else None
    if y.size:
        _kernels.maxpool2d_forward(g, v.contiguous(x), y, indices, get_num_threads())
    return (y, indices) if return_indices else y


def max_pool2d_backward(grad_output: np.ndarray, x: np.ndarray, kernel_size, stride=None,
                        padding=0, dilation=1, ceil_mode: bool = False,
                        indices: np.ndarray | None = None, *,
                        data_format: str = "NCHW") -> np.ndarray:
    """Gradient of max_pool2d with respect to x (shape of x; arguments as max_pool2d's).

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
    if _default_layout(data_format):
        gx = _kernels.fast_max_pool2d_backward(grad_output, x, kernel_size, stride, padding,
                                               dilation, ceil_mode, indices)
        if gx is not None:
            return gx
    op = "max_pool2d_backward"
    x, fmt = _pool_input(op, x, data_format)
    g = v.pool_geometry(op, x.shape, kernel_size, stride, padding, dilation, ceil_mode, fmt)
    grad_output = _pool_grad_output(op, grad_output, x, g)
    return _scatter_to_maxima(op, g, grad_output, x, indices, "maxpool2d")


def _scatter_to_maxima(op, g, grad_output, x, indices, kernels):
    """A max pooling's input gradient: grad_output added at the maxima's indices, which the
    forward kernel of `kernels` ('maxpool2d' or 'adaptive_maxpool2d', for the geometry g)
    computes when they are None."""
    if indices is not None:
        indices = v.max_pool_indices(op, indices, g.output_shape, g.in_h * g.in_w)
    gx = _kernels.empty(x.shape, x.dtype)
    if gx.size == 0 or grad_output.size == 0:  # an empty output passes no gradient
        gx[...] = 0
        return gx
    if indices is None:
        indices = _kernels.empty(g.output_shape, np.int64)
        getattr(_kernels, f"{kernels}_forward")(g, v.contiguous(x),
                                                _kernels.empty(g.output_shape, x.dtype), indices,
                                                get_num_threads())
    if not getattr(_kernels, f"{kernels}_backward")(g, grad_output, indices, gx,
                                                    get_num_threads()):
        v.max_pool_indices_out_of_range(op, indices, g.in_h * g.in_w)
    return gx


def avg_pool2d(x: np.ndarray, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None, *,
               data_format: str = "NCHW") -> np.ndarray:
    """2-D average pooling over an NCHW (or NHWC) batch, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64; (N, H, W, C) with data_format='NHWC'
    kernel_size : int or (int, int); stride : default kernel_size
    padding : zeros; int or (int, int) (at most kernel_size // 2, as PyTorch), (top, bottom,
        left, right) (any size, as ONNX's pads), 'valid' or 'same' (stride 1; an extension)
    ceil_mode : round the output size up
    count_include_pad : divide by the window size including padding (default) or by the number
        of input elements in the window. A ceil_mode window that runs past the bottom/right
        padding is divided by its size clipped to the padded input, as PyTorch does. A window
        wholly in the padding gives 0 either way (no division by zero) and no gradient.
    divisor_override : a non-zero int to divide by instead
    data_format : 'NCHW' (default) or 'NHWC' (keyword only, as max_pool2d's); the output is
        (N, C, OH, OW) or (N, OH, OW, C)

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> F.avg_pool2d(x, 2)[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    if _default_layout(data_format):
        y = _kernels.fast_avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                     divisor_override)
        if y is not None:
            return y
    op = "avg_pool2d"
    x, fmt = _pool_input(op, x, data_format)
    g = v.pool_geometry(op, x.shape, kernel_size, stride, padding, 1, ceil_mode, fmt)
    div = v.divisor(op, divisor_override)
    include = v.boolean(op, "count_include_pad", count_include_pad)
    y = _kernels.empty(g.output_shape, x.dtype)
    if y.size:
        _kernels.avgpool2d_forward(g, v.contiguous(x), y, get_num_threads(),
                                   count_include_pad=include, divisor_override=div)
    return y


def avg_pool2d_backward(grad_output: np.ndarray, x: np.ndarray, kernel_size, stride=None,
                        padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
                        divisor_override: int | None = None, *,
                        data_format: str = "NCHW") -> np.ndarray:
    """Gradient of avg_pool2d with respect to x (shape of x); arguments as avg_pool2d.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> F.avg_pool2d_backward(np.ones((1, 1, 1, 1)), np.zeros((1, 1, 2, 2)), 2)[0, 0]
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    if _default_layout(data_format):
        gx = _kernels.fast_avg_pool2d_backward(grad_output, x, kernel_size, stride, padding,
                                               ceil_mode, count_include_pad, divisor_override)
        if gx is not None:
            return gx
    op = "avg_pool2d_backward"
    x, fmt = _pool_input(op, x, data_format)
    g = v.pool_geometry(op, x.shape, kernel_size, stride, padding, 1, ceil_mode, fmt)
    div = v.divisor(op, divisor_override)
    include = v.boolean(op, "count_include_pad", count_include_pad)
    grad_output = _pool_grad_output(op, grad_output, x, g)
    gx = _kernels.empty(x.shape, x.dtype)
    if gx.size:
        _kernels.avgpool2d_backward(g, grad_output, gx, get_num_threads(),
                                    count_include_pad=include, divisor_override=div)
    return gx


def lp_pool2d(x: np.ndarray, norm_type: float, kernel_size, stride=None,
              ceil_mode: bool = False, *, padding=0, data_format: str = "NCHW") -> np.ndarray:
    """2-D power-average (L^p) pooling, as ``torch.nn.functional.lp_pool2d``.

    ``out = (sum over the window of x**p * kH*kW / window_area) ** (1/p)``: the plain p-norm of
    each full window (L2 pooling is norm_type=2); a partial ceil_mode window is scaled up by
    kH*kW / its area, as PyTorch does. norm_type must be positive and finite.

    ``padding`` (keyword only; avg_pool2d's forms) is fastconv's extension, PyTorch has none:
    zeros, counted in a window's area as avg_pool2d's count_include_pad counts them, so a full
    window is the p-norm of its elements and zeros and a window wholly in the padding gives 0.
    ``data_format`` (keyword only): 'NCHW' (default) or 'NHWC', as max_pool2d's.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.full((1, 1, 2, 2), 3.0)
    >>> F.lp_pool2d(x, 2, 2)[0, 0]
    array([[6.]])
    >>> F.lp_pool2d(x, 1, 2, 1, padding=(1, 0, 0, 0))[0, 0]
    array([[ 6.],
           [12.]])
    """
    if _default_layout(data_format):
        y = _kernels.fast_lp_pool2d(x, norm_type, kernel_size, stride, ceil_mode, padding)
        if y is not None:
            return y
    op = "lp_pool2d"
    x, fmt = _pool_input(op, x, data_format)
    p = v.norm_type(op, norm_type)
    g = v.pool_geometry(op, x.shape, kernel_size, stride, padding, 1, ceil_mode, fmt)
    y = _kernels.empty(g.output_shape, x.dtype)
    if y.size:
        _kernels.lppool2d_forward(g, v.contiguous(x), y, get_num_threads(), norm=p)
    return y


def lp_pool2d_backward(grad_output: np.ndarray, x: np.ndarray, norm_type: float, kernel_size,
                       stride=None, ceil_mode: bool = False, *, padding=0,
                       data_format: str = "NCHW") -> np.ndarray:
    """Gradient of lp_pool2d with respect to x (shape of x); zero where a window's sum is zero.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.full((1, 1, 2, 2), 3.0)
    >>> F.lp_pool2d_backward(np.ones((1, 1, 1, 1)), x, 2, 2)[0, 0]
    array([[0.5, 0.5],
           [0.5, 0.5]])
    """
    if _default_layout(data_format):
        gx = _kernels.fast_lp_pool2d_backward(grad_output, x, norm_type, kernel_size, stride,
                                              ceil_mode, padding)
        if gx is not None:
            return gx
    op = "lp_pool2d_backward"
    x, fmt = _pool_input(op, x, data_format)
    p = v.norm_type(op, norm_type)
    g = v.pool_geometry(op, x.shape, kernel_size, stride, padding, 1, ceil_mode, fmt)
    grad_output = _pool_grad_output(op, grad_output, x, g)
    gx = _kernels.empty(x.shape, x.dtype)
    if gx.size:
        _kernels.lppool2d_backward(g, grad_output, v.contiguous(x), gx, get_num_threads(),
                                   norm=p)
    return gx


# ---- adaptive and global pooling -----------------------------------------------------------------

def adaptive_avg_pool2d(x: np.ndarray, output_size) -> np.ndarray:
    """2-D adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Output (oh, ow) averages the input rows ``[floor(oh*H/OH), ceil((oh+1)*H/OH))`` and the
    columns likewise: windows of varying size that may overlap (or repeat, for an output larger
    than the input). ``output_size=1`` is global average pooling (ONNX's GlobalAveragePool).

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64
    output_size : int or (int, int), each >= 0; None in a pair keeps that input size

    Returns
    -------
    (N, C, OH, OW) array.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.arange(15.0).reshape(1, 1, 3, 5)
    >>> F.adaptive_avg_pool2d(x, (1, 2))[0, 0]
    array([[6., 8.]])
    """
    y = _kernels.fast_adaptive_avg_pool2d(x, output_size)
    if y is not None:
        return y
    op = "adaptive_avg_pool2d"
    x, _ = _pool_input(op, x)
    g = v.adaptive_geometry(op, x.shape, output_size)
    y = _kernels.empty(g.output_shape, x.dtype)
    if y.size:
        _kernels.adaptive_avgpool2d_forward(g, v.contiguous(x), y, get_num_threads())
    return y


def adaptive_avg_pool2d_backward(grad_output: np.ndarray, x: np.ndarray,
                                 output_size) -> np.ndarray:
    """Gradient of adaptive_avg_pool2d with respect to x (shape of x): each output's gradient
    divided by its window's height and width, spread over the window.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> F.adaptive_avg_pool2d_backward(np.ones((1, 1, 1, 1)), np.zeros((1, 1, 2, 2)), 1)[0, 0]
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    gx = _kernels.fast_adaptive_avg_pool2d_backward(grad_output, x, output_size)
    if gx is not None:
        return gx
    op = "adaptive_avg_pool2d_backward"
    x, _ = _pool_input(op, x)
    g = v.adaptive_geometry(op, x.shape, output_size)
    grad_output = _pool_grad_output(op, grad_output, x, g)
    gx = _kernels.empty(x.shape, x.dtype)
    if gx.size and grad_output.size:
        _kernels.adaptive_avgpool2d_backward(g, grad_output, gx, get_num_threads())
    else:
        gx[...] = 0
    return gx


def adaptive_max_pool2d(x: np.ndarray, output_size, return_indices: bool = False):
    """2-D adaptive max pooling, as ``torch.nn.functional.adaptive_max_pool2d``.

    Windows as adaptive_avg_pool2d's; each is scanned in row-major order: ties keep the first
    maximum, NaN propagates (the last NaN's index). ``output_size=1`` is global max pooling
    (ONNX's GlobalMaxPool).

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64
    output_size : int or (int, int), each >= 0; None in a pair keeps that input size
    return_indices : also return int64 flat indices ``h * W + w`` of each maximum in its plane

    Returns
    -------
    (N, C, OH, OW) array, or ``(out, indices)``.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.arange(15.0).reshape(1, 1, 3, 5)
    >>> y, idx = F.adaptive_max_pool2d(x, (1, 2), return_indices=True)
    >>> y[0, 0], idx[0, 0]
    (array([[12., 14.]]), array([[12, 14]]))
    """
    out = _kernels.fast_adaptive_max_pool2d(x, output_size, return_indices)
    if out is not None:
        return out
    op = "adaptive_max_pool2d"
    x, _ = _pool_input(op, x)
    g = v.adaptive_geometry(op, x.shape, output_size)
    return_indices = v.boolean(op, "return_indices", return_indices)
    y = _kernels.empty(g.output_shape, x.dtype)
    indices = _kernels.empty(g.output_shape, np.int64) if return_indices else None
    if y.size:
        _kernels.adaptive_maxpool2d_forward(g, v.contiguous(x), y, indices, get_num_threads())
    return (y, indices) if return_indices else y


def adaptive_max_pool2d_backward(grad_output: np.ndarray, x: np.ndarray, output_size,
                                 indices: np.ndarray | None = None) -> np.ndarray:
    """Gradient of adaptive_max_pool2d with respect to x (shape of x): each output's gradient
    goes to its maximum. Pass the `indices` that ``adaptive_max_pool2d(...,
    return_indices=True)`` gave to skip recomputing them (output's shape, in [0, H*W)).

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.arange(4.0).reshape(1, 1, 2, 2)
    >>> F.adaptive_max_pool2d_backward(np.ones((1, 1, 1, 1)), x, 1)[0, 0]
    array([[0., 0.],
           [0., 1.]])
    """
    gx = _kernels.fast_adaptive_max_pool2d_backward(grad_output, x, output_size, indices)
    if gx is not None:
        return gx
    op = "adaptive_max_pool2d_backward"
    x, _ = _pool_input(op, x)
    g = v.adaptive_geometry(op, x.shape, output_size)
    grad_output = _pool_grad_output(op, grad_output, x, g)
    return _scatter_to_maxima(op, g, grad_output, x, indices, "adaptive_maxpool2d")


# ---- element-wise --------------------------------------------------------------------------------

def relu(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    """max(x, 0) element-wise, any shape: x unless x < 0, as PyTorch, so NaN stays NaN and
    -0.0 stays -0.0.

    With ``inplace=True`` the result overwrites x, which is returned (x must be writeable), as
    PyTorch's ``relu(x, inplace=True)``: for a caller that owns x and no longer needs it.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> F.relu(np.array([-1.0, 0.0, 2.0]))
    array([0., 0., 2.])
    >>> x = np.array([-1.0, 3.0])
    >>> F.relu(x, inplace=True) is x, x
    (True, array([0., 3.]))
    """
    if inplace is False:
        y = _kernels.fast_relu(x)
        if y is not None:
            return y
    op = "relu"
    checked = v.float_array(op, "x", x)
    inplace = v.boolean(op, "inplace", inplace)
    if inplace:
        if not x.flags.writeable:
            v.fail(op, "inplace=True needs a writeable x, got a read-only array")
        if checked is x and x.flags.c_contiguous:
            _kernels.relu_forward(x, x, get_num_threads())  # each element read, then written
        else:  # another layout or byte order: computed aside, written back
            x[...] = relu(checked)
        return x
    y = _kernels.empty(checked.shape, checked.dtype)
    _kernels.relu_forward(v.contiguous(checked), y, get_num_threads())
    return y


def add_relu(a: np.ndarray, b: np.ndarray, inplace: bool = False) -> np.ndarray:
    """``relu(a + b)`` in one pass: a residual block's shortcut addition and the ReLU after it.
    Bit for bit the two ops (the sum is rounded once, then relu's rule applies). a and b must
    have one shape and dtype (no broadcasting).

    With ``inplace=True`` the result overwrites a, which is returned (a must be writeable), as
    ``a += b`` then ``relu(a, inplace=True)``: for a caller that owns a and no longer needs it.
    Its gradient is ``relu_backward`` on the result, for both a and b.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> F.add_relu(np.array([-1.0, 0.5, 2.0]), np.array([0.5, -1.0, 1.0]))
    array([0., 0., 3.])
    """
    op = "add_relu"
    checked = v.float_array(op, "a", a)
    b = v.float_array(op, "b", b)
    v.same_dtype(op, a=checked, b=b)
    v.check_same_shape(op, "b", b, "a", checked)
    inplace = v.boolean(op, "inplace", inplace)
    if not inplace:
        y = _kernels.empty(checked.shape, checked.dtype)
        _kernels.add_relu_forward(v.contiguous(checked), v.contiguous(b), y, get_num_threads())
        return y
    if not a.flags.writeable:
        v.fail(op, "inplace=True needs a writeable a, got a read-only array")
    if checked is a and a.flags.c_contiguous:
        b = v.contiguous(b)
        if b is not a and np.may_share_memory(a, b):  # b would change under the kernel
            b = b.copy()
        _kernels.add_relu_forward(a, b, a, get_num_threads())  # each a[i] read, then written
    else:  # another layout or byte order: computed aside, written back
        a[...] = add_relu(checked, b)
    return a


def relu_backward(grad_output: np.ndarray, x: np.ndarray, *,
                  add_to: np.ndarray | None = None) -> np.ndarray:
    """Gradient of relu: grad_output where x > 0 (or x is NaN, as in PyTorch), else 0.

    `add_to` (keyword only, fastconv's extension), when given, is an array the gradient is
    ADDED to in place, and is returned: writeable, C-contiguous, of x's shape and dtype. Bit for
    bit ``add_to += relu_backward(grad_output, x)`` in one pass, as a residual block's backward
    adds its shortcut's gradient to its main path's.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> F.relu_backward(np.ones(3), np.array([-1.0, 0.0, 2.0]))
    array([0., 0., 1.])
    >>> total = np.full(3, 10.0)
    >>> F.relu_backward(np.ones(3), np.array([-1.0, 0.0, 2.0]), add_to=total) is total, total
    (True, array([10., 10., 11.]))
    """
    if add_to is None:
        gx = _kernels.fast_relu_backward(grad_output, x)
        if gx is not None:
            return gx
    op = "relu_backward"
    grad_output = v.float_array(op, "grad_output", grad_output)
    x = v.float_array(op, "x", x)
    v.same_dtype(op, x=x, grad_output=grad_output)
    v.check_same_shape(op, "grad_output", grad_output, "x", x)
    grad_output, x = v.contiguous(grad_output), v.contiguous(x)
    if add_to is None:
        gx = _kernels.empty(x.shape, x.dtype)
        _kernels.relu_backward(grad_output, x, gx, get_num_threads())
        return gx
    add_to = v.accumulator(op, "add_to", add_to, x.shape, x.dtype)
    # the kernel reads each input element just before it writes that element of add_to: an
    # input overlapping add_to otherwise would change under it
    grad_output, x = (a.copy() if a is not add_to and np.may_share_memory(a, add_to) else a
                      for a in (grad_output, x))
    _kernels.relu_backward(grad_output, x, add_to, get_num_threads(), accumulate=True)
    return add_to


# ---- fully connected ------------------------------------------------------------------------

def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """``x @ weight.T + bias``, as ``torch.nn.functional.linear``.

    Runs on fastconv's own GEMM microkernels and threads (no BLAS, whose thread pool would fight
    the kernels' for the cores).

    Parameters
    ----------
    x : (*, in_features) float32 or float64 (any number of leading dims, including none)
    weight : (out_features, in_features), same dtype
    bias : (out_features,) or None

    Returns
    -------
    (*, out_features) array.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> F.linear(np.array([[1.0, 2.0]]), np.array([[1.0, 1.0], [0.0, 3.0]]), np.array([0.5, 0.0]))
    array([[3.5, 6. ]])
    """
    op = "linear"
    x = v.float_array(op, "x", x)
    weight = v.float_array(op, "weight", weight, 2, "(out_features, in_features)")
    if bias is not None:
        bias = v.float_array(op, "bias", bias, 1, "(out_features,)")
        if bias.shape != weight.shape[:1]:
            v.fail(op, f"bias must have shape ({weight.shape[0]},) (weight's out_features), "
                       f"got {bias.shape}")
    v.same_dtype(op, x=x, weight=weight, bias=bias)
    v.check_linear(op, x, weight)
    rows = math.prod(x.shape[:-1])  # the leading dims as one, for one GEMM
    y = _kernels.empty(x.shape[:-1] + weight.shape[:1], x.dtype)
    _kernels.linear_forward(rows, v.contiguous(x), v.contiguous(weight),
                            None if bias is None else v.contiguous(bias), y, get_num_threads())
    return y


def linear_backward(grad_output: np.ndarray, x: np.ndarray, weight: np.ndarray, *,
                    grad_weight: np.ndarray | None = None,
                    grad_bias: np.ndarray | None = None, input_grad: bool = True):
    """Gradients of linear: ``(grad_input, grad_weight, grad_bias)``.

    Shapes: grad_input like x (*, in_features), grad_weight like weight, grad_bias
    (out_features,) (the sum of grad_output over the leading dims; returned whether or not the
    forward pass had a bias). With ``input_grad=False`` grad_input is None and is not computed.

    `grad_weight` and `grad_bias`, when given, are arrays the gradients are ADDED to in place
    (``fastconv.nn.Linear`` passes its parameters' ``.grad``), and are returned as the second
    and third results: C-contiguous and writeable, of weight's dtype and the shapes above. A
    gradient not given is a new array, as usual.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.ones((4, 3)); w = np.ones((2, 3))
    >>> [g.shape for g in F.linear_backward(np.ones((4, 2)), x, w)]
    [(4, 3), (2, 3), (2,)]
    >>> total = np.ones((2, 3))
    >>> _, gw, _ = F.linear_backward(np.ones((4, 2)), x, w, grad_weight=total)
    >>> gw is total, float(total[0, 0])
    (True, 5.0)
    """
    op = "linear_backward"
    input_grad = v.boolean(op, "input_grad", input_grad)
    grad_output = v.float_array(op, "grad_output", grad_output)
    x = v.float_array(op, "x", x)
    weight = v.float_array(op, "weight", weight, 2, "(out_features, in_features)")
    dtype = v.same_dtype(op, x=x, weight=weight, grad_output=grad_output)
    v.check_linear(op, x, weight, grad_output)
    accumulate = grad_weight is not None or grad_bias is not None
    new = np.zeros if accumulate else _kernels.empty  # a gradient not given starts at 0
    grad_weight = new(weight.shape, dtype) if grad_weight is None else \
        v.accumulator(op, "grad_weight", grad_weight, weight.shape, dtype)
    grad_bias = new(weight.shape[:1], dtype) if grad_bias is None else \
        v.accumulator(op, "grad_bias", grad_bias, weight.shape[:1], dtype)
    rows = math.prod(x.shape[:-1])
    grad_output, x, weight = v.contiguous(grad_output), v.contiguous(x), v.contiguous(weight)
    grad_input, n = None, get_num_threads()
    if input_grad:
        grad_input = _kernels.empty(x.shape, dtype)
        _kernels.linear_backward_input(rows, grad_output, weight, grad_input, n)
    _kernels.linear_backward_weight(rows, grad_output, x, grad_weight, grad_bias, accumulate, n)
    return grad_input, grad_weight, grad_bias


# ---- activations ----------------------------------------------------------------------------
#
# tanh and sigmoid are one NumPy pass each way, which runs near the machine's limits: they need
# no C kernel of their own. They compute in their input's dtype and follow the same rules as the
# ops above (validate, never mix dtypes, never return a view of an input).

def _unary_backward(op, grad_output, output):
    grad_output = v.float_array(op, "grad_output", grad_output)
    output = v.float_array(op, "output", output)
    v.same_dtype(op, output=output, grad_output=grad_output)
    v.check_same_shape(op, "grad_output", grad_output, "output", output)
    return grad_output, output


def tanh(x: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent element-wise, any shape.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> F.tanh(np.array([0.0, 100.0]))
    array([0., 1.])
    """
    return np.tanh(v.float_array("tanh", "x", x))


def tanh_backward(grad_output: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Gradient of tanh from its output (as PyTorch's ``tanh_backward``):
    ``grad_output * (1 - output**2)``, where ``output = tanh(x)``.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> F.tanh_backward(np.ones(2), F.tanh(np.array([0.0, 100.0])))
    array([1., 0.])
    """
    grad_output, output = _unary_backward("tanh_backward", grad_output, output)
    return grad_output * (1 - output * output)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function ``1 / (1 + exp(-x))`` element-wise, any shape; no overflow for any x.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> F.sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    array([0. , 0.5, 1. ])
    """
    x = v.float_array("sigmoid", "x", x)
    # exp(-|x|) never overflows; the two branches are the same function, each exact on its side
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(grad_output: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Gradient of sigmoid from its output (as PyTorch's ``sigmoid_backward``):
    ``grad_output * output * (1 - output)``, where ``output = sigmoid(x)``.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> F.sigmoid_backward(np.ones(1), F.sigmoid(np.zeros(1)))
    array([0.25])
    """
    grad_output, output = _unary_backward("sigmoid_backward", grad_output, output)
    return grad_output * output * (1 - output)


# ---- dropout, batch norm, cross entropy ---------------------------------------------------------
#
# C kernels, each one pass where NumPy made several (src/kernels/batchnorm.h, training.h);
# fastconv.reference holds the NumPy definitions they are tested against.

def dropout(x: np.ndarray, p: float = 0.5, training: bool = True,
            rng: np.random.Generator | None = None):
    """Inverted dropout: zero each element with probability p and scale the rest by 1/(1-p).

    An element is kept where its uniform draw from `rng` (``rng.random(x.shape, x.dtype)``) is
    below 1 - p, so a seeded generator gives the same mask as ``fastconv.reference.dropout``.

    Parameters
    ----------
    x : float32 or float64, any shape
    p : probability of zeroing an element, in [0, 1], default 0.5 (p=1 gives zeros)
    training : default True; when False (or p == 0) the op is the identity
    rng : numpy.random.Generator, default the generator that ``fastconv.init.manual_seed`` seeds

    Returns
    -------
    ``(out, mask)``: ``out = x * mask``, where mask has x's shape and dtype and holds 0 or
    1/(1-p); pass the mask to ``dropout_backward``. mask is None when the op is the identity.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> out, mask = F.dropout(np.ones(8), p=0.5, rng=np.random.default_rng(0))
    >>> sorted(set(out.tolist())), bool(np.array_equal(out, mask))
    ([0.0, 2.0], True)
    """
    op = "dropout"
    x = v.float_array(op, "x", x)
    p = v.probability(op, p)
    training = v.boolean(op, "training", training)
    if rng is None:
        rng = _init.default_generator()
    elif not isinstance(rng, np.random.Generator):
        v.fail(op, f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}",
               TypeError)
    if not training or p == 0:
        return x.copy(), None
    mask = rng.random(x.shape, dtype=x.dtype)  # the draws, which the kernel turns into the mask
    out = _kernels.empty(x.shape, x.dtype)
    _kernels.dropout_forward(v.contiguous(x), p, mask, out, get_num_threads())
    return out, mask


def dropout_backward(grad_output: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Gradient of dropout: ``grad_output * mask`` with the mask dropout returned
    (a copy of grad_output when the mask is None, i.e. dropout was the identity).

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> F.dropout_backward(np.ones(3), np.array([0.0, 2.0, 2.0]))
    array([0., 2., 2.])
    """
    op = "dropout_backward"
    grad_output = v.float_array(op, "grad_output", grad_output)
    if mask is None:
        return grad_output.copy()
    mask = v.float_array(op, "mask", mask)
    v.same_dtype(op, grad_output=grad_output, mask=mask)
    v.check_same_shape(op, "grad_output", grad_output, "mask", mask)
    return grad_output * mask


def batch_norm(x: np.ndarray, running_mean: np.ndarray | None, running_var: np.ndarray | None,
               weight: np.ndarray | None = None, bias: np.ndarray | None = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5, *,
               return_stats: bool = False, relu: bool = False, add: np.ndarray | None = None):
    """Batch normalisation over channel 1, as ``torch.nn.functional.batch_norm``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel. In training the mean and
    the biased variance come from x (over every dim but 1), and the running statistics, when
    given, are updated IN PLACE: ``running = (1 - momentum) * running + momentum * batch``, with
    the unbiased variance (times n/(n-1), n = values per channel) going into running_var. In
    evaluation (training=False) the running statistics normalise. The statistics are summed in
    float64 whatever x's dtype.

    Parameters
    ----------
    x : (N, C, *) float32 or float64, e.g. (N, C), (N, C, L) or (N, C, H, W)
    running_mean, running_var : (C,) or both None (training only)
    weight, bias : (C,) or None (scale 1, shift 0)
    training : default False
    momentum : in [0, 1], default 0.1
    eps : positive, default 1e-5
    return_stats : also return the (mean, var) y was normalised with (the batch's in training,
        a copy of the running ones in evaluation), which ``batch_norm_backward`` can take
        instead of recomputing them
    relu : then ReLU, in the pass that writes y (keyword only, fastconv's extension): bit for
        bit ``relu(batch_norm(...))``; its gradient is ``batch_norm_backward(..., output=y)``
    add : an array of x's shape and dtype added to the normalised output before the ReLU, in
        the same pass (keyword only, fastconv's extension: a residual block's shortcut): bit for
        bit ``batch_norm(...) + add``, with relu ``add_relu(batch_norm(...), add)``; add's
        gradient is the output's (through the ReLU: ``relu_backward(grad_output, y)``)

    Returns
    -------
    y, x's shape and dtype; or ``(y, mean, var)``.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> mean, var = np.zeros(1), np.ones(1)
    >>> F.batch_norm(np.array([[1.0], [3.0]]), mean, var, training=True, eps=1e-12)
    array([[-1.],
           [ 1.]])
    >>> mean, var
    (array([0.2]), array([1.1]))
    """
    op = "batch_norm"
    x, running_mean, running_var, weight, bias, training, eps = v.batch_norm_args(
        op, x, running_mean, running_var, weight, bias, training, eps, updates_stats=True)
    momentum = v.real(op, "momentum", momentum, 0.0, 1.0, "a number in [0, 1]")
    return_stats = v.boolean(op, "return_stats", return_stats)
    relu = v.boolean(op, "relu", relu)
    x = v.contiguous(x)
    if add is not None:
        add = v.float_array(op, "add", add)
        v.same_dtype(op, x=x, add=add)
        v.check_same_shape(op, "add", add, "x", x)
        add = v.contiguous(add)
    n = get_num_threads()
    weight = None if weight is None else v.contiguous(weight)
    bias = None if bias is None else v.contiguous(bias)
    y = _kernels.empty(x.shape, x.dtype)
    if training:  # the statistics, then y with them, in one kernel
        mean, var = np.empty(x.shape[1], x.dtype), np.empty(x.shape[1], x.dtype)
        stats = [running_mean, running_var]
        if running_mean is not None:  # updated by the kernel, so in a buffer it can write
            stats = [v.contiguous(s) for s in stats]
        _kernels.batch_norm_train_forward(x, mean, var, *stats, momentum, weight, bias, y, eps,
                                          n, relu, add)
        for given, written in zip((running_mean, running_var), stats):
            if given is not written:
                given[...] = written
    else:
        mean, var = np.array(running_mean), np.array(running_var)  # copies, C order
        _kernels.batch_norm_forward(x, mean, var, weight, bias, y, eps, n, relu, add)
    return (y, mean, var) if return_stats else y


def batch_norm_backward(grad_output: np.ndarray, x: np.ndarray,
                        running_mean: np.ndarray | None, running_var: np.ndarray | None,
                        weight: np.ndarray | None = None, training: bool = False,
                        eps: float = 1e-5, *, stats=None, output=None):
    """Gradients of batch_norm: ``(grad_input, grad_weight, grad_bias)``, each of x's dtype.

    Arguments as batch_norm's (training as it was in the forward pass). In training the batch
    statistics are recomputed from x, unless `stats` gives the (mean, var) that
    ``batch_norm(..., return_stats=True)`` returned, and the gradient flows through them; in
    evaluation the running statistics are constants. grad_weight ``sum(grad_output * x_hat)``
    and grad_bias ``sum(grad_output)`` have shape (C,) and are returned even when weight/bias
    were None. `output`, the y of ``batch_norm(..., relu=True)``, takes the gradient through that
    ReLU first (in the same passes): bit for bit ``batch_norm_backward(relu_backward(
    grad_output, output), ...)``.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> x = np.array([[1.0], [3.0]])
    >>> gx, gw, gb = F.batch_norm_backward(np.ones((2, 1)), x, None, None, training=True)
    >>> gx, gw, gb  # shifting every output equally is undone by the batch mean: no gradient
    (array([[0.],
           [0.]]), array([0.]), array([2.]))
    """
    op = "batch_norm_backward"
    x, running_mean, running_var, weight, _, training, eps = v.batch_norm_args(
        op, x, running_mean, running_var, weight, None, training, eps, updates_stats=False)
    grad_output = v.float_array(op, "grad_output", grad_output)
    dtype = v.same_dtype(op, x=x, grad_output=grad_output)
    v.check_grad_output(op, grad_output, x.shape)
    if output is not None:
        output = v.float_array(op, "output", output)
        v.same_dtype(op, x=x, output=output)
        v.check_same_shape(op, "output", output, "x", x)
        output = v.contiguous(output)
    x, channels, n = v.contiguous(x), x.shape[1], get_num_threads()
    if stats is not None:
        mean, var = v.batch_norm_stats(op, stats, channels, dtype)
    elif training:
        mean, var = np.empty(channels, dtype), np.empty(channels, dtype)
        _kernels.batch_norm_stats(x, mean, var, None, None, 0.0, n)
    else:
        mean, var = v.contiguous(running_mean), v.contiguous(running_var)
    grad_input = _kernels.empty(x.shape, dtype)
    grad_weight, grad_bias = np.empty(channels, dtype), np.empty(channels, dtype)
    _kernels.batch_norm_backward(v.contiguous(grad_output), x, mean, var,
                                 None if weight is None else v.contiguous(weight), training,
                                 grad_input, grad_weight, grad_bias, eps, n, output)
    return grad_input, grad_weight, grad_bias


def cross_entropy(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean softmax cross-entropy of logits against integer class labels, as
    ``torch.nn.functional.cross_entropy`` with its defaults (reduction='mean').

    ``mean over rows of (logsumexp(logits[i]) - logits[i, target[i]])``, computed after
    subtracting each row's maximum, so large logits neither overflow nor lose the answer; the
    rows' losses are added in float64. Unlike PyTorch, there is no ignore_index: every label
    must be a valid class.

    Parameters
    ----------
    logits : (N, C) float32 or float64, N >= 1
    target : (N,) integer array of class indices in [0, C)

    Returns
    -------
    0-d array of logits' dtype (``float(loss)`` gives a Python float).

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> loss = F.cross_entropy(np.array([[1e4, 0.0], [0.0, 0.0]]), np.array([0, 1]))
    >>> round(float(loss), 6)   # (0 + log 2) / 2
    0.346574
    """
    logits, target = v.cross_entropy_args("cross_entropy", logits, target)
    return _cross_entropy(logits, target, 1.0, want_grad=False)[0]


def _cross_entropy(logits, target, grad_output, want_grad):
    """(loss, grad or None) of validated arguments, grad scaled by grad_output."""
    loss = np.empty((), logits.dtype)
    grad = np.empty(logits.shape, logits.dtype) if want_grad else None
    _kernels.cross_entropy_forward(v.contiguous(logits), target.astype(np.int64, copy=False),
                                   loss, grad, grad_output / logits.shape[0], get_num_threads())
    return loss, grad


def cross_entropy_backward(grad_output, logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Gradient of cross_entropy with respect to logits: ``grad_output * (softmax(logits) -
    one_hot(target)) / N``, shape (N, C). grad_output is the loss's gradient, usually 1.0.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> F.cross_entropy_backward(1.0, np.zeros((1, 2)), np.array([1]))
    array([[ 0.5, -0.5]])
    """
    op = "cross_entropy_backward"
    grad_output = v.scalar_grad(op, grad_output)
    logits, target = v.cross_entropy_args(op, logits, target)
    return _cross_entropy(logits, target, grad_output, True)[1]


# ---- optimiser updates -----------------------------------------------------------------------
#
# One parameter's step, in place, in one pass (src/kernels/training.h): what fastconv.optim's
# SGD and Adam run for each parameter. The rules are torch.optim's single-tensor ones, in the
# parameter's dtype; fastconv.reference holds them in NumPy.

def adam_update(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray,
                exp_avg_sq: np.ndarray, step: int, lr: float = 1e-3, betas=(0.9, 0.999),
                eps: float = 1e-8, weight_decay: float = 0.0) -> None:
    """One Adam step (``torch.optim.Adam``, amsgrad off) of `param`, IN PLACE.

    With g = grad + weight_decay * param: ``exp_avg += (1 - beta1) * (g - exp_avg)``;
    ``exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g**2``; ``param -= lr / (1 - beta1**step)
    * exp_avg / (sqrt(exp_avg_sq) / sqrt(1 - beta2**step) + eps)``.

    Parameters
    ----------
    param, exp_avg, exp_avg_sq : float32 or float64 arrays of one shape, updated in place
        (writeable and C-contiguous)
    grad : the gradient, param's shape and dtype
    step : this step's number, 1 on the first
    lr, eps, weight_decay : non-negative; betas : (beta1, beta2), each in [0, 1)

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> p, m, s = np.ones(2), np.zeros(2), np.zeros(2)
    >>> F.adam_update(p, np.array([1.0, -1.0]), m, s, step=1, lr=0.1)
    >>> p.round(6)
    array([0.9, 1.1])
    """
    op = "adam_update"
    param, grad = _update_arrays(op, param, grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    step = v.positive_int(op, "step", step)
    beta1, beta2 = v.betas(op, betas)
    _kernels.adam_step(param, grad, exp_avg, exp_avg_sq, step, v.non_negative(op, "lr", lr),
                       beta1, beta2, v.non_negative(op, "eps", eps),
                       v.non_negative(op, "weight_decay", weight_decay), get_num_threads())


def sgd_update(param: np.ndarray, grad: np.ndarray, lr: float, momentum: float = 0.0,
               dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
               momentum_buffer: np.ndarray | None = None) -> np.ndarray | None:
    """One SGD step (``torch.optim.SGD``) of `param`, IN PLACE; returns the momentum buffer.

    With g = grad + weight_decay * param: with momentum, ``buf = g`` on the first step (no
    `momentum_buffer` given: a new one is returned) and ``buf = momentum * buf + (1 -
    dampening) * g`` after (the given buffer, updated in place), then ``g = g + momentum *
    buf`` (nesterov) or ``g = buf``; finally ``param -= lr * g``. Without momentum the buffer
    is None.

    Examples
    --------
    >>> import numpy as np, fastconv.functional as F
    >>> p = np.ones(2)
    >>> buf = F.sgd_update(p, np.array([1.0, -1.0]), lr=0.1, momentum=0.9)
    >>> p, buf
    (array([0.9, 1.1]), array([ 1., -1.]))
    """
    op = "sgd_update"
    param, grad = _update_arrays(op, param, grad)
    lr, weight_decay = v.non_negative(op, "lr", lr), v.non_negative(op, "weight_decay",
                                                                     weight_decay)
    momentum = v.non_negative(op, "momentum", momentum)
    dampening = v.number(op, "dampening", dampening, math.isfinite, "a finite number")
    nesterov = v.boolean(op, "nesterov", nesterov)
    first = momentum_buffer is None
    if not momentum:
        momentum_buffer = None
    elif first:
        momentum_buffer = np.empty(param.shape, param.dtype)
    else:
        v.accumulator(op, "momentum_buffer", momentum_buffer, param.shape, param.dtype)
    _kernels.sgd_step(param, grad, momentum_buffer, first, lr, momentum, dampening,
                      weight_decay, nesterov, get_num_threads())
    return momentum_buffer


def _update_arrays(op, param, grad, **state):
    """param (and each state array) updated in place, grad read: one shape and dtype."""
    param = v.accumulator(op, "param", param, getattr(param, "shape", ()),
                          getattr(param, "dtype", None))
    grad = v.float_array(op, "grad", grad)
    v.same_dtype(op, param=param, grad=grad)
    v.check_same_shape(op, "grad", grad, "param", param)
    for name, a in state.items():
        v.accumulator(op, name, a, param.shape, param.dtype)
    return param, v.contiguous(grad)
