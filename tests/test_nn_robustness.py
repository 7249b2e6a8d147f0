"""fastconv.nn under misuse: backward before forward, wrong gradients, bad state_dicts and model
files. Each must fail with a clear error (RuntimeError / ValueError / TypeError / KeyError /
OSError naming what is wrong), and a save/load round trip must be bitwise exact."""

from __future__ import annotations

import numpy as np
import pytest

from fastconv import init, nn


def _model(dtype=np.float32):
    init.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, dtype=dtype), nn.BatchNorm2d(2, dtype=dtype),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3, dtype=dtype),
                         nn.Tanh())


def _trained(dtype=np.float32):
    """A model whose batchnorm buffers have moved away from their initial values."""
    model = _model(dtype)
    x = np.random.default_rng(1).standard_normal((4, 1, 4, 4)).astype(dtype)
    for _ in range(3):
        model(x)
    model.backward(np.ones((4, 3), dtype))
    return model, x


# ---- backward ------------------------------------------------------------------------------------

LAYERS = [
    lambda: nn.Conv2d(1, 2, 3), lambda: nn.ConvTranspose2d(1, 2, 3), lambda: nn.Linear(2, 3),
    lambda: nn.BatchNorm1d(2),
    lambda: nn.BatchNorm2d(2), lambda: nn.MaxPool2d(2), lambda: nn.AvgPool2d(2),
    lambda: nn.LPPool2d(2, 2), lambda: nn.ReLU(), lambda: nn.Tanh(), lambda: nn.Sigmoid(),
    lambda: nn.Flatten(), lambda: nn.Dropout(), lambda: nn.CrossEntropyLoss(), _model,
]


@pytest.mark.parametrize("make", LAYERS, ids=lambda f: type(f()).__name__)
def test_backward_before_forward_is_runtime_error(make):
    layer = make()
    with pytest.raises(RuntimeError, match=r"backward called before forward"):
        layer.backward(np.ones((1, 2), np.float32))


WRONG_GRADIENTS = [  # layer, input, a gradient of the wrong shape, message
    (lambda: nn.Conv2d(1, 2, 3), (2, 1, 5, 5), (2, 2, 4, 4), r"^conv2d_backward: grad_output"),
    (lambda: nn.ConvTranspose2d(1, 2, 3, stride=2), (2, 1, 3, 3), (2, 2, 8, 8),
     r"^conv_transpose2d_backward: grad_output"),
    (lambda: nn.Linear(4, 3), (2, 4), (2, 4), r"^linear_backward: grad_output"),
    (lambda: nn.BatchNorm2d(2), (2, 2, 3, 3), (2, 3, 3, 3), r"^batch_norm_backward: grad_output"),
    (lambda: nn.MaxPool2d(2), (1, 1, 4, 4), (1, 1, 3, 3), r"^max_pool2d_backward: grad_output"),
    (lambda: nn.AvgPool2d(2), (1, 1, 4, 4), (1, 1, 3, 3), r"^avg_pool2d_backward: grad_output"),
    (lambda: nn.LPPool2d(2, 2), (1, 1, 4, 4), (1, 1, 3, 3), r"^lp_pool2d_backward: grad_output"),
    (lambda: nn.ReLU(), (2, 3), (3, 2), r"^relu_backward: grad_output"),
    (lambda: nn.Tanh(), (2, 3), (2, 3, 1), r"^tanh_backward: grad_output"),
    (lambda: nn.Sigmoid(), (2, 3), (6,), r"^sigmoid_backward: grad_output"),
    (lambda: nn.Dropout(), (2, 3), (3, 3), r"^dropout_backward: grad_output"),
    (lambda: nn.Flatten(), (2, 2, 4, 4), (3, 3), r"^Flatten.backward: grad_output"),
]


@pytest.mark.parametrize("make, x_shape, g_shape, message", WRONG_GRADIENTS,
                         ids=lambda v: type(v()).__name__ if callable(v) else None)
def test_gradient_of_the_wrong_shape_is_value_error(make, x_shape, g_shape, message):
    layer = make()
    layer(np.ones(x_shape, np.float32))
    with pytest.raises(ValueError) as exc_info:
        layer.backward(np.ones(g_shape, np.float32))
    assert exc_info.match(message), str(exc_info.value)


def test_gradient_of_the_wrong_dtype_is_type_error():
    layer = nn.Linear(4, 3)
    layer(np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match=r"^linear_backward: .*float64.*float32"):
        layer.backward(np.ones((2, 3), np.float64))


def test_loss_gradient_must_be_a_scalar():
    loss = nn.CrossEntropyLoss()
    loss(np.zeros((2, 3), np.float32), np.array([0, 1]))
    with pytest.raises(TypeError, match=r"^cross_entropy_backward: grad_output must be a real"):
        loss.backward(np.ones(2))


