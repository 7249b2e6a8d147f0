"""NaN and ±Inf propagate through every op, forward and backward, as in PyTorch.

Inputs are sprinkled with NaN, +Inf and -Inf (and ties of them) and every output is compared
elementwise with PyTorch where it is installed (NaN where PyTorch has NaN, the same infinities,
finite values within tolerance), else with fastconv.reference for conv, pooling and relu. The
max-pooling rule is exact: a NaN in the window wins (the last NaN's index), -inf loses to anything.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close

import fastconv
import fastconv.functional as F
from fastconv import _kernels
from fastconv import reference as ref

DTYPES = [np.float32, np.float64]


def _sprinkled(shape, dtype, seed=0, fraction=0.1):
    """Standard normal values with about `fraction` of them NaN, +Inf or -Inf."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    special = rng.random(shape) < fraction
    x[special] = rng.choice([np.nan, np.inf, -np.inf], special.sum())
    return x.astype(dtype)


def assert_same_nonfinite(actual, expected, reduction_length=8):
    """Same shape and dtype, NaN exactly where expected is NaN, the same infinities, and finite
    values within the tolerance of helpers.py."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg="NaN positions")
    inf = np.isinf(expected)
    np.testing.assert_array_equal(np.isinf(actual), inf, err_msg="Inf positions")
    np.testing.assert_array_equal(actual[inf], expected[inf], err_msg="signs of infinities")
    finite = np.isfinite(expected)
    assert_close(actual[finite], expected[finite], reduction_length)


# ---- against PyTorch ---------------------------------------------------------------------------

torch = None


@pytest.fixture(scope="module")
def T():
    global torch
    torch = pytest.importorskip("torch")
    return torch


def _t(a, grad=False):
    return torch.tensor(np.asarray(a), requires_grad=grad)


def _torch_grads(fn, grad_output, *inputs):
    """(output, gradients of the inputs) of fn by torch autograd, as NumPy arrays.

    oneDNN is off: its float32 convolution skips the taps that meet the zero padding, so a NaN
    or Inf weight there is dropped (NaN * 0 never happens) and float32 and float64 disagree;
    PyTorch's native path, like fastconv and the reference, multiplies the padding zeros."""
    ts = [_t(a, grad=True) for a in inputs]
    with torch.backends.mkldnn.flags(enabled=False):
        out = fn(*ts)
        out.backward(_t(grad_output))
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


