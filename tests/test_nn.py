"""fastconv.nn, fastconv.init and the ops they add to fastconv.functional.

Every layer and the loss are checked by central finite differences in float64, for the input and
every parameter; so is a whole network with its loss. Where PyTorch is installed, one table of
layers builds both a torch model and the fastconv model (the names and arguments are the same),
the torch weights are loaded into fastconv, and outputs, gradients, running statistics and a few
SGD steps are compared. The rest (module API, save/load, errors, dropout, init statistics,
training end to end) needs no PyTorch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import numerical_gradient

import fastconv
import fastconv.functional as F
from fastconv import init, nn, optim

# ---- tolerances, in one place --------------------------------------------------------------------

FD_STEP = 1e-6                     # central-difference step (float64)
FD_TOL = dict(rtol=1e-5, atol=1e-7)  # difference error ~ step**2 * f''' + roundoff / step
TORCH_TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-5)}


# ---- finite differences --------------------------------------------------------------------------

def check_gradients(run_forward, run_backward, module, x):
    """Compare backward's gradients (input and every parameter) with finite differences of the
    scalar loss run_forward(); run_backward() returns the input gradient and fills .grad."""
    run_forward()
    module.zero_grad()
    grad_x = run_backward()
    analytic = {name: p.grad.copy() for name, p in module.named_parameters()}
    np.testing.assert_allclose(grad_x, numerical_gradient(run_forward, x, FD_STEP), **FD_TOL,
                               err_msg="input gradient")
    for name, p in module.named_parameters():
        np.testing.assert_allclose(analytic[name], numerical_gradient(run_forward, p.data, FD_STEP),
                                   **FD_TOL, err_msg=f"gradient of {name}")


def make_input(rng, shape, kind):
    """'normal'; 'distinct' (values at least 0.01 apart: no max-pool ties within a step);
    'away_from_zero' (|x| >= 0.1: no relu kink within a step)."""
    if kind == "distinct":
        return (rng.permutation(math.prod(shape)).reshape(shape) * 0.01 - 1.0)
    x = rng.standard_normal(shape)
    if kind == "away_from_zero":
        x += np.where(x >= 0, 0.1, -0.1)
    return x


def with_running_stats(bn, rng=None):
    """A batch-norm layer whose running statistics are not the trivial 0 and 1."""
    rng = rng or np.random.default_rng(5)
    bn.running_mean[...] = rng.standard_normal(bn.num_features)
    bn.running_var[...] = rng.uniform(0.5, 2.0, bn.num_features)
    return bn


def small_network():
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 4))


LAYERS = [  # (id, factory, input shape, input kind)
    ("conv", lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 5, 5), "normal"),
    ("conv-grouped-strided-dilated-nobias",
     lambda: nn.Conv2d(4, 6, (3, 2), stride=2, padding=(1, 0), dilation=(1, 2), groups=2,
                       bias=False), (2, 4, 7, 7), "normal"),
    ("conv-same-even-kernel", lambda: nn.Conv2d(2, 3, 4, padding="same"), (1, 2, 5, 6), "normal"),
    ("conv-pad4-strided", lambda: nn.Conv2d(2, 3, 3, stride=2, padding=(0, 2, 1, 0)),
     (1, 2, 6, 7), "normal"),
    ("maxpool-pad4", lambda: nn.MaxPool2d(3, 2, padding=(2, 0, 0, 1), ceil_mode=True),
     (1, 2, 6, 7), "distinct"),
    ("avgpool-same", lambda: nn.AvgPool2d(4, 1, padding="same", count_include_pad=False),
     (1, 2, 5, 6), "normal"),
    ("lppool-pad4", lambda: nn.LPPool2d(2, 3, stride=2, padding=(1, 0, 0, 2)), (1, 2, 6, 6),
     "away_from_zero"),
    ("maxpool", lambda: nn.MaxPool2d(2), (2, 3, 4, 4), "distinct"),
    ("maxpool-ceil-padded-dilated",
     lambda: nn.MaxPool2d(3, stride=2, padding=1, dilation=(1, 2), ceil_mode=True),
     (1, 2, 6, 9), "distinct"),
    ("avgpool", lambda: nn.AvgPool2d(2), (2, 3, 4, 4), "normal"),
    ("avgpool-ceil-exclude-pad",
     lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), (1, 2, 6, 7),
     "normal"),
    ("avgpool-divisor", lambda: nn.AvgPool2d(2, divisor_override=3), (1, 2, 4, 4), "normal"),
    ("lppool", lambda: nn.LPPool2d(2, 2), (1, 2, 4, 4), "away_from_zero"),
    ("lppool-ceil", lambda: nn.LPPool2d(2, 3, stride=2, ceil_mode=True), (1, 2, 6, 6),
     "away_from_zero"),
    ("adaptive-avgpool", lambda: nn.AdaptiveAvgPool2d((3, None)), (2, 2, 7, 5), "normal"),
    ("adaptive-avgpool-global", lambda: nn.AdaptiveAvgPool2d(1), (2, 3, 4, 5), "normal"),
    ("adaptive-maxpool", lambda: nn.AdaptiveMaxPool2d((2, 4)), (1, 2, 5, 9), "distinct"),
    ("adaptive-maxpool-global", lambda: nn.AdaptiveMaxPool2d(1), (2, 2, 3, 3), "distinct"),
    ("relu", nn.ReLU, (2, 3, 4), "away_from_zero"),
    ("tanh", nn.Tanh, (2, 3, 4), "normal"),
    ("sigmoid", nn.Sigmoid, (2, 3, 4), "normal"),
    ("linear", lambda: nn.Linear(5, 3), (4, 5), "normal"),
    ("linear-3d-nobias", lambda: nn.Linear(5, 3, bias=False), (2, 4, 5), "normal"),
    ("flatten", nn.Flatten, (2, 3, 2, 2), "normal"),
    ("flatten-middle", lambda: nn.Flatten(1, 2), (2, 3, 2, 2), "normal"),
    ("identity", nn.Identity, (2, 3, 2), "normal"),
    ("dropout", lambda: nn.Dropout(0.3), (4, 5), "normal"),
    ("dropout-eval", lambda: nn.Dropout(0.3).eval(), (4, 5), "normal"),
    ("batchnorm2d", lambda: nn.BatchNorm2d(3), (4, 3, 3, 3), "normal"),
    ("batchnorm2d-eval", lambda: with_running_stats(nn.BatchNorm2d(3)).eval(), (4, 3, 3, 3),
     "normal"),
    ("batchnorm1d", lambda: nn.BatchNorm1d(5), (6, 5), "normal"),
    ("batchnorm1d-3d", lambda: nn.BatchNorm1d(3), (4, 3, 5), "normal"),
    ("batchnorm1d-eval", lambda: with_running_stats(nn.BatchNorm1d(5)).eval(), (6, 5), "normal"),
    ("sequential", small_network, (3, 2, 6, 6), "normal"),
]


@pytest.mark.parametrize("factory, shape, kind",
                         [case[1:] for case in LAYERS], ids=[case[0] for case in LAYERS])
def test_layer_gradients_match_finite_differences(factory, shape, kind):
    rng = np.random.default_rng(0)
    init.manual_seed(0)
    module = factory().to(np.float64)
    for p in module.parameters():  # away from the ones/zeros batch norm starts with
        p.data[...] = rng.uniform(0.5, 1.5, p.shape) * rng.choice([-1, 1], p.shape)
    x = make_input(rng, shape, kind)
    weights = rng.standard_normal(module(x).shape)

    def loss():
        init.manual_seed(1)  # the same dropout mask on every pass
        return float(np.sum(module(x) * weights))

    check_gradients(loss, lambda: module.backward(weights), module, x)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_network_with_loss_gradients_match_finite_differences(mode):
    rng = np.random.default_rng(1)
    init.manual_seed(0)
    model = with_running_stats_in(small_network()).to(np.float64)
    getattr(model, mode)()
    criterion = nn.CrossEntropyLoss()
    x, labels = rng.standard_normal((4, 2, 6, 6)), rng.integers(0, 4, 4)
    check_gradients(lambda: float(criterion(model(x), labels)),
                    lambda: model.backward(criterion.backward()), model, x)


def with_running_stats_in(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with_running_stats(m)
    return model


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_cross_entropy_gradient_matches_finite_differences(scale):
    rng = np.random.default_rng(2)
    logits, labels = rng.standard_normal((5, 7)), rng.integers(0, 7, 5)
    logits[:, 0] *= scale  # large logits: the shifted log-sum-exp must stay exact
    criterion = nn.CrossEntropyLoss()
    criterion(logits, labels)
    np.testing.assert_allclose(criterion.backward(),
                               numerical_gradient(lambda: float(criterion(logits, labels)),
                                                  logits), **FD_TOL)


def test_cross_entropy_value_is_stable_for_huge_logits():
    logits = np.array([[1e30, 0.0, -1e30], [0.0, 0.0, 0.0]], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        loss = F.cross_entropy(logits, np.array([1, 2]))
        grad = F.cross_entropy_backward(2.0, logits, np.array([1, 2]))
    assert loss.dtype == np.float32 and loss.shape == ()
    np.testing.assert_allclose(float(loss), (1e30 + math.log(3)) / 2, rtol=1e-6)
    np.testing.assert_allclose(grad, [[1, -1, 0], [1 / 3, 1 / 3, -2 / 3]], atol=1e-7)


# ---- PyTorch parity ------------------------------------------------------------------------------

# (class name, args, kwargs): the same entries build a torch.nn and a fastconv.nn model
TORCH_NET = [
    ("Conv2d", (3, 6, 3), {"padding": 1}), ("BatchNorm2d", (6,), {}), ("ReLU", (), {}),
    ("MaxPool2d", (2,), {}),
    ("Conv2d", (6, 4, 3), {"padding": 1, "groups": 2, "bias": False}), ("Tanh", (), {}),
    ("AvgPool2d", (3,), {"stride": 1, "padding": 1, "count_include_pad": False}),
    ("LPPool2d", (2, 2), {}), ("Flatten", (), {}), ("Identity", (), {}),
    ("Linear", (16, 8), {}), ("BatchNorm1d", (8,), {}), ("Sigmoid", (), {}),
    ("Linear", (8, 5), {}),
]


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _twin_models(torch, dtype):
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(*[getattr(torch.nn, name)(*args, **kwargs)
                                   for name, args, kwargs in TORCH_NET])
    theirs.to({np.float32: torch.float32, np.float64: torch.float64}[dtype])
    mine = nn.Sequential(*[getattr(nn, name)(*args, **kwargs)
                           for name, args, kwargs in TORCH_NET]).to(dtype)
    mine.load_state_dict({k: t.numpy() for k, t in theirs.state_dict().items()})
    return mine, theirs


def _assert_torch_close(mine, theirs, dtype, what):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    np.testing.assert_allclose(mine, theirs, **TORCH_TOL[dtype], err_msg=what)


def test_state_dict_keys_and_shapes_are_pytorchs(torch):
    mine, theirs = _twin_models(torch, np.float32)
    expected = {k: tuple(t.shape) for k, t in theirs.state_dict().items()}
    assert {k: a.shape for k, a in mine.state_dict().items()} == expected
    assert list(mine.state_dict()) == list(expected)  # the same order, too
    assert [k for k, _ in mine.named_parameters()] == [k for k, _ in theirs.named_parameters()]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_training_steps_match_pytorch(torch, dtype, mode):
    """Outputs, loss, input and parameter gradients at every step, then the whole state
    (parameters, running statistics, num_batches_tracked) after three SGD steps."""
    mine, theirs = _twin_models(torch, dtype)
    getattr(mine, mode)()
    getattr(theirs, mode)()
    sgd = dict(lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
    opt, their_opt = optim.SGD(mine.parameters(), **sgd), torch.optim.SGD(theirs.parameters(),
                                                                          **sgd)
    criterion = nn.CrossEntropyLoss()
    rng = np.random.default_rng(3)
    for step in range(3):
        x, labels = rng.standard_normal((8, 3, 8, 8)).astype(dtype), rng.integers(0, 5, 8)
        tx = torch.from_numpy(x).requires_grad_()
        their_out = theirs(tx)
        their_loss = torch.nn.functional.cross_entropy(their_out, torch.from_numpy(labels))
        their_opt.zero_grad()
        their_loss.backward()
        out = mine(x)
        loss = criterion(out, labels)
        opt.zero_grad()
        grad_x = mine.backward(criterion.backward())
        _assert_torch_close(out, their_out, dtype, f"output, step {step}")
        _assert_torch_close(loss, their_loss, dtype, f"loss, step {step}")
        _assert_torch_close(grad_x, tx.grad, dtype, f"input gradient, step {step}")
        for (name, p), (_, tp) in zip(mine.named_parameters(), theirs.named_parameters()):
            _assert_torch_close(p.grad, tp.grad, dtype, f"gradient of {name}, step {step}")
        opt.step()
        their_opt.step()
    for key, value in theirs.state_dict().items():
        _assert_torch_close(mine.state_dict()[key], value, dtype, key)
    assert int(mine.state_dict()["1.num_batches_tracked"]) == (3 if mode == "train" else 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_functional_ops_match_pytorch(torch, dtype):
    rng = np.random.default_rng(4)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in [(2, 3, 5), (4, 5), (4,)])
    tf = torch.nn.functional
    t = torch.from_numpy
    _assert_torch_close(F.linear(x, w, b), tf.linear(t(x), t(w), t(b)), dtype, "linear")
    z = (rng.standard_normal((3, 50)) * 30).astype(dtype)  # saturating and overflowing range
    _assert_torch_close(F.tanh(z), torch.tanh(t(z)), dtype, "tanh")
    _assert_torch_close(F.sigmoid(z), torch.sigmoid(t(z)), dtype, "sigmoid")
    labels = rng.integers(0, 50, 3)
    _assert_torch_close(F.cross_entropy(z, labels), tf.cross_entropy(t(z), t(labels)), dtype,
                        "cross_entropy")
    xb = rng.standard_normal((4, 3, 2, 5)).astype(dtype)
    mean, var = rng.standard_normal(3).astype(dtype), rng.uniform(1, 2, 3).astype(dtype)
    tmean, tvar = t(mean.copy()), t(var.copy())
    y = F.batch_norm(xb, mean, var, training=True, momentum=0.3)
    _assert_torch_close(y, tf.batch_norm(t(xb), tmean, tvar, training=True, momentum=0.3), dtype,
                        "batch_norm")
    _assert_torch_close(mean, tmean, dtype, "running_mean")
    _assert_torch_close(var, tvar, dtype, "running_var")


DEFAULT_INIT = [("Conv2d", (16, 32, 3)), ("Linear", (300, 200))]  # fan_in 144 and 300


@pytest.mark.parametrize("cls, args", DEFAULT_INIT)
def test_default_initialisation_is_pytorchs(cls, args):
    """kaiming_uniform_(a=sqrt(5)) weights and the bias: both U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    init.manual_seed(0)
    layer = getattr(nn, cls)(*args)
    bound = 1 / math.sqrt(layer.weight.data[0].size)
    for name, p in layer.named_parameters():
        assert p.dtype == np.float32
        assert bound * 0.95 < np.abs(p.data).max() <= bound, name
        assert p.data.std() == pytest.approx(bound / math.sqrt(3), rel=0.1), name


