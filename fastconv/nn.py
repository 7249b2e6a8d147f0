"""Layers, a loss and a small Module API, on NumPy arrays, built only on ``fastconv.functional``.

Every layer has ``forward(x)`` (also run by calling it) and ``backward(grad_output)`` which
returns the gradient with respect to x and ADDS the parameters' gradients to their ``.grad``, so
gradients accumulate over backward passes until ``zero_grad()``. A layer keeps what its backward
needs from its latest forward; backward before any forward raises RuntimeError.

A training loop has no use for the gradient of its images: ``model.backward(grad,
input_grad=False)`` (Sequential, Conv2d, Linear) computes only the parameters' gradients and
returns None, leaving out the first layer's input gradient (as PyTorch does for an input that
does not require a gradient) and the backward passes of any layers without parameters before it.

Names, arguments, default initialisation, parameter names and ``state_dict`` keys and shapes are
PyTorch's, so a PyTorch model's weights load directly::

    model.load_state_dict({k: t.numpy() for k, t in torch_model.state_dict().items()})

Layers compute in float32 unless built with ``dtype=np.float64`` or converted with
``model.to(np.float64)``; inputs must have the model's dtype (fastconv never promotes).

Examples
--------
>>> import numpy as np
>>> from fastconv import nn, init
>>> _ = init.manual_seed(0)
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
...                       nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 3))
>>> loss_fn = nn.CrossEntropyLoss()
>>> x, labels = np.ones((5, 1, 4, 4), np.float32), np.array([0, 1, 2, 0, 1])
>>> loss = loss_fn(model(x), labels)
>>> grad_x = model.backward(loss_fn.backward())
>>> grad_x.shape, model[0].weight.grad.shape, list(model.state_dict())[:4]
((5, 1, 4, 4), (4, 1, 3, 3), ['0.weight', '0.bias', '1.weight', '1.bias'])
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from . import _io, init
from . import _validation as v
from . import functional as F

__all__ = [
    "Parameter", "Module", "Sequential",
    "Conv2d", "ConvTranspose2d", "Linear", "MaxPool2d", "AvgPool2d", "LPPool2d",
    "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
    "ReLU", "Tanh", "Sigmoid", "Flatten", "Identity", "Dropout", "BatchNorm1d", "BatchNorm2d",
    "CrossEntropyLoss",
]


def _float_dtype(op: str, dtype) -> np.dtype:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        dtype = None
    if dtype not in v.FLOAT_DTYPES:
        v.fail(op, f"dtype must be float32 or float64, got {dtype}", TypeError)
    return dtype


class Parameter:
    """A trainable array: ``.data`` holds the values, ``.grad`` (same shape and dtype, zeros
    until a backward pass adds to it) the accumulated gradient of the loss."""

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray):
        self.data = data
        self.grad = np.zeros(data.shape, data.dtype)  # C order: kernels add to it in place

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of layers and losses.

    Parameters are the attributes holding a Parameter, submodules those holding a Module (in the
    order they were set, which gives PyTorch's names: '0.weight', '1.running_mean', …); buffers
    are the attributes listed in ``_buffer_names``.
    """

    _buffer_names: tuple[str, ...] = ()
    # backward takes input_grad=False (keyword only): the parameters' gradients alone, None back
    _input_grad_optional = False

    def __init__(self):
        self.training = True
        self._saved = None  # what backward needs, set by forward

    # ---- running ---------------------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_output):
        raise NotImplementedError

    def _saved_for_backward(self):
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward: call the "
                               "module on an input first")
        return self._saved

    # ---- structure ---------------------------------------------------------------------------

    def _own(self, kind):
        return [(name, value) for name, value in vars(self).items() if isinstance(value, kind)]

    def children(self):
        """The direct submodules."""
        return (m for _, m in self._own(Module))

    def modules(self):
        """This module and every submodule, depth first."""
        yield self
        for child in self.children():
            yield from child.modules()

    def named_parameters(self, prefix: str = ""):
        """(name, Parameter) pairs with PyTorch's names, e.g. ('0.weight', …)."""
        yield from ((prefix + name, p) for name, p in self._own(Parameter))
        for name, child in self._own(Module):
            yield from child.named_parameters(f"{prefix}{name}.")

    def parameters(self):
        """Every Parameter of this module and its submodules (what an optimiser takes)."""
        return (p for _, p in self.named_parameters())

    def _named_state(self, prefix: str = ""):
        """(key, live array) in PyTorch's state_dict order: own parameters, own buffers, then
        each submodule's."""
        for name, p in self._own(Parameter):
            yield prefix + name, p.data
        for name in self._buffer_names:
            yield prefix + name, getattr(self, name)
        for name, child in self._own(Module):
            yield from child._named_state(f"{prefix}{name}.")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed and shaped as PyTorch's state_dict."""
        return {key: array.copy() for key, array in self._named_state()}

    def load_state_dict(self, state_dict) -> Module:
        """Copy values into this model's parameters and buffers (converted to their dtypes).

        The keys must be exactly this model's (KeyError naming the missing and unexpected ones)
        and each value must have its array's shape (ValueError naming the key). Nothing is
        changed unless every entry fits. Values may be NumPy arrays or anything np.asarray takes.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError("load_state_dict: state_dict must be a mapping of names to arrays, "
                            f"got {type(state_dict).__name__}")
        own = dict(self._named_state())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if missing or unexpected:
            raise KeyError(f"load_state_dict: keys do not match the model: missing {missing}, "
                           f"unexpected {unexpected}")
        values = {k: np.asarray(state_dict[k]) for k in own}
        for key, target in own.items():
            value = values[key]
            if value.shape != target.shape:
                raise ValueError(f"load_state_dict: {key!r} has shape {value.shape} in the "
                                 f"state_dict but {target.shape} in the model")
            if not np.can_cast(value.dtype, target.dtype, "same_kind"):
                raise TypeError(f"load_state_dict: {key!r} has dtype {value.dtype}, which "
                                f"cannot become the model's {target.dtype}")
        for key, target in own.items():
            np.copyto(target, values[key], casting="same_kind")
        return self

    def save(self, path, metadata: dict | None = None) -> None:
        """Write ``state_dict()`` to `path` as an .npz archive (exactly that path), with
        `metadata` (a JSON-serialisable dict, e.g. the architecture) as its ``__metadata__``
        member.

        The write is atomic: `path` holds the previous file until the new one is complete and
        on disk, so an interrupt, a kill or a full disk never leaves a broken or partial model
        (see ``fastconv._io``).
        """
        _io.save_npz(path, self.state_dict(), metadata)

    def load(self, path) -> Module:
        """Load a file written by ``save`` (or any .npz of exactly this model's state_dict).

        Only the expected arrays are read: each must be in the file, nothing else may be (but
        the ``__metadata__`` member), each is bounded by its array's size before it is
        unpacked, and nothing is unpickled. A missing file raises FileNotFoundError; any other
        problem ValueError naming the file. The model is left unchanged unless the whole file
        loads.
        """
        own = dict(self._named_state())
        state, _ = _io.load_npz(
            "load", path, own,
            # float64 or int64 at most, whatever this model's dtype, plus the .npy header
            lambda key: own[key].size * 8 + _io.NPY_HEADER_BYTES)
        try:
            return self.load_state_dict(state)
        except (TypeError, ValueError) as exc:  # an array of the wrong shape or dtype
            raise ValueError(f"load: {str(path)!r} does not fit this model: {exc}") from exc

    # ---- modes, gradients, dtype --------------------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        """Training mode (batch statistics, dropout on) for this module and its submodules."""
        mode = v.boolean("train", "mode", mode)
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        """Evaluation mode (running statistics, dropout off)."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Set every parameter's gradient to 0."""
        for p in self.parameters():
            p.grad.fill(0)

    def to(self, dtype) -> Module:
        """Convert every parameter, its gradient and every float buffer to float32 or float64."""
        dtype = _float_dtype("Module.to", dtype)
        for m in self.modules():
            for _, p in m._own(Parameter):
                p.data, p.grad = p.data.astype(dtype), p.grad.astype(dtype, order="C")
            for name in m._buffer_names:
                if getattr(m, name).dtype.kind == "f":
                    setattr(m, name, getattr(m, name).astype(dtype))
            m._saved = None  # saved arrays have the old dtype
        return self

    astype = to

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse. Submodules are named '0', '1', …,
    or, as PyTorch's, by the keys of one ``OrderedDict`` of modules.

    Examples
    --------
    >>> from collections import OrderedDict
    >>> from fastconv import nn
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> [name for name, _ in model.named_parameters()]
    ['0.weight', '0.bias', '2.weight', '2.bias']
    >>> named = nn.Sequential(OrderedDict(fc=nn.Linear(4, 3), act=nn.ReLU()))
    >>> [name for name, _ in named.named_parameters()]
    ['fc.weight', 'fc.bias']
    """

    def __init__(self, *layers: Module):
        super().__init__()
        named = layers[0].items() if len(layers) == 1 and isinstance(layers[0], OrderedDict) \
            else enumerate(layers)
        for name, layer in named:
            if not isinstance(layer, Module):
                v.fail("Sequential", f"layer {name} must be a fastconv.nn.Module, "
                                     f"got {type(layer).__name__}", TypeError)
            name = str(name)
            if not name or "." in name or hasattr(self, name):
                v.fail("Sequential", f"layer names must be non-empty, without '.', and not a "
                                     f"Module attribute, got {name!r}")
            setattr(self, name, layer)

    def __getitem__(self, i: int) -> Module:
        return list(self.children())[i]

    def __len__(self) -> int:
        return len(self._own(Module))

    def __iter__(self):
        return self.children()

    def forward(self, x):
        for layer in self.children():
            x = layer(x)
        return x

    _input_grad_optional = True

    def backward(self, grad_output, *, input_grad: bool = True):
        """The gradient with respect to the input (None with ``input_grad=False``: then the
        layers before the first one with parameters do not run backward, and that one leaves
        out its own input gradient when its backward can)."""
        layers = list(self.children())
        if not v.boolean("Sequential.backward", "input_grad", input_grad):
            first = next((i for i, layer in enumerate(layers)
                          if next(layer.parameters(), None) is not None), len(layers))
            for layer in reversed(layers[first + 1:]):
                grad_output = layer.backward(grad_output)
            if first < len(layers):
                layer = layers[first]
                if layer._input_grad_optional:
                    layer.backward(grad_output, input_grad=False)
                else:
                    layer.backward(grad_output)
            return None
        # a layer that has not run forward raises, naming itself
        for layer in reversed(layers):
            grad_output = layer.backward(grad_output)
        return grad_output

    def __repr__(self) -> str:
        lines = [f"  ({name}): {layer!r}" for name, layer in self._own(Module)]
        return "Sequential(\n" + "\n".join(lines) + "\n)"


# ---- layers with parameters ----------------------------------------------------------------------

def _reset_like_pytorch(weight: Parameter, bias: Parameter | None) -> None:
    """PyTorch's default for Conv2d and Linear: kaiming_uniform_(a=sqrt(5)) weights, that is
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and bias from the same range."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1 / math.sqrt(weight.data[0].size)  # fan_in
        init.uniform_(bias, -bound, bound)


def _conv_layer_arguments(layer: Module, op: str, in_channels, out_channels, kernel_size, stride,
                          dilation, groups) -> None:
    """Check the arguments Conv2d and ConvTranspose2d share and keep them on `layer`."""
    layer.in_channels = v.positive_int(op, "in_channels", in_channels)
    layer.out_channels = v.positive_int(op, "out_channels", out_channels)
    layer.groups = v.positive_int(op, "groups", groups)
    if in_channels % groups or out_channels % groups:
        v.fail(op, f"in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                   f"divisible by groups ({groups})")
    layer.kernel_size = v.pair(op, "kernel_size", kernel_size, 1, "a positive")
    layer.stride = v.pair(op, "stride", stride, 1, "a positive")
    layer.dilation = v.pair(op, "dilation", dilation, 1, "a positive")


def _conv_layer_parameters(layer: Module, op: str, weight_shape, bias, dtype) -> None:
    """A convolution layer's weight and (unless bias is False) bias, initialised as PyTorch's."""
    dtype = _float_dtype(op, dtype)
    layer.weight = Parameter(np.empty(weight_shape, dtype))
    layer.bias = Parameter(np.empty(layer.out_channels, dtype)) \
        if v.boolean(op, "bias", bias) else None
    _reset_like_pytorch(layer.weight, layer.bias)


def _data_format_repr(data_format: str) -> str:
    """A layer's repr names its data_format only when it is not PyTorch's NCHW."""
    return "" if data_format == "NCHW" else f", data_format={data_format!r}"


def _add_parameter_grads(layer: Module, grad_weight, grad_bias) -> None:
    layer.weight.grad += grad_weight
    if layer.bias is not None:
        layer.bias.grad += grad_bias


class Conv2d(Module):
    """2-D convolution layer, as ``torch.nn.Conv2d``; see ``fastconv.functional.conv2d``.

    weight (out_channels, in_channels // groups, kH, kW), bias (out_channels,) unless
    bias=False. Input (N, in_channels, H, W) -> output (N, out_channels, OH, OW).
    ``data_format='NHWC'`` (keyword only, fastconv's extension) makes the layer channels last:
    (N, H, W, in_channels) -> (N, OH, OW, out_channels), on the NHWC kernels. The weight stays
    PyTorch's (out_channels, in_channels // groups, kH, kW), so state_dict is the same in
    either layout.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, dtype=np.float32, *,
                 data_format: str = "NCHW"):
        super().__init__()
        op = "Conv2d"
        self.data_format = v.data_format(op, data_format)
        _conv_layer_arguments(self, op, in_channels, out_channels, kernel_size, stride, dilation,
                              groups)
        self.padding = v.padding_form(op, padding)  # 'same'/'valid', (h, w) or a 4-tuple
        v.padding4(op, self.padding, self.kernel_size, self.stride, self.dilation)
        _conv_layer_parameters(self, op, (out_channels, in_channels // groups) + self.kernel_size,
                               bias, dtype)

    def _geometry(self):
        return self.stride, self.padding, self.dilation, self.groups

    def forward(self, x):
        bias = None if self.bias is None else self.bias.data
        y = F.conv2d(x, self.weight.data, bias, *self._geometry(), data_format=self.data_format)
        self._saved = x
        return y

    _input_grad_optional = True

    def backward(self, grad_output, *, input_grad: bool = True):
        x = self._saved_for_backward()
        gx, gw, gb = F.conv2d_backward(grad_output, x, self.weight.data, *self._geometry(),
                                       data_format=self.data_format, input_grad=input_grad)
        _add_parameter_grads(self, gw, gb)
        return gx

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}"
                f"{_data_format_repr(self.data_format)}")


class ConvTranspose2d(Module):
    """2-D transposed convolution layer, as ``torch.nn.ConvTranspose2d`` (same arguments, in the
    same order); see ``fastconv.functional.conv_transpose2d``.

    weight (in_channels, out_channels // groups, kH, kW), bias (out_channels,) unless
    bias=False, both initialised as PyTorch does. Input (N, in_channels, H, W) -> output (N,
    out_channels, OH, OW). ``forward(x, output_size=(OH, OW))`` (or a 4-element
    (N, C, OH, OW); a tuple, a list or a 1-D integer array; ValueError for another length)
    chooses the output_padding that gives that size, as PyTorch does: the
    sizes a strided conv2d maps to H are ``OH_min`` (output_padding 0) to ``OH_min + stride - 1``.
    padding may also be a (top, bottom, left, right) 4-tuple, as ONNX's pads (PyTorch takes an
    int or a pair). Only zero padding exists (padding_mode='zeros', as in PyTorch).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> down, up = nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ConvTranspose2d(8, 8, 3, 2, 1)
    >>> x = np.ones((1, 8, 12, 12), np.float32)
    >>> up(down(x)).shape, up(down(x), output_size=x.shape).shape
    ((1, 8, 11, 11), (1, 8, 12, 12))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1,
                 padding_mode: str = "zeros", dtype=np.float32):
        super().__init__()
        op = "ConvTranspose2d"
        _conv_layer_arguments(self, op, in_channels, out_channels, kernel_size, stride, dilation,
                              groups)
        self.padding = v.padding_form(op, padding, strings=False)  # (h, w) or a 4-tuple
        self.output_padding = v.pair(op, "output_padding", output_padding, 0, "a non-negative")
        if padding_mode != "zeros":
            v.fail(op, f"padding_mode must be 'zeros' (PyTorch's ConvTranspose2d has no other), "
                       f"got {padding_mode!r}")
        _conv_layer_parameters(self, op, (in_channels, out_channels // groups) + self.kernel_size,
                               bias, dtype)

    def _output_padding(self, x, output_size):
        """The output_padding that gives `output_size` ((OH, OW), or (N, C, OH, OW))."""
        op = "ConvTranspose2d"
        x = v.float_array(op, "x", x, 4, "(N, C_in, H, W)")
        message = f"output_size must be (OH, OW) or (N, C, OH, OW), got {output_size!r}"
        sizes = output_size
        if isinstance(sizes, np.ndarray) and sizes.ndim == 1 and sizes.dtype.kind in "iu":
            sizes = sizes.tolist()  # PyTorch takes any sequence of ints: np.array(y.shape) too
        if not isinstance(sizes, (tuple, list)):
            v.fail(op, message, TypeError)
        if len(sizes) not in (2, 4):  # a wrong count is a wrong value, as in PyTorch
            v.fail(op, message)
        wanted = v.pair(op, "output_size", tuple(sizes[-2:]), 1, "a positive")
        pad = v.conv_transpose_padding(op, self.padding)
        smallest = tuple((size - 1) * s - p0 - p1 + d * (k - 1) + 1
                         for size, s, p0, p1, d, k in zip(x.shape[2:], self.stride, pad[0::2],
                                                          pad[1::2], self.dilation,
                                                          self.kernel_size))
        largest = tuple(low + s - 1 for low, s in zip(smallest, self.stride))
        if not all(low <= size <= high for low, size, high in zip(smallest, wanted, largest)):
            v.fail(op, f"output_size {wanted} must lie between {smallest} and {largest} for an "
                       f"input of size {x.shape[2:]}, got {tuple(sizes)}")
        return tuple(size - low for size, low in zip(wanted, smallest))

    def _geometry(self, output_padding):
        return self.stride, self.padding, output_padding, self.groups, self.dilation

    def forward(self, x, output_size=None):
        output_padding = self.output_padding if output_size is None else \
            self._output_padding(x, output_size)
        bias = None if self.bias is None else self.bias.data
        y = F.conv_transpose2d(x, self.weight.data, bias, *self._geometry(output_padding))
        self._saved = (x, output_padding)
        return y

    def backward(self, grad_output):
        x, output_padding = self._saved_for_backward()
        gx, gw, gb = F.conv_transpose2d_backward(grad_output, x, self.weight.data,
                                                 *self._geometry(output_padding))
        _add_parameter_grads(self, gw, gb)
        return gx

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, "
                f"output_padding={self.output_padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}")


class Linear(Module):
    """``y = x @ weight.T + bias``, as ``torch.nn.Linear``: weight (out_features, in_features),
    bias (out_features,) unless bias=False; input (*, in_features) -> (*, out_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype=np.float32):
        super().__init__()
        op = "Linear"
        self.in_features = v.positive_int(op, "in_features", in_features)
        self.out_features = v.positive_int(op, "out_features", out_features)
        dtype = _float_dtype(op, dtype)
        self.weight = Parameter(np.empty((out_features, in_features), dtype))
        self.bias = Parameter(np.empty(out_features, dtype)) \
            if v.boolean(op, "bias", bias) else None
        _reset_like_pytorch(self.weight, self.bias)

    def forward(self, x):
        y = F.linear(x, self.weight.data, None if self.bias is None else self.bias.data)
        self._saved = x
        return y

    _input_grad_optional = True

    def backward(self, grad_output, *, input_grad: bool = True):
        x = self._saved_for_backward()
        # the kernel adds the parameters' gradients into their .grad itself
        gx, _, _ = F.linear_backward(grad_output, x, self.weight.data,
                                     grad_weight=self.weight.grad,
                                     grad_bias=None if self.bias is None else self.bias.grad,
                                     input_grad=input_grad)
        return gx

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class _BatchNorm(Module):
    """Batch normalisation over channel 1 with PyTorch's buffers and update rule; see
    ``fastconv.functional.batch_norm``. Training normalises with the batch's mean and biased
    variance and updates running_mean / running_var (unbiased) with `momentum`; evaluation
    normalises with the running statistics."""

    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    _input_ndims: tuple[int, ...] = ()
    _layout = ""
    _relu = False  # fastconv.fuse.BatchNorm2dReLU: then ReLU, fused

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 dtype=np.float32):
        super().__init__()
        op = type(self).__name__
        self.num_features = v.positive_int(op, "num_features", num_features)
        self.eps = v.positive_real(op, "eps", eps)
        self.momentum = v.real(op, "momentum", momentum, 0.0, 1.0, "a number in [0, 1]")
        dtype = _float_dtype(op, dtype)
        self.weight = Parameter(np.ones(num_features, dtype))
        self.bias = Parameter(np.zeros(num_features, dtype))
        self.running_mean = np.zeros(num_features, dtype)
        self.running_var = np.ones(num_features, dtype)
        self.num_batches_tracked = np.zeros((), np.int64)

    def forward(self, x, *, shortcut=None):
        """y = the normalised x. `shortcut` (keyword only), an array of x's shape: instead
        ``relu(y + shortcut)`` in the same pass, the end of a residual block (bit for bit
        ``F.add_relu(self(x), shortcut)``); backward then takes its gradient through that ReLU
        (the shortcut's own gradient is ``F.relu_backward(grad_output, output)``)."""
        if not isinstance(x, np.ndarray) or x.ndim not in self._input_ndims:
            got = x.shape if isinstance(x, np.ndarray) else type(x).__name__
            v.fail(type(self).__name__, f"x must be a {self._layout} array, got {got}")
        if shortcut is not None:  # checked here so that an error names the layer's argument
            op = type(self).__name__
            shortcut = v.float_array(op, "shortcut", shortcut)
            v.same_dtype(op, x=x, shortcut=shortcut)
            v.check_same_shape(op, "shortcut", shortcut, "x", x)
        training = self.training
        relu = self._relu or shortcut is not None
        y, mean, var = F.batch_norm(x, self.running_mean, self.running_var, self.weight.data,
                                    self.bias.data, training, self.momentum, self.eps,
                                    return_stats=True, relu=relu, add=shortcut)
        if training:
            self.num_batches_tracked += 1
        # backward need not recompute the statistics; the ReLU's mask is y's
        self._saved = (x, training, (mean, var), y if relu else None)
        return y

    def backward(self, grad_output, *, through_relu=None):
        """The gradient with respect to x. `through_relu` (keyword only), the output of a ReLU
        that grad_output came through after this layer (a residual block's last one), takes
        the gradient through that ReLU in the same passes: bit for bit
        ``backward(F.relu_backward(grad_output, through_relu))``."""
        x, training, stats, y = self._saved_for_backward()
        if through_relu is not None:
            if y is not None:
                v.fail(f"{type(self).__name__}.backward", "through_relu is for a batch norm "
                       "without a ReLU of its own, got one for a fused BatchNorm2dReLU or a "
                       "forward with a shortcut")
            y = through_relu
        gx, gw, gb = F.batch_norm_backward(grad_output, x, self.running_mean, self.running_var,
                                           self.weight.data, training, self.eps, stats=stats,
                                           output=y)
        self.weight.grad += gw
        self.bias.grad += gb
        return gx

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    """``torch.nn.BatchNorm1d(num_features)``: input (N, C) or (N, C, L)."""

    _input_ndims = (2, 3)
    _layout = "2-D (N, C) or 3-D (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """``torch.nn.BatchNorm2d(num_features)``: input (N, C, H, W)."""

    _input_ndims = (4,)
    _layout = "4-D (N, C, H, W)"


# ---- layers without parameters -------------------------------------------------------------------

class MaxPool2d(Module):
    """``torch.nn.MaxPool2d``; see ``fastconv.functional.max_pool2d``. Keeps the argmax indices
    of the forward pass for backward. ``data_format='NHWC'`` (keyword only, as Conv2d's) pools
    channels-last batches."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
                 *, data_format: str = "NCHW"):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.ceil_mode = dilation, ceil_mode
        self.data_format = v.data_format("MaxPool2d", data_format)

    def _args(self):
        return self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode

    def forward(self, x):
        y, indices = F.max_pool2d(x, *self._args(), return_indices=True,
                                  data_format=self.data_format)
        self._saved = (x, indices)
        return y

    def backward(self, grad_output):
        x, indices = self._saved_for_backward()
        return F.max_pool2d_backward(grad_output, x, *self._args(), indices=indices,
                                     data_format=self.data_format)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
                f"{_data_format_repr(self.data_format)}")


class AvgPool2d(Module):
    """``torch.nn.AvgPool2d``; see ``fastconv.functional.avg_pool2d``. ``data_format``
    (keyword only) as MaxPool2d's."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None, *,
                 data_format: str = "NCHW"):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override
        self.data_format = v.data_format("AvgPool2d", data_format)

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode,
                self.count_include_pad, self.divisor_override)

    def forward(self, x):
        y = F.avg_pool2d(x, *self._args(), data_format=self.data_format)
        self._saved = x
        return y

    def backward(self, grad_output):
        return F.avg_pool2d_backward(grad_output, self._saved_for_backward(), *self._args(),
                                     data_format=self.data_format)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
                f"{_data_format_repr(self.data_format)}")


class LPPool2d(Module):
    """``torch.nn.LPPool2d``: power-average pooling, L2 pooling with norm_type=2; see
    ``fastconv.functional.lp_pool2d``. ``padding`` (keyword only, zeros) is fastconv's
    extension; ``data_format`` (keyword only) as MaxPool2d's."""

    def __init__(self, norm_type: float, kernel_size, stride=None, ceil_mode: bool = False, *,
                 padding=0, data_format: str = "NCHW"):
        super().__init__()
        self.norm_type, self.kernel_size, self.stride = norm_type, kernel_size, stride
        self.ceil_mode, self.padding = ceil_mode, padding
        self.data_format = v.data_format("LPPool2d", data_format)

    def _args(self):
        return self.norm_type, self.kernel_size, self.stride, self.ceil_mode

    def forward(self, x):
        y = F.lp_pool2d(x, *self._args(), padding=self.padding, data_format=self.data_format)
        self._saved = x
        return y

    def backward(self, grad_output):
        return F.lp_pool2d_backward(grad_output, self._saved_for_backward(), *self._args(),
                                    padding=self.padding, data_format=self.data_format)

    def extra_repr(self) -> str:
        return (f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}"
                f"{_data_format_repr(self.data_format)}")


