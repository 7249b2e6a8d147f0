"""Whole-network inference planned once: ``compile(model)`` turns a network into an
``Executor``, a flat list of kernel calls over buffers allocated once per input shape, as
onnxruntime runs a graph it has loaded.

What it does beyond ``fastconv.fuse.optimize`` (batch norms folded, convolution + ReLU fused,
nothing kept for backward), and why:

- **No allocation per call.** The activations live in a few buffers, made the first time an
  input shape is seen and reused by each later call with that shape (a few shapes are kept), so a
  call touches no fresh pages and runs no NumPy allocation; only the result is a new array. A
  buffer is reused by a later layer once every layer reading it has run (ResNet-14: 4 buffers,
  0.21 MB at batch 1 and 13 MB at batch 64, rather than 0.59 and 37.5 MB).
- **No checks per call.** Each layer's geometry is validated once, when its shape's plan is
  made; a call checks the input's shape and dtype and then runs the C kernels directly.
- **Channels last** (``data_format="auto"``, the default: at every batch on a vector ISA; the
  scalar path stays NCHW; ``"NHWC"`` or ``"NCHW"`` force one layout).
  The input is transposed once into the first buffer, every convolution and pooling runs on the
  channels-last kernels (their indirect GEMM and Winograd keep the channels as the vector
  dimension, which suits strided and 1x1 layers and layers with few pixels, as a single image's
  8 x 8 and 16 x 16 maps are: the NCHW passes pad those to whole pixel panels), the weights are
  stored HWIO once, and a ``Flatten`` into a ``Linear`` permutes the linear weights' columns (once
  per plan) rather than the activations.
- **Weights packed once** (channels last, ``_kernels.PrepackedConv``,
  src/kernels/conv2d_nhwc_prepacked.h): each convolution's B panels, or for Winograd its kernel
  transform, are written once per plan in the ISA's tile, where the per-call pass redoes them on
  every call (at batch 1 as long as the GEMMs of an 8 x 8 layer). The ReLU after a convolution,
  and a residual block's addition and ReLU, run in the convolution's epilogue on each tile while
  it is in cache, rounded as the separate passes (bit for bit the same results).
- **One thread for small plans**: a plan of fewer than ``SERIAL_BELOW`` multiply-adds (a
  network on one or a few images) runs on one thread whatever ``fastconv.get_num_threads()``
  says, since a second thread's wake-up and barrier at each of its small layers cost more than
  the thread saves; larger plans use ``get_num_threads()``.
- **Residual blocks** (``fastconv.models.BasicBlock``): the shortcut's addition and the ReLU
  after it run in the second convolution's epilogue (channels last; the shortcut is run
  first), or as one in-place pass over its buffer (NCHW).

Results equal ``fuse.optimize(model)(x)`` up to float32 reduction order (the channels-last
kernels sum in another order; the NCHW ones as the layers do), and do not depend on
the thread count. The executor is a snapshot of the weights (compile again after changing
them); calls from several threads at once take turns (a lock guards the buffers).

Examples
--------
>>> import numpy as np
>>> from fastconv import infer, init, models
>>> _ = init.manual_seed(0)
>>> model = models.convnet()
>>> run = infer.compile(model)
>>> x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
>>> y = run(x)
>>> y.shape, bool(np.allclose(y, model.eval()(x), atol=1e-4))
((2, 10), True)
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import numpy as np

from . import _kernels, fuse, models, nn
from . import _validation as v
from ._config import get_num_threads

__all__ = ["compile", "Executor"]

OP = "infer.compile"
CALL = "Executor"  # errors of a call: the input's shape against the layers

# input shapes whose plans (buffers) an executor keeps; the oldest goes first
PLANS_KEPT = 4

# a plan of fewer multiply-adds runs on one thread: its layers are so small (a network on one
# image) that waking a second thread for each, and waiting for it at the layer's end, costs
# more than the half of the layer it would take over
SERIAL_BELOW = 1 << 27

FORMATS = ("auto", "NHWC", "NCHW")

# channels last, convolutions run on weights packed once per plan, with the ReLU and a residual
# block's addition in their epilogue (_Plan._prepacked); False runs the per-call passes (the
# tests compare the two)
PREPACK = True
# ... at batches up to this: the prepacked passes' task loops are copies of the per-call ones from
# before their last changes (conv2d_nhwc_prepacked.h), so at larger batches, where packing the
# weights per call costs little, the per-call passes are as fast or faster (2 threads, Zen 5,
# folded ResNet-14, per-call / prepacked time: batch 1 1.21, 4 1.35, 8 and 16 1.02, 32 0.97,
# 64 0.92)
PREPACK_MAX_BATCH = 16


@dataclass
class _Layer:
    """One step of the traced network, before shapes are known: kind, the slots it reads and
    the slot it writes (slot 0 is the input), and its parameters."""
    kind: str  # conv, maxpool, avgpool, global_avgpool, flatten, linear, relu, add_relu
    inputs: tuple[int, ...]
    output: int
    args: dict = field(default_factory=dict)


def _trace(model: nn.Module) -> list[_Layer]:
    """`model` (fuse.optimize's copy) as a list of _Layers in running order."""
    layers: list[_Layer] = []
    slots = iter(range(1, 1 << 30))

    def add(kind, inputs, **args):
        layers.append(_Layer(kind, tuple(inputs), next(slots), args))
        return layers[-1].output

    def emit(m, x):
        if isinstance(m, models.BasicBlock):
            # the shortcut first, so that the main path's last convolution, the layer before
            # the addition, can add it in its own pass (_Plan._conv)
            shortcut = x if m.downsample is None else emit(m.downsample, x)
            out = x
            for name in ("conv1", "bn1", "relu1", "conv2", "bn2"):
                out = emit(getattr(m, name), out)
            if out in (x, shortcut):  # no layer made a buffer of its own to add into
                v.fail(OP, "a BasicBlock whose main path makes no new array is not supported")
            layers.append(_Layer("add_relu", (out, shortcut), out))
            return out
        if isinstance(m, nn.Sequential):
            for _, child in m._own(nn.Module):
                x = emit(child, x)
            return x
        if isinstance(m, nn.Conv2d):
            if getattr(m, "data_format", "NCHW") != "NCHW":
                v.fail(OP, "a Conv2d must take NCHW input (the executor chooses the "
                           f"layout itself), got data_format={m.data_format!r}")
            return add("conv", [x], weight=m.weight.data,
                       bias=None if m.bias is None else m.bias.data,
                       relu=isinstance(m, fuse.Conv2dReLU), stride=m.stride,
                       padding=m.padding, dilation=m.dilation, groups=m.groups)
        if isinstance(m, nn.MaxPool2d):
            return add("maxpool", [x], args=m._args())
        if isinstance(m, nn.AvgPool2d):
            return add("avgpool", [x], args=m._args())
        if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
            return add("global_avgpool", [x])
        if isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) == (1, -1):
            return add("flatten", [x])
        if isinstance(m, nn.Linear):
            return add("linear", [x], weight=m.weight.data,
                       bias=None if m.bias is None else m.bias.data)
        if type(m) is nn.ReLU:
            if layers and layers[-1].output == x and layers[-1].kind == "linear" \
                    and not layers[-1].args.get("relu"):
                layers[-1].args["relu"] = True  # in place on the linear layer's own buffer
                return x
            return add("relu", [x])
        if type(m) in (nn.Identity, nn.Dropout):  # evaluation mode: the identity
            return x
        v.fail(OP, f"no inference step for {type(m).__name__} (supported: Sequential, "
                   "BasicBlock, Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten, "
                   "Linear, ReLU, Dropout, Identity)")

    output = emit(model, 0)
    if output == 0:
        layers.append(_Layer("copy", (0,), next(slots)))
    # a convolution + ReLU read only by a max pool: channels last, the ReLU runs on the pool's
    # smaller output instead (max and ReLU commute: both keep order)
    reads = Counter(slot for layer in layers for slot in layer.inputs)
    for conv, pool in zip(layers, layers[1:]):
        if conv.kind == "conv" and conv.args["relu"] and pool.kind == "maxpool" \
                and pool.inputs == (conv.output,) and reads[conv.output] == 1:
            conv.args["relu_in_pool"] = pool.args["relu"] = True
    return layers