@pytest.mark.parametrize("cls, args", DEFAULT_INIT)
def test_default_initialisation_matches_torchs_spread(torch, cls, args):
    torch.manual_seed(0)
    init.manual_seed(0)
    theirs, mine = getattr(torch.nn, cls)(*args), getattr(nn, cls)(*args)
    for name, p in mine.named_parameters():
        assert p.shape == tuple(getattr(theirs, name).shape), name
    # the weights are thousands of samples: enough to compare the spread (the biases are not)
    their = theirs.weight.detach().numpy()
    assert mine.weight.dtype == their.dtype
    assert np.abs(mine.weight.data).max() == pytest.approx(np.abs(their).max(), rel=0.01)
    assert mine.weight.data.std() == pytest.approx(their.std(), rel=0.05)


# ---- batch norm and dropout without PyTorch ------------------------------------------------------

@pytest.mark.parametrize("cls, shape", [(nn.BatchNorm2d, (4, 3, 2, 5)), (nn.BatchNorm1d, (6, 3)),
                                        (nn.BatchNorm1d, (4, 3, 5))])
def test_batchnorm_running_statistics_follow_pytorchs_rule(cls, shape):
    rng = np.random.default_rng(6)
    bn = cls(3, dtype=np.float64)
    running_mean, running_var = np.zeros(3), np.ones(3)
    axes = tuple(i for i in range(len(shape)) if i != 1)
    for step in range(1, 4):
        x = rng.standard_normal(shape) * 3 + 1
        y = bn(x)
        running_mean = 0.9 * running_mean + 0.1 * x.mean(axis=axes)
        running_var = 0.9 * running_var + 0.1 * x.var(axis=axes, ddof=1)  # unbiased
        np.testing.assert_allclose(bn.running_mean, running_mean, rtol=1e-12)
        np.testing.assert_allclose(bn.running_var, running_var, rtol=1e-12)
        assert int(bn.num_batches_tracked) == step
        np.testing.assert_allclose(y.mean(axis=axes), 0, atol=1e-12)
        np.testing.assert_allclose(y.var(axis=axes), 1, rtol=1e-4)  # biased, and eps
    bn.eval()
    x = rng.standard_normal(shape)
    expected = (x - running_mean.reshape((1, 3) + (1,) * (len(shape) - 2))) \
        / np.sqrt(running_var.reshape((1, 3) + (1,) * (len(shape) - 2)) + 1e-5)
    np.testing.assert_allclose(bn(x), expected, rtol=1e-12)
    assert int(bn.num_batches_tracked) == 3  # evaluation leaves the buffers alone


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_dropout_masks(p, dtype):
    init.manual_seed(7)
    x = np.ones((200, 500), dtype)
    out, mask = F.dropout(x, p)
    assert out.dtype == mask.dtype == dtype if mask is not None else out.dtype == dtype
    if p == 0:
        assert mask is None and np.array_equal(out, x)
        return
    kept = 1 / (1 - p) if p < 1 else 0.0
    assert set(np.unique(mask).tolist()) <= {0.0, np.float64(dtype(kept))}
    assert (mask == 0).mean() == pytest.approx(p, abs=0.01)
    np.testing.assert_array_equal(out, x * mask)
    np.testing.assert_array_equal(F.dropout_backward(x * 2, mask), 2 * mask)
    if p < 1:
        assert out.mean() == pytest.approx(1.0, abs=0.03)  # inverted: the expectation is kept