class AdaptiveAvgPool2d(Module):
    """``torch.nn.AdaptiveAvgPool2d(output_size)``; ``AdaptiveAvgPool2d(1)`` is global average
    pooling. See ``fastconv.functional.adaptive_avg_pool2d``."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        y = F.adaptive_avg_pool2d(x, self.output_size)
        self._saved = x
        return y

    def backward(self, grad_output):
        return F.adaptive_avg_pool2d_backward(grad_output, self._saved_for_backward(),
                                              self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """``torch.nn.AdaptiveMaxPool2d(output_size, return_indices=False)``: forward returns the
    output, or ``(output, indices)`` with return_indices; backward takes the output's gradient.
    See ``fastconv.functional.adaptive_max_pool2d``."""

    def __init__(self, output_size, return_indices: bool = False):
        super().__init__()
        self.output_size = output_size
        self.return_indices = v.boolean("AdaptiveMaxPool2d", "return_indices", return_indices)

    def forward(self, x):
        y, indices = F.adaptive_max_pool2d(x, self.output_size, return_indices=True)
        self._saved = (x, indices)
        return (y, indices) if self.return_indices else y

    def backward(self, grad_output):
        x, indices = self._saved_for_backward()
        return F.adaptive_max_pool2d_backward(grad_output, x, self.output_size, indices=indices)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, return_indices={self.return_indices}"


class ReLU(Module):
    """max(x, 0) element-wise. With ``inplace=True`` (as ``torch.nn.ReLU(inplace=True)``) the
    output overwrites the input: for a network in which no other layer needs the previous
    layer's output, saving an array and a pass over memory."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = v.boolean("ReLU", "inplace", inplace)

    def forward(self, x):
        y = F.relu(x, inplace=self.inplace)
        # relu_backward gives the same gradient from y as from x: y <= 0 exactly where x <= 0
        self._saved = y if self.inplace else x
        return y

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""

    def backward(self, grad_output):
        return F.relu_backward(grad_output, self._saved_for_backward())


