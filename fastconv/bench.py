"""Side-by-side benchmarks: fastconv against PyTorch (when installed) and the NumPy reference.

Used by the ``fastconv bench`` command and by the pytest-benchmark suite in bench/. Shapes are
the real layers of shared/ANCHORS.md. Each pair of calls is interleaved (fastconv, PyTorch,
fastconv, PyTorch, …) so a noisy machine slows both alike, and the ratio reported is the median
of the per-pair ratios.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

import fastconv
import fastconv.functional as F
from fastconv import _io
from fastconv import reference as ref

# name: (N, C, H(=W), K, kernel, stride, padding, groups). The published layers first, then one
# real layer of each class the convolution must not fall behind on: few pixels with many
# channels (ResNet's last stage), channel counts off the vector width, batch 1, 1x1 expansion,
# the large-kernel stem, grouped (ResNeXt) and depthwise (MobileNet) layers, the second conv
# of the `fastconv train` ConvNet, and the 3x3 convs of ResNet-14's three stages (few channels on
# small images, `fastconv bench --model`'s resnet14).
CONV_LAYERS = {
    "lenet1-5x5": (64, 1, 28, 32, 5, 1, 2, 1),
    "cifar-3x3": (64, 3, 32, 32, 3, 1, 1, 1),
    "vgg-64": (32, 64, 56, 64, 3, 1, 1, 1),
    "res-256": (32, 256, 14, 256, 3, 1, 1, 1),
    "pw-1x1": (32, 256, 14, 64, 1, 1, 0, 1),
    "down-s2": (32, 64, 56, 128, 3, 2, 1, 1),
    "alex-11x11s4": (16, 3, 227, 96, 11, 4, 0, 1),
    "res-512-7x7": (32, 512, 7, 512, 3, 1, 1, 1),
    "odd-24-40": (32, 24, 28, 40, 3, 1, 1, 1),
    "odd-3-37": (32, 3, 28, 37, 3, 1, 1, 1),
    "vgg-64-n1": (1, 64, 56, 64, 3, 1, 1, 1),
    "res-256-n1": (1, 256, 14, 256, 3, 1, 1, 1),
    "expand-1x1": (32, 64, 56, 256, 1, 1, 0, 1),
    "stem-7x7s2": (8, 3, 224, 64, 7, 2, 3, 1),
    "resnext-g32": (32, 128, 28, 128, 3, 1, 1, 32),
    "dw-128": (32, 128, 56, 128, 3, 1, 1, 128),
    "dw-256-s2": (32, 256, 28, 256, 3, 2, 1, 256),
    "convnet-5x5": (32, 32, 14, 64, 5, 1, 2, 1),
    "res14-16": (64, 16, 32, 16, 3, 1, 1, 1),
    "res14-32": (64, 32, 16, 32, 3, 1, 1, 1),
    "res14-64": (64, 64, 8, 64, 3, 1, 1, 1),
}
# The backward pass is also timed pass by pass (input gradient, weight gradient) on these, whose
# every pass is held to a share of the multiply-add peak.
CONV_PASS_LAYERS = ("vgg-64", "res-256", "res14-16", "res14-32", "res14-64")

# Decoder layers (upsampling by 2): name: (N, C_in, H(=W), C_out, kernel, stride, padding,
# output_padding); the output is (N, C_out, 2H, 2H)
CONV_TRANSPOSE_LAYERS = {
    "unet-2x2s2": (16, 128, 28, 64, 2, 2, 0, 0),
    "fcn-3x3s2-op1": (16, 64, 28, 32, 3, 2, 1, 1),
    "dcgan-4x4s2": (64, 128, 16, 64, 4, 2, 1, 0),
    "dcgan-rgb-4x4s2": (64, 64, 32, 3, 4, 2, 1, 0),
}

POOL_SHAPE = (64, 64, 56, 56)
# name: (op, kwargs)
POOL_CASES = {
    "max-2x2s2": ("max", dict(kernel_size=2, stride=2)),
    "max-3x3s2p1": ("max", dict(kernel_size=3, stride=2, padding=1)),
    "avg-2x2s2": ("avg", dict(kernel_size=2, stride=2)),
    "l2-2x2s2": ("lp", dict(kernel_size=2, stride=2)),
}

# Adaptive and global pooling. name: (op, input shape, output_size). The ResNet-50 head is the
# global average ONNX models end on; the pooling input's shape adds the same op at 51 MB (a
# bandwidth-bound reduction), an output that divides it (run as plain pooling) and one that
# does not (windows of varying size).
ADAPTIVE_POOL_CASES = {
    "gavg-res50": ("avg", (32, 2048, 7, 7), 1),
    "gavg-56": ("avg", POOL_SHAPE, 1),
    "gmax-56": ("max", POOL_SHAPE, 1),
    "aavg-7x7": ("avg", POOL_SHAPE, 7),
    "aavg-6x6": ("avg", POOL_SHAPE, 6),
    "amax-6x6": ("max", POOL_SHAPE, 6),
}


@dataclass
class Case:
    """One benchmark: a fastconv call, the same call in PyTorch (or None), and its work."""
    group: str
    name: str
    direction: str
    fastconv: Callable[[], object]
    torch: Callable[[], object] | None
    work: float  # FLOP for convolution, bytes moved for pooling
    unit: str  # "GFLOP/s" or "GB/s"
    reference: Callable[[], object] | None = None  # the same call in fastconv.reference
    # channels-last cases: the same call on fastconv's NCHW kernels, timed in the same rounds
    nchw: Callable[[], object] | None = None


# The layouts a case list can be made in: the group suffix, and how an NCHW array and a torch
# tensor are laid out in it (channels last: an NHWC array, a torch.channels_last tensor).
LAYOUTS = ("NCHW", "NHWC")


def _group(group: str, data_format: str) -> str:
    return group if data_format == "NCHW" else f"{group}-nhwc"


def _in_layout(a: np.ndarray, data_format: str) -> np.ndarray:
    return a if data_format == "NCHW" else np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _torch_in_layout(torch, a: np.ndarray, data_format: str):
    t = torch.from_numpy(a)
    return t if data_format == "NCHW" else t.contiguous(memory_format=torch.channels_last)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _conv_calls(name, x, w, b, gy, kw, ref_args, flop):
    """{direction: (fastconv's call, the reference's, work)} of one layer on x and gy (in the
    layout kw's data_format names, NCHW without one): forward and backward, and for
    CONV_PASS_LAYERS the backward's two passes alone, "input" (conv2d_input) and "weight"
    (conv2d_weight, no bias gradient)."""
    calls = {
        "forward": (lambda: F.conv2d(x, w, b, **kw), lambda: ref.conv2d(x, w, b, *ref_args),
                    flop),
        "backward": (lambda: F.conv2d_backward(gy, x, w, **kw),
                     lambda: ref.conv2d_backward(gy, x, w, *ref_args), 2 * flop),
    }
    if name in CONV_PASS_LAYERS:
        calls["input"] = (lambda: F.conv2d_input(x.shape, w, gy, **kw),
                          lambda: ref.conv2d_backward(gy, x, w, *ref_args)[0], flop)
        calls["weight"] = (lambda: F.conv2d_weight(x, w.shape, gy, **kw),
                           lambda: ref.conv2d_backward(gy, x, w, *ref_args)[1], flop)
    return calls


def conv_cases(dtype=np.float32, names=None, seed=0, data_format="NCHW") -> list[Case]:
    """Forward and backward (input, weight and bias gradients) of every CONV_LAYERS layer, and
    for CONV_PASS_LAYERS the backward's two passes alone (_conv_calls). With data_format 'NHWC'
    the same channels last (PyTorch on channels_last tensors), each beside fastconv's NCHW call
    of the same pass."""
    torch = _torch()
    rng = np.random.default_rng(seed)
    cases = []
    group = _group("conv2d", data_format)
    for name, (n, c, h, k, ks, s, p, groups) in CONV_LAYERS.items():
        if names and name not in names:
            continue
        x0 = rng.standard_normal((n, c, h, h)).astype(dtype)
        cg = c // groups
        w = (rng.standard_normal((k, cg, ks, ks)) / np.sqrt(cg * ks * ks)).astype(dtype)
        b = rng.standard_normal(k).astype(dtype)
        kw = dict(stride=s, padding=p, groups=groups)
        y = F.conv2d(x0, w, b, **kw)
        gy0 = rng.standard_normal(y.shape).astype(dtype)
        flop = 2.0 * y.size * cg * ks * ks
        ref_args = ((s, s), (p, p, p, p), (1, 1), groups)
        x, gy = _in_layout(x0, data_format), _in_layout(gy0, data_format)
        calls = _conv_calls(name, x, w, b, gy, dict(kw, data_format=data_format),
                            ref_args + (data_format,), flop)
        nchw = _conv_calls(name, x0, w, b, gy0, kw, ref_args, flop) \
            if data_format != "NCHW" else {}
        theirs = {}
        if torch is not None:
            tx, tgy = (_torch_in_layout(torch, a, data_format) for a in (x0, gy0))
            tw, tb = torch.from_numpy(w), torch.from_numpy(b)
            theirs["forward"] = lambda tx=tx, tw=tw, tb=tb, kw=kw: torch.nn.functional.conv2d(
                tx, tw, tb, **kw)
            masks = {"backward": [True, True, True], "input": [True, False, False],
                     "weight": [False, True, False]}
            geometry = ([k], [s, s], [p, p], [1, 1], False, [0, 0], groups)
            for direction, mask in masks.items():
                theirs[direction] = lambda tx=tx, tw=tw, tgy=tgy, a=geometry, m=mask: \
                    torch.ops.aten.convolution_backward(tgy, tx, tw, *a, m)
        for direction, (ours, reference, work) in calls.items():
            cases.append(Case(group, name, direction, ours, theirs.get(direction), work,
                              "GFLOP/s", reference, nchw.get(direction, (None,))[0]))
    return cases


def conv_transpose_cases(dtype=np.float32, names=None, seed=0) -> list[Case]:
    """The decoder layers of CONV_TRANSPOSE_LAYERS, forward (with bias) and backward."""
    torch = _torch()
    rng = np.random.default_rng(seed)
    cases = []
    for name, (n, c, h, k, ks, s, p, op) in CONV_TRANSPOSE_LAYERS.items():
        if names and name not in names:
            continue
        x = rng.standard_normal((n, c, h, h)).astype(dtype)
        w = (rng.standard_normal((c, k, ks, ks)) / np.sqrt(c * ks * ks)).astype(dtype)
        b = rng.standard_normal(k).astype(dtype)
        geometry = dict(stride=s, padding=p, output_padding=op)
        y = F.conv_transpose2d(x, w, b, **geometry)
        gy = rng.standard_normal(y.shape).astype(dtype)
        flop = 2.0 * x.size * k * ks * ks  # every input pixel times every weight
        fwd_t = bwd_t = None
        if torch is not None:
            tx, tw, tb, tgy = (torch.from_numpy(a) for a in (x, w, b, gy))

            def fwd_t(tx=tx, tw=tw, tb=tb, g=geometry):
                return torch.nn.functional.conv_transpose2d(tx, tw, tb, **g)

            def bwd_t(tx=tx, tw=tw, tgy=tgy, s=s, p=p, op=op, k=k):
                return torch.ops.aten.convolution_backward(
                    tgy, tx, tw, [k], [s, s], [p, p], [1, 1], True, [op, op], 1,
                    [True, True, True])

        ref_args = ((s, s), (p, p, p, p), (op, op), 1, (1, 1))
        cases.append(Case("conv_transpose2d", name, "forward",
                          lambda x=x, w=w, b=b, g=geometry: F.conv_transpose2d(x, w, b, **g),
                          fwd_t, flop, "GFLOP/s",
                          lambda x=x, w=w, b=b, a=ref_args: ref.conv_transpose2d(x, w, b, *a)))
        cases.append(Case("conv_transpose2d", name, "backward",
                          lambda x=x, w=w, gy=gy, g=geometry:
                              F.conv_transpose2d_backward(gy, x, w, **g),
                          bwd_t, 2 * flop, "GFLOP/s",
                          lambda x=x, w=w, gy=gy, a=ref_args:
                              ref.conv_transpose2d_backward(gy, x, w, *a)))
    return cases


def _pool_calls(op, x, gy, kw, indices):
    """fastconv's forward and backward calls of one pooling case on x and gy (in the layout
    kw's data_format names), the max-pool backward with the forward pass's indices."""
    fwd = {
        "max": lambda: F.max_pool2d(x, **kw),
        "avg": lambda: F.avg_pool2d(x, **kw),
        "lp": lambda: F.lp_pool2d(x, 2, **kw),
    }[op]
    bwd = {
        "max": lambda: F.max_pool2d_backward(gy, x, **kw, indices=indices),
        "avg": lambda: F.avg_pool2d_backward(gy, x, **kw),
        "lp": lambda: F.lp_pool2d_backward(gy, x, 2, **kw),
    }[op]
    return fwd, bwd


def pool_cases(dtype=np.float32, names=None, seed=0, data_format="NCHW") -> list[Case]:
    """The POOL_CASES on POOL_SHAPE, forward and backward; with data_format 'NHWC' as
    conv_cases."""
    torch = _torch()
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal(POOL_SHAPE).astype(dtype)
    x = _in_layout(x0, data_format)
    tx = _torch_in_layout(torch, x0, data_format) if torch is not None else None
    tf = torch.nn.functional if torch is not None else None
    group, df = _group("pool2d", data_format), data_format
    cases = []
    for name, (op, kw) in POOL_CASES.items():
        if names and name not in names:
            continue
        idx0 = idx = None
        if op == "max":
            y, idx0 = F.max_pool2d(x0, **kw, return_indices=True)
        elif op == "avg":
            y = F.avg_pool2d(x0, **kw)
        else:
            y = F.lp_pool2d(x0, 2, **kw)
        gy0 = rng.standard_normal(y.shape).astype(dtype)
        gy = _in_layout(gy0, data_format)
        if idx0 is not None:
            idx = _in_layout(idx0, data_format)
        moved = float(x.nbytes + y.nbytes)
        fwd_f, bwd_f = _pool_calls(op, x, gy, dict(kw, data_format=data_format), idx)
        nchw_f, nchw_b = _pool_calls(op, x0, gy0, kw, idx0) if data_format != "NCHW" else \
            (None, None)
        fwd_t = bwd_t = None
        if torch is not None:
            tgy = _torch_in_layout(torch, gy0, data_format)
            k, s, p = kw["kernel_size"], kw["stride"], kw.get("padding", 0)
            if op == "max":
                _, tidx = tf.max_pool2d(tx, k, s, p, return_indices=True)

                def fwd_t(k=k, s=s, p=p):
                    return tf.max_pool2d(tx, k, s, p)

                def bwd_t(k=k, s=s, p=p, tgy=tgy, tidx=tidx):
                    return torch.ops.aten.max_pool2d_with_indices_backward(
                        tgy, tx, [k, k], [s, s], [p, p], [1, 1], False, tidx)
            elif op == "avg":
                def fwd_t(k=k, s=s, p=p):
                    return tf.avg_pool2d(tx, k, s, p)

                def bwd_t(k=k, s=s, p=p, tgy=tgy):
                    return torch.ops.aten.avg_pool2d_backward(tgy, tx, [k, k], [s, s], [p, p],
                                                              False, True, None)
            else:
                txg = tx.clone().requires_grad_(True)
                ty = tf.lp_pool2d(txg, 2, k, s)

                def fwd_t(k=k, s=s):
                    return tf.lp_pool2d(tx, 2, k, s)

                def bwd_t(ty=ty, tgy=tgy):
                    ty.backward(tgy, retain_graph=True)

        g2 = ((kw["kernel_size"],) * 2, (kw["stride"],) * 2, (kw.get("padding", 0),) * 4)
        fwd_r = {
            "max": lambda g2=g2: ref.max_pool2d(x, *g2, (1, 1), False, df),
            "avg": lambda g2=g2: ref.avg_pool2d(x, *g2, False, True, None, df),
            "lp": lambda g2=g2: ref.lp_pool2d(x, 2.0, *g2[:2], False, g2[2], df),
        }[op]
        bwd_r = {
            "max": lambda gy=gy, g2=g2: ref.max_pool2d_backward(gy, x, *g2, (1, 1), False,
                                                                data_format=df),
            "avg": lambda gy=gy, g2=g2: ref.avg_pool2d_backward(gy, x, *g2, False, True, None,
                                                                df),
            "lp": lambda gy=gy, g2=g2: ref.lp_pool2d_backward(gy, x, 2.0, *g2[:2], False, g2[2],
                                                              df),
        }[op]
        cases.append(Case(group, name, "forward", fwd_f, fwd_t, moved, "GB/s", fwd_r, nchw_f))
        cases.append(Case(group, name, "backward", bwd_f, bwd_t, moved + x.nbytes, "GB/s",
                          bwd_r, nchw_b))
    return cases


def adaptive_pool_cases(dtype=np.float32, names=None, seed=0) -> list[Case]:
    """The adaptive and global pooling cases, in the pooling group: forward and backward (max
    with the forward pass's indices, as nn.AdaptiveMaxPool2d runs it)."""
    torch = _torch()
    tf = torch.nn.functional if torch is not None else None
    rng = np.random.default_rng(seed)
    cases = []
    for name, (op, shape, size) in ADAPTIVE_POOL_CASES.items():
        if names and name not in names:
            continue
        x = rng.standard_normal(shape).astype(dtype)
        tx = torch.from_numpy(x) if torch is not None else None
        if op == "max":
            y, idx = F.adaptive_max_pool2d(x, size, return_indices=True)
            gy = rng.standard_normal(y.shape).astype(dtype)
            calls = (lambda x=x, s=size: F.adaptive_max_pool2d(x, s),
                     lambda x=x, s=size, gy=gy, i=idx: F.adaptive_max_pool2d_backward(gy, x, s, i),
                     lambda x=x, o=y.shape[2:]: ref.adaptive_max_pool2d(x, o),
                     lambda x=x, gy=gy, i=idx: ref.adaptive_max_pool2d_backward(gy, x, i))
            if torch is not None:
                ti = tf.adaptive_max_pool2d(tx, size, return_indices=True)[1]
                tgy = torch.from_numpy(gy)
                calls += (lambda tx=tx, s=size: tf.adaptive_max_pool2d(tx, s),
                          lambda tx=tx, tgy=tgy, ti=ti:
                          torch.ops.aten.adaptive_max_pool2d_backward(tgy, tx, ti))
        else:
            y = F.adaptive_avg_pool2d(x, size)
            gy = rng.standard_normal(y.shape).astype(dtype)
            calls = (lambda x=x, s=size: F.adaptive_avg_pool2d(x, s),
                     lambda x=x, s=size, gy=gy: F.adaptive_avg_pool2d_backward(gy, x, s),
                     lambda x=x, o=y.shape[2:]: ref.adaptive_avg_pool2d(x, o),
                     lambda x=x, gy=gy: ref.adaptive_avg_pool2d_backward(gy, x))
            if torch is not None:
                tgy = torch.from_numpy(gy)
                calls += (lambda tx=tx, s=size: tf.adaptive_avg_pool2d(tx, s),
                          lambda tx=tx, tgy=tgy:
                          torch.ops.aten._adaptive_avg_pool2d_backward(tgy, tx))
        fwd_f, bwd_f, fwd_r, bwd_r = calls[:4]
        fwd_t, bwd_t = calls[4:] if torch is not None else (None, None)
        moved = float(x.nbytes + y.nbytes)
        cases.append(Case("pool2d", name, "forward", fwd_f, fwd_t, moved, "GB/s", fwd_r))
        cases.append(Case("pool2d", name, "backward", bwd_f, bwd_t, moved + x.nbytes, "GB/s",
                          bwd_r))
    return cases


def copy_case(dtype=np.float32, seed=0) -> Case:
    """relu over the pooling benchmarks' input: one read and one write of every element, the
    machine's copy bandwidth measured in the same run, that pooling's GB/s is judged against."""
    torch = _torch()
    x = np.random.default_rng(seed).standard_normal(POOL_SHAPE).astype(dtype)
    tx = torch.from_numpy(x) if torch is not None else None
    return Case("relu", "copy", "forward", lambda: F.relu(x),
                (lambda: torch.relu(tx)) if torch is not None else None, 2.0 * x.nbytes, "GB/s",
                lambda: ref.relu(x))


# The per-call cost: each op on tiny inputs, where the kernel has next to nothing to do and a
# call costs what the layers above it add (argument checks, allocation, dispatch, threads).
# name: input shape; convolutions take (C, C, 3, 3) weights with padding 1, pools 2x2 windows.
PER_CALL_SHAPES = {"1x1x4x4": (1, 1, 4, 4), "1x8x8x8": (1, 8, 8, 8)}


def _repeated(fn, calls):
    """fn called `calls` times in a row (one timing covers them all)."""
    if fn is None:
        return None

    def many():
        for _ in range(calls):
            fn()
    return many


def _per_call_ops(shape, dtype, rng):
    """({(op, pass): fastconv call}, {(op, pass): the PyTorch call}) on one tiny input."""
    torch = _torch()
    c = shape[1]
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((c, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)  # padding 1 keeps the size
    p, idx = F.max_pool2d(x, 2, return_indices=True)
    gp = rng.standard_normal(p.shape).astype(dtype)
    g1 = rng.standard_normal((1, c, 1, 1)).astype(dtype)
    xl = np.abs(x) + 1  # L2 pooling's gradient is defined where a window's sum is not 0
    ours = {
        ("conv2d", "forward"): lambda: F.conv2d(x, w, b, padding=1),
        ("conv2d", "backward"): lambda: F.conv2d_backward(gy, x, w, padding=1),
        ("conv_transpose2d", "forward"): lambda: F.conv_transpose2d(x, w, b, padding=1),
        ("conv_transpose2d", "backward"):
            lambda: F.conv_transpose2d_backward(gy, x, w, padding=1),
        ("max_pool2d", "forward"): lambda: F.max_pool2d(x, 2),
        ("max_pool2d+indices", "forward"): lambda: F.max_pool2d(x, 2, return_indices=True),
        ("max_pool2d", "backward"): lambda: F.max_pool2d_backward(gp, x, 2, indices=idx),
        ("avg_pool2d", "forward"): lambda: F.avg_pool2d(x, 2),
        ("avg_pool2d", "backward"): lambda: F.avg_pool2d_backward(gp, x, 2),
        ("lp_pool2d", "forward"): lambda: F.lp_pool2d(xl, 2, 2),
        ("lp_pool2d", "backward"): lambda: F.lp_pool2d_backward(gp, xl, 2, 2),
        ("global_avg_pool", "forward"): lambda: F.adaptive_avg_pool2d(x, 1),
        ("global_avg_pool", "backward"): lambda: F.adaptive_avg_pool2d_backward(g1, x, 1),
        ("global_max_pool", "forward"): lambda: F.adaptive_max_pool2d(x, 1),
        ("relu", "forward"): lambda: F.relu(x),
        ("relu", "backward"): lambda: F.relu_backward(gy, x),
    }
    if torch is None:
        return ours, {}
    tf, aten = torch.nn.functional, torch.ops.aten
    tx, tw, tb, tgy, tgp, tg1, txl = (torch.from_numpy(a) for a in (x, w, b, gy, gp, g1, xl))
    tidx = tf.max_pool2d(tx, 2, return_indices=True)[1]
    txl_grad = txl.clone().requires_grad_(True)
    tlp = tf.lp_pool2d(txl_grad, 2, 2)

    def conv_backward(transposed):
        return aten.convolution_backward(tgy, tx, tw, [c], [1, 1], [1, 1], [1, 1], transposed,
                                         [0, 0], 1, [True, True, True])

    theirs = {
        ("conv2d", "forward"): lambda: tf.conv2d(tx, tw, tb, padding=1),
        ("conv2d", "backward"): lambda: conv_backward(False),
        ("conv_transpose2d", "forward"): lambda: tf.conv_transpose2d(tx, tw, tb, padding=1),
        ("conv_transpose2d", "backward"): lambda: conv_backward(True),
        ("max_pool2d", "forward"): lambda: tf.max_pool2d(tx, 2),
        ("max_pool2d+indices", "forward"): lambda: tf.max_pool2d(tx, 2, return_indices=True),
        ("max_pool2d", "backward"): lambda: aten.max_pool2d_with_indices_backward(
            tgp, tx, [2, 2], [2, 2], [0, 0], [1, 1], False, tidx),
        ("avg_pool2d", "forward"): lambda: tf.avg_pool2d(tx, 2),
        ("avg_pool2d", "backward"): lambda: aten.avg_pool2d_backward(
            tgp, tx, [2, 2], [2, 2], [0, 0], False, True, None),
        ("lp_pool2d", "forward"): lambda: tf.lp_pool2d(txl, 2, 2),
        ("lp_pool2d", "backward"):
            lambda: torch.autograd.grad(tlp, txl_grad, tgp, retain_graph=True),
        ("global_avg_pool", "forward"): lambda: tf.adaptive_avg_pool2d(tx, 1),
        ("global_avg_pool", "backward"): lambda: aten._adaptive_avg_pool2d_backward(tg1, tx),
        ("global_max_pool", "forward"): lambda: tf.adaptive_max_pool2d(tx, 1),
        ("relu", "forward"): lambda: torch.relu(tx),
        ("relu", "backward"): lambda: aten.threshold_backward(tgy, tx, 0),
    }
    return ours, theirs


def per_call_cases(dtype=np.float32, calls: int = 100, seed=0) -> list[Case]:
    """Every op on the C kernels, forward and backward, on each tiny input of PER_CALL_SHAPES,
    beside the same call in PyTorch (PyTorch's lp_pool2d backward is its autograd's, having no
    op of its own): group "per-call", each case timing `calls` calls in a row (its `work`), so
    `format_per_call` gives microseconds per call."""
    rng = np.random.default_rng(seed)
    cases = []
    for name, shape in PER_CALL_SHAPES.items():
        ours, theirs = _per_call_ops(shape, dtype, rng)
        for (op, direction), fn in ours.items():
            cases.append(Case("per-call", f"{op} {name}", direction, _repeated(fn, calls),
                              _repeated(theirs.get((op, direction)), calls), calls, "call"))
    return cases


def format_per_call(results: list[Result]) -> str:
    """The per-call table: microseconds per call (medians of interleaved runs of `work` calls)
    of fastconv and PyTorch, and their ratio (> 1: fastconv's call costs less)."""
    name_w = max([24] + [len(r.case.name) + 1 for r in results])
    lines = ["per-call cost on tiny inputs (3x3 convolutions with padding 1, 2x2 pools)",
             f"{'op and input':<{name_w}}{'pass':<10}{'fastconv':>11}{'PyTorch':>11}"
             f"{'speed-up':>10}", "-" * (name_w + 42)]
    for r in results:
        theirs = f"{r.torch_s / r.case.work * 1e6:9.2f}us" if r.torch_s else f"{'-':>11}"
        ratio = f"{r.ratio:9.2f}x" if r.ratio else f"{'-':>10}"
        lines.append(f"{r.case.name:<{name_w}}{r.case.direction:<10}"
                     f"{r.fastconv_s / r.case.work * 1e6:9.2f}us{theirs}{ratio}")
    ratios = [r.ratio for r in results if r.ratio]
    if ratios:
        lines.append(f"geometric mean speed-up, per-call cost: {geomean(ratios):.2f}x "
                     f"(min {min(ratios):.2f}x)")
    return "\n".join(lines)


@dataclass
class Result:
    case: Case
    fastconv_s: float  # median seconds
    torch_s: float | None
    ratio: float | None  # median of per-pair torch/fastconv: > 1 means fastconv is faster
    nchw_s: float | None = None  # channels-last cases: the NCHW call's median seconds
    nchw_ratio: float | None = None  # median of per-round nchw/fastconv: > 1, NHWC is faster

    @property
    def throughput(self) -> float:
        return self.case.work / self.fastconv_s / 1e9


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(case: Case, repeat: int = 5, threads: int | None = None) -> Result:
    """Time `case` interleaved with PyTorch (and, for a channels-last case, with fastconv's NCHW
    call) at the same thread count; medians of `repeat` rounds."""
    torch = _torch()
    n = threads or fastconv.get_num_threads()
    if torch is not None:
        torch.set_num_threads(n)
    calls = [c for c in (case.fastconv, case.torch, case.nchw) if c is not None]
    with fastconv.num_threads(n):
        for call in calls:  # warm-up: page faults, thread start-up, oneDNN primitive creation
            call()
        ours, theirs, ratios, nchw, nchw_ratios = [], [], [], [], []
        for _ in range(repeat):
            a = _time(case.fastconv)
            ours.append(a)
            if case.torch is not None:
                b = _time(case.torch)
                theirs.append(b)
                ratios.append(b / a)
            if case.nchw is not None:
                c = _time(case.nchw)
                nchw.append(c)
                nchw_ratios.append(c / a)

    def median(values):
        return statistics.median(values) if values else None

    return Result(case, statistics.median(ours), median(theirs), median(ratios), median(nchw),
                  median(nchw_ratios))


def fma_peak(threads: int | None = None, dtype=np.float32, seconds: float = 0.05) -> float:
    """The machine's multiply-add peak right now, in GFLOP/s: independent FMA chains in the
    active ISA's registers on `threads` threads, run with 4x more rounds until one run takes at
    least `seconds`, as long as a big layer's pass: timed whole like the passes, so a loaded
    machine's delay in waking a thread (several ms when the cores are shared) weighs on both
    alike, where a short probe would be mostly that delay. On a shared machine the peak moves
    with the neighbours' load, so `main` measures it beside every convolution case."""
    from fastconv import _kernels

    n = threads or fastconv.get_num_threads()
    f32 = np.dtype(dtype) == np.float32
    iterations = 100_000
    while True:
        start = time.perf_counter()
        flops = _kernels.fma_peak(iterations, n, f32)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds or iterations > 1 << 34:
            break
        iterations *= 4
    return flops / elapsed / 1e9


def geomean(values) -> float:
    values = [v for v in values if v]
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")


def copy_bandwidth(copy: Case, threads: int | None = None, calls: int = 5) -> float:
    """GB/s of `copy` (copy_case: relu over the pooling input), the median of a few calls
    timed as `run` times every case, interleaved with PyTorch's: a call right after another of
    its own ran 13% faster than one after PyTorch's, so both sides of a share are timed alike."""
    return copy.work / run(copy, calls, threads).fastconv_s / 1e9


def format_table(results: list[Result], peak: float | None = None,
                 bandwidth: float | None = None) -> str:
    """The side-by-side table, the geometric means, pooling forward as a share of the copy
    bandwidth (`bandwidth` in GB/s, copy_bandwidth in the same run, else the relu row) and,
    given `peak` (GFLOP/s, fma_peak in the same run), each convolution pass timed (forward, and
    the input and weight gradients of CONV_PASS_LAYERS) as a share of the multiply-add peak. The
    geometric means are over the forward and backward rows."""
    op_w = max([8] + [len(r.case.group) + 1 for r in results])
    name_w = max([15] + [len(r.case.name) + 1 for r in results])
    layouts = any(r.nchw_s for r in results)  # channels-last rows: NCHW beside them
    head = f"{'NCHW':>11}{'NHWC/NCHW':>11}" if layouts else ""
    lines = [f"{'op':<{op_w}}{'layer':<{name_w}}{'pass':<10}{'fastconv':>11}{'':>13}"
             f"{'PyTorch':>11}{'speed-up':>10}{head}",
             "-" * (op_w + name_w + 55 + len(head))]
    for r in results:
        theirs = f"{r.torch_s * 1e3:9.2f}ms" if r.torch_s else f"{'-':>11}"
        ratio = f"{r.ratio:9.2f}x" if r.ratio else f"{'-':>10}"
        nchw = ""
        if layouts:
            nchw = f"{r.nchw_s * 1e3:9.2f}ms{r.nchw_ratio:10.2f}x" if r.nchw_s else \
                f"{'-':>11}{'-':>11}"
        lines.append(f"{r.case.group:<{op_w}}{r.case.name:<{name_w}}{r.case.direction:<10}"
                     f"{r.fastconv_s * 1e3:9.2f}ms{r.throughput:8.1f} {r.case.unit:<7}"
                     f"{theirs}{ratio}{nchw}")
    for group in sorted({r.case.group for r in results}):
        for direction in ("forward", "backward"):
            rows = [r for r in results if r.case.group == group and r.case.direction == direction]
            ratios = [r.ratio for r in rows if r.ratio]
            if ratios:
                lines.append(f"geometric mean speed-up, {group} {direction}: "
                             f"{geomean(ratios):.2f}x (min {min(ratios):.2f}x)")
            ratios = [r.nchw_ratio for r in rows if r.nchw_ratio]
            if ratios:
                lines.append(f"NHWC speed as a share of NCHW's, {group} {direction}: geometric "
                             f"mean {geomean(ratios):.2f}x (min {min(ratios):.2f}x)")
    copy = [r for r in results if (r.case.group, r.case.name) == ("relu", "copy")]
    pools = [r for r in results if (r.case.group, r.case.direction) == ("pool2d", "forward")]
    if pools and (bandwidth or copy):
        source = "median of this run's relu copies" if bandwidth else "relu above"
        bandwidth = bandwidth or copy[0].throughput
        shares = ", ".join(f"{r.case.name} {r.throughput / bandwidth:.0%}" for r in pools)
        lines.append(f"pool2d forward, share of the copy bandwidth ({bandwidth:.1f} GB/s, "
                     f"{source}): {shares}")
    for direction, label in (("forward", "forward"), ("input", "input gradient"),
                             ("weight", "weight gradient")):
        convs = [r for r in results if (r.case.group, r.case.direction) == ("conv2d", direction)]
        if peak and convs:
            shares = ", ".join(f"{r.case.name} {r.throughput / peak:.0%}" for r in convs)
            lines.append(f"conv2d {label}, share of the FMA peak ({peak:.0f} GFLOP/s, median of "
                         f"this run's measurements; direct-convolution FLOPs): {shares}")
    return "\n".join(lines)


def plot(results: list[Result], path: str) -> bool:
    """A bar chart of the speed-ups; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in results if r.ratio]
    if not rows:
        return False
    labels = [f"{r.case.name}\n{r.case.direction}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(rows)), 4))
    colours = {"conv2d": "tab:blue", "conv_transpose2d": "tab:green"}
    ax.bar(range(len(rows)), [r.ratio for r in rows],
           color=[colours.get(r.case.group, "tab:orange") for r in rows])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)), labels, rotation=90, fontsize=7)
    ax.set_ylabel("speed-up over PyTorch (x)")
    ax.set_title(f"fastconv vs PyTorch, {fastconv.get_num_threads()} threads")
    fig.tight_layout()
    try:
        _io.save_figure(fig, path, dpi=120)  # atomically: a stopped run leaves the old chart
    finally:
        plt.close(fig)
    return True


def main(threads: int | None = None, repeat: int = 7, only: str = "all",
         plot_path: str | None = None, dtype=np.float32, out=None,
         layout: str = "nchw") -> list[Result]:
    """Run the side-by-side table (the `fastconv bench` command) and print it. layout 'nhwc'
    runs the convolution and pooling layers channels last instead (PyTorch on channels_last
    tensors), fastconv's NCHW call timed in the same rounds; 'both' runs either."""
    import sys

    out = out or sys.stdout
    n = threads or fastconv.get_num_threads()
    torch = _torch()
    cases = []
    if layout in ("nchw", "both"):
        if only in ("all", "conv"):
            cases += conv_cases(dtype)
        if only in ("all", "conv_transpose"):
            cases += conv_transpose_cases(dtype)
        if only in ("all", "pool"):
            cases += pool_cases(dtype) + adaptive_pool_cases(dtype) + [copy_case(dtype)]
    if layout in ("nhwc", "both"):
        if only in ("all", "conv"):
            cases += conv_cases(dtype, data_format="NHWC")
        if only in ("all", "pool"):
            cases += pool_cases(dtype, data_format="NHWC")
    per_call = per_call_cases(dtype) if only in ("all", "per-call") else []
    print(f"fastconv {fastconv.__version__} ({fastconv.selected_isa()}) vs "
          f"{'PyTorch ' + torch.__version__ if torch else 'no PyTorch (not installed)'}, "
          f"{np.dtype(dtype).name}, {n} thread(s), median of {repeat} interleaved rounds"
          f"{' (channels last: PyTorch on channels_last tensors)' if layout != 'nchw' else ''}",
          file=out)
    # The machine's limits, measured beside each case they judge (its load moves): the FMA peak
    # before each convolution, the copy bandwidth before each pooling forward.
    results, peaks, bandwidths = [], [], []
    copy = next((c for c in cases if c.group == "relu"), None)
    for case in cases:
        if case.group == "conv2d":
            peaks.append(fma_peak(n, dtype))
        if copy is not None and (case.group, case.direction) == ("pool2d", "forward"):
            bandwidths.append(copy_bandwidth(copy, n))
        results.append(run(case, repeat, n))
    if results:
        print(format_table(results, statistics.median(peaks) if peaks else None,
                           statistics.median(bandwidths) if bandwidths else None), file=out)
    if per_call:
        calls = [run(case, 3 * repeat, n) for case in per_call]
        print(format_per_call(calls), file=out)
        results += calls
    if plot_path and plot(results, plot_path):
        print(f"chart written to {plot_path}", file=out)
    return results