def test_dropout_is_identity_in_eval_and_reproducible_with_a_seed():
    x = np.random.default_rng(8).standard_normal((10, 10)).astype(np.float32)
    layer = nn.Dropout(0.5)
    init.manual_seed(3)
    first = layer(x)
    init.manual_seed(3)
    np.testing.assert_array_equal(layer(x), first)
    np.testing.assert_array_equal(F.dropout(x, 0.5, rng=np.random.default_rng(1))[1],
                                  F.dropout(x, 0.5, rng=np.random.default_rng(1))[1])
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)


# ---- the module API ------------------------------------------------------------------------------

def test_names_state_dict_keys_and_submodule_access():
    model = small_network()
    assert [name for name, _ in model.named_parameters()] == [
        "0.weight", "0.bias", "1.weight", "1.bias", "5.weight", "5.bias"]
    assert list(model.state_dict()) == [
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
        "1.num_batches_tracked", "5.weight", "5.bias"]
    assert model.state_dict()["1.num_batches_tracked"].shape == ()
    assert len(model) == 6 and isinstance(model[1], nn.BatchNorm2d)
    assert len(list(model.parameters())) == 6
    assert "Conv2d(2, 3, kernel_size=(3, 3)" in repr(model)


def test_gradients_accumulate_until_zero_grad():
    rng = np.random.default_rng(9)
    model = small_network().to(np.float64)
    x = rng.standard_normal((2, 2, 6, 6))
    grad_out = rng.standard_normal(model(x).shape)
    model.backward(grad_out)
    once = {name: p.grad.copy() for name, p in model.named_parameters()}
    model.backward(grad_out)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[name], rtol=1e-12, err_msg=name)
    model.zero_grad()
    assert all(not p.grad.any() for p in model.parameters())


