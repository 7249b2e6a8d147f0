"""F.add_relu: relu(a + b) in one pass, bit for bit the two ops (NaN, -0.0, infinities, every
layout), in place or not, the same on any thread count; its gradient added to another in one
pass (``F.relu_backward(..., add_to=)``), bit for bit ``+=``; and the ResNet block, which adds its
shortcut in bn2's pass (``BatchNorm2d(..., shortcut=)``; bn2 folded away, with add_relu), gives the
two-op block's outputs and gradients exactly, in training, in evaluation and folded."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DTYPES

import fastconv
import fastconv.functional as F
from fastconv import fuse, init, models, nn


def _pair(dtype, layout, size=5000):
    """a, b: random values (past several kernel blocks and threads' shares) with the edge
    values in front: sums that are NaN, -0.0, +-inf, exactly 0, tiny."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal(size)
    b = rng.standard_normal(size)
    edges = [(np.nan, 1.0), (-0.0, -0.0), (0.0, -0.0), (np.inf, -1.0), (-np.inf, 5.0),
             (np.inf, -np.inf), (2.5, -2.5), (1e-30, 0.0), (-1e-30, 0.0)]
    a[:len(edges)], b[:len(edges)] = zip(*edges)
    a, b = a.astype(dtype).reshape(50, -1), b.astype(dtype).reshape(50, -1)
    if layout == "F":
        return np.asfortranarray(a), b
    if layout == "strided":
        big = np.zeros((50, 2 * a.shape[1]), dtype)
        big[:, ::2] = a
        return big[:, ::2], b
    if layout == "big-endian":
        return a.astype(a.dtype.newbyteorder(">")), b
    return a, b


def _expected(a, b):
    with np.errstate(invalid="ignore"):  # inf - inf
        s = np.add(a, b)
    return np.where(s < 0, np.zeros_like(s), s)  # relu's rule: -0.0 and NaN stay


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["C", "F", "strided", "big-endian"])
@pytest.mark.parametrize("inplace", [False, True])
def test_add_relu_is_add_then_relu_bit_for_bit(layout, dtype, inplace):
    a, b = _pair(dtype, layout)
    expected = _expected(a, b)
    with np.errstate(invalid="ignore"):
        two_ops = F.relu(a + b)
    np.testing.assert_array_equal(two_ops, expected)
    kept = a.copy()
    out = F.add_relu(a, b, inplace=inplace)
    assert (out is a) == inplace and out.dtype == (a.dtype if inplace else dtype)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(expected))  # -0.0 stays -0.0
    if not inplace:
        np.testing.assert_array_equal(a, kept)


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_relu_in_place_with_b_overlapping_a(dtype):
    base = np.arange(-20.0, 20.0, dtype=dtype)
    a, b = base[:30], base[5:35]  # b reads what the kernel writes into a
    expected = _expected(a.copy(), b.copy())
    F.add_relu(a, b, inplace=True)
    np.testing.assert_array_equal(a, expected)
    same = np.array([-1.0, 2.0], dtype)
    np.testing.assert_array_equal(F.add_relu(same, same, inplace=True), [0.0, 4.0])


def test_add_relu_is_thread_count_invariant():
    a, b = _pair(np.float32, "C", size=300_000)
    results = []
    for n in (1, 2, 3):
        with fastconv.num_threads(n):
            results.append(F.add_relu(a, b))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


@pytest.mark.parametrize("call, error, message", [
    (lambda: F.add_relu(np.ones(3), np.ones(4)), ValueError,
     r"^add_relu: b must have the shape of a \(3,\), got \(4,\)"),
    (lambda: F.add_relu(np.ones(3), np.ones(3, np.float32)), TypeError, "^add_relu: "),
    (lambda: F.add_relu([1.0], np.ones(1)), TypeError, "^add_relu: a must be"),
    (lambda: F.add_relu(np.ones(3), np.ones(3), inplace=1), TypeError,
     "^add_relu: inplace must be a bool"),
])
def test_add_relu_refuses_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_add_relu_in_place_refuses_a_read_only_array():
    a = np.ones(3)
    a.flags.writeable = False
    with pytest.raises(ValueError, match="^add_relu: inplace=True needs a writeable a"):
        F.add_relu(a, np.ones(3), inplace=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["C", "F", "strided", "big-endian"])
