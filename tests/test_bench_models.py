"""fastconv.models and fastconv.bench_models: the ResNet's blocks against finite differences and
PyTorch, the PyTorch and ONNX copies of a network against the network, and the whole-network
benchmark's runner, breakdown, table and chart on tiny cases (nothing here asserts speed)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import numerical_gradient

from fastconv import bench_models, fuse, init, models, nn


def _tiny_resnet(dtype=np.float64):
    init.manual_seed(0)
    return models.ResNet(blocks=(1, 2), widths=(2, 3), num_classes=4, in_channels=2,
                         dtype=dtype)


def _tiny_network(network, dtype=np.float64):
    """(model, input shape without the batch) of a small `network`: "resnet", "resnet-folded"
    (its batch norms folded, after running statistics moved from 0 and 1) or "convnet"."""
    if network.startswith("resnet"):
        model = _tiny_resnet(dtype)
        if network == "resnet-folded":
            model(np.random.default_rng(4).standard_normal((6, 2, 5, 7)).astype(dtype))
            model = fuse.fold_batch_norm(model)
        return model, (2, 5, 7)
    init.manual_seed(0)
    return models.convnet(channels=(2, 3), hidden=5, batchnorm=True).to(dtype), (1, 28, 28)


def test_resnet_state_dict_keys_are_torchvisions():
    keys = list(models.resnet(blocks=(1, 1, 1)).state_dict())
    block = [k[len("layer2.0."):] for k in keys if k.startswith("layer2.0.")]
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert block == ["conv1.weight", *(f"bn1.{b}" for b in bn), "conv2.weight",
                     *(f"bn2.{b}" for b in bn), "downsample.0.weight",
                     *(f"downsample.1.{b}" for b in bn)]
    assert keys[0] == "conv1.weight" and keys[-2:] == ["fc.weight", "fc.bias"]
    assert not any(k.startswith("layer1.0.downsample") for k in keys)  # identity shortcut


@pytest.mark.parametrize("kwargs, message", [
    (dict(blocks=(1, 1), widths=(4,)), "one length"),
    (dict(blocks=(), widths=()), "non-empty"),
    (dict(blocks=(0, 1, 1)), "blocks must be a positive int"),
])
def test_resnet_rejects_bad_shapes(kwargs, message):
    with pytest.raises(ValueError, match=f"^ResNet: .*{message}"):
        models.ResNet(**kwargs)


@pytest.mark.parametrize("stride, in_channels, channels", [(1, 2, 2), (2, 2, 3), (1, 2, 3)])
def test_basic_block_gradients_match_finite_differences(stride, in_channels, channels):
    init.manual_seed(1)
    block = models.BasicBlock(in_channels, channels, stride, dtype=np.float64)
    assert (block.downsample is None) == (stride == 1 and in_channels == channels)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, in_channels, 5, 5))
    out_grad = rng.standard_normal(block(x).shape)

    def loss():
        return float((block(x) * out_grad).sum())

    loss()
    block.zero_grad()
    gx = block.backward(out_grad)
    np.testing.assert_allclose(gx, numerical_gradient(loss, x), rtol=1e-5, atol=1e-7)
    for name, p in block.named_parameters():
        p.grad.fill(0)
        loss()
        block.backward(out_grad)
        np.testing.assert_allclose(p.grad, numerical_gradient(loss, p.data), rtol=1e-5,
                                   atol=1e-7, err_msg=name)


def test_backward_before_forward_names_the_layer():
    with pytest.raises(RuntimeError, match="backward called before forward"):
        models.BasicBlock(2, 2).backward(np.ones((1, 2, 4, 4), np.float32))


@pytest.mark.parametrize("network", ["resnet", "resnet-folded", "convnet"])
@pytest.mark.parametrize("training", [True, False])
def test_to_torch_is_the_same_network(network, training):
    torch = pytest.importorskip("torch")
    model, shape = _tiny_network(network)  # the ResNet's pooling averages a 2x2 map
    model.train(training)
    tm = bench_models.to_torch(model)
    assert tm.training == training
    assert list(tm.state_dict()) == list(model.state_dict())
    x = np.random.default_rng(2).standard_normal((3, *shape))
    tx = torch.from_numpy(x).requires_grad_()
    out, tout = model(x), tm(tx)
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    grad = np.random.default_rng(3).standard_normal(out.shape)
    tout.backward(torch.from_numpy(grad))
    np.testing.assert_allclose(model.backward(grad), tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    theirs = dict(tm.named_parameters())
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, theirs[name].grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    for key, value in model.state_dict().items():  # in training, the running statistics moved
        np.testing.assert_allclose(value, tm.state_dict()[key].numpy(), rtol=1e-12, err_msg=key)


@pytest.mark.parametrize("network", ["resnet", "resnet-folded", "convnet"])
def test_onnx_graph_is_the_same_network(network):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model, shape = _tiny_network(network, np.float32)
    model.train()
    model(np.random.default_rng(4).standard_normal((6, *shape)).astype(np.float32))
    model.eval()  # the graph uses the running statistics (moved from 0 and 1 above)
    session = bench_models.onnx_session(model, shape, threads=1)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, *shape)).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"x": x})[0], model(x), rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.parametrize("pool", [
    nn.MaxPool2d(3, 2, (0, 1, 2, 0)), nn.MaxPool2d(2, 1, "same"),
    nn.AvgPool2d(3, 1, (1, 0, 0, 2), count_include_pad=False), nn.AvgPool2d(2, 2, 1),
    nn.AdaptiveAvgPool2d((1, 1)),
], ids=repr)
def test_onnx_pools_take_every_padding_form(pool):
    pytest.importorskip("onnxruntime")
    session = bench_models.onnx_session(nn.Sequential(pool), (2, 5, 6), threads=1)
    x = np.random.default_rng(5).standard_normal((2, 2, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], pool(x), rtol=1e-6, atol=1e-7)


def test_fused_layers_in_the_copies():
    """to_onnx writes a Conv2dReLU as Conv then Relu; to_torch refuses it (no PyTorch layer
    with its state_dict keys) rather than dropping the ReLU."""
    init.manual_seed(0)
    fused = fuse.fuse_conv_relu(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU()))
    if bench_models._torch() is not None:
        with pytest.raises(ValueError, match="to_torch: no PyTorch equivalent for Conv2dReLU"):
            bench_models.to_torch(fused)
    pytest.importorskip("onnxruntime")
    x = np.random.default_rng(6).standard_normal((2, 2, 4, 5)).astype(np.float32)
    session = bench_models.onnx_session(fused, (2, 4, 5), threads=1)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], fused(x), rtol=1e-5, atol=1e-6)


def test_to_onnx_refuses_what_it_cannot_write():
    pytest.importorskip("onnx")
    with pytest.raises(ValueError, match="to_onnx: AvgPool2d's divisor_override"):
        bench_models.to_onnx(nn.Sequential(nn.AvgPool2d(2, divisor_override=3)), (1, 4, 4))
    with pytest.raises(ValueError, match="to_onnx: no ONNX equivalent for LPPool2d"):
        bench_models.to_onnx(nn.Sequential(nn.LPPool2d(2, 2)), (1, 4, 4))
    with pytest.raises(ValueError, match="to_onnx: no ONNX equivalent for AdaptiveAvgPool2d"):
        bench_models.to_onnx(nn.Sequential(nn.AdaptiveAvgPool2d(2)), (1, 4, 4))


def test_model_case_steps_and_run():
    case = bench_models.model_case("convnet", "train", 2, threads=1)
    before = case.fastconv_model.state_dict()["0.weight"].copy()
    result = bench_models.run(case, repeat=2, threads=1, pause=0.0)
    assert not np.array_equal(before, case.fastconv_model.state_dict()["0.weight"])  # trained
    assert set(result.seconds) == set(case.steps) and "onnxruntime" not in case.steps
    assert set(result.ratios) == set(case.steps) - {"fastconv"}
    assert result.images_per_second("fastconv") == pytest.approx(2 / result.seconds["fastconv"])
    infer = bench_models.model_case("resnet14", "infer", 1, threads=1, competitors=())
    assert list(infer.steps) == ["fastconv"] and infer.steps["fastconv"]().shape == (1, 10)
    with pytest.raises(ValueError, match="task must be 'train' or 'infer'"):
        bench_models.model_case("convnet", "test", 1)


@pytest.mark.parametrize("task", ["train", "infer"])
def test_layer_times_cover_every_layer(task):
    case = bench_models.model_case("convnet", task, 2, threads=1)
    lt = bench_models.layer_times(case, repeat=1, threads=1, pause=0.0)
    names = [name for name, _ in bench_models._leaves(case.fastconv_model)]
    if task == "train":  # the ReLU fused into the convolution leaves an Identity
        assert names == [str(i) for i in range(len(case.fastconv_model))]
    else:  # fuse.optimize leaves it out
        assert names[:2] == ["0", "2"] and len(names) == len(case.fastconv_model)
    directions = ("forward", "backward") if task == "train" else ("forward",)
    assert {(n, d) for n in names for d in directions} <= set(lt.seconds["fastconv"])
    if task == "train":
        assert {("loss", "forward"), ("optimizer", "backward")} <= set(lt.seconds["fastconv"])
    # instrumenting leaves no trace on the model
    assert "forward" not in vars(case.fastconv_model[0])
    if "PyTorch" in lt.seconds:
        assert {(n, "forward") for n in names} <= set(lt.seconds["PyTorch"])
        assert not case.torch_model[0]._forward_hooks
    table = bench_models.format_layers(lt)
    assert "conv2d+relu" in table and "step total" in table  # fastconv's fused layers
    if task == "train":
        assert lt.kinds["fastconv"]["1"] == "identity"
    if "PyTorch" in lt.seconds:  # PyTorch's ReLU is an activation, not the Identity's kind
        assert lt.kinds["PyTorch"]["1"] == "activation" and "activation" in table
    assert "0" in bench_models.format_layers(lt, by_kind=False).split()


def test_table_and_chart(tmp_path):
    pytest.importorskip("matplotlib")
    case = bench_models.model_case("convnet", "infer", 1, threads=1)
    result = bench_models.ModelResult(case, {"fastconv": 0.01, "PyTorch": 0.02},
                                      {"PyTorch": 2.0})
    table = bench_models.format_table([result])
    assert "100 img/s" in table and "2.00x" in table
    assert "geometric mean speed-up over PyTorch, infer: 2.00x" in table
    path = tmp_path / "models.png"
    assert bench_models.plot([result], str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_call_overhead_times_each_op():
    rows = bench_models.call_overhead(calls=2, rounds=1)
    assert [name for name, _, _ in rows] == ["conv2d", "max_pool2d", "linear"]
    assert all(ours > 0 for _, ours, _ in rows)


def test_main_prints_every_case():
    out = io.StringIO()
    results = bench_models.main(threads=1, repeat=1, cases=[("convnet", "train", 2),
                                                            ("resnet14", "infer", 1)], out=out,
                                pause=0.0)
    text = out.getvalue()
    assert len(results) == 2 and "resnet14  infer" in text and "per call on a tiny input" in text
    assert "multiply-add peak on 1 thread(s) before each case, GFLOP/s: " in text
    assert text.count("where the time goes") == 2


def test_command_line_runs_the_model_benchmark(monkeypatch):
    from fastconv.__main__ import main

    calls = []
    monkeypatch.setattr(bench_models, "main", lambda **kwargs: calls.append(kwargs))
    assert main(["bench", "--model", "--threads", "1", "--repeat", "2", "--layers"]) == 0
    assert calls == [dict(threads=1, repeat=2, plot_path=None, dtype=np.float32, layers=True)]


@pytest.mark.parametrize("task", ["train", "infer"])
def test_check_agreement_catches_a_wrong_copy(task):
    case = bench_models.model_case("convnet", task, 2, threads=1)
    bench_models.check_agreement(case)  # the copies agree
    if case.torch_model is None:
        pytest.skip("PyTorch is not installed")
    import torch

    with torch.no_grad():
        case.torch_model[-1].bias += 1.0  # the last layer's bias, off by one
    with pytest.raises(RuntimeError, match="PyTorch's convnet disagrees with fastconv's"):
        bench_models.check_agreement(case)