def test_train_and_eval_reach_every_submodule():
    model = nn.Sequential(small_network(), nn.Dropout())
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_argument_and_to_convert_parameters_and_buffers(dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    layers = [nn.Conv2d(2, 3, 3, dtype=dtype), nn.Linear(2, 3, dtype=dtype),
              nn.BatchNorm2d(3, dtype=dtype), nn.BatchNorm1d(3, dtype=dtype)]
    for layer in layers:
        assert all(a.dtype == dtype for k, a in layer.state_dict().items()
                   if not k.endswith("num_batches_tracked"))
    model = small_network().to(dtype)
    x = np.ones((2, 2, 6, 6), dtype)
    assert model(x).dtype == dtype
    model.backward(np.ones((2, 4), dtype))
    assert model.astype(other) is model
    assert all(p.data.dtype == p.grad.dtype == other for p in model.parameters())
    assert model[1].running_var.dtype == other
    assert model[1].num_batches_tracked.dtype == np.int64
    with pytest.raises(TypeError, match="conv2d: .*dtype"):
        model(x)  # no silent promotion


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_round_trip_is_exact(tmp_path, dtype):
    rng = np.random.default_rng(10)
    init.manual_seed(0)
    model = small_network().to(dtype)
    x = rng.standard_normal((4, 2, 6, 6)).astype(dtype)
    model(x)  # move the running statistics and num_batches_tracked
    path = tmp_path / "model.weights"  # any name: save writes exactly this path
    model.save(path)
    init.manual_seed(1)
    copy = small_network().to(dtype).load(path)
    for key, value in model.state_dict().items():
        loaded = copy.state_dict()[key]
        assert loaded.dtype == value.dtype
        np.testing.assert_array_equal(loaded, value, err_msg=key)
    model.eval()
    copy.eval()
    np.testing.assert_array_equal(copy(x), model(x))


def _drop(d, key):
    return {k: v for k, v in d.items() if k != key}


LOAD_ERRORS = [  # (id, change to a valid state_dict, exception, text the message must contain)
    ("missing", lambda d: _drop(d, "1.running_var"), KeyError, "missing ['1.running_var']"),
    ("unexpected", lambda d: {**d, "6.weight": np.ones(3)}, KeyError, "unexpected ['6.weight']"),
    ("misshaped", lambda d: {**d, "5.weight": np.ones((4, 26))}, ValueError, "'5.weight'"),
    ("float-into-int-buffer", lambda d: {**d, "1.num_batches_tracked": np.array(1.5)},
     TypeError, "'1.num_batches_tracked'"),
]


@pytest.mark.parametrize("change, exc, text", [c[1:] for c in LOAD_ERRORS],
                         ids=[c[0] for c in LOAD_ERRORS])
def test_load_state_dict_rejects_mismatches_and_changes_nothing(change, exc, text):
    model = small_network()
    before = model.state_dict()
    state = {k: v + 1 for k, v in before.items()}
    with pytest.raises(exc) as info:
        model.load_state_dict(change(state))
    assert text in str(info.value)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


BEFORE_FORWARD = [nn.Conv2d(1, 1, 1), nn.Linear(1, 1), nn.MaxPool2d(2), nn.AvgPool2d(2),
                  nn.LPPool2d(2, 2), nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.Flatten(),
                  nn.Identity(), nn.Dropout(), nn.BatchNorm1d(1), nn.BatchNorm2d(1),
                  nn.CrossEntropyLoss(),
                  nn.Sequential(nn.Linear(1, 1), nn.ReLU())]


@pytest.mark.parametrize("module", BEFORE_FORWARD, ids=lambda m: type(m).__name__)
def test_backward_before_forward_raises(module):
    with pytest.raises(RuntimeError, match="backward called before forward"):
        module.backward(np.ones(1, np.float32))


CONSTRUCTOR_ERRORS = [  # (constructor call, exception, message pattern)
    (lambda: nn.Conv2d(3, 4, 0), ValueError, "Conv2d: kernel_size must be a positive int"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError, r"divisible by groups \(2\)"),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding="same"), ValueError, "'same' needs stride 1"),
    (lambda: nn.Conv2d(3, 4, 3, dtype=np.int32), TypeError, "Conv2d: dtype must be float32"),
    (lambda: nn.Linear(0, 3), ValueError, "Linear: in_features must be a positive int"),
    (lambda: nn.Linear(2, 3, dtype="float16"), TypeError, "Linear: dtype must be float32"),
    (lambda: nn.BatchNorm2d(3, momentum=2), ValueError, "BatchNorm2d: momentum must be"),
    (lambda: nn.Dropout(1.5), ValueError, r"Dropout: p must be a probability in \[0, 1\]"),
    (lambda: nn.Sequential(nn.ReLU(), 3), TypeError, "Sequential: layer 1 must be"),
    (lambda: small_network().to(np.int64), TypeError, "Module.to: dtype must be float32"),
    (lambda: nn.BatchNorm2d(3)(np.ones((2, 3), np.float32)), ValueError,
     r"BatchNorm2d: x must be a 4-D \(N, C, H, W\) array, got \(2, 3\)"),
    (lambda: nn.BatchNorm1d(3)(np.ones((1, 3), np.float32)), ValueError,
     "more than one value per channel"),
    (lambda: nn.Flatten(2)(np.ones((2, 3), np.float32)), ValueError, "Flatten: start_dim=2"),
]