CONV_CASES = [  # x shape, weight shape, kwargs
    ((2, 3, 7, 7), (4, 3, 3, 3), dict(padding=1)),
    ((1, 4, 8, 6), (6, 2, 2, 3), dict(stride=2, groups=2)),
    ((2, 8, 5, 5), (4, 8, 1, 1), dict()),
    # Winograd-sized (3x3, stride 1, >= 16 channels): Inf must not cancel into NaN
    ((2, 16, 6, 5), (16, 16, 3, 3), dict(padding=1)),
    # depthwise, strided: the per-plane passes on the stride phases
    ((2, 5, 9, 8), (5, 1, 3, 3), dict(stride=2, padding=1, groups=5)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=["3x3", "grouped-strided", "1x1", "winograd",
                                                 "depthwise"])
def test_conv2d_against_torch(T, case, dtype):
    x_shape, w_shape, kwargs = case
    x, w = _sprinkled(x_shape, dtype, 1), _sprinkled(w_shape, dtype, 2, 0.05)
    b = _sprinkled(w_shape[:1], dtype, 3, 0.2)
    y = F.conv2d(x, w, b, **kwargs)
    gy = _sprinkled(y.shape, dtype, 4, 0.05)
    ty, (tgx, tgw, tgb) = _torch_grads(
        lambda a, c, d: torch.nn.functional.conv2d(a, c, d, **kwargs), gy, x, w, b)
    length = int(np.prod(w_shape[1:]))
    assert_same_nonfinite(y, ty, length)
    gx, gw, gb = F.conv2d_backward(gy, x, w, **kwargs)
    assert_same_nonfinite(gx, tgx, length)
    assert_same_nonfinite(gb, tgb, int(np.prod(gy.shape)) // gy.shape[1])
    assert_same_nonfinite(gw, tgw, int(np.prod(gy.shape)) // gy.shape[1])


POOL_KWARGS = [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
               dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), ceil_mode=True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", POOL_KWARGS, ids=["2x2", "3x3s2p1", "rect-ceil"])
def test_max_pool2d_against_torch(T, kwargs, dtype):
    x = _sprinkled((2, 3, 9, 8), dtype, 5, 0.2)
    x[0, 0, :3, :3] = np.nan  # a window of NaNs only
    x[0, 1, :3, :3] = -np.inf  # a window of -inf only: its first element's index
    x[1, 0, 2:5, 2:5] = np.inf  # ties of +inf: the first one
    y, idx = F.max_pool2d(x, **kwargs, return_indices=True)
    ty, tidx = torch.nn.functional.max_pool2d(_t(x), **kwargs, return_indices=True)
    assert_same_nonfinite(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    gy = _sprinkled(y.shape, dtype, 6, 0.1)
    _, (tgx,) = _torch_grads(lambda a: torch.nn.functional.max_pool2d(a, **kwargs), gy, x)
    assert_same_nonfinite(F.max_pool2d_backward(gy, x, **kwargs), tgx, 9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", POOL_KWARGS + [dict(kernel_size=3, stride=2, padding=1,
                                                       count_include_pad=False)],
                         ids=["2x2", "3x3s2p1", "rect-ceil", "exclude-pad"])
def test_avg_pool2d_against_torch(T, kwargs, dtype):
    x = _sprinkled((2, 3, 9, 8), dtype, 7)
    y = F.avg_pool2d(x, **kwargs)
    gy = _sprinkled(y.shape, dtype, 8)
    ty, (tgx,) = _torch_grads(lambda a: torch.nn.functional.avg_pool2d(a, **kwargs), gy, x)
    assert_same_nonfinite(y, ty, 9)
    assert_same_nonfinite(F.avg_pool2d_backward(gy, x, **kwargs), tgx, 9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [1.5, 2.0, 3.0])
def test_lp_pool2d_against_torch(T, p, dtype):
    x = np.abs(_sprinkled((2, 3, 8, 8), dtype, 9))  # ±inf -> +inf, NaN stays
    y = F.lp_pool2d(x, p, 2)
    gy = _sprinkled(y.shape, dtype, 10)
    ty, (tgx,) = _torch_grads(lambda a: torch.nn.functional.lp_pool2d(a, p, 2), gy, x)
    assert_same_nonfinite(y, ty, 16)
    assert_same_nonfinite(F.lp_pool2d_backward(gy, x, p, 2), tgx, 16)


def test_lp_pool2d_norm_1_nan_window_gradient(T):
    x = np.array([[[[1.0, np.nan], [2.0, 3.0]]]])
    gy = np.ones((1, 1, 1, 1))
    _, (tgx,) = _torch_grads(lambda a: torch.nn.functional.lp_pool2d(a, 1.0, 2), gy, x)
    assert_same_nonfinite(F.lp_pool2d_backward(gy, x, 1.0, 2), tgx)


def test_lp_pool2d_backward_uncovered_inf(T):
    x = np.array([[[[1.0, 2.0, np.inf], [3.0, 4.0, 5.0]]]])
    gy = np.ones((1, 1, 1, 1))
    _, (tgx,) = _torch_grads(lambda a: torch.nn.functional.lp_pool2d(a, 2.0, 2), gy, x)
    assert_same_nonfinite(F.lp_pool2d_backward(gy, x, 2.0, 2), tgx)


# The phase grid's dropped columns must not turn an Inf that no tap reads into NaN (0 * Inf).


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [((1, 1, 1, 4), (1, 1, 1, 2), (1, 1), (1, 2), 2),
                                  ((1, 1, 2, 6), (1, 1, 2, 3), (2, 2), (1, 2), 2),
                                  ((1, 1, 1, 5), (1, 1, 1, 2), (1, 2), (1, 1), 3)],
                         ids=["dilation-2", "stride-2-dilation-2", "stride-2"])
def test_conv2d_weight_gradient_ignores_unread_infinities(dtype, case):
    """x is 0 but for one inf that only the last tap reads: grad_weight of tap 0 is finite.
    Smallest: x = [0, 0, inf, 0], w = [1, 1], dilation 2 -> [0, inf] (as PyTorch), not [nan, inf].
    """
    x_shape, w_shape, stride, dilation, col = case
    x = np.zeros(x_shape, dtype)
    x[0, 0, 0, col] = np.inf
    w = np.ones(w_shape, dtype)
    gy = np.ones_like(F.conv2d(x, w, stride=stride, dilation=dilation))
    expected = ref.conv2d_backward(gy, x, w, stride, (0, 0, 0, 0), dilation, 1)[1]
    assert np.isfinite(expected[0, 0, 0, 0])
    assert_same_nonfinite(F.conv2d_backward(gy, x, w, stride=stride, dilation=dilation)[1],
                          expected)


# The plan's non-finite fallbacks (docs/KERNELS.md): an algorithm that cannot take Inf or NaN
# exactly hands the call to its fallback, also when it was forced, so the result is bit for bit
# the fallback's.

# (pass, the algorithm forced, its fallback, which input holds the Inf and NaN)
FALLBACKS = [("forward", "winograd", "direct", "x"), ("forward", "winograd", "direct", "w"),
             ("input", "transposed", "col2im", "w"), ("weight", "direct", "plain", "x"),
             ("input", "depthwise", "col2im", "w"), ("weight", "depthwise", "plain", "x"),
             ("weight", "grouped", "plain", "x")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which, algorithm, fallback, holder", FALLBACKS,
                         ids=[f"{w}-{a}-{h}" for w, a, _, h in FALLBACKS])
def test_nonfinite_data_runs_the_plans_fallback(which, algorithm, fallback, holder, dtype):
    rng = np.random.default_rng(27)
    groups = {"depthwise": 16, "grouped": 4}.get(algorithm, 1)
    x = rng.standard_normal((2, 16, 6, 7)).astype(dtype)
    w = rng.standard_normal((16, 16 // groups, 3, 3)).astype(dtype)
    gy = rng.standard_normal((2, 16, 6, 7)).astype(dtype)
    special = {"x": x, "w": w}[holder]
    special.flat[[5, 40, 77]] = [np.inf, -np.inf, np.nan]

    def run(name):
        with _kernels.force_conv_algorithms(**{which: name}):
            if which == "forward":
                return F.conv2d(x, w, padding=1, groups=groups)
            gx, gw, gb = F.conv2d_backward(gy, x, w, padding=1, groups=groups)
            return gx if which == "input" else gw

    np.testing.assert_array_equal(run(algorithm), run(fallback))


# The direct weight gradient tests each channel's phases as it makes them (a pointwise layer,
# read in place, all of x first): an Inf or NaN in any image, channel block or stride phase
# hands the call to the plain loops. name: (x shape, w shape, stride, padding, flat index in x)
PHASE_CASES = {
    "last-image-last-channel": ((3, 40, 5, 6), (8, 40, 3, 3), 1, 1, -1),
    "second-channel-block": ((1, 40, 5, 6), (8, 40, 3, 3), 1, 1, 35 * 30 + 7),
    "stride-2-odd-phase": ((2, 4, 7, 7), (4, 4, 3, 3), 2, 1, 4 * 49 + 3 * 7 + 3),
    "pointwise": ((2, 8, 5, 5), (4, 8, 1, 1), 1, 0, 8 * 25 + 60),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [np.inf, np.nan], ids=["inf", "nan"])
@pytest.mark.parametrize("name", PHASE_CASES)
def test_weight_direct_finds_nonfinite_x_anywhere(name, value, dtype):
    x_shape, w_shape, stride, padding, where = PHASE_CASES[name]
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(dtype)
    x.flat[where] = value
    w = rng.standard_normal(w_shape).astype(dtype)
    gy = rng.standard_normal(F.conv2d(x, w, stride=stride, padding=padding).shape).astype(dtype)

    def run(algorithm):
        with _kernels.force_conv_algorithms(weight=algorithm):
            return F.conv2d_weight(x, w.shape, gy, stride=stride, padding=padding)

    assert not np.isfinite(run("plain")).all()
    np.testing.assert_array_equal(run("direct"), run("plain"))


# Winograd tests the input rows its padded copies read, in one run across an image's channels
# when it reads whole channels, else row by row: an Inf or NaN anywhere it reads hands the call
# to direct. name: (x shape, padding, flat index in x)
WINOGRAD_CASES = {
    "last-image-last-element": ((3, 16, 8, 8), 1, -1),
    "first-element": ((2, 16, 8, 8), 1, 0),
    "four-paddings-mid-channel": ((2, 16, 9, 8), (0, 2, 2, 1), 16 * 72 + 7 * 72 + 4 * 8 + 7),
    "valid-odd-last-row": ((1, 16, 7, 9), 0, 15 * 63 + 6 * 9 + 8),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [np.inf, np.nan], ids=["inf", "nan"])
@pytest.mark.parametrize("name", WINOGRAD_CASES)
def test_winograd_finds_nonfinite_x_anywhere(name, value, dtype, isa):
    x_shape, padding, where = WINOGRAD_CASES[name]
    rng = np.random.default_rng(6)
    x = rng.standard_normal(x_shape).astype(dtype)
    x.flat[where] = value
    w = rng.standard_normal((16, 16, 3, 3)).astype(dtype)

    def run(algorithm):
        with _kernels.force_conv_algorithms(forward=algorithm):
            return F.conv2d(x, w, padding=padding)

    assert not np.isfinite(run("direct")).all()
    np.testing.assert_array_equal(run("winograd"), run("direct"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("read", [False, True], ids=["unread", "read"])
def test_winograd_checks_only_what_it_reads(read, dtype, isa):
    """A padding past the kernel (3 for a 3x3 kernel) makes the stride-1 input gradient a
    Winograd forward pass of dY padded by -1: dY's outer ring is never read, so an Inf there
    leaves the gradient finite; one inside it reaches the gradient as col2im's does (a check that
    missed it would give NaN where col2im's values are finite). The unread case checks the
    result only: an over-eager check would fall back to an exact pass with the same result."""
    rng = np.random.default_rng(8)
    w = rng.standard_normal((16, 16, 3, 3)).astype(dtype)
    gy = rng.standard_normal((2, 16, 8, 8)).astype(dtype)
    gy[1, 5, 3 if read else 0, 4] = np.inf

    def run(algorithm):
        with _kernels.force_conv_algorithms(input=algorithm):
            return F.conv2d_input((2, 16, 4, 4), w, gy, padding=3)

    transposed, col2im = run("transposed"), run("col2im")
    assert np.isfinite(col2im).all() != read
    np.testing.assert_array_equal(np.isfinite(transposed), np.isfinite(col2im))
    finite = np.isfinite(col2im)
    np.testing.assert_allclose(transposed[finite], col2im[finite], rtol=1e-4, atol=1e-4)


# The transposed input gradient with finite weights and Inf or NaN in dY: its forward problem is
# planned Winograd (reading the weights in place through the flipped view with one group, from a
# copy with two), whose input transform meets them and hands the problem to direct, exactly.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_input_gradient_with_nonfinite_grad_output(groups, dtype, isa):
    rng = np.random.default_rng(31)
    x = rng.standard_normal((2, 32, 6, 5)).astype(dtype)
    w = rng.standard_normal((32, 32 // groups, 3, 3)).astype(dtype)
    gy = _sprinkled((2, 32, 6, 5), dtype, 17, 0.05)
    expected = ref.conv2d_backward(gy, x, w, (1, 1), (1, 1, 1, 1), (1, 1), groups)[0]
    with _kernels.force_conv_algorithms(input="transposed"):
        gx = F.conv2d_input(x.shape, w, gy, padding=1, groups=groups)
    assert not np.isfinite(gx).all()
    assert_same_nonfinite(gx, expected, 32 * 9 // groups)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["relu", "tanh", "sigmoid"])
def test_activations_against_torch(T, op, dtype):
    x = _sprinkled((4, 5, 6), dtype, 11, 0.3)
    x.flat[:3] = [0.0, -0.0, np.nan]
    gy = _sprinkled(x.shape, dtype, 12, 0.2)
    ty, (tgx,) = _torch_grads(getattr(torch, op), gy, x)
    y = getattr(F, op)(x)
    assert_same_nonfinite(y, ty)
    # relu's backward takes x; tanh's and sigmoid's take the output
    gx = getattr(F, f"{op}_backward")(gy, x if op == "relu" else y)
    assert_same_nonfinite(gx, tgx)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_against_torch(T, dtype):
    x, w = _sprinkled((5, 7), dtype, 13, 0.1), _sprinkled((3, 7), dtype, 14, 0.05)
    b = _sprinkled(3, dtype, 15, 0.3)
    gy = _sprinkled((5, 3), dtype, 16, 0.1)
    ty, (tgx, tgw, tgb) = _torch_grads(torch.nn.functional.linear, gy, x, w, b)
    assert_same_nonfinite(F.linear(x, w, b), ty, 8)
    for got, expected in zip(F.linear_backward(gy, x, w), (tgx, tgw, tgb)):
        assert_same_nonfinite(got, expected, 8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_against_torch(T, training, dtype):
    x = _sprinkled((6, 4, 3, 3), dtype, 17, 0.0)
    x[0, 0, 0, 0] = np.nan  # channel 0: a NaN poisons its batch statistics
    x[1, 1, 1, 1] = np.inf  # channel 1: an Inf makes its variance NaN
    x[2, 2, 0, 1] = -np.inf
    mean, var = np.zeros(4, dtype), np.ones(4, dtype)
    mean[3], var[3] = np.nan, np.inf  # channel 3: non-finite running statistics (eval)
    w, b = _sprinkled(4, dtype, 18, 0.0), _sprinkled(4, dtype, 19, 0.0)
    gy = _sprinkled(x.shape, dtype, 20, 0.0)
    tmean, tvar = _t(mean.copy()), _t(var.copy())
    ty, (tgx, tgw, tgb) = _torch_grads(
        lambda a, c, d: torch.nn.functional.batch_norm(a, tmean, tvar, c, d, training), gy, x, w, b)
    y = F.batch_norm(x, mean, var, w, b, training)
    assert_same_nonfinite(y, ty, 64)
    assert_same_nonfinite(mean, tmean.numpy(), 64)
    assert_same_nonfinite(var, tvar.numpy(), 64)
    stats = (mean, var) if not training else (None, None)
    for got, expected in zip(F.batch_norm_backward(gy, x, *stats, w, training), (tgx, tgw, tgb)):
        assert_same_nonfinite(got, expected, 64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_against_torch(T, dtype):
    logits = _sprinkled((6, 5), dtype, 21, 0.0)
    logits[0, 1] = np.nan  # a NaN logit: NaN loss and gradient row
    logits[1, 2] = np.inf  # +inf: NaN (inf - inf), as in PyTorch
    logits[2, 3] = -np.inf  # -inf on a class that is not the target: finite
    logits[3, 4] = -np.inf  # -inf on the target: +inf loss
    target = np.array([1, 2, 0, 4, 1, 3])
    for rows in (slice(2, 3), slice(0, 6), slice(3, 4)):
        lg, tg = logits[rows], target[rows]
        tl = _t(lg, grad=True)
        tloss = torch.nn.functional.cross_entropy(tl, _t(tg))
        tloss.backward()
        assert_same_nonfinite(F.cross_entropy(lg, tg), tloss.detach().numpy(), 8)
        assert_same_nonfinite(F.cross_entropy_backward(1.0, lg, tg), tl.grad.numpy(), 8)


# ---- without PyTorch: against the reference --------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_against_reference(dtype):
    """conv, pooling and relu on sprinkled input give the reference's NaN/Inf pattern."""
    x = _sprinkled((2, 4, 9, 9), dtype, 22, 0.1)
    w = _sprinkled((6, 4, 3, 3), dtype, 23, 0.05)
    conv = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    y = F.conv2d(x, w, padding=1)
    assert_same_nonfinite(y, ref.conv2d(x, w, None, *conv), 36)
    gy = _sprinkled(y.shape, dtype, 24, 0.05)
    gx, gw, gb = F.conv2d_backward(gy, x, w, padding=1)
    rgx, rgw, rgb = ref.conv2d_backward(gy, x, w, *conv)
    assert_same_nonfinite(gx, rgx, 500)
    assert_same_nonfinite(gb, rgb, 500)
    # grad_weight: test_conv2d_weight_gradient_ignores_unread_infinities
    assert np.array_equal(np.isnan(gw) | np.isnan(rgw), np.isnan(gw))
    pool = ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True)
    m, idx = F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
    rm, ridx = ref.max_pool2d(x, *pool)
    np.testing.assert_array_equal(m, rm)
    np.testing.assert_array_equal(idx, ridx)
    gp = _sprinkled(m.shape, dtype, 25, 0.1)
    assert_same_nonfinite(F.max_pool2d_backward(gp, x, 3, 2, 1, ceil_mode=True),
                          ref.max_pool2d_backward(gp, x, *pool), 9)
    avg = ((3, 3), (2, 2), (1, 1, 1, 1), True, True, None)
    assert_same_nonfinite(F.avg_pool2d(x, 3, 2, 1, ceil_mode=True), ref.avg_pool2d(x, *avg), 9)
    assert_same_nonfinite(F.avg_pool2d_backward(gp, x, 3, 2, 1, ceil_mode=True),
                          ref.avg_pool2d_backward(gp, x, *avg), 9)
    ax = np.abs(x[:, :, :8, :8])  # every element in a window: test_lp_pool2d_backward_uncovered_inf
    lp = F.lp_pool2d(ax, 2, 2)
    assert_same_nonfinite(lp, ref.lp_pool2d(ax, 2, (2, 2), (2, 2), False), 16)
    gl = _sprinkled(lp.shape, dtype, 26, 0.0)  # test_lp_pool2d_against_torch: non-finite ones
    with np.errstate(invalid="ignore"):
        expected = ref.lp_pool2d_backward(gl, ax, 2, (2, 2), (2, 2), False)
    assert_same_nonfinite(F.lp_pool2d_backward(gl, ax, 2, 2), expected, 16)
    np.testing.assert_array_equal(F.relu(x), ref.relu(x))
    np.testing.assert_array_equal(F.relu_backward(gy[:, :4], x), ref.relu_backward(gy[:, :4], x))


# Parity details that need no PyTorch to check: the reference states PyTorch's rule, and every
# kernel path must give it bit for bit.

@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_keeps_negative_zero(isa, dtype):
    """PyTorch's relu keeps x unless x < 0 (clamp_min): relu(-0.0) is -0.0, NaN stays NaN."""
    x = np.array([-0.0, 0.0, -1.0, 2.0, np.nan, -np.nan, -np.inf, np.inf] * 300, dtype)
    y = F.relu(x)
    np.testing.assert_array_equal(y.view(f"u{y.itemsize}"), ref.relu(x).view(f"u{y.itemsize}"))
    assert np.signbit(y[0]) and not np.signbit(y[1])
    gx = F.relu_backward(np.ones_like(x), x)
    np.testing.assert_array_equal(gx, ref.relu_backward(np.ones_like(x), x))
    assert gx[0] == 0 and gx[4] == 1  # the gradient stops at -0.0, passes NaN


# (dtype, value, p): an element no 2-wide window covers whose x^(p-1) overflows in its dtype
# (or is Inf for another reason), so PyTorch's 0 * p * x^(p-1) is NaN; and some where it is not
UNCOVERED = [(np.float32, 1e30, 3.0), (np.float32, -3e19, 3.0), (np.float64, 1e200, 3.0),
             (np.float64, 1e30, 3.0), (np.float32, 1e30, 2.0), (np.float64, 0.0, 0.5),
             (np.float32, 4e15, 3.5), (np.float64, -1.0, 1.5)]


@pytest.mark.parametrize("dtype, value, p", UNCOVERED,
                         ids=[f"{d.__name__}-{v:g}-p{p:g}" for d, v, p in UNCOVERED])
def test_lp_pool2d_backward_uncovered_overflow(isa, dtype, value, p):
    x = np.array([[[[1.0, 2.0, value], [3.0, 4.0, 5.0]]]], dtype)
    gy = np.ones((1, 1, 1, 1), dtype)
    gx = F.lp_pool2d_backward(gy, x, p, 2)
    expected = ref.lp_pool2d_backward(gy, x, p, (2, 2), (2, 2), False)
    assert_same_nonfinite(gx, expected)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        d = dtype(value) ** dtype(p - 1)  # what PyTorch's autograd computes, in the dtype
    assert np.isnan(gx[0, 0, 0, 2]) == (not np.isfinite(d))


def test_lp_pool2d_backward_uncovered_overflow_against_torch(T):
    for dtype, value, p in UNCOVERED:
        x = np.array([[[[1.0, 2.0, value], [3.0, 4.0, 5.0]]]], dtype)
        gy = np.ones((1, 1, 1, 1), dtype)
        _, (tgx,) = _torch_grads(lambda a, p=p: torch.nn.functional.lp_pool2d(a, p, 2), gy, x)
        assert_same_nonfinite(F.lp_pool2d_backward(gy, x, p, 2), tgx)


def test_relu_negative_zero_against_torch(T):
    x = np.array([-0.0, 0.0, -1.0, np.nan], np.float32)
    np.testing.assert_array_equal(F.relu(x).view(np.uint32),
                                  torch.relu(torch.from_numpy(x)).numpy().view(np.uint32))


@pytest.mark.parametrize("algorithm, groups", [("depthwise", 16), ("grouped", 4)])
@pytest.mark.parametrize("where", [0, -1], ids=["first", "last"])
def test_weight_gradient_finds_nonfinite_in_any_plane(algorithm, groups, where):
    """The per-plane weight gradients test each padded channel as they make it: an Inf in the
    first or only in the last plane of the last image still hands the call to the plain loops,
    on 1 and 2 threads."""
    rng = np.random.default_rng(31)
    x = rng.standard_normal((3, 16, 6, 7))
    w = rng.standard_normal((16, 16 // groups, 3, 3))
    gy = rng.standard_normal((3, 16, 6, 7))
    x.flat[where] = np.inf
    results = []
    for name in (algorithm, "plain"):
        for n in (1, 2):
            with fastconv.num_threads(n), _kernels.force_conv_algorithms(weight=name):
                results.append(F.conv2d_weight(x, w.shape, gy, padding=1, groups=groups))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