class Tanh(Module):
    """tanh element-wise (backward uses the saved output)."""

    def forward(self, x):
        self._saved = y = F.tanh(x)
        return y

    def backward(self, grad_output):
        return F.tanh_backward(grad_output, self._saved_for_backward())


class Sigmoid(Module):
    """1 / (1 + exp(-x)) element-wise (backward uses the saved output)."""

    def forward(self, x):
        self._saved = y = F.sigmoid(x)
        return y

    def backward(self, grad_output):
        return F.sigmoid_backward(grad_output, self._saved_for_backward())


class Flatten(Module):
    """Merge dims start_dim..end_dim into one, as ``torch.nn.Flatten``: (N, C, H, W) ->
    (N, C*H*W) by default. Like PyTorch's, the output is a view of x where NumPy can make one."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        if not isinstance(x, np.ndarray):
            v.fail("Flatten", f"x must be a numpy.ndarray, got {type(x).__name__}", TypeError)
        dims = (self.start_dim, self.end_dim)
        if not all(-x.ndim <= d < x.ndim for d in dims) or dims[0] % x.ndim > dims[1] % x.ndim:
            v.fail("Flatten", f"start_dim={self.start_dim}, end_dim={self.end_dim} do not fit "
                              f"an input of shape {x.shape}")
        start, end = (d % x.ndim for d in dims)
        self._saved = x.shape
        return x.reshape(x.shape[:start] + (math.prod(x.shape[start:end + 1]),)
                         + x.shape[end + 1:])

    def backward(self, grad_output):
        shape = self._saved_for_backward()
        expected = shape[:self.start_dim % len(shape)] + (
            math.prod(shape[self.start_dim % len(shape):self.end_dim % len(shape) + 1]),) + \
            shape[self.end_dim % len(shape) + 1:]
        if not isinstance(grad_output, np.ndarray) or grad_output.shape != expected:
            got = grad_output.shape if isinstance(grad_output, np.ndarray) else \
                type(grad_output).__name__
            v.fail("Flatten.backward", f"grad_output must have the output's shape {expected}, "
                                       f"got {got}")
        return np.reshape(grad_output, shape)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """The input unchanged, as ``torch.nn.Identity``: a placeholder where a layer was taken out
    (``fastconv.fuse.fold_batch_norm`` leaves one for each batch norm it folds away). backward
    returns the gradient it is given."""

    def forward(self, x):
        self._saved = ()
        return x

    def backward(self, grad_output):
        self._saved_for_backward()
        return grad_output


class Dropout(Module):
    """Inverted dropout, as ``torch.nn.Dropout``: in training, zero each element with
    probability p and scale the rest by 1/(1-p); the identity in evaluation. Draws from the
    generator ``fastconv.init.manual_seed`` seeds."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = v.probability("Dropout", p)

    def forward(self, x):
        y, mask = F.dropout(x, self.p, self.training)
        self._saved = (mask,)  # a tuple: the mask itself is None in evaluation
        return y

    def backward(self, grad_output):
        (mask,) = self._saved_for_backward()
        return F.dropout_backward(grad_output, mask)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# ---- loss ----------------------------------------------------------------------------------------

class CrossEntropyLoss(Module):
    """Mean softmax cross-entropy over integer labels, fused and numerically stable, as
    ``torch.nn.CrossEntropyLoss()``; see ``fastconv.functional.cross_entropy``.

    ``forward(logits, labels)`` with logits (N, C) and integer labels (N,) returns the mean loss
    as a 0-d array (``float(loss)`` for a Python float); ``backward()`` returns the gradient of
    that loss with respect to the logits, (N, C).
    """

    def forward(self, logits, labels):
        loss = F.cross_entropy(logits, labels)
        self._saved = (logits, labels)
        return loss

    def backward(self, grad_output=1.0):
        logits, labels = self._saved_for_backward()
        return F.cross_entropy_backward(grad_output, logits, labels)
