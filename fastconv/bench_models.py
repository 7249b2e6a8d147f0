"""Whole-network benchmarks (``fastconv bench --model``): training steps and inference of the
``fastconv train`` ConvNet and a CIFAR ResNet-14, side by side with the same networks in PyTorch
and, for inference, onnxruntime, when they are installed. The ResNet's inference is also timed
with its batch norms folded into the convolutions (``fastconv.fuse.fold_batch_norm``, what
onnxruntime does to every graph it loads; PyTorch and onnxruntime then run the folded network
too). fastconv trains each network with its convolutions and the ReLUs after them fused
(``fastconv.fuse.fuse_conv_relu``: bit for bit the same network, one pass fewer each way) and
runs inference on ``fastconv.infer.compile``'s executor (``fastconv.fuse.optimize``'s network:
batch norms folded, convolution + ReLU fused; planned once per input shape: buffers allocated
once, no checks per call, channels last on the vector ISAs), as
onnxruntime optimises every graph it loads; the breakdown by layer times ``optimize``'s layers,
which run the same kernels one module at a time. PyTorch runs its eager network in
``torch.inference_mode`` (the folded one in the ``-folded`` case).

The PyTorch network is built module by module from the fastconv one (``to_torch``) and its
weights are copied through ``state_dict``; the onnxruntime graph is written with
``onnx.helper`` from the fastconv model's weights (``to_onnx``). All three run on the same
thread count, calls are interleaved (fastconv, PyTorch, onnxruntime, fastconv, ...) so that a
noisy machine slows them alike, and each ratio is the median of the per-round ratios.

Where the time goes (``layer_times``): every leaf module's forward and backward, the loss and
the optimiser, timed inside the step, for fastconv by wrapping each layer's methods and for
PyTorch through module hooks (which add a little overhead of their own: a rough guide).
"""

from __future__ import annotations

import contextlib
import functools
import os
import statistics
import time
import warnings
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import fastconv
import fastconv.functional as F
from fastconv import _io, fuse, infer, init, models, nn, optim
from fastconv import _validation as v
from fastconv.bench import _time, _torch, geomean

# name: (builder(dtype), input shape without the batch, classes)
NETWORKS = {
    "convnet": (lambda dtype: models.convnet().to(dtype), (1, 28, 28), 10),
    "resnet14": (lambda dtype: models.resnet(dtype=dtype), (3, 32, 32), 10),
    # for inference, its batch norms folded into the convolutions (as onnxruntime does)
    "resnet14-folded": (lambda dtype: fuse.fold_batch_norm(models.resnet(dtype=dtype)),
                        (3, 32, 32), 10),
}

# (network, task, batch): what `fastconv bench --model` times
CASES = [
    ("convnet", "train", 32), ("convnet", "train", 256), ("resnet14", "train", 64),
    ("convnet", "infer", 1), ("convnet", "infer", 64), ("convnet", "infer", 256),
    ("resnet14", "infer", 1), ("resnet14", "infer", 64),
    ("resnet14-folded", "infer", 1), ("resnet14-folded", "infer", 64),
]

IMPLS = ("fastconv", "PyTorch", "onnxruntime")

# seconds between one implementation's turn and the next's (run: idle threads stop spinning)
PAUSE = 0.1

# a layer's kind, from its class name (the same in fastconv.nn and torch.nn)
KINDS = {"Conv2d": "conv2d", "Conv2dReLU": "conv2d+relu", "InferenceConv2d": "conv2d",
         "InferenceConv2dReLU": "conv2d+relu", "InferenceMaxPool2d": "pooling",
         "BatchNorm1d": "batch norm", "BatchNorm2dReLU": "batch norm+relu",
         "BatchNorm2d": "batch norm",
         "ReLU": "activation", "Tanh": "activation", "Sigmoid": "activation",
         "MaxPool2d": "pooling", "AvgPool2d": "pooling", "LPPool2d": "pooling",
         "AdaptiveAvgPool2d": "pooling", "AdaptiveMaxPool2d": "pooling",
         "Linear": "linear", "Dropout": "dropout", "Flatten": "flatten", "Identity": "identity"}


