"""ONNX's reference evaluator with its convolution, pooling and relu nodes on fastconv's kernels.

``onnx.reference.ReferenceEvaluator`` runs an ONNX model in NumPy, one Python implementation per
operator; its convolutions are im2col products and its pooling loops over every output in Python.
The operator classes here replace eight of them and keep the evaluator's results::

    sess = fastconv.onnx.ReferenceEvaluator("model.onnx")    # or, the same:
    sess = onnx.reference.ReferenceEvaluator("model.onnx", new_ops=fastconv.onnx.ops)
    (y,) = sess.run(None, {"X": x})

Every node of these types runs on fastconv when its input is a float32 or float64 NCHW tensor
(4-D; or 1-D, (N, C, L), run as (N, C, 1, L)) and fastconv's op expresses its attributes;
anything else goes to the plain evaluator's own implementation for that node's opset, so whatever
the plain evaluator runs still runs:

========================  ===================================  ==================================
operator                  on fastconv                          handed to the plain implementation
========================  ===================================  ==================================
Conv                      conv2d: auto_pad (NOTSET, VALID,     3-D, float16, integer types;
                          SAME_UPPER, SAME_LOWER), pads,       a bias that is not (M,)
                          strides, dilations, group, bias
ConvTranspose             conv_transpose2d: pads,              as Conv; a bias that is not (M,)
                          output_padding, output_shape,
                          auto_pad, strides, dilations,
                          group, bias
MaxPool                   max_pool2d: auto_pad, pads,          as Conv; a window wholly in the
                          strides, dilations, ceil_mode,       padding; a NaN in a window
                          storage_order, Indices
AveragePool               avg_pool2d: auto_pad, pads,          as Conv; dilations other than 1;
                          strides, ceil_mode,                  ceil_mode with auto_pad; with
                          count_include_pad                    count_include_pad=0, a window
                                                               wholly in the padding or a NaN
LpPool                    lp_pool2d: p, auto_pad, pads,        as Conv; dilations other than 1;
                          strides, ceil_mode                   a NaN in a window
GlobalAveragePool,        adaptive_avg_pool2d /                as Conv; an empty plane (H*W = 0)
GlobalMaxPool             adaptive_max_pool2d to 1x1
Relu                      relu (any shape)                     integer types, float16
========================  ===================================  ==================================

Where the results differ from the plain evaluator's:

- Rounding: fastconv sums in another order (and float32 3x3 convolutions may use Winograd), so
  float results differ in the last bits, within the tolerances of ONNX's own node tests.
- NaN: the plain MaxPool (unless a window starts with one), AveragePool (count_include_pad=0)
  and LpPool skip NaN inputs (NaN is how they mark padding; onnxruntime's MaxPool skips them
  all); fastconv propagates NaN, so a call whose output holds a NaN runs again on the plain
  implementation, which gives the plain evaluator's result.
- ConvTranspose with group > 1: the plain implementation is right only for one input and one
  output channel per group (it slices the weight by output channels and adds the whole bias to
  each group); fastconv computes what the ONNX specification and onnxruntime do.
- ConvTranspose with output_shape: fastconv derives the pads from it as the specification and
  onnxruntime do (ignoring pads); the plain implementation starts the output at pads' begin
  (or 0), which differs where output_shape crops the uncropped output (where it fails).
- MaxPool with SAME_LOWER at a stride or dilation above 1: the plain implementation floors the
  output size (in / stride) and puts the odd padding at the end; fastconv takes ceil(in /
  stride) and the start, as the specification and onnxruntime do.
- AveragePool with ceil_mode, where the last window overhangs the padded input by two or more
  rows or columns: the plain implementation shifts that axis's windows by the extra padding it
  adds; fastconv places them as the specification (and PyTorch) does.
- LpPool with ceil_mode: a window that overhangs the padded input is scaled up by the kernel's
  area over its own, as the plain implementation (and PyTorch) does; onnxruntime sums it
  unscaled.
- Indices: int64, ONNX's flat indices over the whole tensor (``((n * C + c) * H + h) * W + w``,
  or ``... + h + w * H`` with storage_order=1), ties going to the first maximum in row-major
  window order, as the plain MaxPool does.

Bad attributes (pads, strides or kernel_shape of the wrong length, negative pads, a kernel_shape
that is not the weight's, an unknown auto_pad) raise ValueError naming the operator, e.g.
``Conv: pads must have 4 values (begin, begin, end, end) for a 2-D input, got [1, 1]``, as do
shapes fastconv refuses (``Conv: conv2d: input channels (3) must be divisible by groups (2)``).

``counts`` counts the calls of these operators since import: ``counts["MaxPool", "fastconv"]``
ran on fastconv, ``counts["MaxPool", "plain"]`` were handed to the plain implementation.

Needs the ``onnx`` package (``pip install "fastconv[onnx]"``); ``import fastconv`` does not
import it.

Examples
--------
>>> import numpy as np, onnx.helper as oh, fastconv.onnx
>>> node = oh.make_node("MaxPool", ["X"], ["Y", "I"], kernel_shape=[2, 2], strides=[2, 2])
>>> graph = oh.make_graph([node], "pool", [oh.make_tensor_value_info("X", 1, None)],
...                       [oh.make_tensor_value_info("Y", 1, None),
...                        oh.make_tensor_value_info("I", 7, None)])
>>> sess = fastconv.onnx.ReferenceEvaluator(oh.make_model(graph))
>>> y, i = sess.run(None, {"X": np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)})
>>> y[0, 1], i[0, 1]
(array([[21., 23.],
       [29., 31.]], dtype=float32), array([[21, 23],
       [29, 31]]))
"""

