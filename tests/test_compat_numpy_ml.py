"""fastconv.compat.numpy_ml against numpy-ml 0.1.2's own code (skipped without numpy-ml).

Case tables: conv2D and its backward against numpy-ml's conv2D and Conv2D._bwd (strides,
dilations, every padding form with 'same' at strides 1-3, odd sizes, float32, float64 and
numpy-ml's float64 weights with float32 data); numpy-ml's 'same' rule against its
calc_pad_dims_2D; Conv2D and Pool2D layers (max and average) forward and backward, with install()
and without, caches and accumulated gradients included; max pooling with padding, where numpy-ml
is wrong, against finite differences and PyTorch; install(), uninstall() and installed() (an
exception inside included); a small network trained a few steps with and without install(); bad
arguments.
"""

from __future__ import annotations

import collections
import contextlib
import warnings

import numpy as np
import pytest
from helpers import assert_close, numerical_gradient

import fastconv.functional
from fastconv.compat import numpy_ml as fc

try:
    with warnings.catch_warnings():  # numpy_ml.rl_models warns that gym is missing
        warnings.simplefilter("ignore")
        fc.import_numpy_ml()
except ImportError:
    pytest.skip("numpy-ml is not installed (pip install 'fastconv[numpy-ml]')",
                allow_module_level=True)

from numpy_ml.neural_nets import layers as nml  # noqa: E402
from numpy_ml.neural_nets.losses import CrossEntropy  # noqa: E402
from numpy_ml.neural_nets.utils import calc_pad_dims_2D, conv2D  # noqa: E402

f32, f64 = np.float32, np.float64
# numpy-ml's own methods, as imported (install() replaces them on the classes)
NUMPY_ML_METHODS = {(cls, name): vars(cls)[name] for cls, name in
                    [(nml.Conv2D, "forward"), (nml.Conv2D, "_bwd"), (nml.Pool2D, "forward"),
                     (nml.Pool2D, "backward")]}


@pytest.fixture(autouse=True)
def not_installed():
    fc.uninstall()
    yield
    fc.uninstall()


def as64(*arrays):
    return tuple(a.astype(f64) for a in arrays)


# ---- conv2D and its backward against numpy-ml's ------------------------------------------------

# X shape (n_ex, rows, cols, in_ch), W shape (kernel_rows, kernel_cols, in_ch, out_ch), stride,
# pad, dilation (numpy-ml's: zeros between kernel elements)
CONV_CASES = {
    "3x3-pad1": ((2, 7, 7, 3), (3, 3, 3, 4), 1, 1, 0),
    "same-stride1-even-kernel": ((2, 6, 7, 2), (2, 4, 2, 3), 1, "same", 0),
    "same-stride2": ((2, 9, 8, 3), (3, 3, 3, 4), 2, "same", 0),
    "same-stride3-dilated": ((1, 10, 11, 2), (3, 2, 2, 5), 3, "same", 1),
    "same-input-1x1": ((2, 1, 1, 3), (3, 3, 3, 2), 2, "same", 0),
    "pair": ((2, 8, 9, 3), (3, 2, 3, 4), 2, (1, 2), 0),
    "4-tuple-dilation2": ((1, 10, 11, 2), (4, 3, 2, 5), 3, (1, 2, 0, 3), 2),
    "dilation2-no-pad": ((2, 11, 9, 3), (3, 3, 3, 2), 1, 0, 2),
    "rows-left-over": ((2, 9, 7, 2), (4, 2, 2, 3), 3, 0, 0),
    "1x1": ((3, 5, 4, 6), (1, 1, 6, 2), 1, 0, 0),
    "kernel-as-large-as-input": ((2, 5, 6, 1), (5, 6, 1, 3), 1, 0, 0),
    "pad-beyond-kernel": ((1, 3, 4, 2), (2, 2, 2, 3), 2, 3, 0),
    "16-channels-3x3": ((2, 6, 7, 16), (3, 3, 16, 16), 1, 1, 0),  # fastconv's Winograd path
}

# dtypes of X and W (numpy-ml's weights are float64)
CONV_DTYPES = {
    "float64": (f64, f64),
    "float32": (f32, f32),
    "float32-data-float64-weights": (f32, f64),
}


