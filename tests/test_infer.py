"""fastconv.infer: the compiled executor against the unfused network in evaluation mode, in
both layouts and the automatic choice, float32 and float64; thread-count invariance; buffers
reused across calls without leaking into results; errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DTYPES, assert_close, isa_params

import fastconv
from fastconv import _kernels, infer, init, models, nn
from fastconv import _validation as v


def _net_with_everything():
    """Every supported layer once: a flatten of a map wider than 1 x 1 into a linear layer
    (whose weights the channels-last plan permutes), a ReLU not after a convolution, average
    pooling, dropout, a batch norm folded into a convolution with a bias."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2),
        nn.Dropout(0.5), nn.Flatten(), nn.ReLU(), nn.Linear(16 * 2 * 2, 12), nn.ReLU(),
        nn.Linear(12, 5))


def _randomise_batch_norms(model, rng):
    """Running statistics and affine parameters away from their initial 0 / 1, so that
    folding them changes the weights."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean[...] = rng.standard_normal(c)
            m.running_var[...] = rng.uniform(0.5, 2.0, c)
            m.weight.data[...] = rng.uniform(0.5, 1.5, c)
            m.bias.data[...] = rng.standard_normal(c)


# name: (builder, input shape without the batch, longest chain of reductions)
NETWORKS = {
    "convnet": (models.convnet, (1, 28, 28), 25 + 800 + 3136 + 128),
    "resnet8": (lambda: models.resnet(blocks=(1, 1, 1)), (3, 32, 32), 27 + 6 * 576 + 64),
    "everything": (_net_with_everything, (3, 16, 16), 27 + 72 + 64 + 12),
}

# one image, a few, and sixteen
BATCHES = [1, 3, 16]


def _case(name, dtype, batch, seed=0):
    build, shape, length = NETWORKS[name]
    init.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build().to(dtype)
    _randomise_batch_norms(model, rng)
    x = rng.standard_normal((batch, *shape)).astype(dtype)
    return model, x, length


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("data_format", infer.FORMATS)
@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.parametrize("batch", BATCHES)
def test_matches_the_unfused_network(name, data_format, dtype, batch):
    model, x, length = _case(name, dtype, batch)
    run = infer.compile(model, data_format=data_format)
    expected = model.eval()(x)
    got = run(x)
    assert_close(got, expected, length, scale=np.full_like(expected, np.abs(expected).max()))


@pytest.mark.parametrize("batch", BATCHES)
def test_auto_plans_channels_last_at_every_batch(batch):
    """data_format='auto' runs the channels-last kernels from a single image up (they beat the
    NCHW ones on ResNet's strided, 1x1 and 8 x 8 layers at batch 1 too) on the vector ISAs, and
    NCHW on the scalar path, where the channels-last kernels are the slower ones; one executor
    follows the calling thread's ISA from call to call, whichever came first."""
    model, x, _ = _case("resnet8", np.float32, batch)
    run = infer.compile(model)
    isas = fastconv.available_isas()
    for isa in isas + isas[::-1]:
        with fastconv.use_isa(isa):
            run(x)
        vector = isa != "scalar"
        assert run._plans[(x.shape, x.dtype, vector, isa)].nhwc == vector, isa
    assert len(run._plans) == len(isas)  # one per ISA: the packed weights are the ISA's


@pytest.mark.parametrize("data_format", infer.FORMATS)
@pytest.mark.parametrize("name", list(NETWORKS))
def test_thread_count_invariant(name, data_format, monkeypatch):
    monkeypatch.setattr(infer, "SERIAL_BELOW", 0)  # every plan on the threads it is given
    model, x, _ = _case(name, np.float32, BATCHES[-1] + 1)
    run = infer.compile(model, data_format=data_format)
    with fastconv.num_threads(1):
        one = run(x)
    with fastconv.num_threads(2):
        two = run(x)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 64, 8, 8), (3, 5, 7, 9), (2, 3, 1, 1)])