@pytest.mark.parametrize("call, exc, pattern", CONSTRUCTOR_ERRORS)
def test_bad_layer_arguments_raise(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


# ---- training end to end -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make_optimizer", [
    lambda params: optim.SGD(params, lr=0.1, momentum=0.9),
    lambda params: optim.Adam(params, lr=0.01)], ids=["sgd", "adam"])
def test_a_tiny_network_learns(dtype, make_optimizer):
    """Which quadrant of a noisy 8x8 image is bright: the loss must fall well below chance."""
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 4, 64)
    x = rng.standard_normal((64, 1, 8, 8)) * 0.5
    for i, label in enumerate(labels):
        x[i, 0, 4 * (label // 2):4 * (label // 2) + 4, 4 * (label % 2):4 * (label % 2) + 4] += 1
    x = x.astype(dtype)
    init.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, dtype=dtype),
                          nn.BatchNorm2d(4, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Dropout(0.1),
                          nn.Linear(4 * 4 * 4, 4, dtype=dtype))
    criterion, opt = nn.CrossEntropyLoss(), make_optimizer(model.parameters())
    losses = []
    for _ in range(40):
        opt.zero_grad()
        losses.append(float(criterion(model(x), labels)))
        model.backward(criterion.backward())
        opt.step()
    assert losses[0] > 1.0 and losses[-1] < 0.3 * losses[0], losses
    model.eval()
    assert (model(x).argmax(axis=1) == labels).mean() > 0.9
    assert all(p.data.dtype == dtype for p in model.parameters())


# ---- fastconv.init -------------------------------------------------------------------------------

SHAPE = (128, 64, 3, 3)  # fan_in = 576, fan_out = 1152
FAN_IN, FAN_OUT = 64 * 9, 128 * 9

INITIALISERS = [  # (function, kwargs, expected std, uniform bound or None)
    (init.kaiming_uniform_, {}, math.sqrt(2 / FAN_IN), math.sqrt(6 / FAN_IN)),
    (init.kaiming_uniform_, {"a": math.sqrt(5)}, math.sqrt(1 / 3 / FAN_IN), 1 / math.sqrt(FAN_IN)),
    (init.kaiming_uniform_, {"mode": "fan_out", "nonlinearity": "relu"}, math.sqrt(2 / FAN_OUT),
     math.sqrt(6 / FAN_OUT)),
    (init.kaiming_normal_, {}, math.sqrt(2 / FAN_IN), None),
    (init.kaiming_normal_, {"nonlinearity": "tanh", "mode": "fan_out"}, 5 / 3 / math.sqrt(FAN_OUT),
     None),
    (init.xavier_uniform_, {}, math.sqrt(2 / (FAN_IN + FAN_OUT)),
     math.sqrt(6 / (FAN_IN + FAN_OUT))),
    (init.xavier_uniform_, {"gain": 2.0}, 2 * math.sqrt(2 / (FAN_IN + FAN_OUT)),
     2 * math.sqrt(6 / (FAN_IN + FAN_OUT))),
    (init.xavier_normal_, {}, math.sqrt(2 / (FAN_IN + FAN_OUT)), None),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn, kwargs, std, bound", INITIALISERS)
def test_initialisers_have_the_right_distribution(fn, kwargs, std, bound, dtype):
    w = np.empty(SHAPE, dtype)
    assert fn(w, generator=np.random.default_rng(0), **kwargs) is w
    assert w.std() == pytest.approx(std, rel=0.01)
    assert abs(w.mean()) < 0.01 * std
    if bound is not None:
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.999 * bound


def test_init_seeding_parameters_and_constant_fills():
    init.manual_seed(42)
    first = init.kaiming_normal_(np.empty((4, 3)))
    init.manual_seed(42)
    np.testing.assert_array_equal(init.kaiming_normal_(np.empty((4, 3))), first)
    init.manual_seed(42)
    layer = nn.Linear(3, 4)
    init.manual_seed(42)
    np.testing.assert_array_equal(nn.Linear(3, 4).weight.data, layer.weight.data)
    assert init.zeros_(layer.weight) is layer.weight and not layer.weight.data.any()
    assert (init.ones_(layer.bias).data == 1).all()
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))


