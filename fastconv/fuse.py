"""Inference-time rewrites of a trained network: batch norm folded into the convolution before it.

In evaluation mode a batch norm is an affine map per channel, ``y = (x - mean) * scale + beta``
with ``scale = gamma / sqrt(running_var + eps)``, so a ``Conv2d`` followed directly by a
``BatchNorm2d`` is one convolution with weight ``W * scale`` (per output channel) and bias
``(b - mean) * scale + beta``: one pass over the activations fewer per pair, as onnxruntime and
OpenVINO do when they load a graph. ``fold_batch_norm`` returns such a copy of a model, for
inference only (the folded network has no batch statistics to train with).

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

from . import nn

__all__ = ["fold_batch_norm"]


def _foldable(conv, bn) -> bool:
    return isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d \
        and bn.num_features == conv.out_channels


def _pairs(module):
    """(conv name, batch norm name) of the pairs `module` runs one straight into the other: in
    a Sequential, neighbours; in a module listing them in ``_conv_bn_pairs`` (as
    ``fastconv.models.BasicBlock``), those."""
    if isinstance(module, nn.Sequential):
        children = module._own(nn.Module)
        return [(a, b) for (a, conv), (b, bn) in zip(children, children[1:])
                if _foldable(conv, bn)]
    return [(a, b) for a, b in getattr(module, "_conv_bn_pairs", ())
            if _foldable(getattr(module, a), getattr(module, b))]


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

    Direct means neighbours in a ``Sequential``, or a pair a module lists in its
    ``_conv_bn_pairs`` (``fastconv.models.BasicBlock`` lists ``(conv1, bn1)``, ``(conv2,
    bn2)``); other batch norms stay. The copy gives the model's evaluation-mode outputs up to
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