from __future__ import annotations

import collections
import threading

import numpy as np

try:
    from onnx.reference import ReferenceEvaluator as _PlainEvaluator
    from onnx.reference.op_run import OpRun
    from onnx.reference.ops import load_op
except ImportError as exc:  # pragma: no cover - only without the optional dependency
    raise ImportError("fastconv.onnx needs the onnx package: pip install 'fastconv[onnx]' "
                      f"(or pip install onnx); original error: {exc}") from exc

from . import functional as F
from ._validation import fail

__all__ = ["ReferenceEvaluator", "ops", "counts", "Conv", "ConvTranspose", "MaxPool",
           "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "Relu"]

counts: collections.Counter = collections.Counter()
_counts_lock = threading.Lock()

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")


class _Fallback(Exception):
    """Raised inside a fastconv implementation: this call is for the plain implementation."""


def _require(condition) -> None:
    if not condition:
        raise _Fallback


# The attributes of 1-D nodes that get a first (H) axis when a 1-D input (N, C, L) runs as the 2-D
# (N, C, 1, L), and that axis's value: the window, the stride, ... of a size-1 axis.
_H_AXIS = {"kernel_shape": 1, "strides": 1, "dilations": 1, "output_padding": 0,
           "output_shape": 1}


class _FastconvOp(OpRun):
    """An operator that runs `_fastconv` (on 2-D inputs; 1-D ones as 2-D with H = 1 where
    `lifts_1d`) and hands the call to the plain evaluator's implementation of the node's
    opset where `_fastconv` raises _Fallback."""

    op_domain = ""
    lifts_1d = True

    def __init__(self, onnx_node, run_params, schema=None):
        super().__init__(onnx_node, run_params, schema)
        version = run_params["opsets"].get(self.op_domain)
        self._plain = load_op(self.op_domain, onnx_node.op_type, version)(onnx_node, run_params)

    def _run(self, *inputs, **attributes):
        op = self.onnx_node.op_type
        try:
            x = inputs[0]
            if self.lifts_1d and isinstance(x, np.ndarray) and x.ndim == 3:
                result = self._fastconv_1d(op, inputs, attributes)
            else:
                result = self._fastconv(*inputs, **attributes)
            route = "fastconv"
        except _Fallback:
            # the plain class of an older opset may lack attributes of the newest (dilations)
            own = self._plain.attributes_names_
            result = self._plain._run(*inputs, **{k: v for k, v in attributes.items()
                                                  if k in own})
            route = "plain"
        except (TypeError, ValueError) as exc:
            if type(exc) not in (TypeError, ValueError) or str(exc).startswith(f"{op}:"):
                raise
            raise type(exc)(f"{op}: {exc}") from exc
        with _counts_lock:
            counts[op, route] += 1
        return result

    def _fastconv_1d(self, op, inputs, attributes):
        """_fastconv on 1-D inputs (N, C, L) (and weights (M, C/group, k)) as (N, C, 1, L)."""
        lifted = {}
        for name, value in attributes.items():
            if (name in _H_AXIS or name == "pads") and value is not None and len(value):
                count = 2 if name == "pads" else 1
                if len(value) != count:
                    fail(op, f"{name} must have {count} value(s) for a 1-D input, got "
                             f"{list(value)}")
                value = [0, value[0], 0, value[1]] if name == "pads" else [_H_AXIS[name], *value]
            lifted[name] = value
        inputs = [a[:, :, None] if isinstance(a, np.ndarray) and a.ndim == 3 else a
                  for a in inputs]
        return tuple(y.reshape(y.shape[:2] + y.shape[3:])
                     for y in self._fastconv(*inputs, **lifted))

    def _fastconv(self, *inputs, **attributes):
        raise NotImplementedError


# ---- attributes ----------------------------------------------------------------------------------

def _floats(*arrays) -> np.dtype:
    """The dtype of `arrays` (None entries skipped) if all are 4-D float32 or all float64 NCHW
    tensors; otherwise the call is for the plain implementation."""
    given = [a for a in arrays if a is not None]
    _require(all(isinstance(a, np.ndarray) and a.ndim == 4 for a in given))
    _require(given[0].dtype in _FLOATS and all(a.dtype == given[0].dtype for a in given))
    return given[0].dtype


def _ints(op: str, name: str, values, default: int, count: int = 2) -> tuple[int, ...]:
    """An ints attribute of `count` values (each `default` when absent)."""
    if values is None or len(values) == 0:
        return (default,) * count
    if len(values) != count:
        fail(op, f"{name} must have {count} values for a 2-D input, got {list(values)}")
    return tuple(int(v) for v in values)


def _auto_pad(op: str, auto_pad) -> str:
    auto_pad = "NOTSET" if auto_pad in (None, "", b"") else auto_pad
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad not in _AUTO_PADS:
        fail(op, f"auto_pad must be one of {', '.join(_AUTO_PADS)}, got {auto_pad!r}")
    return auto_pad


def _padding(op: str, auto_pad, pads, size, kernel, strides, dilations) -> tuple[int, ...]:
    """ONNX's padding as fastconv's (top, bottom, left, right): pads ``[h_begin, w_begin, h_end,
    w_end]`` for NOTSET, none for VALID, SAME (output ceil(size / stride); the odd row or column
    at the end for SAME_UPPER, at the start for SAME_LOWER)."""
    auto_pad = _auto_pad(op, auto_pad)
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    if auto_pad.startswith("SAME"):
        return F.same_padding(size, kernel, strides, dilations,
                              mode="upper" if auto_pad == "SAME_UPPER" else "lower")
    if pads is None or len(pads) == 0:
        return (0, 0, 0, 0)
    if len(pads) != 4:
        fail(op, f"pads must have 4 values (begin, begin, end, end) for a 2-D input, "
                 f"got {list(pads)}")
    if min(pads) < 0:
        fail(op, f"pads must be >= 0, got {list(pads)}")
    return (int(pads[0]), int(pads[2]), int(pads[1]), int(pads[3]))


def _kernel(op: str, kernel_shape, weight_shape=None) -> tuple[int, int]:
    if weight_shape is None:
        if kernel_shape is None:
            fail(op, "kernel_shape is required")
        return _ints(op, "kernel_shape", kernel_shape, 1)
    if kernel_shape is not None and len(kernel_shape) and \
            tuple(kernel_shape) != tuple(weight_shape[2:]):
        fail(op, f"kernel_shape {list(kernel_shape)} is not the weight's "
                 f"{list(weight_shape[2:])}")
    return tuple(weight_shape[2:])


def _bias(b, channels: int):
    _require(b is None or b.shape == (channels,))
    return b


def _window_in_padding(size, kernel, stride, padding, dilation, out) -> bool:
    """Whether some pooling window, along one of the two axes, holds no input element."""
    for n, k, s, p, d, o in zip(size, kernel, stride, padding[::2], dilation, out):
        taps = np.arange(o)[:, None] * s - p + np.arange(k)[None, :] * d
        if not ((taps >= 0) & (taps < n)).any(axis=1).all():
            return True
    return False


def _pool_args(op, x, auto_pad, ceil_mode, dilations, kernel_shape, pads, strides,
               has_dilations=True) -> dict:
    """A pooling node's attributes as fastconv's arguments, for an input x that fastconv takes;
    checks the ones fastconv pools without dilation (has_dilations False) cannot take."""
    _floats(x)
    kernel = _kernel(op, kernel_shape)
    stride = _ints(op, "strides", strides, 1)
    dilation = _ints(op, "dilations", dilations, 1)
    _require(has_dilations or dilation == (1, 1))
    ceil = bool(ceil_mode)
    _require(not (ceil and _auto_pad(op, auto_pad) != "NOTSET"))
    padding = _padding(op, auto_pad, pads, x.shape[2:], kernel, stride, dilation)
    return dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil,
                **({"dilation": dilation} if has_dilations else {}))