INIT_ERRORS = [
    (lambda: init.kaiming_uniform_(np.empty(5)), ValueError, "at least 2 dims"),
    (lambda: init.kaiming_normal_(np.empty((2, 2)), mode="fan"), ValueError, "mode must be"),
    (lambda: init.xavier_uniform_(np.empty((2, 2), np.int32)), TypeError, "float32 or float64"),
    (lambda: init.calculate_gain("swish"), ValueError, "unsupported nonlinearity"),
    (lambda: init.uniform_(np.empty(2), generator=0), TypeError, "numpy.random.Generator"),
    (lambda: init.ones_(np.empty(2)[::-1].copy().view(np.dtype(">f8"))), ValueError, "writeable"),
]


@pytest.mark.parametrize("call, exc, pattern", INIT_ERRORS)
def test_bad_init_arguments_raise(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


# ---- validation of the new functional ops --------------------------------------------------------

def _x(*shape, dtype=np.float64):
    return np.ones(shape, dtype)


FUNCTIONAL_ERRORS = [  # (call, exception, message pattern)
    (lambda: F.linear(_x(2, 3), _x(4, 5)), ValueError, r"linear: x's last dim \(3\)"),
    (lambda: F.linear(_x(2, 3), _x(4, 3, dtype=np.float32)), TypeError, "linear: weight has dtype"),
    (lambda: F.linear(_x(2, 3), _x(4, 3), _x(3)), ValueError,
     r"linear: bias must have shape \(4,\)"),
    (lambda: F.linear(_x(2, 3).astype(int), _x(4, 3)), TypeError, "linear: x must have dtype"),
    (lambda: F.linear_backward(_x(2, 5), _x(2, 3), _x(4, 3)), ValueError,
     r"linear_backward: grad_output must have the output's shape \(2, 4\)"),
    (lambda: F.tanh_backward(_x(2), _x(3)), ValueError, "tanh_backward: grad_output must have"),
    (lambda: F.sigmoid_backward(_x(2), _x(2, dtype=np.float32)), TypeError, "sigmoid_backward"),
    (lambda: F.dropout(_x(2), p=-0.1), ValueError, r"dropout: p must be a probability in \[0, 1\]"),
    (lambda: F.dropout(_x(2), p="half"), TypeError, "dropout: p must be"),
    (lambda: F.dropout(_x(2), training=1), TypeError, "dropout: training must be a bool"),
    (lambda: F.dropout(_x(2), rng=42), TypeError, "dropout: rng must be a numpy.random.Generator"),
    (lambda: F.dropout_backward(_x(2), _x(3)), ValueError, "dropout_backward: grad_output"),
    (lambda: F.batch_norm(_x(4), None, None, training=True), ValueError,
     "batch_norm: x must be an .* at least 2 dims"),
    (lambda: F.batch_norm(_x(4, 3), _x(2), _x(2)), ValueError,
     r"batch_norm: running_mean must have shape \(3,\)"),
    (lambda: F.batch_norm(_x(4, 3), None, None), ValueError, "needed when training=False"),
    (lambda: F.batch_norm(_x(4, 3), _x(3), None, training=True), ValueError, "both be None"),
    (lambda: F.batch_norm(_x(1, 3), None, None, training=True), ValueError,
     "more than one value per channel"),
    (lambda: F.batch_norm(_x(4, 3), _x(3), _x(3), eps=0), ValueError, "eps must be a positive"),
    (lambda: F.batch_norm(_x(4, 3), _x(3), _x(3), momentum=None), TypeError, "momentum must be"),
    (lambda: F.batch_norm(_x(4, 3), _x(3).astype(">f8"), _x(3), training=True), ValueError,
     "running_mean must be a writeable array"),
    (lambda: F.batch_norm_backward(_x(4, 2), _x(4, 3), _x(3), _x(3)), ValueError,
     "batch_norm_backward: grad_output must have the output's shape"),
    (lambda: F.cross_entropy(_x(3), np.zeros(3, int)), ValueError,
     r"cross_entropy: logits must be a 2-D \(N, C\) array"),
    (lambda: F.cross_entropy(_x(0, 3), np.zeros(0, int)), ValueError, "at least one row"),
    (lambda: F.cross_entropy(_x(2, 3), np.zeros(2)), TypeError,
     "cross_entropy: target must be an integer numpy.ndarray"),
    (lambda: F.cross_entropy(_x(2, 3), [0, 1]), TypeError, "got list"),
    (lambda: F.cross_entropy(_x(2, 3), np.zeros(3, int)), ValueError,
     r"target must have shape \(2,\)"),
    (lambda: F.cross_entropy(_x(2, 3), np.array([0, 3])), ValueError,
     r"target values must lie in \[0, 3\) \(class indices\), got values in \[0, 3\]"),
    (lambda: F.cross_entropy_backward("1", _x(2, 3), np.zeros(2, int)), TypeError,
     "cross_entropy_backward: grad_output must be a real number"),
]


@pytest.mark.parametrize("call, exc, pattern", FUNCTIONAL_ERRORS)
def test_bad_functional_arguments_raise(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_new_ops_keep_the_dtype_and_never_return_views(dtype):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 3)).astype(dtype)
    ones = np.ones(3, dtype)
    outputs = [F.linear(x, np.eye(3, dtype=dtype)), F.tanh(x), F.sigmoid(x),
               F.dropout(x, 0.5, training=False)[0], F.dropout(x, 0.5)[0],
               F.batch_norm(x, ones * 0, ones, training=False),
               F.dropout_backward(x, None), F.cross_entropy_backward(1.0, x, np.zeros(4, int)),
               *F.linear_backward(x, x, np.eye(3, dtype=dtype)),
               *F.batch_norm_backward(x, x, None, None, training=True)]
    for out in outputs:
        assert out.dtype == dtype
        assert not np.shares_memory(out, x)
    assert F.cross_entropy(x, np.zeros(4, int)).dtype == dtype


