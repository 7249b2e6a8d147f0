"""fastconv.fuse.fold_batch_norm: the folded copy gives the model's evaluation-mode outputs and
input gradients, folds exactly the conv -> batch norm pairs, and leaves the model alone."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
from helpers import assert_close

from fastconv import fuse, init, models, nn, train


def _trained_statistics(model, seed=7):
    """Give every batch norm non-trivial running statistics and affine parameters, as after
    training."""
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean[...] = rng.standard_normal(m.num_features)
            m.running_var[...] = rng.uniform(0.3, 3.0, m.num_features)
            m.weight.data[...] = rng.uniform(-2.0, 2.0, m.num_features)
            m.bias.data[...] = rng.standard_normal(m.num_features)
    return model


# (id, model factory taking a dtype, input shape, how many batch norms fold)
MODELS = [
    ("conv-bn-relu", lambda dt: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, dtype=dt),
                                              nn.BatchNorm2d(4, dtype=dt), nn.ReLU()),
     (2, 3, 5, 5), 1),
    ("no-bias-strided-dilated-pad4",
     lambda dt: nn.Sequential(nn.Conv2d(2, 5, 3, stride=2, padding=(0, 2, 1, 1), dilation=(1, 2),
                                        bias=False, dtype=dt), nn.BatchNorm2d(5, dtype=dt)),
     (1, 2, 7, 8), 1),
    ("grouped-then-unfoldable",  # the second batch norm follows a ReLU, the first none
     lambda dt: nn.Sequential(OrderedDict(
         bn0=nn.BatchNorm2d(4, dtype=dt), conv=nn.Conv2d(4, 6, 1, groups=2, dtype=dt),
         bn=nn.BatchNorm2d(6, dtype=dt), act=nn.ReLU(), bn2=nn.BatchNorm2d(6, dtype=dt))),
     (3, 4, 3, 3), 1),
    ("resnet", lambda dt: models.ResNet(blocks=(1, 2), widths=(2, 3), num_classes=4,
                                        in_channels=2, dtype=dt), (2, 2, 5, 6), 8),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, build, shape, folds", MODELS, ids=[m[0] for m in MODELS])
def test_folded_model_is_the_evaluation_mode_model(name, build, shape, folds, dtype):
    init.manual_seed(0)
    model = _trained_statistics(build(dtype))
    before = {k: a.copy() for k, a in model.state_dict().items()}
    folded = fuse.fold_batch_norm(model)
    assert model.training and not folded.training  # the model keeps its mode
    for key, value in model.state_dict().items():  # ... and its weights
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    identities = [m for m in folded.modules() if isinstance(m, nn.Identity)]
    batch_norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(identities) == folds
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == batch_norms - folds

    model.eval()
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    y = model(x)
    got = folded(x)
    assert got.dtype == dtype
    # float64: only the folded weights' rounding; float32: a sum over every layer's taps
    assert_close(got, y, 64 if dtype == np.float64 else 2048)
    grad = rng.standard_normal(y.shape).astype(dtype)
    assert_close(folded.backward(grad), model.backward(grad),
                 64 if dtype == np.float64 else 2048)


def test_fold_keeps_a_bias_and_names_the_new_one():
    init.manual_seed(0)
    model = _trained_statistics(nn.Sequential(nn.Conv2d(1, 2, 1, bias=False),
                                              nn.BatchNorm2d(2)))
    folded = fuse.fold_batch_norm(model)
    assert list(folded.state_dict()) == ["0.weight", "0.bias"]
    conv, bn = model[0], model[1]
    scale = bn.weight.data / np.sqrt(bn.running_var + bn.eps)
    np.testing.assert_allclose(folded[0].weight.data, conv.weight.data * scale[:, None, None, None],
                               rtol=1e-6)
    np.testing.assert_allclose(folded[0].bias.data, bn.bias.data - bn.running_mean * scale,
                               rtol=1e-6, atol=1e-6)
    assert folded[0].weight.grad.shape == conv.weight.shape and not folded[0].weight.grad.any()


def test_resnet_folds_every_convolution_and_runs_any_size():
    init.manual_seed(0)
    folded = fuse.fold_batch_norm(models.resnet(blocks=(1, 1, 1)))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(m.bias is not None for m in folded.modules() if isinstance(m, nn.Conv2d))
    assert folded(np.zeros((1, 3, 20, 24), np.float32)).shape == (1, 10)


def test_a_saved_activation_is_not_copied():
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1))
    model(np.ones((1, 1, 2, 2), np.float32))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        fuse.fold_batch_norm(model).backward(np.ones((1, 1, 2, 2), np.float32))


def test_fold_batch_norm_refuses_what_is_not_a_module():
    with pytest.raises(TypeError, match="^fold_batch_norm: model must be a fastconv.nn.Module, "
                                        "got dict"):
        fuse.fold_batch_norm({})


# (id, model factory taking a dtype, input shape, how many Conv2d / BatchNorm2d + ReLU pairs fuse)
RELU_MODELS = [
    ("conv-relu", lambda dt: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, dtype=dt), nn.ReLU(),
                                           nn.MaxPool2d(2)), (2, 3, 6, 6), 1),
    ("through-identity-inplace-strided-nobias",
     lambda dt: nn.Sequential(nn.Conv2d(2, 5, 3, stride=2, padding=(0, 2, 1, 1), bias=False,
                                        dtype=dt), nn.Identity(), nn.ReLU(inplace=True)),
     (1, 2, 7, 8), 1),
    ("batch-norm-between-and-relu-first",  # the batch norm fuses with the ReLU, no conv does
     lambda dt: nn.Sequential(nn.ReLU(), nn.Conv2d(2, 3, 1, dtype=dt), nn.BatchNorm2d(3, dtype=dt),
                              nn.ReLU(), nn.Conv2d(3, 2, 1, dtype=dt)), (2, 2, 3, 3), 1),
    ("resnet",  # the stem's and each block's first batch norm with their ReLUs
     lambda dt: models.ResNet(blocks=(1, 2), widths=(2, 3), num_classes=4, in_channels=2,
                              dtype=dt), (2, 2, 5, 6), 4),
    ("nhwc-stays",  # conv2d_relu's kernels are NCHW's
     lambda dt: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, data_format="NHWC", dtype=dt),
                              nn.ReLU()), (2, 5, 6, 2), 0),
    ("folded-resnet",  # the stem's and each block's first convolution, through the Identity
     lambda dt: fuse.fold_batch_norm(_trained_statistics(models.ResNet(
         blocks=(1, 2), widths=(2, 3), num_classes=4, in_channels=2, dtype=dt))),
     (2, 2, 5, 6), 4),
]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, build, shape, fusions", RELU_MODELS,
                         ids=[m[0] for m in RELU_MODELS])
def test_fused_model_is_the_model_bit_for_bit(name, build, shape, fusions, dtype, training):
    init.manual_seed(0)
    model = build(dtype).train(training)
    fused = fuse.fuse_conv_relu(model)
    assert fused.training == training
    fused_kinds = (fuse.Conv2dReLU, fuse.BatchNorm2dReLU)
    assert sum(isinstance(m, fused_kinds) for m in fused.modules()) == fusions
    assert not any(isinstance(m, fused_kinds) for m in model.modules())  # unchanged
    assert list(fused.state_dict()) == list(model.state_dict())
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    for _ in range(2):  # twice: the running statistics move alike
        y = model(x)
        np.testing.assert_array_equal(fused(x), y)
        grad = rng.standard_normal(y.shape).astype(dtype)
        np.testing.assert_array_equal(fused.backward(grad), model.backward(grad))
    ours = dict(fused.named_parameters())
    for key, p in model.named_parameters():
        np.testing.assert_array_equal(ours[key].grad, p.grad, err_msg=key)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(fused.state_dict()[key], value, err_msg=key)


def test_fuse_conv_relu_refuses_what_is_not_a_module():
    with pytest.raises(TypeError, match="^fuse_conv_relu: model must be a fastconv.nn.Module, "
                                        "got list"):
        fuse.fuse_conv_relu([])


# ---- optimize ------------------------------------------------------------------------------

# (id, model factory taking a dtype, input shape): what optimize rewrites, and what it keeps
OPTIMIZE_MODELS = [*[(name, build, shape) for name, build, shape, _ in MODELS],
                   *[(name, build, shape) for name, build, shape, _ in RELU_MODELS],
                   ("convnet-bn-dropout", lambda dt: train.convnet(batchnorm=True, dropout=0.3)
                    .to(dt), (2, 1, 28, 28)),
                   ("nhwc-conv-relu-pool",  # channels last: nothing fuses, pooling still lighter
                    lambda dt: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, data_format="NHWC",
                                                       dtype=dt), nn.ReLU(),
                                             nn.MaxPool2d(2, data_format="NHWC")), (2, 6, 6, 2))]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, build, shape", OPTIMIZE_MODELS,
                         ids=[m[0] for m in OPTIMIZE_MODELS])
def test_optimized_model_is_the_evaluation_mode_model(name, build, shape, dtype):
    init.manual_seed(0)
    model = _trained_statistics(build(dtype))
    training = model.training
    before = model.state_dict()
    fast = fuse.optimize(model)
    assert model.training == training and not fast.training
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    for m in fast.modules():
        for _, child in m._own(nn.Module):
            assert type(child) not in (nn.Conv2d, fuse.Conv2dReLU, nn.MaxPool2d)
            assert not (isinstance(m, nn.Sequential) and type(child) is nn.Identity)
    assert list(fast.state_dict()) == list(fuse.fold_batch_norm(model).state_dict())
    x = np.random.default_rng(5).standard_normal(shape).astype(dtype)
    folded = fuse.fold_batch_norm(model)
    np.testing.assert_array_equal(fast(x), folded(x))  # the folded network, bit for bit
    assert_close(fast(x), model.eval()(x), 64 if dtype == np.float64 else 2048)
    saved = [m for m in fast.modules() if isinstance(m, fuse._InferenceOnly)
             and m._saved is not None]
    assert not saved  # nothing kept for backward


def test_optimized_layers_have_no_backward_and_the_model_still_trains():
    init.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(2, 3))
    fast = fuse.optimize(model)
    x = np.ones((1, 1, 4, 4), np.float32)
    y = fast(x)
    for layer in list(fast)[:2]:
        with pytest.raises(RuntimeError, match=r"^Inference\w+\.backward: a layer of "
                                               "fastconv.fuse.optimize's inference-only copy"):
            layer.backward(y)
    model.backward(np.ones_like(model(x)))  # the original keeps its layers and backward
    assert model[0].weight.grad.any()
    lone = fuse.optimize(nn.Conv2d(1, 2, 3))
    assert type(lone) is fuse.InferenceConv2d and lone(x).shape == (1, 2, 2, 2)


def test_optimize_refuses_what_is_not_a_module():
    with pytest.raises(TypeError, match="^optimize: model must be a fastconv.nn.Module, "
                                        "got int"):
        fuse.optimize(3)