def _has_empty_window(x, y, args) -> bool:
    padding = args["padding"]
    if not any(padding):
        return False
    return _window_in_padding(x.shape[2:], args["kernel_size"], args["stride"], padding,
                              args.get("dilation", (1, 1)), y.shape[2:])


# ---- the operators -------------------------------------------------------------------------------

class Conv(_FastconvOp):
    """Conv on ``fastconv.functional.conv2d``: X (N, C, H, W), W (M, C/group, kH, kW), B (M,)."""

    def _fastconv(self, X, W, B=None, auto_pad=None, dilations=None, group=None,
                  kernel_shape=None, pads=None, strides=None):
        op = "Conv"
        _floats(X, W)
        _require(B is None or B.dtype == X.dtype)
        kernel = _kernel(op, kernel_shape, W.shape)
        stride = _ints(op, "strides", strides, 1)
        dilation = _ints(op, "dilations", dilations, 1)
        padding = _padding(op, auto_pad, pads, X.shape[2:], kernel, stride, dilation)
        return (F.conv2d(X, W, _bias(B, W.shape[0]), stride, padding, dilation,
                         1 if group is None else int(group)),)


def _transposed_window(size, full, stride, output_padding, auto_pad, pads, output_shape):
    """(begin, out) per axis: the output's first row (column) in the uncropped transposed
    output of length `full`, and its size. Given output_shape (for SAME: input size * stride),
    the total padding ``full + output_padding - out`` (none where negative: the output reaches
    past the uncropped one) goes half to each side, the odd one at the end for SAME_UPPER, at
    the start otherwise, and pads are ignored, as ONNX's specification and onnxruntime have it;
    else the output is the uncropped one less pads plus output_padding."""
    if not output_shape and (pads is not None or not auto_pad.startswith("SAME")):
        begin = [0, 0] if pads is None else [pads[0], pads[1]]
        end = [0, 0] if pads is None else [pads[2], pads[3]]
        return begin, [f + o - b - e for f, o, b, e in zip(full, output_padding, begin, end)]
    out = output_shape or [n * s for n, s in zip(size, stride)]
    total = [max(0, f + o - t) for f, o, t in zip(full, output_padding, out)]
    return [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total], list(out)