# ---- load_state_dict -----------------------------------------------------------------------------

def _edited(change):
    model, _ = _trained()
    state = model.state_dict()
    change(state)
    return model, state


@pytest.mark.parametrize("change, exc, message", [
    (lambda s: s.pop("0.weight"), KeyError, r"missing \['0\.weight'\], unexpected \[\]"),
    (lambda s: s.pop("1.num_batches_tracked"), KeyError, r"missing \['1\.num_batches_tracked'\]"),
    (lambda s: s.update(extra=np.ones(2)), KeyError, r"missing \[\], unexpected \['extra'\]"),
    (lambda s: s.update({"0.weight": np.ones((2, 1, 2, 2))}), ValueError,
     r"'0\.weight' has shape \(2, 1, 2, 2\) in the state_dict but \(2, 1, 3, 3\) in the model"),
    (lambda s: s.update({"1.running_var": np.ones(3)}), ValueError, r"'1\.running_var' has shape"),
    (lambda s: s.update({"5.bias": np.ones((3, 1))}), ValueError, r"'5\.bias' has shape \(3, 1\)"),
    (lambda s: s.update({"1.num_batches_tracked": np.array(1.5)}), TypeError,
     r"'1\.num_batches_tracked' has dtype float64, which cannot become the model's int64"),
    (lambda s: s.update({"0.bias": np.array(["a", "b"])}), TypeError, r"'0\.bias' has dtype"),
], ids=["missing", "missing-buffer", "unexpected", "shape", "buffer-shape", "bias-2d",
        "float-into-int-buffer", "strings"])
def test_load_state_dict_rejects(change, exc, message):
    model, state = _edited(change)
    before = model.state_dict()
    with pytest.raises(exc, match=message):
        model.load_state_dict(state)
    for key, value in model.state_dict().items():  # nothing was changed
        np.testing.assert_array_equal(value, before[key])


def test_load_state_dict_of_a_list_is_type_error():
    with pytest.raises(TypeError, match=r"load_state_dict: .*mapping|dict"):
        _model().load_state_dict([("0.weight", np.ones((2, 1, 3, 3)))])


# ---- files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_round_trip_is_bitwise_exact(tmp_path, dtype):
    model, x = _trained(dtype)
    model.eval()
    path = tmp_path / "model.npz"
    model.save(path)
    fresh = _model(dtype)
    fresh.load(path)
    saved, loaded = model.state_dict(), fresh.state_dict()
    assert list(saved) == list(loaded)
    for key in saved:
        assert saved[key].dtype == loaded[key].dtype and saved[key].shape == loaded[key].shape
        assert saved[key].tobytes() == loaded[key].tobytes(), key
    assert int(loaded["1.num_batches_tracked"]) == 3
    assert not np.array_equal(loaded["1.running_mean"], np.zeros(2))  # buffers did move
    fresh.eval()
    assert model(x).tobytes() == fresh(x).tobytes()


def test_load_from_a_missing_path_is_os_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        _model().load(tmp_path / "nope.npz")
    with pytest.raises(OSError):
        _model().save(tmp_path / "no-such-dir" / "m.npz")


def _saved_bytes(tmp_path):
    model, _ = _trained()
    model.save(tmp_path / "good.npz")
    return (tmp_path / "good.npz").read_bytes()


def _corrupted(data):
    bad = bytearray(data)
    middle = len(bad) // 3
    bad[middle:middle + 64] = b"\xff" * 64
    return bytes(bad)


BAD_FILES = {
    "truncated": lambda data: data[: len(data) // 2],
    "corrupted": _corrupted,
    "empty": lambda data: b"",
    "text": lambda data: b"not a model\n",
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_model_file_raises_and_changes_nothing(tmp_path, kind):
    """Whatever the error today, nothing is loaded and the model is unchanged."""
    path = tmp_path / "bad.npz"
    path.write_bytes(BAD_FILES[kind](_saved_bytes(tmp_path)))
    model = _model()
    before = model.state_dict()
    with pytest.raises(Exception):  # noqa: B017 - the type is the subject of the test below
        model.load(path)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize("kind", list(BAD_FILES) + ["npy"])
def test_bad_model_file_is_a_clear_value_error(tmp_path, kind):
    path = tmp_path / "bad.npz"
    if kind == "npy":
        with open(path, "wb") as f:
            np.save(f, np.ones(3))
    else:
        path.write_bytes(BAD_FILES[kind](_saved_bytes(tmp_path)))
    with pytest.raises((ValueError, OSError), match="bad.npz"):
        _model().load(path)