def _onnxruntime():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


# ---- the same network in PyTorch -----------------------------------------------------------

@functools.cache
def _torch_basic_block():
    """The PyTorch class of fastconv.models.BasicBlock (made once torch is imported); its
    submodules are added by name."""
    torch = _torch()

    class BasicBlock(torch.nn.Module):
        def forward(self, x):
            out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
            out = out + (x if self.downsample is None else self.downsample(x))
            return torch.relu(out)

    return BasicBlock


def _torch_module(m):
    tnn = _torch().nn
    if isinstance(m, (fuse.Conv2dReLU, fuse.BatchNorm2dReLU)):  # torch's fused keys differ
        raise ValueError(f"to_torch: no PyTorch equivalent for {type(m).__name__} with its "
                         "state_dict keys (convert the model before fastconv.fuse.fuse_conv_relu)")
    if isinstance(m, nn.Conv2d):
        return tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                          m.dilation, m.groups, bias=m.bias is not None)
    if isinstance(m, nn.Linear):
        return tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        cls = tnn.BatchNorm1d if isinstance(m, nn.BatchNorm1d) else tnn.BatchNorm2d
        return cls(m.num_features, m.eps, m.momentum)
    if isinstance(m, nn.MaxPool2d):
        return tnn.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation,
                             ceil_mode=m.ceil_mode)
    if isinstance(m, nn.AvgPool2d):
        return tnn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode,
                             m.count_include_pad, m.divisor_override)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return tnn.AdaptiveAvgPool2d(m.output_size)
    if isinstance(m, nn.Flatten):
        return tnn.Flatten(m.start_dim, m.end_dim)
    if isinstance(m, nn.Dropout):
        return tnn.Dropout(m.p)
    if isinstance(m, nn.ReLU):
        return tnn.ReLU(inplace=m.inplace)
    simple = {nn.Tanh: tnn.Tanh, nn.Sigmoid: tnn.Sigmoid, nn.Identity: tnn.Identity}
    if type(m) in simple:
        return simple[type(m)]()
    if isinstance(m, nn.Sequential):
        return tnn.Sequential(OrderedDict((name, _torch_module(child))
                                          for name, child in m._own(nn.Module)))
    if isinstance(m, models.BasicBlock):
        out = _torch_basic_block()()
        for name, value in vars(m).items():
            if isinstance(value, nn.Module):
                out.add_module(name, _torch_module(value))
            elif name == "downsample":  # None: an identity shortcut
                out.downsample = None
        return out
    raise ValueError(f"to_torch: no PyTorch equivalent for {type(m).__name__}")


def to_torch(model: nn.Module):
    """The same network as a ``torch.nn.Module``, with `model`'s weights, buffers, dtype and
    mode (PyTorch must be installed)."""
    torch = _torch()
    out = _torch_module(model)
    state = model.state_dict()
    dtype = next(a.dtype for a in state.values() if a.dtype.kind == "f")
    out.to(torch.float64 if dtype == np.float64 else torch.float32)
    out.load_state_dict({k: torch.from_numpy(a) for k, a in state.items()})
    return out.train(model.training)


# ---- the same network as an ONNX graph -----------------------------------------------------