def test_global_average_pooling_in_nchw_is_the_layer_s(shape, dtype):
    """NCHW plans run AdaptiveAvgPool2d(1) on the layer's own kernel: its sums, bit for bit."""
    x = np.random.default_rng(2).standard_normal(shape).astype(dtype) * 100
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    run = infer.compile(model, data_format="NCHW")
    np.testing.assert_array_equal(run(x), model(x))


def test_buffers_are_reused_and_results_are_fresh():
    model, x, _ = _case("resnet8", np.float32, 2)
    run = infer.compile(model)
    first = run(x)
    kept = first.copy()
    first[...] = np.nan  # the caller owns the result: the next call must not see this
    other = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    run(other)
    np.testing.assert_array_equal(run(x), kept)
    (plan,) = run._plans.values()  # one shape, one plan
    assert plan.result is not first


def test_plans_per_shape_are_bounded():
    model, x, _ = _case("everything", np.float32, 1)
    run = infer.compile(model)
    results = {n: run(np.repeat(x, n, axis=0)) for n in range(1, infer.PLANS_KEPT + 3)}
    assert len(run._plans) == infer.PLANS_KEPT
    for n, y in results.items():  # a dropped plan is made again, with the same result
        np.testing.assert_array_equal(run(np.repeat(x, n, axis=0)), y)


def test_model_is_unchanged_and_input_untouched():
    model, x, _ = _case("everything", np.float32, 3)
    before = {k: a.copy() for k, a in model.state_dict().items()}
    x_before = x.copy()
    model.train()
    infer.compile(model)(x)
    assert model.training
    assert all(np.array_equal(before[k], a) for k, a in model.state_dict().items())
    np.testing.assert_array_equal(x, x_before)


def test_empty_batch():
    model, x, _ = _case("convnet", np.float32, 1)
    y = infer.compile(model)(x[:0])
    assert y.shape == (0, 10) and y.dtype == np.float32


def test_noncontiguous_input():
    model, x, _ = _case("convnet", np.float32, 4)
    run = infer.compile(model, data_format="NCHW")
    np.testing.assert_array_equal(run(x[::2]), run(np.ascontiguousarray(x[::2])))