class _Plan:
    """The buffers and kernel calls of one input shape: `steps` are closures of the thread
    count, `buffers[slot]` each activation, `result` the last one."""

    def __init__(self, layers: list[_Layer], shape: tuple[int, ...], dtype, nhwc: bool):
        self.nhwc = nhwc
        fmt = "NHWC" if nhwc else "NCHW"
        n, c, h, w = shape
        first = (n, h, w, c) if nhwc else shape
        self._reuse_plan(layers)
        self._index, self._root = -1, 0
        self.buffers = {0: self._alloc(first, dtype)}
        self.steps = []
        self.multiply_adds = 0  # of the convolutions and linear layers
        self.prepacked = 0  # convolutions on weights packed once (PrepackedConv)
        # per slot: the NCHW shape it holds, and whether it is a flattened channels-last map
        shapes = {0: shape}
        flattened = {}
        # add_relu layers a convolution's epilogue ran, and slots a convolution's epilogue
        # already took through the ReLU that _trace moved to the max pool after it
        self._fused, self._relu_done = set(), set()
        for i, layer in enumerate(layers):
            self._next = layers[i + 1] if i + 1 < len(layers) else None
            self._index, self._root = i, self._roots[layer.output]
            if id(layer) in self._fused:
                shapes[layer.output] = shapes[layer.inputs[0]]
                continue
            x = self.buffers[layer.inputs[0]]
            xs = shapes[layer.inputs[0]]
            step, out_shape = getattr(self, "_" + layer.kind)(layer, x, xs, dtype, fmt,
                                                               flattened.get(layer.inputs[0]))
            if layer.kind == "flatten" and nhwc and len(xs) == 4 and xs[2] * xs[3] > 1:
                flattened[layer.output] = xs[1:]  # (C, H, W) in (H, W, C) order
            elif layer.kind in ("relu", "copy") and layer.inputs[0] in flattened:
                flattened[layer.output] = flattened[layer.inputs[0]]  # element-wise: still so
            if layer.output not in self.buffers:
                self.buffers[layer.output] = step.out
            shapes[layer.output] = out_shape
            if step.call is not None:
                self.steps.append(step.call)
        self.result = self.buffers[layers[-1].output]
        self.result_nhwc = nhwc and self.result.ndim == 4

    def _reuse_plan(self, layers):
        """Which buffer each slot lives in and when each buffer is last read, for _alloc: a
        flatten's slot is a view of its input's buffer and an in-place layer's (add_relu) its
        input's, so a buffer lives until the last layer reading any slot in it; the result's
        lives to the end."""
        self._roots = {0: 0}
        for layer in layers:
            same = layer.kind == "flatten" or layer.output in layer.inputs
            self._roots[layer.output] = (self._roots[layer.inputs[0]] if same
                                         else layer.output)
        self._last = {}
        for i, layer in enumerate(layers):
            for slot in layer.inputs:
                self._last[self._roots[slot]] = i
        self._last[self._roots[layers[-1].output]] = len(layers)
        self._pool = []  # [flat array, index of the last layer reading what it holds]

    def _alloc(self, shape, dtype):
        """The output array of the layer being planned (self._index): a view of the smallest
        pooled buffer no later layer reads (its last reader runs before this layer, so the layer
        never writes what it reads), else a new one. Activations then take a few buffers rather
        than one each: at batch 64 ResNet-14's would outgrow the L3 cache, and a single image's
        stay in L2 from call to call."""
        size = int(np.prod(shape))
        free = [entry for entry in self._pool if entry[1] < self._index
                and entry[0].dtype == dtype and entry[0].size >= size]
        if free:
            entry = min(free, key=lambda e: e[0].size)
        else:
            entry = [np.zeros(size, dtype), 0]
            self._pool.append(entry)
        entry[1] = self._last.get(self._root, len(self._roots))
        return entry[0][:size].reshape(shape)

    def _conv(self, layer, x, xs, dtype, fmt, _):
        a = layer.args
        weight = np.asarray(a["weight"], dtype)
        if fmt == "NHWC":
            weight = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))  # OIHW -> HWIO
        g = v.conv_geometry(CALL, x.shape, weight.shape, a["stride"], a["padding"], a["dilation"],
                            a["groups"], fmt, "HWIO" if fmt == "NHWC" else "OIHW")
        bias = None if a["bias"] is None else np.ascontiguousarray(a["bias"], dtype)
        y = self._alloc(g.output_shape, dtype)
        self.multiply_adds += int(np.prod(y.shape)) * int(np.prod(weight.shape)) // g.out_channels
        if PREPACK and fmt == "NHWC" and g.batch <= PREPACK_MAX_BATCH \
                and _kernels.conv_plan(g, "forward", dtype)[0] \
                in _kernels.PREPACKED_ALGORITHMS:
            return self._prepacked(layer, g, x, weight, bias, y)
        fused = a["relu"] and fmt == "NCHW"  # the NHWC kernels have no ReLU epilogue
        then_relu = a["relu"] and not fused and not a.get("relu_in_pool")

        def call(nt):
            _kernels.conv2d_forward(g, x, weight, bias, y, nt, fused)
            if then_relu:
                _kernels.relu_forward(y, y, nt)
        return _Step(y, call), (g.batch, g.out_channels, g.out_h, g.out_w)

    def _prepacked(self, layer, g, x, weight, bias, y):
        """A channels-last convolution on weights packed once for this plan (the per-call pass
        packs them on every call: for Winograd the kernel transform, as long as the layer's
        GEMMs on a single image's 8 x 8 map), its ReLU, and the residual block's addition and
        ReLU when the next layer is that and reads the shortcut from an earlier buffer, run in
        its epilogue on each tile while it is in cache (bit for bit the separate passes)."""
        relu = bool(layer.args["relu"])
        if layer.args.get("relu_in_pool"):  # done here, in cache, rather than after the pool
            self._relu_done.add(layer.output)
        residual = None
        nxt = self._next
        if nxt is not None and nxt.kind == "add_relu" and nxt.inputs[0] == layer.output \
                and not relu and nxt.inputs[1] in self.buffers \
                and self.buffers[nxt.inputs[1]].shape == y.shape:
            residual, relu = self.buffers[nxt.inputs[1]], True
            self._fused.add(id(nxt))
        conv = _kernels.PrepackedConv(g, x, weight, bias, residual, y, relu)
        self.prepacked += 1
        return _Step(y, conv.run), (g.batch, g.out_channels, g.out_h, g.out_w)

    def _maxpool(self, layer, x, xs, dtype, fmt, _):
        kernel, stride, padding, dilation, ceil_mode = layer.args["args"]
        g = v.pool_geometry(CALL, x.shape, kernel, stride, padding, dilation, ceil_mode, fmt)
        y = self._alloc(g.output_shape, dtype)
        # the convolution's, moved here, unless its epilogue ran it
        relu = layer.args.get("relu") and fmt == "NHWC" and layer.inputs[0] not in self._relu_done

        def call(nt):
            _kernels.maxpool2d_forward(g, x, y, None, nt)
            if relu:
                _kernels.relu_forward(y, y, nt)
        return _Step(y, call), (g.batch, g.channels, g.out_h, g.out_w)

    def _avgpool(self, layer, x, xs, dtype, fmt, _):
        kernel, stride, padding, ceil_mode, include, divisor = layer.args["args"]
        return self._average(x, dtype, fmt, kernel, stride, padding, ceil_mode, include,
                             v.divisor(CALL, divisor))

    def _global_avgpool(self, layer, x, xs, dtype, fmt, _):
        if fmt == "NHWC":  # the mean of each whole plane: one window of the plane's size
            return self._average(x, dtype, fmt, xs[2:], None, 0, False, True, 0)
        # NCHW: the adaptive kernel, as AdaptiveAvgPool2d itself runs, sums each plane in one
        # run; the pooling kernel's walk of one plane-sized window costs tens of times more
        g = v.adaptive_geometry(CALL, x.shape, 1)
        y = self._alloc(g.output_shape, dtype)
        return _Step(y, lambda nt: _kernels.adaptive_avgpool2d_forward(g, x, y, nt)), y.shape

    def _average(self, x, dtype, fmt, kernel, stride, padding, ceil_mode, include, divisor):
        g = v.pool_geometry(CALL, x.shape, kernel, stride, padding, 1, ceil_mode, fmt)
        y = self._alloc(g.output_shape, dtype)

        def call(nt):
            _kernels.avgpool2d_forward(g, x, y, nt, count_include_pad=include,
                                       divisor_override=divisor)
        return _Step(y, call), (g.batch, g.channels, g.out_h, g.out_w)

    def _flatten(self, layer, x, xs, dtype, fmt, _):
        y = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))  # a view: the buffer itself
        return _Step(y, None), y.shape

    def _linear(self, layer, x, xs, dtype, fmt, flattened):
        a = layer.args
        weight = np.asarray(a["weight"], dtype)
        if x.ndim != 2 or x.shape[1] != weight.shape[1]:
            v.fail(CALL, f"Linear({weight.shape[1]}, {weight.shape[0]}) gets input of shape "
                       f"{tuple(xs)}")
        if flattened is not None:  # columns in the NCHW flatten's order -> the NHWC one's
            c, h, w = flattened
            weight = weight.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(len(weight), -1)
        weight = np.ascontiguousarray(weight)
        bias = None if a["bias"] is None else np.ascontiguousarray(a["bias"], dtype)
        y = self._alloc((x.shape[0], weight.shape[0]), dtype)
        relu = a.get("relu", False)

        def call(nt):
            _kernels.linear_forward(x.shape[0], x, weight, bias, y, nt)
            if relu:
                _kernels.relu_forward(y, y, nt)
        self.multiply_adds += int(np.prod(y.shape)) * weight.shape[1]
        return _Step(y, call), y.shape

    def _relu(self, layer, x, xs, dtype, fmt, _):
        y = self._alloc(x.shape, dtype)
        return _Step(y, lambda nt: _kernels.relu_forward(x, y, nt)), xs

    def _add_relu(self, layer, x, xs, dtype, fmt, _):
        b = self.buffers[layer.inputs[1]]
        if b.shape != x.shape:
            v.fail(CALL, f"a residual block adds shapes {x.shape} and {b.shape}")
        return _Step(x, lambda nt: _kernels.add_relu_forward(x, b, x, nt)), xs

    def _copy(self, layer, x, xs, dtype, fmt, _):
        y = self._alloc(x.shape, dtype)
        return _Step(y, lambda nt: np.copyto(y, x)), xs


