"""Rewrites of a network into fewer, fused layers: batch norm folded into the convolution before
it (inference), and a convolution with the ReLU after it run as one op (training and inference).

In evaluation mode a batch norm is an affine map per channel, ``y = (x - mean) * scale + beta``
with ``scale = gamma / sqrt(running_var + eps)``, so a ``Conv2d`` followed directly by a
``BatchNorm2d`` is one convolution with weight ``W * scale`` (per output channel) and bias
``(b - mean) * scale + beta``: one pass over the activations fewer per pair, as onnxruntime and
OpenVINO do when they load a graph. ``fold_batch_norm`` returns such a copy of a model, for
inference only (the folded network has no batch statistics to train with).

``fuse_conv_relu`` replaces each ``Conv2d`` followed by a ``ReLU`` with a ``Conv2dReLU``, which
runs ``F.conv2d_relu`` (bias and ReLU applied as each output is written) and
``F.conv2d_relu_backward``, and each ``BatchNorm2d`` followed by a ``ReLU`` with a
``BatchNorm2dReLU`` (``F.batch_norm(..., relu=True)``): bit for bit the two layers' outputs and
gradients, with one pass over the activations fewer each way.

``optimize`` makes an inference-only copy: batch norms folded, those fusions, and layers that
keep nothing for backward.

Which layers run straight into which: the neighbours of a ``Sequential``, and the runs a module
lists in ``_chains`` (``fastconv.models.BasicBlock``: conv1, bn1, relu1 and conv2, bn2), each a
sequence of submodules in which each one's output goes only to the next.

Examples
--------
>>> import numpy as np
>>> from fastconv import fuse, init, nn
>>> _ = init.manual_seed(0)
>>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
...                       nn.ReLU()).eval()
>>> folded = fuse.fold_batch_norm(model)
>>> [type(m).__name__ for m in folded], folded[0].bias.shape
(['Conv2d', 'Identity', 'ReLU'], (4,))
>>> x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
>>> bool(np.allclose(folded(x), model(x), atol=1e-5))
True
"""

from __future__ import annotations

import copy

import numpy as np

from . import functional as F
from . import nn

__all__ = ["fold_batch_norm", "fuse_conv_relu", "optimize", "Conv2dReLU", "BatchNorm2dReLU"]


def _chains(module):
    """The runs of (name, submodule) of `module` in which each one's output goes only to the
    next: a Sequential's children, or the runs its ``_chains`` lists."""
    if isinstance(module, nn.Sequential):
        return [module._own(nn.Module)]
    return [[(name, getattr(module, name)) for name in chain]
            for chain in getattr(module, "_chains", ())]


def _foldable(conv, bn) -> bool:
    return type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d \
        and bn.num_features == conv.out_channels


def _pairs(module):
    """(conv name, batch norm name) of the Conv2d -> BatchNorm2d neighbours in `module`'s
    chains."""
    return [(a, b) for chain in _chains(module) for (a, conv), (b, bn) in zip(chain, chain[1:])
            if _foldable(conv, bn)]


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold `bn`'s evaluation-mode map into `conv`'s weight and bias, computed in float64 and
    rounded once to the layer's dtype."""
    dtype = conv.weight.dtype
    scale = bn.weight.data.astype(np.float64) / np.sqrt(bn.running_var.astype(np.float64)
                                                        + bn.eps)
    bias = 0.0 if conv.bias is None else conv.bias.data.astype(np.float64)
    conv.weight.data = (conv.weight.data * scale.reshape(-1, 1, 1, 1)).astype(dtype)
    shift = ((bias - bn.running_mean) * scale + bn.bias.data).astype(dtype)
    conv.bias = nn.Parameter(shift)
    conv.weight.grad = np.zeros_like(conv.weight.data)


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """A copy of `model` in evaluation mode in which every ``BatchNorm2d`` that directly
    follows a ``Conv2d`` (with as many channels) is folded into it: the convolution gains the
    batch norm's running statistics and affine parameters (and a bias, if it had none), the
    batch norm becomes ``nn.Identity()``. `model` itself is unchanged.

    Directly means next in one of the module's chains (see the module's docstring); other
    batch norms stay. The copy gives the model's evaluation-mode outputs up to
    rounding (the folded weights are computed in float64 and rounded once); its state_dict has
    no batch-norm entries for the folded pairs and a bias per folded convolution.

    Examples
    --------
    >>> from fastconv import fuse, models
    >>> net = fuse.fold_batch_norm(models.resnet(blocks=(1, 1, 1)))
    >>> type(net.layer1[0].bn1).__name__, net.layer2[0].downsample[0].bias.shape
    ('Identity', (32,))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold_batch_norm: model must be a fastconv.nn.Module, got "
                        f"{type(model).__name__}")
    return _fold_all(_fresh_copy(model).eval())


def _fresh_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` with nothing saved for backward (the copy has not run)."""
    out = copy.deepcopy(model)
    for m in out.modules():
        m._saved = None
    return out