def to_onnx(model: nn.Module, input_shape: tuple[int, ...]):
    """An ``onnx.ModelProto`` of `model` in evaluation mode (batch norm on the running
    statistics, dropout off), float32, input "x" of shape (N, *input_shape) with N free, output
    "y". ValueError for a layer with no ONNX equivalent here."""
    import onnx
    from onnx import helper, numpy_helper

    nodes, weights = [], []
    names = iter(range(1 << 30))

    def node(op, inputs, **attributes):
        out = f"t{next(names)}"
        nodes.append(helper.make_node(op, inputs, [out], **attributes))
        return out

    def weight(key, array):
        weights.append(numpy_helper.from_array(np.asarray(array, np.float32), key))
        return key

    def emit(m, x, prefix):
        if isinstance(m, nn.Sequential):
            for name, child in m._own(nn.Module):
                x = emit(child, x, f"{prefix}{name}.")
            return x
        if isinstance(m, models.BasicBlock):
            out = x
            for name in ("conv1", "bn1", "relu1", "conv2", "bn2"):
                out = emit(getattr(m, name), out, f"{prefix}{name}.")
            shortcut = x if m.downsample is None else emit(m.downsample, x,
                                                          f"{prefix}downsample.")
            return node("Relu", [node("Add", [out, shortcut])])
        if isinstance(m, nn.Conv2d):
            top, bottom, left, right = v.padding4("to_onnx", m.padding, m.kernel_size,
                                                  m.stride, m.dilation)
            inputs = [x, weight(prefix + "weight", m.weight.data)]
            if m.bias is not None:
                inputs.append(weight(prefix + "bias", m.bias.data))
            y = node("Conv", inputs, kernel_shape=list(m.kernel_size),
                     strides=list(m.stride), dilations=list(m.dilation),
                     pads=[top, left, bottom, right], group=m.groups)
            return node("Relu", [y]) if isinstance(m, fuse.Conv2dReLU) else y
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            inputs = [weight(prefix + k, a) for k, a in (
                ("weight", m.weight.data), ("bias", m.bias.data),
                ("running_mean", m.running_mean), ("running_var", m.running_var))]
            y = node("BatchNormalization", [x, *inputs], epsilon=m.eps)
            return node("Relu", [y]) if isinstance(m, fuse.BatchNorm2dReLU) else y
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            op = type(m).__name__
            kernel = v.pair(op, "kernel_size", m.kernel_size, 1, "a positive")
            stride = kernel if m.stride is None else v.pair(op, "stride", m.stride, 1,
                                                            "a positive")
            dilation = v.pair(op, "dilation", getattr(m, "dilation", 1), 1, "a positive")
            top, bottom, left, right = v.padding4(op, m.padding, kernel, stride, dilation)
            common = dict(kernel_shape=list(kernel), strides=list(stride),
                          pads=[top, left, bottom, right], ceil_mode=int(m.ceil_mode))
            if isinstance(m, nn.MaxPool2d):
                return node("MaxPool", [x], dilations=list(dilation), **common)
            if m.divisor_override is not None:
                raise ValueError("to_onnx: AvgPool2d's divisor_override has no ONNX equivalent")
            return node("AveragePool", [x], count_include_pad=int(m.count_include_pad), **common)
        if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
            return node("GlobalAveragePool", [x])
        if isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) == (1, -1):
            return node("Flatten", [x], axis=1)
        if isinstance(m, nn.Linear):
            inputs = [x, weight(prefix + "weight", m.weight.data)]
            if m.bias is not None:
                inputs.append(weight(prefix + "bias", m.bias.data))
            return node("Gemm", inputs, transB=1)
        if isinstance(m, (nn.Dropout, nn.Identity)):
            return x
        simple = {nn.ReLU: "Relu", nn.Tanh: "Tanh", nn.Sigmoid: "Sigmoid"}
        if type(m) in simple:
            return node(simple[type(m)], [x])
        raise ValueError(f"to_onnx: no ONNX equivalent for {type(m).__name__} here")

    y = emit(model, "x", "")
    nodes.append(helper.make_node("Identity", [y], ["y"]))
    graph = helper.make_graph(
        nodes, "fastconv", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                           ["N", *input_shape])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", "outputs"])], weights)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto)
    return proto