def test_new_ops_are_exported():
    names = ["linear", "linear_backward", "tanh", "tanh_backward", "sigmoid", "sigmoid_backward",
             "dropout", "dropout_backward", "batch_norm", "batch_norm_backward", "cross_entropy",
             "cross_entropy_backward"]
    assert set(names) <= set(F.__all__)
    assert all(callable(getattr(F, name)) for name in names)
    assert fastconv.nn is nn and fastconv.optim is optim and fastconv.init is init


def test_sequential_takes_named_layers_as_pytorch_does():
    from collections import OrderedDict

    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 3), act=nn.ReLU(), flat=nn.Flatten()))
    assert [name for name, _ in model.named_parameters()] == ["conv.weight", "conv.bias"]
    assert isinstance(model[1], nn.ReLU) and len(model) == 3
    x = np.ones((2, 1, 5, 5), np.float32)
    np.testing.assert_array_equal(model(x), nn.Sequential(model[0], model[1], model[2])(x))
    for name in ("", "a.b", "training", "forward"):
        with pytest.raises(ValueError, match="^Sequential: layer names must be"):
            nn.Sequential(OrderedDict([(name, nn.ReLU())]))
    with pytest.raises(TypeError, match="^Sequential: layer act must be a fastconv.nn.Module"):
        nn.Sequential(OrderedDict(act=3))