def conv_case(case, dtypes, seed=0):
    x_shape, w_shape, stride, pad, dilation = case
    rng = np.random.default_rng(seed)
    X = rng.standard_normal(x_shape).astype(dtypes[0])
    W = rng.standard_normal(w_shape).astype(dtypes[1])
    return rng, X, W, stride, pad, dilation


def numpy_ml_conv_bwd(dZ, X, W, stride, pad, dilation):
    """numpy-ml's own gradients of conv2D (Conv2D._bwd with the identity activation)."""
    layer = nml.Conv2D(W.shape[3], W.shape[:2], pad=pad, stride=stride, dilation=dilation)
    layer.in_ch = W.shape[2]
    layer._init_params()
    layer.parameters["W"] = W
    return NUMPY_ML_METHODS[nml.Conv2D, "_bwd"](layer, dZ, X, np.zeros_like(dZ))


@pytest.mark.parametrize("dtypes", CONV_DTYPES.values(), ids=CONV_DTYPES)
@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES)
def test_conv2D_matches_numpy_ml(case, dtypes):
    rng, X, W, stride, pad, dilation = conv_case(case, dtypes)
    dtype = np.result_type(X, W)
    kernel_rows, kernel_cols, in_ch, out_ch = W.shape
    b = rng.standard_normal((1, 1, 1, out_ch)).astype(dtypes[1])

    Z = fc.conv2D(X, W, stride, pad, dilation)
    expected = conv2D(*as64(X, W), stride, pad, dilation)
    scale = conv2D(*(np.abs(a) for a in as64(X, W)), stride, pad, dilation)
    assert Z.dtype == dtype
    assert_close(Z, expected.astype(dtype), in_ch * kernel_rows * kernel_cols, scale)
    with_bias = fc.conv2D(X, W, stride, pad, dilation, b=b)
    assert_close(with_bias, (expected + b).astype(dtype), in_ch * kernel_rows * kernel_cols + 1,
                 scale + np.abs(b))

    dZ = rng.standard_normal(Z.shape).astype(dtype)
    grads = fc.conv2D_backward(dZ, X, W, stride, pad, dilation)
    expected = numpy_ml_conv_bwd(*as64(dZ, X, W), stride, pad, dilation)
    scales = numpy_ml_conv_bwd(*(np.abs(a) for a in as64(dZ, X, W)), stride, pad, dilation)
    pixels = Z.shape[0] * Z.shape[1] * Z.shape[2]
    for grad, like, exp, s, length in zip(grads, (X, W, b), expected, scales,
                                          (out_ch * kernel_rows * kernel_cols, pixels, pixels)):
        assert grad.shape == like.shape and grad.dtype == dtype
        assert_close(grad, exp.astype(dtype), length, s)


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
@pytest.mark.parametrize("dilation", [0, 1, 2])
def test_same_padding_is_numpy_mls(stride, dilation):
    """'same' is the 4-tuple numpy-ml's calc_pad_dims_2D gives, output size = input size, for
    every input size and kernel here; at stride 1 it is fastconv.functional.same_padding, above
    it pads more than same_padding (whose output is ceil(in / stride))."""
    rng = np.random.default_rng(1)
    for rows in range(1, 8):
        for kernel in [(1, 1), (2, 3), (3, 2), (4, 4)]:
            X = rng.standard_normal((1, rows, rows + 2, 2))
            W = rng.standard_normal((*kernel, 2, 1))
            pads = calc_pad_dims_2D(X.shape, X.shape[1:3], kernel, stride, dilation)
            Z = fc.conv2D(X, W, stride, "same", dilation)
            assert Z.shape == X.shape[:3] + (1,)
            np.testing.assert_array_equal(Z, fc.conv2D(X, W, stride, pads, dilation))
            same = fastconv.functional.same_padding(X.shape[1:3], kernel, stride, dilation + 1)
            if stride == 1:
                assert pads == same
            else:
                assert sum(pads) >= sum(same)


# ---- the layers, with install() and without ----------------------------------------------------

def run_conv_layer(X_list, dY_list, seed, **kwargs):
    """Forward passes over X_list and one backward pass of a Conv2D layer: outputs, dX, the
    layer (its caches and gradients)."""
    np.random.seed(seed)  # numpy-ml initialises its weights with np.random
    layer = nml.Conv2D(**kwargs)
    Ys = [layer.forward(X) for X in X_list]
    dX = layer.backward(dY_list if len(dY_list) > 1 else dY_list[0])
    return Ys, dX, layer