def onnx_session(model: nn.Module, input_shape, threads: int):
    """An onnxruntime session running `model` (``to_onnx``) on `threads` intra-op threads,
    sequentially, with onnxruntime's default graph optimisations (which fuse batch norm and
    activations into the convolutions)."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(to_onnx(model, input_shape).SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


# ---- cases ---------------------------------------------------------------------------------

@dataclass
class ModelCase:
    """One whole-network benchmark: a step per implementation that has it."""
    network: str
    task: str  # "train" (forward, loss, backward, Adam) or "infer" (forward, eval mode)
    batch: int
    steps: dict[str, Callable[[], object]]  # IMPLS name -> one step
    # fuse_conv_relu's network (train) or fuse.optimize's (infer: the layers the compiled
    # executor runs, as modules, for the breakdown)
    fastconv_model: nn.Module
    torch_model: object = None
    inputs: dict = field(default_factory=dict)  # x, labels (and torch's tx, ty)


def model_case(network: str, task: str, batch: int, threads: int | None = None,
               dtype=np.float32, seed: int = 0, competitors=IMPLS[1:]) -> ModelCase:
    """The case of `network` (a NETWORKS name) for `task` at `batch`: fastconv's step and, when
    installed and listed in `competitors`, PyTorch's (weights copied) and, for inference in
    float32, onnxruntime's."""
    if task not in ("train", "infer"):
        raise ValueError(f"model_case: task must be 'train' or 'infer', got {task!r}")
    build, shape, classes = NETWORKS[network]
    n = threads or fastconv.get_num_threads()
    init.manual_seed(seed)
    model = build(dtype)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *shape)).astype(dtype)
    labels = rng.integers(0, classes, batch)
    training = task == "train"
    model.train(training)
    # training: bit for bit `model` (the competitors' copies' source); inference: what
    # fastconv's users run, its batch norms folded as onnxruntime folds them
    ours = fuse.fuse_conv_relu(model) if training else fuse.optimize(model)
    if training:
        steps = {"fastconv": _fastconv_step(ours, x, labels)}
    else:
        compiled = infer.compile(model)
        steps = {"fastconv": lambda: compiled(x)}
    case = ModelCase(network, task, batch, steps, ours, inputs={"x": x, "labels": labels})
    torch = _torch()
    if torch is not None and "PyTorch" in competitors:
        tm = case.torch_model = to_torch(model)
        tx, ty = torch.from_numpy(x), torch.from_numpy(labels)
        case.inputs.update(tx=tx, ty=ty)
        steps["PyTorch"] = _torch_step(tm, tx, ty) if training else _torch_inference(tm, tx)
    if not training and np.dtype(dtype) == np.float32 and "onnxruntime" in competitors \
            and _onnxruntime() is not None:
        session = onnx_session(model, shape, n)
        steps["onnxruntime"] = lambda: session.run(None, {"x": x})[0]
    return case


def check_agreement(case: ModelCase, rtol: float = 1e-3) -> None:
    """Raise RuntimeError unless PyTorch's and onnxruntime's networks (and, for inference,
    fastconv's compiled executor) give fastconv's outputs on the case's input (within `rtol` of
    their largest value): a wrong copy of the weights or of a layer would otherwise be timed as
    a competitor."""
    x = case.inputs["x"]
    expected = case.fastconv_model(x)
    got = {}
    if case.task == "infer":
        got["fastconv's compiled executor"] = case.steps["fastconv"]()
    if case.torch_model is not None:
        with _torch().no_grad():
            got["PyTorch"] = case.torch_model(case.inputs["tx"]).numpy()
    if "onnxruntime" in case.steps:
        got["onnxruntime"] = case.steps["onnxruntime"]()
    scale = float(np.abs(expected).max())
    for impl, y in got.items():
        error = float(np.abs(y - expected).max())
        if not error <= rtol * scale:
            raise RuntimeError(f"{impl}'s {case.network} disagrees with fastconv's: largest "
                               f"difference {error:.3g} for outputs up to {scale:.3g}")


def _fastconv_step(model, x, labels, timer=None):
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)

    def step():
        with _span(timer, "optimizer", "backward"):
            optimizer.zero_grad()
        logits = model(x)
        with _span(timer, "loss", "forward"):
            loss = loss_fn(logits, labels)
        with _span(timer, "loss", "backward"):
            grad = loss_fn.backward()
        model.backward(grad, input_grad=False)  # as PyTorch: the images need no gradient
        with _span(timer, "optimizer", "backward"):
            optimizer.step()
        return loss
    return step


