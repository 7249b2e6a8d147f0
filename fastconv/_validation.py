"""Argument checking and normalisation for fastconv.functional: one place for every rule.

The dtype policy, the shape rules, PyTorch's output-size formulas and every error message live
here, so the public functions read as validate -> normalise -> call the kernel, and the compiled
code can trust what it is given.

Dtype policy: float32 and float64 only (any byte order; non-native is converted). All float
arguments of one call must share a dtype: fastconv never promotes silently, it raises TypeError.
Errors: ``TypeError`` for a wrong type or dtype, ``ValueError`` for a wrong shape or value; the
message starts with the op's name, names the argument and shows what was received.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Geometry values are kept far below 2**63 so that every index the kernels form
# (origin + offset, row * width + column, …) fits in int64 with room to spare.
MAX_PARAM = 2**31 - 1
MAX_ELEMENTS = 2**60


def fail(op: str, message: str, exc: type[Exception] = ValueError):
    raise exc(f"{op}: {message}")


def _shape(a) -> str:
    return str(tuple(a.shape))


def float_array(op: str, name: str, a, ndim: int | None = None, layout: str = "") -> np.ndarray:
    """Check that `a` is a float32/float64 ndarray (of `ndim` dims) and return it, native order."""
    if not isinstance(a, np.ndarray):
        fail(op, f"{name} must be a numpy.ndarray, got {type(a).__name__}", TypeError)
    if a.dtype.kind != "f" or a.dtype.itemsize not in (4, 8):
        fail(op, f"{name} must have dtype float32 or float64, got {a.dtype}", TypeError)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if ndim is not None and a.ndim != ndim:
        described = f"{ndim}-D {layout}".strip()
        fail(op, f"{name} must be a {described} array, got shape {_shape(a)}")
    return a


def same_dtype(op: str, **arrays) -> np.dtype:
    """The common dtype of the named arrays (None entries skipped); TypeError if they differ."""
    items = [(name, a) for name, a in arrays.items() if a is not None]
    first_name, first = items[0]
    for name, a in items[1:]:
        if a.dtype != first.dtype:
            fail(op, f"{name} has dtype {a.dtype} but {first_name} has dtype {first.dtype}; "
                     "fastconv does not mix float32 and float64, convert one of them", TypeError)
    return first.dtype


def contiguous(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array the kernels may read (copies only when needed)."""
    return np.ascontiguousarray(a)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def pair(op: str, name: str, value, minimum: int, what: str) -> tuple[int, int]:
    """An int or a pair of ints, each in [minimum, 2**31 - 1], as a (h, w) tuple.

    TypeError for a value of the wrong type (a float, a bool, None), ValueError for a wrong count
    or an int out of range.
    """
    message = f"{name} must be {what} int or a pair of them (at most 2**31 - 1), got {value!r}"
    if _is_int(value):
        values = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and all(_is_int(v) for v in value):
        if len(value) != 2:
            fail(op, message)
        values = (int(value[0]), int(value[1]))
    else:
        fail(op, message, TypeError)
    if min(values) < minimum or max(values) > MAX_PARAM:
        fail(op, message)
    return values


def positive_int(op: str, name: str, value) -> int:
    if not _is_int(value) or value < 1 or value > MAX_PARAM:
        fail(op, f"{name} must be a positive int (at most 2**31 - 1), got {value!r}",
             ValueError if _is_int(value) else TypeError)
    return int(value)


def byte_count(op: str, name: str, value) -> int:
    """A number of bytes: an int >= 0."""
    if not _is_int(value) or value < 0:
        fail(op, f"{name} must be an int >= 0 (bytes), got {value!r}",
             ValueError if _is_int(value) else TypeError)
    return int(value)