# X shape, Conv2D's arguments
CONV_LAYER_CASES = {
    "relu-same-stride2": ((2, 9, 8, 3), dict(out_ch=4, kernel_shape=(3, 3), pad="same",
                                             stride=2, act_fn="ReLU")),
    "tanh-dilated-4-tuple": ((2, 8, 9, 2), dict(out_ch=3, kernel_shape=(2, 3), pad=(0, 1, 2, 1),
                                                stride=1, dilation=1, act_fn="Tanh")),
    "identity-pair": ((1, 6, 7, 5), dict(out_ch=2, kernel_shape=(3, 1), pad=(1, 0), stride=3)),
}


@pytest.mark.parametrize("inputs", [1, 2], ids=["one-input", "two-inputs"])
@pytest.mark.parametrize("case", CONV_LAYER_CASES.values(), ids=CONV_LAYER_CASES)
def test_conv_layer_with_install_matches_without(case, inputs):
    x_shape, kwargs = case
    rng = np.random.default_rng(2)
    X_list = [rng.standard_normal(x_shape) for _ in range(inputs)]
    np.random.seed(0)
    out_shape = nml.Conv2D(**kwargs).forward(X_list[0]).shape
    dY_list = [rng.standard_normal(out_shape) for _ in range(inputs)]
    Ys, dX, layer = run_conv_layer(X_list, dY_list, 0, **kwargs)
    with fc.installed():
        fast_Ys, fast_dX, fast_layer = run_conv_layer(X_list, dY_list, 0, **kwargs)

    length = x_shape[3] * 9
    for fast_Y, Y in zip(fast_Ys, Ys):
        assert_close(fast_Y, Y, length)
    assert isinstance(fast_dX, list) == (inputs > 1)
    for fast, expected in zip(fast_dX if inputs > 1 else [fast_dX], dX if inputs > 1 else [dX]):
        assert_close(fast, expected, length)
    # caches as numpy-ml keeps them
    assert all(a is b for a, b in zip(fast_layer.X, X_list)) and len(fast_layer.X) == inputs
    for key in ("out_rows", "out_cols"):
        assert fast_layer.derived_variables[key] == layer.derived_variables[key]
    for fast_Z, Z in zip(fast_layer.derived_variables["Z"], layer.derived_variables["Z"]):
        assert_close(fast_Z, Z, length)
    for key in ("W", "b"):  # accumulated over the inputs
        assert_close(fast_layer.gradients[key], layer.gradients[key], 64 * inputs)


def run_pool_layer(X, dY, **kwargs):
    layer = nml.Pool2D(**kwargs)
    Y = layer.forward(X)
    return Y, layer.backward(dY), layer


# X shape, Pool2D's arguments: where numpy-ml is right (max pooling without padding, average
# pooling with any)
POOL_LAYER_CASES = {
    "max-2x2-s2": ((2, 8, 8, 3), dict(kernel_shape=(2, 2), stride=2, mode="max")),
    "max-3x3-s2-overlapping": ((2, 7, 9, 2), dict(kernel_shape=(3, 3), stride=2, mode="max")),
    "max-2x3-s1": ((1, 5, 6, 4), dict(kernel_shape=(2, 3), stride=1, mode="max")),
    "max-stride-past-window": ((2, 7, 9, 1), dict(kernel_shape=(2, 2), stride=3, mode="max")),
    "avg-2x2-s2": ((2, 8, 8, 3), dict(kernel_shape=(2, 2), stride=2, mode="average")),
    "avg-3x3-pad1": ((2, 7, 6, 2), dict(kernel_shape=(3, 3), stride=1, pad=1, mode="average")),
    "avg-same-s1": ((2, 6, 7, 2), dict(kernel_shape=(2, 3), stride=1, pad="same",
                                       mode="average")),
    "avg-same-s2": ((1, 7, 6, 3), dict(kernel_shape=(2, 2), stride=2, pad="same",
                                       mode="average")),
    "avg-4-tuple": ((2, 5, 6, 2), dict(kernel_shape=(3, 2), stride=2, pad=(2, 0, 1, 3),
                                       mode="average")),
    "avg-pair": ((2, 6, 5, 2), dict(kernel_shape=(2, 2), stride=1, pad=(1, 2),
                                    mode="average")),
}