# ---- backward without the input gradient ---------------------------------------------------------

def _first_layers():
    """(id, builder of a model): the first layer with parameters a Conv2d, a fused Conv2dReLU,
    a Linear behind a Flatten, a batch norm (whose input gradient is computed anyway), a ResNet
    (a Sequential subclass)."""
    from fastconv import fuse, models
    return [
        ("conv", lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                       nn.Linear(3 * 5 * 5, 4))),
        ("conv-relu-fused", lambda: fuse.fuse_conv_relu(nn.Sequential(
            nn.Conv2d(2, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3, 4)))),
        ("flatten-linear", lambda: nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 5, 6), nn.ReLU(),
                                                 nn.Linear(6, 4))),
        ("batchnorm-first", lambda: nn.Sequential(nn.BatchNorm2d(2), nn.Conv2d(2, 4, 5),
                                                  nn.Flatten())),
        ("resnet", lambda: models.ResNet((1,), (4,), num_classes=4, in_channels=2)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, build", _first_layers(), ids=[n for n, _ in _first_layers()])
def test_backward_without_input_grad_gives_the_same_parameter_gradients(name, build, dtype):
    x = np.random.default_rng(3).standard_normal((3, 2, 5, 5)).astype(dtype)
    grads = []
    for input_grad in (True, False):
        init.manual_seed(0)
        model = build().to(dtype)
        y = model(x)
        gx = model.backward(np.ones_like(y), input_grad=input_grad)
        assert (gx is None) == (not input_grad)
        grads.append([p.grad.tobytes() for p in model.parameters()])
    assert grads[0] == grads[1]


@pytest.mark.parametrize("call", [
    lambda x, w, gy, flag: F.conv2d_backward(gy, x, w, padding=1, input_grad=flag),
    lambda x, w, gy, flag: F.conv2d_relu_backward(gy, x, w, np.abs(gy), padding=1,
                                                  input_grad=flag),
    lambda x, w, gy, flag: F.linear_backward(gy[:, :, 0, 0], x[:, :, 0, 0], w[:, :, 0, 0],
                                             input_grad=flag),
], ids=["conv2d_backward", "conv2d_relu_backward", "linear_backward"])
def test_functional_backward_without_input_grad(call):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 5, 4, 4)).astype(np.float32)
    full, params_only = call(x, w, gy, True), call(x, w, gy, False)
    assert full[0] is not None and params_only[0] is None
    for a, b in zip(full[1:], params_only[1:]):
        assert a.tobytes() == b.tobytes()
    with pytest.raises(TypeError, match="input_grad must be a bool, got 0"):
        call(x, w, gy, 0)