def boolean(op: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        fail(op, f"{name} must be a bool, got {value!r}", TypeError)
    return bool(value)


def shape4(op: str, name: str, shape, layout: str) -> tuple[int, int, int, int]:
    """A user-given 4-D shape: four non-negative ints, e.g. layout '(N, C, H, W)'."""
    message = f"{name} must be a tuple of 4 non-negative ints {layout}, got {shape!r}"
    if not isinstance(shape, (tuple, list)) or not all(_is_int(s) for s in shape):
        fail(op, message, TypeError)
    if len(shape) != 4 or min(shape) < 0:
        fail(op, message)
    return tuple(int(s) for s in shape)


def check_elements(op: str, what: str, shape) -> None:
    n = 1
    for s in shape:
        n *= int(s)
    if n > MAX_ELEMENTS:
        fail(op, f"{what} of shape {tuple(shape)} has {n} elements, more than fastconv's limit "
                 "of 2**60 (its index arithmetic would overflow)")


def check_grad_output(op: str, grad_output: np.ndarray, expected) -> None:
    if tuple(grad_output.shape) != tuple(expected):
        fail(op, f"grad_output must have the output's shape {tuple(expected)}, "
                 f"got {_shape(grad_output)}")


def check_same_shape(op: str, name: str, a: np.ndarray, other: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        fail(op, f"{name} must have the shape of {other} {_shape(b)}, got {_shape(a)}")


def check_non_batch_dims(op: str, input_shape) -> None:
    """As in PyTorch, only the batch may be empty: C, H and W must be at least 1 (in either
    layout)."""
    if min(input_shape[1:]) < 1:
        fail(op, "input must have at least one channel, row and column (only the batch may be "
                 f"empty), got shape {tuple(input_shape)}")


# ---- the NumPy-only ops (linear, dropout, batch norm, cross entropy) and numbers -----------------

def number(op: str, name: str, value, valid, what: str) -> float:
    """A real number (not a bool) for which ``valid(value)`` holds, as a float: TypeError for a
    non-number, else ValueError. Write ``valid`` so that NaN fails it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        fail(op, f"{name} must be {what}, got {value!r}", TypeError)
    if not valid(value):
        fail(op, f"{name} must be {what}, got {value!r}")
    return float(value)


def real(op: str, name: str, value, low: float, high: float, what: str) -> float:
    """A real number in [low, high] (NaN never is)."""
    return number(op, name, value, lambda x: low <= x <= high, what)


def probability(op: str, p) -> float:
    return real(op, "p", p, 0.0, 1.0, "a probability in [0, 1]")


def non_negative(op: str, name: str, value) -> float:
    """A finite real number >= 0 (a learning rate, a decay)."""
    return number(op, name, value, lambda x: 0 <= x < float("inf"), "a non-negative number")


def betas(op: str, value) -> tuple[float, float]:
    """Adam's (beta1, beta2), each in [0, 1)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        fail(op, f"betas must be a pair (beta1, beta2), got {value!r}")
    return tuple(number(op, f"betas[{i}]", b, lambda x: 0 <= x < 1, "a number in [0, 1)")
                 for i, b in enumerate(value))


def scalar_grad(op: str, grad_output) -> float:
    """The gradient of a scalar loss: a real number or a 0-d float array."""
    if isinstance(grad_output, np.ndarray) and grad_output.shape == () \
            and grad_output.dtype.kind == "f":
        return float(grad_output)
    if isinstance(grad_output, (bool, np.bool_)) or not isinstance(grad_output, numbers.Real):
        fail(op, "grad_output must be a real number or a 0-d float array (the loss is a "
                 f"scalar), got {grad_output!r}", TypeError)
    return float(grad_output)


def check_linear(op: str, x: np.ndarray, weight: np.ndarray, grad_output=None) -> None:
    """x (*, in_features) against weight (out_features, in_features), and grad_output's shape."""
    if x.ndim < 1:
        fail(op, f"x must have at least 1 dim (*, in_features), got shape {x.shape}")
    if x.shape[-1] != weight.shape[1]:
        fail(op, f"x's last dim ({x.shape[-1]}) must equal weight's in_features "
                 f"(weight shape {weight.shape})")
    if grad_output is not None:
        check_grad_output(op, grad_output, x.shape[:-1] + (weight.shape[0],))


def accumulator(op: str, name: str, a, shape, dtype) -> np.ndarray:
    """An array a kernel updates in place: writeable, C-contiguous and in native byte order, of
    `shape` and `dtype` (a converted copy would take the update instead)."""
    usable = float_array(op, name, a) is a and a.flags.c_contiguous and a.flags.writeable
    if not usable or a.shape != tuple(shape) or a.dtype != dtype:
        fail(op, f"{name} must be a writeable, C-contiguous {np.dtype(dtype).name} array of "
                 f"shape {tuple(shape)} in native byte order (it is updated in place), got "
                 f"{a.dtype} {_shape(a)}" + ("" if usable else ", not writeable, C-contiguous "
                                             "and native"))
    return a


def batch_norm_args(op: str, x, running_mean, running_var, weight, bias, training, eps,
                    updates_stats: bool):
    """Validated (x, running_mean, running_var, weight, bias, training, eps)."""
    x = float_array(op, "x", x)
    if x.ndim < 2:
        fail(op, f"x must be an (N, C, *) array of at least 2 dims, got shape {x.shape}")
    channels = x.shape[1]
    per_channel = {"running_mean": running_mean, "running_var": running_var,
                   "weight": weight, "bias": bias}
    for name, a in per_channel.items():
        if a is None:
            continue
        checked = float_array(op, name, a, 1, "(C,)")
        if checked.shape != (channels,):
            fail(op, f"{name} must have shape ({channels},) (x's channels), got {a.shape}")
        # running statistics are updated in place, so they cannot be a converted copy
        if updates_stats and name.startswith("running") and \
                (checked is not a or not a.flags.writeable):
            fail(op, f"{name} must be a writeable array in native byte order (it is updated "
                     "in place when training)")
        per_channel[name] = checked
    same_dtype(op, x=x, **per_channel)
    training = boolean(op, "training", training)
    if (running_mean is None) != (running_var is None):
        fail(op, "running_mean and running_var must both be arrays or both be None")
    if not training and running_mean is None:
        fail(op, "running_mean and running_var are needed when training=False")
    if training and x.size <= channels:
        fail(op, f"training needs more than one value per channel, got x of shape {x.shape}")
    eps = positive_real(op, "eps", eps)
    return (x, *per_channel.values(), training, eps)


def batch_norm_stats(op: str, stats, channels: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """The (mean, var) pair batch_norm(..., return_stats=True) returned: two (C,) arrays of x's
    dtype, as C-contiguous arrays."""
    if not isinstance(stats, (tuple, list)) or len(stats) != 2:
        fail(op, "stats must be the (mean, var) pair batch_norm(..., return_stats=True) "
                 f"returned, got {type(stats).__name__}", TypeError)
    checked = []
    for name, a in zip(("mean", "var"), stats):
        a = float_array(op, f"stats' {name}", a, 1, "(C,)")
        if a.shape != (channels,) or a.dtype != dtype:
            fail(op, f"stats' {name} must have shape ({channels},) and dtype {dtype} (x's), "
                     f"got {a.dtype} {_shape(a)}")
        checked.append(contiguous(a))
    return tuple(checked)


def positive_real(op: str, name: str, value) -> float:
    """A positive number (batch norm's eps): at least the smallest normal float64."""
    return real(op, name, value, np.finfo(np.float64).tiny, np.inf, "a positive number")


def cross_entropy_args(op: str, logits, target) -> tuple[np.ndarray, np.ndarray]:
    """Validated (logits (N, C) float, target (N,) intp class indices in [0, C))."""
    logits = float_array(op, "logits", logits, 2, "(N, C)")
    n, classes = logits.shape
    if n < 1 or classes < 1:
        fail(op, f"logits must have at least one row and one class, got shape {logits.shape}")
    if not isinstance(target, np.ndarray) or target.dtype.kind not in "iu":
        got = target.dtype if isinstance(target, np.ndarray) else type(target).__name__
        fail(op, f"target must be an integer numpy.ndarray of class indices, got {got}",
             TypeError)
    if target.shape != (n,):
        fail(op, f"target must have shape ({n},) (one class index per row of logits), "
                 f"got {target.shape}")
    low, high = int(target.min()), int(target.max())
    if low < 0 or high >= classes:
        fail(op, f"target values must lie in [0, {classes}) (class indices), "
                 f"got values in [{low}, {high}]")
    return logits, target.astype(np.intp, copy=False)


# ---- padding -------------------------------------------------------------------------------------

NUMERIC_PADDING_FORMS = ("a non-negative int, a pair of them (h, w) or a 4-tuple of them "
                         "(top, bottom, left, right)")
PADDING_FORMS = "'same', 'valid', " + NUMERIC_PADDING_FORMS


def padding_form(op: str, padding, strings: bool = True):
    """The padding argument checked for type and range: 'same' or 'valid' (unless `strings` is
    False: conv_transpose2d takes neither, as in PyTorch), an (h, w) pair (from an int or a pair)
    or a (top, bottom, left, right) tuple. TypeError for a wrong type, ValueError for a wrong
    string, count or value."""
    forms = PADDING_FORMS if strings else NUMERIC_PADDING_FORMS
    message = f"padding must be {forms} (at most 2**31 - 1), got {padding!r}"
    if isinstance(padding, str):
        if not strings:
            fail(op, message, TypeError)
        if padding not in ("same", "valid"):
            fail(op, message)
        return padding
    if _is_int(padding):
        values = (int(padding),) * 2
    elif isinstance(padding, (tuple, list)) and all(_is_int(p) for p in padding):
        if len(padding) not in (2, 4):
            fail(op, message)
        values = tuple(int(p) for p in padding)
    else:
        fail(op, message, TypeError)
    if min(values) < 0 or max(values) > MAX_PARAM:
        fail(op, message)
    return values


def same_pads(size: int, k: int, s: int, d: int, upper: bool) -> tuple[int, int]:
    """SAME padding (begin, end) of one dimension: output ceil(size / s), total padding
    max(0, (out - 1) s + d (k - 1) + 1 - size), the odd one at the end (upper) or the start."""
    out = -(-size // s)
    total = max(0, (out - 1) * s + d * (k - 1) + 1 - size)
    small, big = total // 2, total - total // 2
    return (small, big) if upper else (big, small)


def padding4(op: str, padding, kernel, stride, dilation) -> tuple[int, int, int, int]:
    """Any padding form as (top, bottom, left, right); 'same' is PyTorch's (stride 1, the odd
    extra row/column at the bottom/right)."""
    padding = padding_form(op, padding)
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        if stride != (1, 1):
            fail(op, f"padding='same' needs stride 1, got stride={stride}; for SAME padding at "
                     "any stride pass padding=fastconv.functional.same_padding((H, W), "
                     "kernel_size, stride, dilation)")
        # at stride 1 the total, d (k - 1), does not depend on the input's size
        return tuple(p for k, d in zip(kernel, dilation) for p in same_pads(1, k, 1, d, True))
    if len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    return padding


# ---- layouts -------------------------------------------------------------------------------------
#
# data_format names the activations' layout, NCHW (PyTorch's) or NHWC (channels last: TensorFlow's
# name for it); weight_format the convolution weights', OIHW (PyTorch's (K, C/groups, kH, kW)) or
# HWIO (TensorFlow, Keras and numpy-ml's (kH, kW, C/groups, K)). HWIO weights go with NHWC
# activations only: an NCHW call with them is refused, since nothing in that layout holds them.

DATA_FORMATS = ("NCHW", "NHWC")
WEIGHT_FORMATS = ("OIHW", "HWIO")
LAYOUTS = {"NCHW": "(N, C, H, W)", "NHWC": "(N, H, W, C)",
           "OIHW": "(K, C/groups, kH, kW)", "HWIO": "(kH, kW, C/groups, K)"}


def _format(op: str, name: str, value, choices) -> str:
    message = f"{name} must be {' or '.join(map(repr, choices))}, got {value!r}"
    if not isinstance(value, str):
        fail(op, message, TypeError)
    if value not in choices:
        fail(op, message)
    return value


def data_format(op: str, value) -> str:
    """'NCHW' or 'NHWC'."""
    return _format(op, "data_format", value, DATA_FORMATS)


def weight_format(op: str, value, data_format: str) -> str:
    """'OIHW' or 'HWIO' (the latter with NHWC activations only)."""
    value = _format(op, "weight_format", value, WEIGHT_FORMATS)
    if value == "HWIO" and data_format != "NHWC":
        fail(op, f"weight_format='HWIO' needs data_format='NHWC' (NCHW calls take PyTorch's "
                 f"(K, C/groups, kH, kW) weights), got data_format={data_format!r}")
    return value


def to_nchw(shape, data_format: str) -> tuple[int, int, int, int]:
    """An activation shape in data_format as (N, C, H, W)."""
    return tuple(shape) if data_format == "NCHW" else (shape[0], shape[3], shape[1], shape[2])


def from_nchw(shape, data_format: str) -> tuple[int, int, int, int]:
    """An (N, C, H, W) shape in data_format."""
    return tuple(shape) if data_format == "NCHW" else (shape[0], shape[2], shape[3], shape[1])


def to_oihw(shape, weight_format: str) -> tuple[int, int, int, int]:
    """A weight shape in weight_format as (K, C/groups, kH, kW)."""
    return tuple(shape) if weight_format == "OIHW" else (shape[3], shape[2], shape[0], shape[1])


def from_oihw(shape, weight_format: str) -> tuple[int, int, int, int]:
    """A (K, C/groups, kH, kW) shape in weight_format."""
    return tuple(shape) if weight_format == "OIHW" else (shape[2], shape[3], shape[1], shape[0])


# ---- convolution ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvGeometry:
    """A validated conv2d problem; _kernels reads the C geometry from its fields by name. The
    sizes are the layout-free ones; the *_shape properties give the arrays' shapes in the call's
    data_format and weight_format."""
    batch: int
    in_channels: int
    in_h: int
    in_w: int
    out_channels: int
    groups: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, bottom, left, right
    dilation: tuple[int, int]
    out_h: int
    out_w: int
    data_format: str = "NCHW"
    weight_format: str = "OIHW"

    @property
    def input_shape(self):
        return from_nchw((self.batch, self.in_channels, self.in_h, self.in_w), self.data_format)

    @property
    def weight_shape(self):
        return from_oihw((self.out_channels, self.in_channels // self.groups) + self.kernel,
                         self.weight_format)

    @property
    def output_shape(self):
        return from_nchw((self.batch, self.out_channels, self.out_h, self.out_w),
                         self.data_format)


def conv_geometry(op: str, input_shape, weight_shape, stride, padding, dilation, groups,
                  data_format: str = "NCHW", weight_format: str = "OIHW") -> ConvGeometry:
    """input_shape and weight_shape as the arrays have them, in data_format and weight_format
    (already checked by data_format() and weight_format())."""
    n, c, h, w = to_nchw(input_shape, data_format)
    k, cg, kh, kw = to_oihw(weight_shape, weight_format)
    stride = pair(op, "stride", stride, 1, "a positive")
    dilation = pair(op, "dilation", dilation, 1, "a positive")
    groups = positive_int(op, "groups", groups)
    if min(k, cg, kh, kw) < 1:
        fail(op, f"weight must have a non-empty shape {LAYOUTS[weight_format]}, "
                 f"got {tuple(weight_shape)}")
    check_non_batch_dims(op, input_shape)
    if c % groups:
        fail(op, f"input channels ({c}) must be divisible by groups ({groups})")
    if k % groups:
        fail(op, f"weight's out_channels ({k}) must be divisible by groups ({groups})")
    if cg * groups != c:
        fail(op, f"weight of shape {tuple(weight_shape)} expects {cg * groups} input channels "
                 f"(C/groups={cg}, groups={groups}), but the input has {c} "
                 f"(shape {tuple(input_shape)})")
    if max(kh, kw) > MAX_PARAM:
        fail(op, f"kernel size {(kh, kw)} is too large")
    pad = padding4(op, padding, (kh, kw), stride, dilation)
    out_h = (h + pad[0] + pad[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (w + pad[2] + pad[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        fail(op, f"output size would be ({out_h}, {out_w}): the kernel ({kh}, {kw}) with dilation "
                 f"{dilation} is larger than the padded input ({h + pad[0] + pad[1]}, "
                 f"{w + pad[2] + pad[3]})")
    geometry = ConvGeometry(n, c, h, w, k, groups, (kh, kw), stride, pad, dilation, out_h, out_w,
                            data_format, weight_format)
    check_elements(op, "the output", geometry.output_shape)
    return geometry


def conv_transpose_padding(op: str, padding) -> tuple[int, int, int, int]:
    """conv_transpose2d's padding argument, an int or a pair (PyTorch's forms) or a (top,
    bottom, left, right) 4-tuple (ONNX ConvTranspose's pads), as (top, bottom, left, right): the
    rows and columns cropped off each side of the uncropped output."""
    padding = padding_form(op, padding, strings=False)
    return padding if len(padding) == 4 else (padding[0], padding[0], padding[1], padding[1])


def conv_transpose_geometry(op: str, input_shape, weight_shape, stride, padding, output_padding,
                            groups, dilation) -> ConvGeometry:
    """A conv_transpose2d problem as the conv2d whose input gradient it is: that convolution
    takes an input of the transposed output's shape (N, C_out, OH, OW) to one of x's shape with
    the same weight (read as (K, C/groups, kH, kW), K = C_in), so the geometry's input_shape is
    the transposed output's, its output_shape is x's. Its bottom and right paddings are the
    transposed ones less output_padding (negative where output rows no window reaches); the
    kernels read only the top and left ones and the sizes."""
    n, c, h, w = input_shape
    c_in, kg, kh, kw = weight_shape
    stride = pair(op, "stride", stride, 1, "a positive")
    pad = conv_transpose_padding(op, padding)
    output_padding = pair(op, "output_padding", output_padding, 0, "a non-negative")
    groups = positive_int(op, "groups", groups)
    dilation = pair(op, "dilation", dilation, 1, "a positive")
    if min(c_in, kg, kh, kw) < 1:
        fail(op, "weight must have a non-empty shape (C_in, C_out/groups, kH, kW), "
                 f"got {tuple(weight_shape)}")
    check_non_batch_dims(op, input_shape)
    if c_in != c:
        fail(op, f"weight of shape {tuple(weight_shape)} expects {c_in} input channels (its "
                 f"first dim), but the input has {c} (shape {tuple(input_shape)})")
    if c % groups:
        fail(op, f"input channels ({c}) must be divisible by groups ({groups})")
    if max(kh, kw) > MAX_PARAM:
        fail(op, f"kernel size {(kh, kw)} is too large")
    if any(o >= s and o >= d for o, s, d in zip(output_padding, stride, dilation)):
        fail(op, f"output_padding must be smaller than stride or dilation, got "
                 f"output_padding={output_padding} for stride={stride} and dilation={dilation}")
    # the uncropped output every tap reaches, plus output_padding; padding crops it
    full = [(size - 1) * s + d * (k - 1) + o + 1
            for size, k, s, d, o in zip((h, w), (kh, kw), stride, dilation, output_padding)]
    out_h, out_w = full[0] - pad[0] - pad[1], full[1] - pad[2] - pad[3]
    if out_h < 1 or out_w < 1:
        fail(op, f"output size would be ({out_h}, {out_w}): padding (top, bottom, left, right) "
                 f"{pad} crops away the whole uncropped output {tuple(full)} (input size "
                 f"({h}, {w}), kernel ({kh}, {kw}), stride {stride}, dilation {dilation}, "
                 f"output_padding {output_padding})")
    conv_pad = (pad[0], pad[1] - output_padding[0], pad[2], pad[3] - output_padding[1])
    geometry = ConvGeometry(n, kg * groups, out_h, out_w, c, groups, (kh, kw), stride, conv_pad,
                            dilation, h, w)
    check_elements(op, "the output", geometry.input_shape)
    return geometry


# ---- pooling -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolGeometry:
    """A validated pool2d problem over N*C planes; _kernels reads the C geometry from its fields
    by name. output_shape is in the call's data_format."""
    batch: int
    channels: int
    in_h: int
    in_w: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, bottom, left, right
    dilation: tuple[int, int]
    out_h: int
    out_w: int
    data_format: str = "NCHW"

    @property
    def output_shape(self):
        return from_nchw((self.batch, self.channels, self.out_h, self.out_w), self.data_format)


def pool_output_size(size: int, k: int, s: int, p_begin: int, p_end: int, d: int,
                     ceil_mode: bool) -> int:
    """PyTorch's pooling output size with each side's padding, and its ceil_mode rule that drops
    a last window starting in the end's (bottom or right) padding."""
    out = (size + p_begin + p_end - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p_begin:
        out -= 1
    return out


def pool_geometry(op: str, input_shape, kernel_size, stride, padding, dilation, ceil_mode,
                  data_format: str = "NCHW") -> PoolGeometry:
    """The padding forms are conv2d's. An int or a pair follows PyTorch's rule (at most half the
    kernel); 'same' (stride 1) and 4-tuples take any padding, as ONNX's pads do, so a window
    may lie wholly in the padding (each pooling kind defines its result there). input_shape is
    in data_format (already checked by data_format())."""
    check_non_batch_dims(op, input_shape)
    n, c, h, w = to_nchw(input_shape, data_format)
    kernel = pair(op, "kernel_size", kernel_size, 1, "a positive")
    stride = kernel if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) \
        else pair(op, "stride", stride, 1, "a positive")
    form = padding_form(op, padding)
    dilation = pair(op, "dilation", dilation, 1, "a positive")
    if isinstance(form, tuple) and len(form) == 2 and any(2 * p > k for p, k in zip(form, kernel)):
        fail(op, f"padding must be at most half of kernel_size, got padding={form} for "
                 f"kernel_size={kernel} (a 4-tuple (top, bottom, left, right) takes any padding)")
    padding = padding4(op, form, kernel, stride, dilation)
    ceil_mode = boolean(op, "ceil_mode", ceil_mode)
    out = [pool_output_size(size, k, s, p0, p1, d, ceil_mode) for size, k, s, p0, p1, d
           in zip((h, w), kernel, stride, padding[::2], padding[1::2], dilation)]
    if min(out) < 1:
        fail(op, f"output size would be {tuple(out)} for input size ({h}, {w}) with "
                 f"kernel_size={kernel}, stride={stride}, padding={padding}, dilation={dilation}")
    geometry = PoolGeometry(n, c, h, w, kernel, stride, padding, dilation, out[0], out[1],
                            data_format)
    check_elements(op, "the output", geometry.output_shape)
    return geometry


@dataclass(frozen=True)
class AdaptivePoolGeometry:
    """A validated adaptive pooling problem over N*C planes (each output's window is PyTorch's
    [floor(o * in / out), ceil((o + 1) * in / out)) along each dimension); _kernels reads the C
    geometry from its fields by name."""
    batch: int
    channels: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    data_format: str = "NCHW"  # the adaptive kernels are NCHW only

    @property
    def output_shape(self):
        return from_nchw((self.batch, self.channels, self.out_h, self.out_w), self.data_format)


def adaptive_geometry(op: str, input_shape, output_size) -> AdaptivePoolGeometry:
    """output_size: an int or a pair of ints >= 0, None in a pair meaning the input's size."""
    check_non_batch_dims(op, input_shape)
    n, c, h, w = input_shape
    message = ("output_size must be an int >= 0 or a pair of them, None in a pair keeping the "
               f"input's size (at most 2**31 - 1), got {output_size!r}")
    if _is_int(output_size):
        out = (int(output_size),) * 2
    elif isinstance(output_size, (tuple, list)) and \
            all(v is None or _is_int(v) for v in output_size):
        if len(output_size) != 2:
            fail(op, message)
        out = tuple(size if v is None else int(v) for v, size in zip(output_size, (h, w)))
    else:
        fail(op, message, TypeError)
    if min(out) < 0 or max(out) > MAX_PARAM:
        fail(op, message)
    if max(h * out[0], w * out[1]) > MAX_ELEMENTS:  # the kernels form o * in
        fail(op, f"input size ({h}, {w}) times output size {out} is past fastconv's limit of "
                 "2**60 (its index arithmetic would overflow)")
    geometry = AdaptivePoolGeometry(n, c, h, w, out[0], out[1])
    check_elements(op, "the output", geometry.output_shape)
    return geometry


def divisor(op: str, divisor_override) -> int:
    """divisor_override as the kernels take it: 0 = none."""
    if divisor_override is None:
        return 0
    if not _is_int(divisor_override) or divisor_override == 0 or abs(divisor_override) > MAX_PARAM:
        fail(op, "divisor_override must be None or a non-zero int (at most 2**31 - 1 in size), "
                 f"got {divisor_override!r}",
             ValueError if _is_int(divisor_override) else TypeError)
    return int(divisor_override)


def norm_type(op: str, value) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        fail(op, f"norm_type must be a positive finite number, got {value!r}", TypeError)
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        fail(op, f"norm_type must be a positive finite number, got {value!r}")
    return value


def max_pool_indices(op: str, indices, expected_shape, plane_size: int) -> np.ndarray:
    """int64 indices of the output's shape. Their range, [-1, plane_size), is checked here for
    other integer dtypes (before the cast, so no unsigned value can wrap round to -1) and by the
    kernel as it scatters int64 ones, which then calls `max_pool_indices_out_of_range`."""
    if not isinstance(indices, np.ndarray) or indices.dtype.kind not in "iu":
        got = indices.dtype if isinstance(indices, np.ndarray) else type(indices).__name__
        fail(op, f"indices must be an integer numpy.ndarray (as max_pool2d returns), got {got}",
             TypeError)
    if tuple(indices.shape) != tuple(expected_shape):
        fail(op, f"indices must have the output's shape {tuple(expected_shape)}, "
                 f"got {_shape(indices)}")
    if indices.dtype != np.int64 and indices.size:
        low, high = int(indices.min()), int(indices.max())
        if low < -1 or high >= plane_size:
            max_pool_indices_out_of_range(op, indices, plane_size)
    return np.ascontiguousarray(indices, dtype=np.int64)


def max_pool_indices_out_of_range(op: str, indices: np.ndarray, plane_size: int):
    fail(op, f"indices must lie in [-1, {plane_size}) (flat positions in an input plane), "
             f"got values in [{int(indices.min())}, {int(indices.max())}]")