@pytest.mark.parametrize("dtype", [f64, f32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", POOL_LAYER_CASES.values(), ids=POOL_LAYER_CASES)
def test_pool_layer_with_install_matches_without(case, dtype):
    x_shape, kwargs = case
    rng = np.random.default_rng(3)
    X = rng.standard_normal(x_shape).astype(dtype)
    out_shape = nml.Pool2D(**kwargs).forward(X).shape
    dY = rng.standard_normal(out_shape)
    Y, dX, layer = run_pool_layer(X, dY, **kwargs)
    with fc.installed():
        fast_Y, fast_dX, fast_layer = run_pool_layer(X, dY, **kwargs)
    assert fast_Y.dtype == dtype  # numpy-ml's Y is float64 whatever X is
    assert fast_dX.dtype == f64  # NumPy's promotion of float64 dY and X; numpy-ml's has X's
    fast_dX = fast_dX.astype(dX.dtype)
    kernel = kwargs["kernel_shape"]
    if kwargs["mode"] == "max":
        np.testing.assert_array_equal(fast_Y, Y)
    else:
        assert_close(fast_Y, Y.astype(dtype), kernel[0] * kernel[1])
    assert_close(fast_dX, dX, kernel[0] * kernel[1])  # overlapping windows' sums
    assert fast_layer.X == [X] or fast_layer.X[0] is X
    assert fast_layer.derived_variables == layer.derived_variables


# ---- max pooling with padding: where numpy-ml is wrong -------------------------------------------

def max_pool_neg_inf(X, kernel, stride, pads):
    """Max pooling with -inf padding (PyTorch's definition), written out: (Y, argmax mask)."""
    top, bottom, left, right = pads
    Xp = np.pad(X, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-np.inf)
    rows = (Xp.shape[1] - kernel[0]) // stride + 1
    cols = (Xp.shape[2] - kernel[1]) // stride + 1
    Y = np.empty((X.shape[0], rows, cols, X.shape[3]))
    for i in range(rows):
        for j in range(cols):
            window = Xp[:, i * stride:i * stride + kernel[0], j * stride:j * stride + kernel[1]]
            Y[:, i, j] = window.max(axis=(1, 2))
    return Y


# X shape, kernel, stride, pad
PADDED_MAX_CASES = {
    "3x3-s1-pad1": ((2, 6, 7, 2), (3, 3), 1, 1),
    "2x2-s2-top-left": ((1, 6, 6, 3), (2, 2), 2, (1, 0, 1, 0)),  # numpy-ml: silently wrong
    "3x2-s2-4-tuple": ((2, 7, 5, 2), (3, 2), 2, (1, 1, 0, 1)),
    "same-s1": ((2, 5, 6, 2), (3, 3), 1, "same"),
    "same-s2": ((1, 6, 7, 2), (2, 3), 2, "same"),  # windows of padding alone
}


def _padded_layer(case):
    x_shape, kernel, stride, pad = case
    return nml.Pool2D(kernel, stride=stride, pad=pad, mode="max")


@pytest.mark.parametrize("case", PADDED_MAX_CASES.values(), ids=PADDED_MAX_CASES)
def test_padded_max_pool_is_the_gradient_of_its_forward(case):
    """fastconv's backward is the finite-difference gradient of its forward pass; numpy-ml's
    backward with padding either fails or is not the gradient of its own forward pass."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal(case[0])
    layer = _padded_layer(case)
    dY = rng.standard_normal(layer.forward(X, retain_derived=False).shape)

    def loss():
        return np.sum(layer.forward(X, retain_derived=False) * dY)

    expected = numerical_gradient(loss, X)
    numpy_ml_result = None
    layer.forward(X)
    with contextlib.suppress(ValueError):  # a failed broadcast or an empty window
        numpy_ml_result = layer.backward(dY)
    if numpy_ml_result is not None:
        assert not np.allclose(numpy_ml_result, expected, atol=1e-6)

    with fc.installed():
        fast = _padded_layer(case)

        def fast_loss():
            return np.sum(fast.forward(X, retain_derived=False) * dY)

        fast.forward(X)
        np.testing.assert_allclose(fast.backward(dY), numerical_gradient(fast_loss, X),
                                   rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", PADDED_MAX_CASES.values(), ids=PADDED_MAX_CASES)
def test_padded_max_pool_pads_with_minus_infinity(case):
    """Forward: -inf padding, as PyTorch; numpy-ml pads with zeros. With positive inputs the two
    agree, windows of padding alone included (0 in both)."""
    x_shape, kernel, stride, pad = case
    rng = np.random.default_rng(5)
    X = rng.standard_normal(x_shape)
    with fc.installed():
        Y = _padded_layer(case).forward(X)
    pads = calc_pad_dims_2D(X.shape, X.shape[1:3], kernel, stride) if pad == "same" else \
        (pad,) * 4 if isinstance(pad, int) else pad
    expected = max_pool_neg_inf(X, kernel, stride, pads)
    expected[np.isneginf(expected)] = 0  # windows of padding alone
    np.testing.assert_array_equal(Y, expected)
    numpy_ml_Y = _padded_layer(case).forward(X)
    differ = numpy_ml_Y != Y  # where numpy-ml's zero padding wins over negative inputs
    assert differ.any() and (numpy_ml_Y[differ] == 0).all() and (Y[differ] < 0).all()

    positive = np.abs(X) + 0.1
    with fc.installed():
        Y = _padded_layer(case).forward(positive)
    np.testing.assert_array_equal(Y, _padded_layer(case).forward(positive))


def test_padded_max_pool_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    X = rng.standard_normal((2, 7, 8, 3))
    dY = rng.standard_normal((2, 4, 4, 3))
    with fc.installed():
        layer = nml.Pool2D((3, 3), stride=2, pad=1, mode="max")
        Y = layer.forward(X)
        dX = layer.backward(dY)
    x = torch.tensor(X.transpose(0, 3, 1, 2), requires_grad=True)
    y = torch.nn.functional.max_pool2d(x, 3, 2, padding=1)
    y.backward(torch.tensor(dY.transpose(0, 3, 1, 2)))
    np.testing.assert_array_equal(Y, y.detach().numpy().transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(dX, x.grad.numpy().transpose(0, 2, 3, 1))


def test_max_pool_with_nan_follows_pytorch():
    """A NaN propagates and takes its window's gradient (PyTorch); numpy-ml's backward pass
    raises IndexError at a window holding NaN."""
    X = np.arange(16.0).reshape(1, 4, 4, 1)
    X[0, 0, 1, 0] = np.nan
    dY = np.ones((1, 2, 2, 1))
    layer = nml.Pool2D((2, 2), stride=2, mode="max")
    layer.forward(X)
    with pytest.raises(IndexError):
        layer.backward(dY)
    with fc.installed():
        layer = nml.Pool2D((2, 2), stride=2, mode="max")
        Y = layer.forward(X)
        dX = layer.backward(dY)
    np.testing.assert_array_equal(Y[0, :, :, 0], [[np.nan, 7], [13, 15]])
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 3] = expected[3, 1] = expected[3, 3] = 1
    np.testing.assert_array_equal(dX[0, :, :, 0], expected)


# ---- install() -----------------------------------------------------------------------------------

def current_methods():
    return {key: vars(key[0])[key[1]] for key in NUMPY_ML_METHODS}


def test_install_replaces_and_uninstall_restores():
    fc.install()
    assert fc.is_installed()
    assert all(method is not NUMPY_ML_METHODS[key] for key, method in current_methods().items())
    fc.install()  # idempotent
    installed_methods = current_methods()
    fc.uninstall()
    assert current_methods() == NUMPY_ML_METHODS and not fc.is_installed()
    fc.uninstall()  # and so is uninstall()
    fc.install()
    assert current_methods() == installed_methods
    fc.uninstall()


def test_layers_call_fastconv_when_installed(monkeypatch):
    calls = []
    for name in ("conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward",
                 "avg_pool2d", "avg_pool2d_backward"):
        original = getattr(fastconv.functional, name)
        monkeypatch.setattr(fastconv.functional, name,
                            lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    X = np.random.default_rng(7).standard_normal((2, 6, 6, 3))
    conv = nml.Conv2D(4, (3, 3), pad="same")  # made before install()
    pools = [nml.Pool2D((2, 2), stride=2, mode=mode) for mode in ("max", "average")]

    def one_pass():
        for layer in [conv, *pools]:
            layer.backward(np.ones_like(layer.forward(X)))

    one_pass()
    assert calls == []
    with fc.installed():
        one_pass()
    assert calls == ["conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward",
                     "avg_pool2d", "avg_pool2d_backward"]
    calls.clear()
    one_pass()
    assert calls == []


def test_installed_restores_on_an_exception():
    with pytest.raises(RuntimeError, match="inside"), fc.installed():
        assert fc.is_installed()
        raise RuntimeError("inside")
    assert not fc.is_installed() and current_methods() == NUMPY_ML_METHODS
    fc.install()
    with fc.installed():
        pass
    assert fc.is_installed()  # installed before the with block: still installed after it


@pytest.mark.parametrize("fails", [False, True], ids=["import-succeeds", "import-fails"])
def test_import_alias_is_scoped(monkeypatch, fails):
    """On a Python without collections.Hashable (3.10+), it exists during numpy-ml's import
    only, whether or not the import succeeds."""
    monkeypatch.delattr(collections, "Hashable", raising=False)
    seen = []

    def import_module(name):
        seen.append((name, vars(collections).get("Hashable")))
        if fails:
            raise ImportError("no numpy_ml here")
        return "the package"

    monkeypatch.setattr(fc.importlib, "import_module", import_module)
    if fails:
        with pytest.raises(ImportError, match="no numpy_ml here"):
            fc.install()
        assert not fc.is_installed() and current_methods() == NUMPY_ML_METHODS
    else:
        assert fc.import_numpy_ml() == "the package"
    assert seen == [("numpy_ml", collections.abc.Hashable)]
    assert "Hashable" not in vars(collections)


# ---- a small network trained with and without install() ------------------------------------------

def train(steps, X, y):
    """conv 3x3 same + ReLU, 2x2 max pool, conv 3x3 stride 2 + ReLU, average pool, flatten, fully
    connected, softmax cross-entropy; SGD. Returns the losses and the final parameters."""
    np.random.seed(0)
    net = [nml.Conv2D(4, (3, 3), pad="same", act_fn="ReLU", optimizer="SGD(lr=0.05)"),
           nml.Pool2D((2, 2), stride=2, mode="max"),
           nml.Conv2D(6, (3, 3), pad=1, stride=2, dilation=1, act_fn="ReLU",
                      optimizer="SGD(lr=0.05)"),
           nml.Pool2D((2, 2), stride=1, pad=(0, 1, 0, 1), mode="average"),
           nml.Flatten(),
           nml.FullyConnected(5, optimizer="SGD(lr=0.05)")]
    loss_fn, losses = CrossEntropy(), []
    for _ in range(steps):
        out = X
        for layer in net:
            out = layer.forward(out)
        probs = np.exp(out - out.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        losses.append(loss_fn(y, probs))
        grad = loss_fn.grad(y, probs)
        for layer in reversed(net):
            grad = layer.backward(grad)
        for layer in net:
            if layer.parameters:
                layer.update()
            else:
                layer.flush_gradients()
    return losses, [dict(layer.parameters) for layer in net]


def test_a_network_trains_alike_with_install():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((6, 8, 8, 2)).astype(f32)
    y = np.eye(5)[rng.integers(0, 5, 6)]
    losses, params = train(4, X, y)
    with fc.installed():
        fast_losses, fast_params = train(4, X, y)
    np.testing.assert_allclose(fast_losses, losses, rtol=1e-12)
    assert losses[-1] < losses[0]  # it learns
    for fast, expected in zip(fast_params, params):
        assert fast.keys() == expected.keys()
        for key in expected:
            np.testing.assert_allclose(fast[key], expected[key], rtol=1e-10, atol=1e-13)


# ---- dtypes and errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtypes, expected", [
    ((f32, f64), f64), ((f32, f32), f32), ((np.int64, f32), f64), ((np.uint8, f32), f32),
    ((np.int32, np.int32), f64)])
def test_dtypes_follow_numpy_promotion(dtypes, expected):
    X = np.ones((1, 4, 4, 2), dtypes[0])
    W = np.ones((3, 3, 2, 1), dtypes[1])
    Z = fc.conv2D(X, W, 1, 1)
    assert Z.dtype == expected
    assert all(g.dtype == expected for g in fc.conv2D_backward(np.ones(Z.shape, dtypes[0]), X, W,
                                                               1, 1))


_X = np.ones((2, 5, 5, 3))
_W = np.ones((3, 3, 3, 4))

# (call, exception, start of the message)
ERRORS = {
    "pad-valid": (lambda: fc.conv2D(_X, _W, 1, "valid"), ValueError,
                  "conv2D: pad must be an int, a pair, a 4-tuple (top, bottom, left, right) or "
                  "'same', got 'valid'"),
    "pad-3-tuple": (lambda: fc.conv2D(_X, _W, 1, (1, 1, 1)), ValueError,
                    "conv2D: pad must be an int, a pair, a 4-tuple (top, bottom, left, right) "
                    "or 'same' of ints >= 0, got (1, 1, 1)"),
    "pad-negative": (lambda: fc.conv2D(_X, _W, 1, -1), ValueError,
                     "conv2D: pad must be an int, a pair, a 4-tuple"),
    "pad-float": (lambda: fc.conv2D(_X, _W, 1, 1.0), TypeError,
                  "conv2D: pad must be an int, a pair, a 4-tuple"),
    "stride-0": (lambda: fc.conv2D(_X, _W, 0, 0), ValueError,
                 "conv2D: stride must be a positive int (at most 2**31 - 1), got 0"),
    "stride-pair": (lambda: fc.conv2D(_X, _W, (1, 1), 0), TypeError,
                    "conv2D: stride must be a positive int"),
    "dilation-negative": (lambda: fc.conv2D(_X, _W, 1, 0, -1), ValueError,
                          "conv2D: dilation must be an int >= 0 (numpy-ml's: 0 is no dilation), "
                          "got -1"),
    "channels": (lambda: fc.conv2D(_X[..., :2], _W, 1, 0), ValueError,
                 "conv2D: W of shape (3, 3, 3, 4) expects 3 input channels, but X has 2"),
    "X-3-D": (lambda: fc.conv2D(_X[0], _W, 1, 0), ValueError,
              "conv2D: X must be a 4-D (n_ex, in_rows, in_cols, in_ch) array, got shape "
              "(5, 5, 3)"),
    "X-list": (lambda: fc.conv2D(_X.tolist(), _W, 1, 0), TypeError,
               "conv2D: X must be a numpy.ndarray, got list"),
    "W-complex": (lambda: fc.conv2D(_X, _W + 0j, 1, 0), TypeError,
                  "conv2D: W must have dtype float32 or float64, got complex128"),
    "kernel-too-big": (lambda: fc.conv2D(_X, _W, 1, 0, 2), ValueError,
                       "conv2D: output size would be (-1, -1)"),
    "b-size": (lambda: fc.conv2D(_X, _W, 1, 0, b=np.zeros(3)), ValueError,
               "conv2D: b must have out_ch = 4 elements, shape (1, 1, 1, 4), got shape (3,)"),
    "dLdZ-shape": (lambda: fc.conv2D_backward(np.ones((2, 3, 3, 3)), _X, _W, 1, 0), ValueError,
                   "conv2D_backward: dLdZ must have the output's shape (2, 3, 3, 4), got "
                   "(2, 3, 3, 3)"),
    "pool-mode": (lambda: nml.Pool2D((2, 2), mode="min").forward(_X), ValueError,
                  "Pool2D.forward: mode must be 'max' or 'average', got 'min'"),
    "pool-kernel": (lambda: nml.Pool2D((0, 2)).forward(_X), ValueError,
                    "Pool2D.forward: kernel_shape must be a positive int or a pair of them"),
    "pool-window-too-big": (lambda: nml.Pool2D((6, 2)).forward(_X), ValueError,
                            "Pool2D.forward: output size would be (0, 4)"),
    "conv-layer-channels": (lambda: _conv_layer_then(_X[..., :1]), ValueError,
                            "Conv2D.forward: conv2D: W of shape (3, 3, 3, 2) expects 3 input "
                            "channels, but X has 1"),
    "pool-backward-shape": (lambda: _pool_backward_with(np.ones((2, 2, 2, 3))), ValueError,
                            "Pool2D.backward: dLdY must have the output's shape (2, 4, 4, 3), "
                            "got (2, 2, 2, 3)"),
}


def _conv_layer_then(X):
    layer = nml.Conv2D(2, (3, 3))
    layer.forward(_X)  # initialised for 3 channels
    return layer.forward(X)


def _pool_backward_with(dY):
    layer = nml.Pool2D((2, 2), stride=1)
    layer.forward(_X)
    return layer.backward(dY)


@pytest.mark.parametrize("case", ERRORS.values(), ids=ERRORS)
def test_errors_name_the_function(case):
    call, exception, message = case
    with pytest.raises(exception) as info, fc.installed():
        call()
    assert str(info.value).startswith(message), str(info.value)