@dataclass
class _Step:
    out: np.ndarray
    call: object  # callable(nthreads), or None (a view: nothing to run)


class Executor:
    """A compiled network: ``executor(x)`` is ``model.eval()(x)`` for an NCHW batch x of the
    model's dtype, as a new array (see the module's docstring for how it runs). Make one with
    ``compile``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import infer, init, nn
    >>> _ = init.manual_seed(0)
    >>> run = infer.compile(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten()),
    ...                     data_format="NCHW")
    >>> run(np.ones((1, 3, 5, 5), np.float32)).shape
    (1, 36)
    """

    def __init__(self, model: nn.Module, data_format: str = "auto"):
        if not isinstance(model, nn.Module):
            v.fail(OP, f"model must be a fastconv.nn.Module, got {type(model).__name__}",
                   TypeError)
        if data_format not in FORMATS:
            v.fail(OP, f"data_format must be one of {FORMATS}, got {data_format!r}")
        fast = fuse.optimize(model)
        self.data_format = data_format
        self._layers = _trace(fast)
        params = [p.data for p in fast.parameters()]
        self.dtype = params[0].dtype if params else None
        self._plans: OrderedDict[tuple, _Plan] = OrderedDict()
        self._lock = threading.Lock()

    def _plan(self, x: np.ndarray) -> _Plan:
        # data_format="auto": channels last at every batch on the vector ISAs, whose channels-last
        # passes beat the NCHW ones on ResNet-14 from one image up (its strided, 1x1 and 8 x 8
        # layers most) and match them on the ConvNet (docs/KERNELS.md); NCHW on the scalar path,
        # where without vector registers the channels-last kernels have no wide channel tile to
        # win with. Decided per call's ISA (use_isa is per thread), so the layout is in the key.
        isa = _kernels.selected_isa()
        nhwc = self.data_format == "NHWC" or (self.data_format == "auto" and isa != "scalar")
        # the ISA too: a channels-last plan's packed weights are in its ISA's tile
        key = (x.shape, x.dtype, nhwc, isa)
        plan = self._plans.get(key)
        if plan is None:
            plan = _Plan(self._layers, x.shape, x.dtype, nhwc)
            self._plans[key] = plan
            while len(self._plans) > PLANS_KEPT:
                self._plans.popitem(last=False)
        return plan

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = v.float_array(CALL, "x", x, 4, "(N, C, H, W)")
        if self.dtype is not None and x.dtype != self.dtype:
            v.fail(CALL, f"x must have the model's dtype {self.dtype}, got {x.dtype}",
                   TypeError)
        with self._lock:
            plan = self._plan(x)
            nt = get_num_threads() if plan.multiply_adds >= SERIAL_BELOW else 1
            if x.shape[0] == 0:
                return np.empty((0, *plan.result.shape[1:]), x.dtype)
            if plan.nhwc:
                np.copyto(plan.buffers[0], x.transpose(0, 2, 3, 1))
            else:
                np.copyto(plan.buffers[0], x)
            for step in plan.steps:
                step(nt)
            y = plan.result
            return (y.transpose(0, 3, 1, 2) if plan.result_nhwc else y).copy()


def compile(model: nn.Module, data_format: str = "auto") -> Executor:
    """An ``Executor`` running `model` in evaluation mode, planned once per input shape:
    ``fastconv.fuse.optimize``'s network (batch norms folded, convolution + ReLU fused) as a
    flat list of kernel calls over buffers allocated once, channels last on a vector ISA and
    NCHW on the scalar path (``data_format="auto"``;
    ``"NHWC"`` or ``"NCHW"`` for one layout at every batch). `model` is unchanged.

    Supported layers: Sequential, ``fastconv.models.BasicBlock``, Conv2d (NCHW), MaxPool2d,
    AvgPool2d, AdaptiveAvgPool2d(1), Flatten(1, -1), Linear, ReLU, Dropout and Identity, and
    BatchNorm2d directly after a Conv2d (folded); any other raises ValueError.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import infer, models
    >>> run = infer.compile(models.resnet(blocks=(1, 1, 1)))
    >>> run(np.zeros((2, 3, 32, 32), np.float32)).shape
    (2, 10)
    """
    return Executor(model, data_format)