def _fold_all(model: nn.Module) -> nn.Module:
    """fold_batch_norm's folds, in `model` itself (in evaluation mode)."""
    for m in model.modules():
        for conv_name, bn_name in _pairs(m):
            _fold(getattr(m, conv_name), getattr(m, bn_name))
            setattr(m, bn_name, nn.Identity())
    return model


def _recast(module: nn.Module, cls):
    """A `cls` (a subclass of module's class adding only methods) holding `module`'s
    attributes: the same parameters, arrays and arguments, nothing saved."""
    out = cls.__new__(cls)
    vars(out).update(vars(module))
    out._saved = None
    return out


class Conv2dReLU(nn.Conv2d):
    """``Conv2d`` then ``ReLU`` as one layer: ``F.conv2d_relu`` forward and
    ``F.conv2d_relu_backward`` backward, bit for bit the two layers' outputs and gradients. Its
    parameters, arguments and state_dict keys are the Conv2d's. The output is kept for backward
    (the ReLU's mask), so it must not be changed in place before backward runs.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import fuse, init, nn
    >>> _ = init.manual_seed(0)
    >>> fused = fuse.Conv2dReLU.from_conv(nn.Conv2d(1, 2, 3, padding=1))
    >>> y = fused(np.ones((1, 1, 4, 4), np.float32))
    >>> bool((y >= 0).all()), fused.backward(np.ones_like(y)).shape
    (True, (1, 1, 4, 4))
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> Conv2dReLU:
        """The fused layer of `conv` (sharing its parameters) and the ReLU after it."""
        return _recast(conv, cls)

    def forward(self, x):
        bias = None if self.bias is None else self.bias.data
        y = F.conv2d_relu(x, self.weight.data, bias, *self._geometry())
        self._saved = (x, y)
        return y

    def backward(self, grad_output, *, input_grad: bool = True):
        x, y = self._saved_for_backward()
        gx, gw, gb = F.conv2d_relu_backward(grad_output, x, self.weight.data, y,
                                            *self._geometry(), input_grad=input_grad)
        nn._add_parameter_grads(self, gw, gb)
        return gx


class BatchNorm2dReLU(nn.BatchNorm2d):
    """``BatchNorm2d`` then ``ReLU`` as one layer: ``F.batch_norm(..., relu=True)`` forward and
    ``F.batch_norm_backward(..., output=y)`` backward, bit for bit the two layers' outputs,
    running statistics and gradients, with one pass over the activations fewer each way. Its
    parameters, buffers, arguments and state_dict keys are the BatchNorm2d's; its output is kept
    for backward (the ReLU's mask), so it must not be changed in place before backward runs.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import fuse, nn
    >>> fused = fuse.fuse_conv_relu(nn.Sequential(nn.BatchNorm2d(2), nn.ReLU()))[0]
    >>> y = fused(np.arange(8.0, dtype=np.float32).reshape(2, 2, 1, 2))
    >>> bool((y >= 0).all()), fused.backward(np.ones_like(y)).shape
    (True, (2, 2, 1, 2))
    """

    _relu = True


# layer class -> the class that runs it and the ReLU after it as one layer
_WITH_RELU = {nn.Conv2d: Conv2dReLU, nn.BatchNorm2d: BatchNorm2dReLU}


def fuse_conv_relu(model: nn.Module) -> nn.Module:
    """A copy of `model` (in its mode) in which every ``Conv2d`` (NCHW) that runs straight into
    a ``ReLU`` (with only ``Identity`` layers between, as ``fold_batch_norm`` leaves them) is a
    ``Conv2dReLU``, every such ``BatchNorm2d`` a ``BatchNorm2dReLU``, and the ReLU an
    ``Identity``. Outputs, gradients and state_dict keys are
    the model's, bit for bit; `model` itself is unchanged. Train the copy or run it.

    Examples
    --------
    >>> from fastconv import fuse, nn
    >>> fused = fuse.fuse_conv_relu(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten()))
    >>> [type(m).__name__ for m in fused]
    ['Conv2dReLU', 'Identity', 'Flatten']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse_conv_relu: model must be a fastconv.nn.Module, got "
                        f"{type(model).__name__}")
    return _fuse_all(_fresh_copy(model))