def _torch_step(tm, tx, ty, timer=None):
    torch = _torch()
    optimizer = torch.optim.Adam(tm.parameters(), lr=1e-3)
    loss_fn = torch.nn.functional.cross_entropy

    def step():
        with _span(timer, "optimizer", "backward"):
            optimizer.zero_grad()
        logits = tm(tx)
        with _span(timer, "loss", "forward"):
            loss = loss_fn(logits, ty)
        loss.backward()
        with _span(timer, "optimizer", "backward"):
            optimizer.step()
        return loss
    return step


def _torch_inference(tm, tx):
    torch = _torch()

    def step():
        with torch.inference_mode():
            return tm(tx)
    return step


@contextlib.contextmanager
def _span(timer, name, direction):
    """Add the block's time to timer[(name, direction)] (nothing when timer is None)."""
    if timer is None:
        yield
        return
    start = time.perf_counter()
    yield
    timer[(name, direction)] += time.perf_counter() - start


# ---- timing --------------------------------------------------------------------------------

@dataclass
class ModelResult:
    case: ModelCase
    seconds: dict[str, float]  # IMPLS name -> median seconds per step
    ratios: dict[str, float]  # competitor -> median of its time / fastconv's, per round

    def images_per_second(self, impl: str) -> float:
        return self.case.batch / self.seconds[impl]


def run(case: ModelCase, repeat: int = 7, threads: int | None = None,
        pause: float = PAUSE) -> ModelResult:
    """Time every step of `case`, interleaved round by round on `threads` threads each; the
    medians of `repeat` rounds after a warm-up round.

    Each library's idle threads spin for a while after a call (onnxruntime's for tens of
    milliseconds), so a step run right after another library's competes with that library's
    threads for the cores. Each implementation's turn therefore begins with a pause of `pause`
    seconds, then an untimed step (its own threads awake, as in a loop of its own), then the
    timed step."""
    n = threads or fastconv.get_num_threads()
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(n)
    times = {impl: [] for impl in case.steps}
    with fastconv.num_threads(n):
        for step in case.steps.values():  # page faults, thread start-up, oneDNN and ORT set-up
            step()
        for _ in range(repeat):
            for impl, step in case.steps.items():
                time.sleep(pause)
                step()
                times[impl].append(_time(step))
    ours = times["fastconv"]
    return ModelResult(case, {impl: statistics.median(t) for impl, t in times.items()},
                       {impl: statistics.median(b / a for a, b in zip(ours, t))
                        for impl, t in times.items() if impl != "fastconv"})


# ---- where the time goes -------------------------------------------------------------------

def _leaves(module, prefix=""):
    """(dotted name, module) of every module without submodules, in forward order."""
    children = module._own(nn.Module)
    if not children:
        yield prefix[:-1], module
    for name, child in children:
        yield from _leaves(child, f"{prefix}{name}.")


@contextlib.contextmanager
def _timing_fastconv(model, timer):
    """Within the block, every leaf's forward and backward add their time to timer."""
    patched = []
    for name, m in _leaves(model):
        for direction in ("forward", "backward"):
            method = getattr(m, direction)

            def timed(*args, method=method, key=(name, direction), **kwargs):
                start = time.perf_counter()
                out = method(*args, **kwargs)
                timer[key] += time.perf_counter() - start
                return out
            setattr(m, direction, timed)
            patched.append((m, direction))
    try:
        yield
    finally:
        for m, direction in patched:
            delattr(m, direction)  # the class's method again


@contextlib.contextmanager
def _timing_torch(tm, timer, backward: bool):
    """Within the block, hooks on every leaf of `tm` add each forward's and backward's time to
    timer."""
    started, handles = {}, []

    def start(key):
        def hook(*_):
            started[key] = time.perf_counter()
        return hook

    def stop(key):
        def hook(*_):
            timer[key] += time.perf_counter() - started.pop(key)
        return hook

    # a hooked module's output may not be overwritten in place, so in-place ReLUs copy here
    inplace = [m for m in tm.modules() if getattr(m, "inplace", False)]
    for m in inplace:
        m.inplace = False
    for name, m in tm.named_modules():
        if next(m.children(), None) is not None:
            continue
        fwd, bwd = (name, "forward"), (name, "backward")
        handles += [m.register_forward_pre_hook(start(fwd)), m.register_forward_hook(stop(fwd))]
        if backward:
            handles += [m.register_full_backward_pre_hook(start(bwd)),
                        m.register_full_backward_hook(stop(bwd))]
    try:
        with warnings.catch_warnings():
            # the first layer's input needs no gradient, so its hook fires on its output's
            warnings.filterwarnings("ignore", "Full backward hook is firing")
            yield
    finally:
        for handle in handles:
            handle.remove()
        for m in inplace:
            m.inplace = True


