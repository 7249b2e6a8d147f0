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
``F.conv2d_relu_backward``: bit for bit the two layers' outputs and gradients, with one pass
over the activations fewer each way.

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

__all__ = ["fold_batch_norm", "fuse_conv_relu", "Conv2dReLU"]


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
    folded = copy.deepcopy(model).eval()
    for m in folded.modules():
        m._saved = None  # the copy has not run
        for conv_name, bn_name in _pairs(m):
            _fold(getattr(m, conv_name), getattr(m, bn_name))
            setattr(m, bn_name, nn.Identity())
    return folded


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
        fused = cls.__new__(cls)
        vars(fused).update(vars(conv))
        fused._saved = None
        return fused

    def forward(self, x):
        bias = None if self.bias is None else self.bias.data
        y = F.conv2d_relu(x, self.weight.data, bias, *self._geometry())
        self._saved = (x, y)
        return y

    def backward(self, grad_output):
        x, y = self._saved_for_backward()
        gx, gw, gb = F.conv2d_relu_backward(grad_output, x, self.weight.data, y,
                                            *self._geometry())
        nn._add_parameter_grads(self, gw, gb)
        return gx


def fuse_conv_relu(model: nn.Module) -> nn.Module:
    """A copy of `model` (in its mode) in which every ``Conv2d`` that runs straight into a
    ``ReLU`` (with only ``Identity`` layers between, as ``fold_batch_norm`` leaves them) is a
    ``Conv2dReLU`` and the ReLU an ``Identity``. Outputs, gradients and state_dict keys are
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
    fused = copy.deepcopy(model)
    for m in fused.modules():
        m._saved = None  # the copy has not run
        for chain in _chains(m):
            for i, (conv_name, conv) in enumerate(chain):
                if type(conv) is not nn.Conv2d:
                    continue
                j = i + 1
                while j < len(chain) and type(chain[j][1]) is nn.Identity:
                    j += 1
                if j < len(chain) and type(chain[j][1]) is nn.ReLU:
                    setattr(m, conv_name, Conv2dReLU.from_conv(conv))
                    setattr(m, chain[j][0], nn.Identity())
    return fused