class ConvTranspose(_FastconvOp):
    """ConvTranspose on ``fastconv.functional.conv_transpose2d``: X (N, C, H, W),
    W (C, M/group, kH, kW), B (M,). output_padding, and an output_shape past the uncropped
    output, add rows and columns (fewer than the stride or dilation) that hold the bias.

    With output_shape, pads come from it as the specification and onnxruntime compute them;
    the plain implementation instead starts the output at pads' begin (or 0), and fails where
    that would crop the output."""

    def _fastconv(self, X, W, B=None, auto_pad=None, dilations=None, group=None,
                  kernel_shape=None, output_padding=None, output_shape=None, pads=None,
                  strides=None):
        op = "ConvTranspose"
        _floats(X, W)
        _require(B is None or B.dtype == X.dtype)
        group = 1 if group is None else int(group)
        kernel = _kernel(op, kernel_shape, W.shape)
        stride = _ints(op, "strides", strides, 1)
        dilation = _ints(op, "dilations", dilations, 1)
        extra = _ints(op, "output_padding", output_padding, 0)
        if pads is not None and len(pads):
            pads = _ints(op, "pads", pads, 0, 4)
            if min(pads) < 0:
                fail(op, f"pads must be >= 0, got {list(pads)}")
        else:
            pads = None
        if output_shape is not None and len(output_shape):
            output_shape = _ints(op, "output_shape", output_shape[-2:], 1)
        B = _bias(B, W.shape[1] * group)
        full = [(n - 1) * s + d * (k - 1) + 1 for n, k, s, d in zip(X.shape[2:], kernel, stride,
                                                                   dilation)]
        begin, out = _transposed_window(X.shape[2:], full, stride, extra,
                                        _auto_pad(op, auto_pad), pads, output_shape)
        if min(out) < 1:
            fail(op, f"output size would be {tuple(out)}")
        # the output holds rows [begin, stop) of the uncropped output, then `over` rows past it
        # (output_padding's rows: they hold the bias)
        stop = [min(b + o, f) for b, o, f in zip(begin, out, full)]
        over = tuple(b + o - s for b, o, s in zip(begin, out, stop))
        if output_shape and any(v >= max(s, d) for v, s, d in zip(over, stride, dilation)):
            fail(op, f"output_shape {list(out)} reaches {over} rows and columns past the "
                     f"uncropped output {full}: at most stride - 1 or dilation - 1, got "
                     f"strides {stride} and dilations {dilation}")
        padding = (begin[0], full[0] - stop[0], begin[1], full[1] - stop[1])
        return (F.conv_transpose2d(X, W, B, stride, padding, over, group, dilation),)


