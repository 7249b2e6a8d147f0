"""Whole networks built from ``fastconv.nn``: the ``fastconv train`` ConvNet and a small
CIFAR-style ResNet, the two networks ``fastconv bench --model`` times.

The ResNet follows He et al.'s CIFAR networks (3x3 stem, three stages of basic blocks at 32x32,
16x16 and 8x8, global average pooling, one linear classifier), with torchvision's module names,
so that ``state_dict`` keys (``conv1.weight``, ``layer2.0.downsample.0.weight``, ``fc.bias``, ...)
are those of the same network written with torchvision's ``BasicBlock`` and its weights load
either way.

Examples
--------
>>> import numpy as np
>>> from fastconv import init, models
>>> _ = init.manual_seed(0)
>>> net = models.resnet(blocks=(1, 1, 1))
>>> net(np.zeros((2, 3, 32, 32), np.float32)).shape
(2, 10)
>>> [k for k in net.state_dict() if k.startswith("layer2.0.downsample")][:2]
['layer2.0.downsample.0.weight', 'layer2.0.downsample.1.weight']
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from . import _validation as v
from . import functional as F
from . import nn
from .train import convnet

__all__ = ["BasicBlock", "ResNet", "resnet", "convnet"]


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: conv3x3 (stride) - BN - ReLU - conv3x3 - BN, plus the
    input (identity) or, when the stride or the width changes, a 1x1 strided convolution + BN
    of it (``downsample``), then ReLU. Input (N, in_channels, H, W) -> (N, channels, H/s, W/s).

    Submodules: conv1, bn1, relu1 (in place: the block owns the array it overwrites), conv2,
    bn2, downsample (Sequential(conv, BN) or None). bn2, the shortcut's addition and the last
    ReLU run as one pass (``bn2(out, shortcut=...)``; with bn2 folded away, ``F.add_relu`` in
    place on conv2's output); backward takes the gradient through that ReLU inside bn2's and
    the downsample's batch-norm passes and, for an identity shortcut, as it adds it
    (``relu_backward(..., add_to=)``). state_dict keys ``conv1.weight, bn1.*, conv2.weight,
    bn2.*, downsample.0.weight, downsample.1.*``, as torchvision's ``BasicBlock`` (whose one
    ``relu`` has no state).
    """

    # runs of layers each feeding only the next (what fastconv.fuse may fuse)
    _chains = (("conv1", "bn1", "relu1"), ("conv2", "bn2"))

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dtype=np.float32):
        super().__init__()
        op = "BasicBlock"
        in_channels = v.positive_int(op, "in_channels", in_channels)
        channels = v.positive_int(op, "channels", channels)
        stride = v.positive_int(op, "stride", stride)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False, dtype=dtype)
        self.bn1 = nn.BatchNorm2d(channels, dtype=dtype)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False, dtype=dtype)
        self.bn2 = nn.BatchNorm2d(channels, dtype=dtype)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False, dtype=dtype),
                nn.BatchNorm2d(channels, dtype=dtype))

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.relu1(self.bn1(self.conv1(x))))
        fused = type(self.bn2) is nn.BatchNorm2d
        if fused:  # bn2, the shortcut's addition and the last ReLU in one pass
            y = self.bn2(out, shortcut=shortcut)
        else:  # out is bn2's (or, folded, conv2's) fresh array: the block may overwrite it
            y = F.add_relu(self.bn2(out), shortcut, inplace=True)
        self._saved = (y, fused)
        return y

    def backward(self, grad_output):
        # the last ReLU's gradient is relu_backward on the output (y <= 0 exactly where the sum
        # was): bn2 (fused) and a downsample's batch norm take it in their own passes, the
        # identity shortcut as it is added, so g is made only when bn2 is not fused
        y, fused = self._saved_for_backward()
        g = None
        if fused:
            g_main = self.bn2.backward(grad_output)
        else:
            g = F.relu_backward(grad_output, y)
            g_main = self.bn2.backward(g)
        gx = self.conv1.backward(self.bn1.backward(self.relu1.backward(
            self.conv2.backward(g_main))))
        if self.downsample is None:
            return F.relu_backward(grad_output, y, add_to=gx)
        layers = list(self.downsample)
        if g is None and type(layers[-1]) is nn.BatchNorm2d:
            g = layers.pop().backward(grad_output, through_relu=y)
        elif g is None:
            g = F.relu_backward(grad_output, y)
        for layer in reversed(layers):
            g = layer.backward(g)
        gx += g
        return gx

    def extra_repr(self) -> str:
        return (f"{self.conv1.in_channels}, {self.conv1.out_channels}, "
                f"stride={self.conv1.stride[0]}")


class ResNet(nn.Sequential):
    """A CIFAR-style ResNet (He et al. 2016, section 4.2): conv3x3 stem - BN - ReLU, one stage
    of ``blocks[i]`` BasicBlocks per entry of ``widths`` (every stage after the first halves the
    map in its first block), global average pooling, a linear classifier.

    Input (N, in_channels, H, W) of any size (the global pooling averages whatever map the last
    stage leaves); output (N, num_classes) logits. A Sequential of conv1, bn1, relu, layer1,
    layer2, ..., avgpool (AdaptiveAvgPool2d(1)), flatten, fc (torchvision's names).
    """

    def __init__(self, blocks=(2, 2, 2), widths=(16, 32, 64), num_classes: int = 10,
                 in_channels: int = 3, dtype=np.float32):
        op = "ResNet"
        blocks = tuple(v.positive_int(op, "blocks", b) for b in blocks)
        widths = tuple(v.positive_int(op, "widths", w) for w in widths)
        if not blocks or len(blocks) != len(widths):
            v.fail(op, f"blocks and widths must be non-empty and of one length, got {blocks} "
                       f"and {widths}")
        layers = OrderedDict(conv1=nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False,
                                             dtype=dtype),
                             bn1=nn.BatchNorm2d(widths[0], dtype=dtype), relu=nn.ReLU(inplace=True))
        width = widths[0]
        for stage, (count, out) in enumerate(zip(blocks, widths)):
            stride = 1 if stage == 0 else 2
            layers[f"layer{stage + 1}"] = nn.Sequential(*(
                BasicBlock(width if i == 0 else out, out, stride if i == 0 else 1, dtype=dtype)
                for i in range(count)))
            width = out
        layers.update(avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                      fc=nn.Linear(width, num_classes, dtype=dtype))
        super().__init__(layers)


def resnet(blocks=(2, 2, 2), widths=(16, 32, 64), num_classes: int = 10, dtype=np.float32
           ) -> ResNet:
    """A CIFAR ResNet for 32x32x3 images: ``blocks=(1, 1, 1)`` is ResNet-8, ``(2, 2, 2)``
    (default) ResNet-14, ``(3, 3, 3)`` ResNet-20 (depth 6n + 2)."""
    return ResNet(blocks, widths, num_classes, 3, dtype)
