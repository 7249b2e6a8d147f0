"""relu(x, inplace=True) and nn.ReLU(inplace=True), as PyTorch's: the result overwrites x (any
layout; read-only arrays refused), and the layer's gradient equals the out-of-place one's, which
lets the networks of fastconv.models and fastconv.train run their ReLUs in place."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DTYPES

import fastconv.functional as F
from fastconv import models, nn, train


def _sample(dtype, layout):
    x = np.array([[-2.0, -0.0, 0.0, 3.0], [np.nan, -np.inf, np.inf, 1e-30]], dtype)
    if layout == "F":
        return np.asfortranarray(x)
    if layout == "strided":
        big = np.zeros((2, 8), dtype)
        big[:, ::2] = x
        return big[:, ::2]
    if layout == "big-endian":
        return x.astype(x.dtype.newbyteorder(">"))
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["C", "F", "strided", "big-endian"])
def test_relu_inplace_overwrites_x(layout, dtype):
    x = _sample(dtype, layout)
    expected = F.relu(x)
    out = F.relu(x, inplace=True)
    assert out is x
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(np.signbit(x), np.signbit(expected))  # -0.0 stays -0.0


def test_relu_inplace_refuses_a_read_only_array():
    x = np.ones(3)
    x.flags.writeable = False
    with pytest.raises(ValueError, match="^relu: inplace=True needs a writeable x"):
        F.relu(x, inplace=True)
    with pytest.raises(TypeError, match="^relu: inplace must be a bool"):
        F.relu(np.ones(3), inplace=1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_layer_in_place_gives_the_same_gradient(dtype):
    x = _sample(dtype, "C")
    gy = np.arange(1.0, 9.0, dtype=dtype).reshape(x.shape)
    plain, inplace = nn.ReLU(), nn.ReLU(inplace=True)
    y = plain(x)
    y_inplace = inplace(x.copy())
    np.testing.assert_array_equal(y, y_inplace)
    np.testing.assert_array_equal(plain.backward(gy), inplace.backward(gy))
    assert repr(inplace) == "ReLU(inplace=True)" and repr(plain) == "ReLU()"


@pytest.mark.parametrize("build, shape", [
    (lambda: models.resnet(blocks=(1, 1, 1)), (2, 3, 32, 32)),
    (lambda: train.convnet(channels=(2, 3), hidden=5, batchnorm=True), (3, 1, 28, 28)),
])
def test_networks_with_in_place_relus_match_out_of_place_ones(build, shape):
    """The same weights with every ReLU out of place give the same outputs and gradients."""
    model, twin = build(), build()
    twin.load_state_dict(model.state_dict())
    relus = [m for m in twin.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(m.inplace for m in relus)
    for m in relus:
        m.inplace = False
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    y, y_twin = model(x.copy()), twin(x.copy())
    np.testing.assert_array_equal(y, y_twin)
    gy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(model.backward(gy), twin.backward(gy))
    grads = {name: p.grad for name, p in twin.named_parameters()}
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.grad, grads[name], err_msg=name)