@pytest.mark.parametrize("call, exc, message", [
    (lambda: infer.compile("not a model"), TypeError, "infer.compile: model must be"),
    (lambda: infer.compile(models.convnet(), data_format="NCWH"), ValueError,
     "infer.compile: data_format must be one of"),
    (lambda: infer.compile(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh())), ValueError,
     "infer.compile: no inference step for Tanh"),
    (lambda: infer.compile(nn.Conv2d(1, 2, 3, data_format="NHWC")), ValueError,
     "infer.compile: a Conv2d must take NCHW input"),
    (lambda: infer.compile(models.convnet())(np.zeros((1, 1, 28, 28))), TypeError,
     "Executor: x must have the model's dtype float32, got float64"),
    (lambda: infer.compile(models.convnet())(np.zeros((1, 28, 28), np.float32)), ValueError,
     "Executor: x must be a 4-D (N, C, H, W) array"),
    (lambda: infer.compile(models.convnet())([[1.0]]), TypeError,
     "Executor: x must be a numpy.ndarray"),
    (lambda: infer.compile(models.convnet())(np.zeros((1, 3, 28, 28), np.float32)), ValueError,
     "Executor: "),
    (lambda: infer.compile(models.convnet())(np.zeros((1, 1, 32, 32), np.float32)), ValueError,
     "Executor: Linear(3136, 128) gets input of shape"),
])
def test_errors(call, exc, message):
    with pytest.raises(exc, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        call()


# ---- channels last on weights packed once (PrepackedConv, conv2d_nhwc_prepacked.h) ----------

# (N, C, H, W, K, kernel, stride, padding, groups, bias): Winograd (3x3 stride 1) with K a whole
# tile, a half one (the half-width microkernel), ragged past a tile and past half of one, odd maps
# (tiles crossing the bottom and right edges), groups; direct (stride 2, 1x1 with stride, 5x5,
# no padding, a ragged last pixel tile); im2col (one and two input channels per group)
PREPACKED_CASES = [
    (1, 64, 8, 8, 64, 3, 1, 1, 1, True),
    (1, 16, 32, 32, 16, 3, 1, 1, 1, True),
    (2, 24, 7, 9, 20, 3, 1, 1, 1, True),
    (1, 32, 5, 6, 40, 3, 1, 1, 1, False),
    (3, 32, 6, 6, 72, 3, 1, 0, 2, True),
    (1, 16, 32, 32, 32, 3, 2, 1, 1, True),
    (1, 32, 16, 16, 64, 1, 2, 0, 1, True),
    (2, 32, 14, 14, 40, 5, 1, 2, 1, False),
    (1, 3, 13, 11, 16, 3, 1, 1, 1, True),
    (1, 1, 28, 28, 32, 5, 1, 2, 1, True),
    (2, 4, 9, 9, 6, 3, 2, 1, 2, True),
]


def _prepacked_case(case, dtype, seed=0):
    n, c, h, w, k, kernel, stride, padding, groups, has_bias = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    weight = rng.standard_normal((kernel, kernel, c // groups, k)).astype(dtype)
    bias = rng.standard_normal(k).astype(dtype) if has_bias else None
    g = v.conv_geometry("test", x.shape, weight.shape, stride, padding, 1, groups, "NHWC", "HWIO")
    residual = rng.standard_normal(g.output_shape).astype(dtype)
    return g, x, weight, bias, residual


def _per_call(g, x, weight, bias, residual, relu, nt=1):
    """What the executor ran before: the per-call pass, then add_relu or relu."""
    y = np.zeros(g.output_shape, x.dtype)
    _kernels.conv2d_forward(g, x, weight, bias, y, nt)
    if residual is not None:
        _kernels.add_relu_forward(y, residual, y, nt)
    elif relu:
        _kernels.relu_forward(y, y, nt)
    return y


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", PREPACKED_CASES)
def test_prepacked_equals_the_per_call_pass_bit_for_bit(case, dtype, isa):
    """The same tasks and microkernel calls on weights packed once, and the epilogue rounded as
    the element-wise passes: equal bit for bit, on every ISA, 1 or 2 threads, with and without
    the ReLU and the residual addition."""
    with fastconv.use_isa(isa):
        g, x, weight, bias, residual = _prepacked_case(case, dtype)
        algorithm = _kernels.conv_plan(g, "forward", dtype)[0]
        for res, relu in ((None, False), (None, True), (residual, True)):
            expected = _per_call(g, x, weight, bias, res, relu)
            for nt in (1, 2):
                y = np.full(g.output_shape, np.nan, dtype)
                conv = _kernels.PrepackedConv(g, x, weight, bias, res, y, relu)
                assert conv.algorithm == algorithm
                conv.run(nt)
                np.testing.assert_array_equal(y, expected, err_msg=f"{algorithm} {nt} threads")


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("algorithm", ["winograd", "direct", "im2col"])
def test_prepacked_forced_algorithms(algorithm, isa):
    """Each packed algorithm forced on one geometry that all three can run."""
    with fastconv.use_isa(isa), _kernels.force_conv_algorithms(forward=algorithm):
        g, x, weight, bias, residual = _prepacked_case((2, 3, 9, 7, 20, 3, 1, 1, 1, True),
                                                       np.float32)
        y = np.zeros(g.output_shape, np.float32)
        conv = _kernels.PrepackedConv(g, x, weight, bias, residual, y, True)
        assert conv.algorithm == algorithm
        conv.run(2)
        np.testing.assert_array_equal(y, _per_call(g, x, weight, bias, residual, True))


@pytest.mark.parametrize("isa", isa_params())
def test_prepacked_non_finite(isa):
    """An Inf or NaN input sends a Winograd layer to the plan's fallback on the raw weights, its
    epilogue after it; kernels whose transform is not finite are packed for direct. Both as the
    per-call pass gives them."""
    with fastconv.use_isa(isa):
        g, x, weight, bias, residual = _prepacked_case((1, 32, 8, 8, 32, 3, 1, 1, 1, True),
                                                       np.float32)
        assert _kernels.conv_plan(g, "forward", np.float32)[0] == "winograd"
        x[0, 3, 4, 5], x[0, 0, 0, 1] = np.inf, np.nan
        y = np.zeros(g.output_shape, np.float32)
        _kernels.PrepackedConv(g, x, weight, bias, residual, y, True).run(1)
        np.testing.assert_array_equal(y, _per_call(g, x, weight, bias, residual, True))
        x[...] = np.nan_to_num(x, nan=0.5, posinf=1.0)
        weight[1, 1, 2, 7] = np.inf
        conv = _kernels.PrepackedConv(g, x, weight, bias, None, y, True)
        assert conv.algorithm == "direct"
        conv.run(1)
        np.testing.assert_array_equal(y, _per_call(g, x, weight, bias, None, True))


def test_prepacked_refuses_what_it_cannot_run():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 4, 8)).astype(np.float32)
    depthwise = rng.standard_normal((3, 3, 1, 8)).astype(np.float32)
    g = v.conv_geometry("test", x.shape, depthwise.shape, 1, 1, 1, 8, "NHWC", "HWIO")
    y = np.zeros(g.output_shape, np.float32)
    with pytest.raises(ValueError, match="packs no weights"):
        _kernels.PrepackedConv(g, x, depthwise, None, None, y)
    nchw = v.conv_geometry("test", (1, 8, 4, 4), (8, 8, 3, 3), 1, 1, 1, 1)
    with pytest.raises(ValueError, match="channels last"):
        _kernels.PrepackedConv(nchw, x, depthwise, None, None, y)
    isas = fastconv.available_isas()
    if len(isas) > 1:
        weight = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
        g = v.conv_geometry("test", x.shape, weight.shape, 1, 1, 1, 1, "NHWC", "HWIO")
        with fastconv.use_isa(isas[0]):
            conv = _kernels.PrepackedConv(g, x, weight, None, None, y)
        with fastconv.use_isa(isas[-1]), pytest.raises(RuntimeError, match="packed for"):
            conv.run(1)


@pytest.mark.parametrize("batches", [(infer.PREPACK_MAX_BATCH, True),
                                     (infer.PREPACK_MAX_BATCH + 1, False)])
def test_prepacked_only_up_to_its_batch(batches, monkeypatch):
    """The executor packs weights once only at batches up to PREPACK_MAX_BATCH; above it every
    convolution runs the per-call pass (faster there), with the same results."""
    batch, packed = batches
    model, x, _ = _case("resnet8", np.float32, batch)
    run = infer.compile(model, data_format="NHWC")
    got = run(x)
    plan = next(iter(run._plans.values()))
    convs = sum(layer.kind == "conv" for layer in run._layers)
    assert plan.prepacked == (convs if packed else 0)
    monkeypatch.setattr(infer, "PREPACK", not packed)
    np.testing.assert_array_equal(got, infer.compile(model, data_format="NHWC")(x))


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.parametrize("batch", [1, 3])
def test_prepacked_executor_equals_the_per_call_one(name, batch, dtype, isa, monkeypatch):
    """Channels last on every ISA (the scalar one too, forced): the executor on packed weights,
    its ReLUs and residual additions in the convolutions' epilogues, gives the per-call
    executor's results bit for bit, and the unfused network's within the tolerance."""
    model, x, length = _case(name, dtype, batch)
    with fastconv.use_isa(isa):
        run = infer.compile(model, data_format="NHWC")
        got = run(x)
        plan = next(iter(run._plans.values()))
        assert plan.prepacked == sum(layer.kind == "conv" for layer in run._layers)
        assert len(plan._pool) < len(plan.buffers)  # activations share buffers
        # each residual block's addition in its second convolution: no step of its own
        assert len(plan.steps) == sum(layer.kind not in ("flatten", "add_relu")
                                      for layer in run._layers)
        monkeypatch.setattr(infer, "PREPACK", False)
        per_call = infer.compile(model, data_format="NHWC")(x)
    np.testing.assert_array_equal(got, per_call)
    expected = model.eval()(x)
    assert_close(got, expected, length, scale=np.full_like(expected, np.abs(expected).max()))