class MaxPool(_FastconvOp):
    """MaxPool on ``fastconv.functional.max_pool2d``; the Indices output, when the node has one,
    as ONNX's flat indices over the whole tensor."""

    def _fastconv(self, x, auto_pad=None, ceil_mode=None, dilations=None, kernel_shape=None,
                  pads=None, storage_order=None, strides=None):
        op = "MaxPool"
        args = _pool_args(op, x, auto_pad, ceil_mode, dilations, kernel_shape, pads, strides)
        want_indices = len(self.output) > 1 and bool(self.output[1])
        if not want_indices:
            y = F.max_pool2d(x, **args)
            _require(not _has_empty_window(x, y, args) and not np.isnan(y).any())
            return (y,)
        y, indices = F.max_pool2d(x, return_indices=True, **args)
        _require(not _has_empty_window(x, y, args) and not np.isnan(y).any())
        n, c, h, w = x.shape
        if storage_order:
            indices = indices % w * h + indices // w
        indices += (np.arange(n * c, dtype=np.int64) * (h * w)).reshape(n, c, 1, 1)
        return (y, indices)


class AveragePool(_FastconvOp):
    """AveragePool on ``fastconv.functional.avg_pool2d``."""

    def _fastconv(self, x, auto_pad=None, ceil_mode=None, dilations=None, kernel_shape=None,
                  pads=None, strides=None, count_include_pad=None):
        op = "AveragePool"
        args = _pool_args(op, x, auto_pad, ceil_mode, dilations, kernel_shape, pads, strides,
                          has_dilations=False)
        include = bool(count_include_pad)
        y = F.avg_pool2d(x, count_include_pad=include, **args)
        # the plain implementation marks padding that does not count with NaN and skips NaNs
        _require(include or not (_has_empty_window(x, y, args) or np.isnan(y).any()))
        return (y,)