@dataclass
class LayerTimes:
    """Median seconds per (layer, direction) inside one step, per implementation, and the
    step's median total; `kinds` maps each implementation's layers to their kinds (KINDS, or
    loss / optimizer): fastconv's fused layers leave Identity layers where PyTorch's run."""
    seconds: dict[str, dict[tuple[str, str], float]]
    totals: dict[str, float]
    kinds: dict[str, dict[str, str]]


def layer_times(case: ModelCase, repeat: int = 5, threads: int | None = None,
                pause: float = PAUSE) -> LayerTimes:
    """Where a step's time goes, for fastconv and (hooks, roughly) PyTorch: each layer's forward
    and backward, the loss and the optimiser, medians of `repeat` instrumented steps; what
    no layer accounts for is the "rest" (Python between the layers, the residual additions).
    Inference is timed on ``fuse.optimize``'s layers: the kernels the compiled executor runs,
    called one module at a time (so with the allocations and checks the executor plans away)."""
    n = threads or fastconv.get_num_threads()
    training = case.task == "train"
    timers = {impl: defaultdict(float) for impl in ("fastconv", "PyTorch")}
    runs = {}
    model = case.fastconv_model
    if training:
        runs["fastconv"] = _fastconv_step(model, case.inputs["x"], case.inputs["labels"],
                                          timers["fastconv"])
    else:  # the compiled executor's layers, one module at a time
        runs["fastconv"] = functools.partial(model, case.inputs["x"])
    contexts = {"fastconv": lambda: _timing_fastconv(model, timers["fastconv"])}
    steps_kinds = dict(loss="loss", optimizer="optimizer")
    kinds = {"fastconv": {**{name: KINDS.get(type(m).__name__, "other")
                             for name, m in _leaves(model)}, **steps_kinds}}
    if case.torch_model is not None:
        tm, tx = case.torch_model, case.inputs["tx"]
        kinds["PyTorch"] = {**{name: KINDS.get(type(m).__name__, "other")
                               for name, m in tm.named_modules()
                               if next(m.children(), None) is None}, **steps_kinds}
        runs["PyTorch"] = _torch_step(tm, tx, case.inputs["ty"], timers["PyTorch"]) \
            if training else _torch_inference(tm, tx)
        contexts["PyTorch"] = lambda: _timing_torch(tm, timers["PyTorch"], training)
    samples = {impl: [] for impl in runs}
    totals = {impl: [] for impl in runs}
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(n)
    with fastconv.num_threads(n), contextlib.ExitStack() as stack:
        for impl in runs:
            stack.enter_context(contexts[impl]())
        for i in range(repeat + 1):  # the first round warms up
            for impl, step in runs.items():
                time.sleep(pause)  # as in run: the other library's threads idle, this one's
                step()  # awake
                timers[impl].clear()
                elapsed = _time(step)
                if i:
                    samples[impl].append(dict(timers[impl]))
                    totals[impl].append(elapsed)
    seconds = {}
    for impl, rounds in samples.items():
        keys = {key for r in rounds for key in r}
        seconds[impl] = {key: statistics.median(r.get(key, 0.0) for r in rounds)
                         for key in keys}
    return LayerTimes(seconds, {impl: statistics.median(t) for impl, t in totals.items()},
                      kinds)