@pytest.mark.parametrize("size", [1, 1023, 1024, 1025, 5000])
def test_relu_backward_add_to_is_plus_equals_bit_for_bit(size, layout, dtype):
    """Around the kernel's 1024-element blocks; NaN, -0.0 and infinities in every operand."""
    grad, x = _pair(dtype, layout, 5000)
    grad, x = grad.reshape(-1)[:size], x.reshape(-1)[:size]
    total, _ = _pair(dtype, "C", 5000)
    total = np.roll(total.reshape(-1), 3)[:size].copy()  # -0.0, NaN and inf meet the others
    expected = total.copy()
    with np.errstate(invalid="ignore"):  # inf - inf
        expected += F.relu_backward(grad, x)
    out = F.relu_backward(grad, x, add_to=total)
    assert out is total
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(expected))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_backward_add_to_with_inputs_overlapping_it(dtype):
    base = np.random.default_rng(3).standard_normal(3000).astype(dtype)
    # grad trails total by more than any vector or block: without a copy, grad[i] for i >= 100
    # would be read after total[i - 100] was written there
    total, grad = base[100:2600], base[:2500]
    expected = total + F.relu_backward(grad.copy(), grad.copy())
    F.relu_backward(grad, grad, add_to=total)
    np.testing.assert_array_equal(total, expected)
    same = np.array([-1.0, 2.0], dtype)
    np.testing.assert_array_equal(F.relu_backward(same, same, add_to=same), [-1.0, 4.0])


def test_relu_backward_add_to_is_thread_count_invariant():
    grad, x = _pair(np.float32, "C", size=300_000)
    results = []
    for n in (1, 2, 3):
        with fastconv.num_threads(n):
            results.append(F.relu_backward(grad, x, add_to=np.ones_like(x)))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


@pytest.mark.parametrize("add_to, message", [
    (np.ones(4), r"add_to must be a writeable, C-contiguous float64 array of shape \(3,\)"),
    (np.ones(3, np.float32), "add_to must be a writeable, C-contiguous float64"),
    (np.ones(6)[::2], "add_to must be .*, not writeable, C-contiguous and native"),
    ([1.0, 1.0, 1.0], "add_to must be a numpy.ndarray"),
])
def test_relu_backward_add_to_refuses_what_it_cannot_update(add_to, message):
    with pytest.raises((ValueError, TypeError), match="^relu_backward: " + message):
        F.relu_backward(np.ones(3), np.ones(3), add_to=add_to)


def _two_op_block(block, x):
    """The block's forward and its backward function, with the shortcut added, then ReLU'd as
    two ops."""
    out = block.bn2(block.conv2(block.relu1(block.bn1(block.conv1(x)))))
    z = out + (x if block.downsample is None else block.downsample(x))
    y = F.relu(z)

    def backward(grad):
        g = F.relu_backward(grad, z)
        gx = block.conv1.backward(block.bn1.backward(block.relu1.backward(
            block.conv2.backward(block.bn2.backward(g)))))
        return gx + (g if block.downsample is None else block.downsample.backward(g))
    return y, backward


@pytest.mark.parametrize("dtype", DTYPES)
# bn2 a batch norm (the shortcut added in its pass) in training or evaluation, or folded away
@pytest.mark.parametrize("mode", ["train", "eval", "folded"])
# batch norms of 3 and 4 channels run in two phases, of 16 channel by channel (batchnorm.h)
@pytest.mark.parametrize("in_channels, channels, stride", [(3, 3, 1), (2, 4, 2), (16, 16, 1),
                                                           (8, 16, 2)])
def test_block_shortcut_is_the_two_ops_bit_for_bit(in_channels, channels, stride, mode, dtype):
    init.manual_seed(0)
    block = models.BasicBlock(in_channels, channels, stride, dtype=dtype)
    twin = models.BasicBlock(in_channels, channels, stride, dtype=dtype)
    rng = np.random.default_rng(5)
    for m in block.modules():  # running statistics other than 0 and 1 for evaluation
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean[:] = rng.standard_normal(m.num_features)
            m.running_var[:] = rng.uniform(0.5, 2.0, m.num_features)
    twin.load_state_dict(block.state_dict())
    if mode == "eval":
        block.eval(), twin.eval()
    elif mode == "folded":
        block, twin = fuse.fold_batch_norm(block), fuse.fold_batch_norm(twin)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, in_channels, 6, 6)).astype(dtype)
    y = block(x)
    y_ref, backward = _two_op_block(twin, x)
    np.testing.assert_array_equal(y, y_ref)
    grad = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_array_equal(block.backward(grad), backward(grad))
    theirs = dict(twin.named_parameters())
    for key, p in block.named_parameters():
        np.testing.assert_array_equal(p.grad, theirs[key].grad, err_msg=key)