class LpPool(_FastconvOp):
    """LpPool on ``fastconv.functional.lp_pool2d``: ``(sum over the window of |x|**p)**(1/p)``,
    padding counted as zeros; a ceil_mode window that overhangs the padded input is scaled up
    by kernel area / its area, as the plain implementation (and PyTorch) does."""

    def _fastconv(self, x, auto_pad=None, ceil_mode=None, dilations=None, kernel_shape=None,
                  p=None, pads=None, strides=None):
        op = "LpPool"
        args = _pool_args(op, x, auto_pad, ceil_mode, dilations, kernel_shape, pads, strides,
                          has_dilations=False)
        p = 2 if p is None else p
        if p % 2:  # |x|**p; an even integer power needs no abs
            x = np.abs(x)
        y = F.lp_pool2d(x, p, **args)
        _require(not np.isnan(y).any())
        return (y,)


class GlobalAveragePool(_FastconvOp):
    """GlobalAveragePool on ``fastconv.functional.adaptive_avg_pool2d(x, 1)``."""

    def _fastconv(self, x):
        _floats(x)
        _require(x.shape[2] * x.shape[3] > 0)
        return (F.adaptive_avg_pool2d(x, 1),)


class GlobalMaxPool(_FastconvOp):
    """GlobalMaxPool on ``fastconv.functional.adaptive_max_pool2d(x, 1)``."""

    def _fastconv(self, x):
        _floats(x)
        _require(x.shape[2] * x.shape[3] > 0)
        return (F.adaptive_max_pool2d(x, 1),)


class Relu(_FastconvOp):
    """Relu on ``fastconv.functional.relu``, float32 or float64 tensors of any shape."""

    lifts_1d = False

    def _fastconv(self, x):
        _require(isinstance(x, np.ndarray) and x.dtype in _FLOATS)
        return (F.relu(x),)


ops = [Conv, ConvTranspose, MaxPool, AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool, Relu]


class ReferenceEvaluator(_PlainEvaluator):
    """``onnx.reference.ReferenceEvaluator`` with ``ops`` preloaded (also in subgraphs and
    functions); arguments as its. Operators in ``new_ops`` take precedence over fastconv's.

    Examples
    --------
    >>> import numpy as np, onnx.helper as oh, fastconv.onnx
    >>> node = oh.make_node("Conv", ["X", "W"], ["Y"], pads=[1, 1, 1, 1])
    >>> graph = oh.make_graph([node], "conv", [oh.make_tensor_value_info("X", 1, None),
    ...                       oh.make_tensor_value_info("W", 1, None)],
    ...                       [oh.make_tensor_value_info("Y", 1, None)])
    >>> sess = fastconv.onnx.ReferenceEvaluator(oh.make_model(graph))
    >>> x, w = np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 3, 3), np.float32)
    >>> sess.run(None, {"X": x, "W": w})[0][0, 0]
    array([[4., 6., 4.],
           [6., 9., 6.],
           [4., 6., 4.]], dtype=float32)
    """

    def __init__(self, proto, *args, new_ops=None, **kwargs):
        super().__init__(proto, *args, new_ops=[*(new_ops or ()), *ops], **kwargs)