def format_layers(lt: LayerTimes, by_kind: bool = True) -> str:
    """The breakdown as a table of milliseconds: per kind of layer (by_kind) or per layer,
    forward and backward, fastconv beside PyTorch, then the rest and the step's total. The
    optimiser's update (zero_grad and step) is in the backward column."""
    impls = list(lt.seconds)
    rows = defaultdict(lambda: defaultdict(float))
    for impl in impls:
        for (name, direction), s in lt.seconds[impl].items():
            key = lt.kinds[impl].get(name, "other") if by_kind else name
            rows[key][(impl, direction)] += s
    if by_kind:
        order = sorted(rows, key=lambda k: -sum(rows[k].values()))
    else:
        order = list(dict.fromkeys([*lt.kinds["fastconv"], *rows]))
        order = [k for k in order if k in rows]
    columns = [(impl, d) for impl in impls for d in ("forward", "backward")]
    short = {"forward": "fwd", "backward": "bwd"}
    head = "".join(f"{impl + ' ' + short[d]:>15}" for impl, d in columns)
    lines = [f"{'kind' if by_kind else 'layer':<22}{head}", "-" * (22 + 15 * len(columns))]

    def ms(s):
        return f"{s * 1e3:13.3f}ms"
    for key in order:
        lines.append(f"{key:<22}" + "".join(ms(rows[key][c]) for c in columns))
    rest = {impl: lt.totals[impl] - sum(lt.seconds[impl].values()) for impl in impls}
    lines.append(f"{'rest (between layers)':<22}"
                 + "".join(ms(rest[impl]) if d == "forward" else f"{'':>15}"
                           for impl, d in columns))
    lines.append(f"{'step total':<22}" + "".join(ms(lt.totals[impl]) if d == "forward"
                                                  else f"{'':>15}" for impl, d in columns))
    return "\n".join(lines)


# ---- per-call cost -------------------------------------------------------------------------