def _fuse_all(model: nn.Module) -> nn.Module:
    """fuse_conv_relu's fusions, in `model` itself."""
    for m in model.modules():
        for chain in _chains(m):
            for i, (name, layer) in enumerate(chain):
                fused = _WITH_RELU.get(type(layer))
                # conv2d_relu's kernels are NCHW's: a channels-last convolution stays as it is
                if fused is None or getattr(layer, "data_format", "NCHW") != "NCHW":
                    continue
                j = i + 1
                while j < len(chain) and type(chain[j][1]) is nn.Identity:
                    j += 1
                if j < len(chain) and type(chain[j][1]) is nn.ReLU:
                    setattr(m, name, _recast(layer, fused))
                    setattr(m, chain[j][0], nn.Identity())
    return model


# ---- inference ---------------------------------------------------------------------------------

class _InferenceOnly:
    """A layer of ``optimize``'s copy: forward keeps nothing for a backward pass."""

    def backward(self, grad_output, *, input_grad: bool = True):
        raise RuntimeError(f"{type(self).__name__}.backward: a layer of fastconv.fuse.optimize's "
                           "inference-only copy has no backward pass; train the original model")


class InferenceConv2d(_InferenceOnly, nn.Conv2d):
    """``optimize``'s Conv2d: ``F.conv2d`` and nothing saved."""

    def forward(self, x):
        bias = None if self.bias is None else self.bias.data
        return F.conv2d(x, self.weight.data, bias, *self._geometry(),
                        data_format=self.data_format)


class InferenceConv2dReLU(_InferenceOnly, Conv2dReLU):
    """``optimize``'s Conv2dReLU: ``F.conv2d_relu`` and nothing saved."""

    def forward(self, x):
        bias = None if self.bias is None else self.bias.data
        return F.conv2d_relu(x, self.weight.data, bias, *self._geometry())


class InferenceMaxPool2d(_InferenceOnly, nn.MaxPool2d):
    """``optimize``'s MaxPool2d: the maxima without their indices (which only backward reads),
    so the pass writes its output alone."""

    def forward(self, x):
        return F.max_pool2d(x, *self._args(), data_format=self.data_format)


# layer class -> its inference-only form (the exact class: a subclass may do more)
_INFERENCE = {nn.Conv2d: InferenceConv2d, Conv2dReLU: InferenceConv2dReLU,
              nn.MaxPool2d: InferenceMaxPool2d}


def optimize(model: nn.Module) -> nn.Module:
    """An inference-only copy of `model`, for evaluation as onnxruntime or OpenVINO would run
    it: evaluation mode, batch norms folded into the convolutions before them
    (``fold_batch_norm``), each convolution that runs straight into a ReLU fused with it
    (``fuse_conv_relu``), ``Identity`` layers left out of Sequentials, and convolutions and max
    pooling that keep nothing for backward (max pooling writes no indices).

    Outputs are ``model.eval()``'s up to the folded weights' rounding (exactly them when no batch
    norm folds); `model` itself is unchanged, stays trainable and keeps PyTorch's state_dict.
    The copy is a snapshot of the weights: optimize again after changing them. Its layers'
    ``backward`` raises RuntimeError; its state_dict is ``fold_batch_norm``'s, less the removed
    Identity layers (which hold nothing).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import fuse, init, nn
    >>> _ = init.manual_seed(0)
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
    ...                       nn.MaxPool2d(2))
    >>> fast = fuse.optimize(model)
    >>> [type(m).__name__ for m in fast], model.training
    (['InferenceConv2dReLU', 'InferenceMaxPool2d'], True)
    >>> x = np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32)
    >>> bool(np.allclose(fast(x), model.eval()(x), atol=1e-6))
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize: model must be a fastconv.nn.Module, got "
                        f"{type(model).__name__}")
    fast = _fuse_all(_fold_all(_fresh_copy(model).eval()))
    if type(fast) in _INFERENCE:  # a lone layer
        return _recast(fast, _INFERENCE[type(fast)])
    for m in list(fast.modules()):
        for name, child in m._own(nn.Module):
            if isinstance(m, nn.Sequential) and type(child) is nn.Identity:
                delattr(m, name)
            elif type(child) in _INFERENCE:
                setattr(m, name, _recast(child, _INFERENCE[type(child)]))
    return fast