def call_overhead(calls: int = 200, rounds: int = 15) -> list[tuple[str, float, float | None]]:
    """(op, fastconv µs, PyTorch µs or None) per call on tiny inputs, where the fixed cost of a
    call (argument checks, output allocation, dispatch) is all there is: medians of `rounds`
    interleaved rounds of `calls` calls, one thread."""
    torch = _torch()
    x = np.ones((1, 1, 4, 4), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    row, fc_w = np.ones((1, 16), np.float32), np.ones((4, 16), np.float32)
    ops = {"conv2d": (lambda: F.conv2d(x, w, padding=1),
                      torch and (lambda: torch.nn.functional.conv2d(tx, tw, padding=1))),
           "max_pool2d": (lambda: F.max_pool2d(x, 2),
                          torch and (lambda: torch.nn.functional.max_pool2d(tx, 2))),
           "linear": (lambda: F.linear(row, fc_w),
                      torch and (lambda: torch.nn.functional.linear(trow, tfc_w)))}
    if torch is not None:
        tx, tw, trow, tfc_w = (torch.from_numpy(a) for a in (x, w, row, fc_w))
        torch.set_num_threads(1)
    out = []
    with fastconv.num_threads(1):
        for name, (ours, theirs) in ops.items():
            impls = [ours] + ([theirs] if theirs else [])
            times = [[] for _ in impls]
            for _ in range(rounds):
                for fn, t in zip(impls, times):
                    t.append(_time(lambda fn=fn: [fn() for _ in range(calls)]) / calls)
            medians = [statistics.median(t) * 1e6 for t in times]
            out.append((name, medians[0], medians[1] if theirs else None))
    return out


# ---- the command ---------------------------------------------------------------------------

def format_table(results: list[ModelResult]) -> str:
    """Per case: each implementation's time and images/s, and fastconv's speed-up over each
    competitor (their time / fastconv's); then the geometric means."""
    competitors = [c for c in IMPLS[1:] if any(c in r.seconds for r in results)]
    width = max([len("network")] + [len(r.case.network) for r in results]) + 2
    head = f"{'network':<{width}}{'task':<7}{'batch':>6}{'fastconv':>22}"
    head += "".join(f"{c:>22}{'speed-up':>10}" for c in competitors)
    lines = [head, "-" * len(head)]
    for r in results:
        line = f"{r.case.network:<{width}}{r.case.task:<7}{r.case.batch:>6}"
        for impl in ("fastconv", *competitors):
            if impl in r.seconds:
                line += f"{r.seconds[impl] * 1e3:9.2f}ms{r.images_per_second(impl):8.0f} img/s"
            else:
                line += f"{'-':>22}"
            if impl != "fastconv":
                line += f"{r.ratios[impl]:9.2f}x" if impl in r.ratios else f"{'-':>10}"
        lines.append(line)
    for c in competitors:
        for task in ("train", "infer"):
            ratios = [r.ratios[c] for r in results if r.case.task == task and c in r.ratios]
            if ratios:
                lines.append(f"geometric mean speed-up over {c}, {task}: {geomean(ratios):.2f}x "
                             f"(min {min(ratios):.2f}x)")
    return "\n".join(lines)


def plot(results: list[ModelResult], path: str, threads: int | None = None) -> bool:
    """Bars of fastconv's speed-up over each competitor per case, timed on `threads` threads;
    False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    competitors = [c for c in IMPLS[1:] if any(c in r.ratios for r in results)]
    if not competitors:
        return False
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(results)), 4))
    width = 0.8 / len(competitors)
    for i, c in enumerate(competitors):
        ax.bar([j + i * width for j in range(len(results))],
               [r.ratios.get(c, 0) for r in results], width, label=f"vs {c}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([j + width * (len(competitors) - 1) / 2 for j in range(len(results))],
                  [f"{r.case.network}\n{r.case.task} {r.case.batch}" for r in results],
                  fontsize=7)
    ax.set_ylabel("fastconv speed-up (x)")
    n = threads or fastconv.get_num_threads()
    ax.set_title(f"fastconv vs PyTorch and onnxruntime, whole networks, {n} thread(s)")
    ax.legend()
    fig.tight_layout()
    try:
        _io.save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)
    return True


def main(threads: int | None = None, repeat: int = 7, plot_path: str | None = None,
         dtype=np.float32, layers: bool = False, cases=None, out=None,
         pause: float = PAUSE) -> list[ModelResult]:
    """`fastconv bench --model`: the table, each case's breakdown by kind of layer (every layer
    with `layers`), the per-call cost of a few ops on tiny inputs, and the machine's multiply-add
    peak measured before each case (its load moves, and the cases are long enough to feel it)."""
    import sys

    from fastconv.bench import fma_peak

    out = out or sys.stdout
    n = threads or fastconv.get_num_threads()
    torch, ort = _torch(), _onnxruntime()
    print(f"fastconv {fastconv.__version__} ({fastconv.selected_isa()}) vs "
          f"{'PyTorch ' + torch.__version__ if torch else 'no PyTorch (not installed)'}, "
          f"{'onnxruntime ' + ort.__version__ if ort else 'no onnxruntime (not installed)'}; "
          f"{np.dtype(dtype).name}, {n} thread(s), median of {repeat} interleaved rounds; "
          # how OpenMP's idle threads wait moves the figures on a shared machine (README)
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}", file=out)
    results, breakdowns, peaks = [], [], []
    with fastconv.num_threads(n):
        for network, task, batch in cases or CASES:
            case = model_case(network, task, batch, n, dtype)
            check_agreement(case)
            peaks.append(fma_peak(n, dtype))
            results.append(run(case, repeat, n, pause))
            breakdowns.append(layer_times(case, max(3, repeat // 2), n, pause))
    print(format_table(results), file=out)
    print(f"multiply-add peak on {n} thread(s) before each case, GFLOP/s: "
          + ", ".join(f"{p:.0f}" for p in peaks), file=out)
    for r, lt in zip(results, breakdowns):
        print(f"\n{r.case.network} {r.case.task} batch {r.case.batch}: where the time goes "
              "(medians of instrumented steps; PyTorch through hooks)", file=out)
        print(format_layers(lt, by_kind=not layers), file=out)
    overhead = call_overhead()
    print("\nper call on a tiny input, 1 thread: " + ", ".join(
        f"{name} {ours:.1f} µs" + (f" (PyTorch {theirs:.1f} µs)" if theirs else "")
        for name, ours, theirs in overhead), file=out)
    if plot_path and plot(results, plot_path, n):
        print(f"chart written to {plot_path}", file=out)
    return results
