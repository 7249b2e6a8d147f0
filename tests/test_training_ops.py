"""The kernels of the rest of a training step (src/kernels/training.h): softmax cross-entropy,
dropout and the Adam and SGD updates, against fastconv.reference on every ISA path, on case
tables of shapes and hyper-parameters, with bit-identical results for any thread count."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DTYPES, assert_close, isa_params

import fastconv
import fastconv.functional as F
from fastconv import reference as ref


@pytest.fixture(params=isa_params())
def isa(request):
    with fastconv.use_isa(request.param):
        yield request.param


CE_CASES = {"one-row": (1, 3), "one-class": (4, 1), "mnist": (32, 10), "wide": (5, 1000),
            "many-rows": (300, 7)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 1e4])
@pytest.mark.parametrize("name", CE_CASES)
def test_cross_entropy_matches_reference(name, scale, dtype, isa):
    n, c = CE_CASES[name]
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((n, c)) * scale).astype(dtype)
    target = rng.integers(0, c, n)
    loss, expected = F.cross_entropy(logits, target), ref.cross_entropy(logits, target)
    assert loss.shape == () and loss.dtype == dtype
    assert_close(loss, expected, 4 * c, np.abs(expected) + scale)
    for grad_output in (1.0, -2.5):
        assert_close(F.cross_entropy_backward(grad_output, logits, target),
                     ref.cross_entropy_backward(grad_output, logits, target), 4 * c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0001, 0.3, 0.5, 0.9999, 1.0])
@pytest.mark.parametrize("shape", [(7,), (3, 1000), (2, 3, 4, 5)])
def test_dropout_matches_reference_for_the_same_draws(shape, p, dtype, isa):
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    out, mask = F.dropout(x, p, rng=np.random.default_rng(2))
    uniform = np.random.default_rng(2).random(shape, dtype=dtype)
    expected_out, expected_mask = ref.dropout(x, p, uniform)
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(out, expected_out)
    assert mask.dtype == out.dtype == dtype


def _param_arrays(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape).astype(dtype) for _ in range(4))


ADAM_CASES = [dict(), dict(lr=0.05), dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3),
              dict(lr=0.05, weight_decay=0.1), dict(lr=0.0)]
SGD_CASES = [dict(lr=0.05), dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9,
                                                               dampening=0.3),
             dict(lr=0.05, momentum=0.9, nesterov=True), dict(lr=0.05, weight_decay=0.1),
             dict(lr=0.05, momentum=0.5, weight_decay=0.1, nesterov=True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3,), (5000,), (64, 32, 5, 5)])
@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=str)
def test_adam_update_matches_reference(kwargs, shape, dtype, isa):
    param, _, m, s = _param_arrays(shape, dtype)
    s = np.abs(s)
    ours, theirs = [param.copy(), m.copy(), s.copy()], [param.copy(), m.copy(), s.copy()]
    full = {**dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0), **kwargs}
    for step in range(1, 4):
        grad = next(_param_arrays(shape, dtype, step))
        F.adam_update(ours[0], grad, ours[1], ours[2], step, **full)
        ref.adam_update(theirs[0], grad, theirs[1], theirs[2], step, *full.values())
    for a, b in zip(ours, theirs):
        assert_close(a, b, 16, np.abs(b) + 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3,), (5000,)])
@pytest.mark.parametrize("kwargs", SGD_CASES, ids=str)
def test_sgd_update_matches_reference(kwargs, shape, dtype, isa):
    param = next(_param_arrays(shape, dtype))
    ours, theirs, buf, ref_buf = param.copy(), param.copy(), None, None
    full = {**dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False), **kwargs}
    for step in range(3):
        grad = next(_param_arrays(shape, dtype, step + 1))
        given = buf
        buf = F.sgd_update(ours, grad, momentum_buffer=buf, **full)
        assert given is None or buf is given  # the buffer is updated in place after the first
        ref_buf = ref.sgd_update(theirs, grad, full["lr"], full["momentum"], full["dampening"],
                                 full["weight_decay"], full["nesterov"], ref_buf)
        assert (buf is None) == (ref_buf is None)
    assert_close(ours, theirs, 8, np.abs(theirs) + 1)
    if buf is not None:
        assert_close(buf, ref_buf, 8, np.abs(ref_buf) + 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_training_ops_same_result_for_1_and_2_threads(dtype, isa):
    rng = np.random.default_rng(5)
    logits, target = rng.standard_normal((500, 300)).astype(dtype), rng.integers(0, 300, 500)
    x = rng.standard_normal(300_000).astype(dtype)
    results = []
    for n in (1, 2):
        with fastconv.num_threads(n):
            param, grad, m, s = (a.copy() for a in _param_arrays(300_000, dtype))
            s = np.abs(s)
            F.adam_update(param, grad, m, s, 1)
            sgd_param = param.copy()
            F.sgd_update(sgd_param, grad, 0.1, momentum=0.9)
            results.append([F.cross_entropy(logits, target),
                            F.cross_entropy_backward(1.0, logits, target),
                            *F.dropout(x, 0.3, rng=np.random.default_rng(6)), param, m, s,
                            sgd_param])
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("op, kwargs, error, message", [
    ("adam_update", dict(param=np.ones(3)[::2], grad=np.ones(2), exp_avg=np.zeros(2),
                         exp_avg_sq=np.zeros(2), step=1), ValueError,
     "param must be a writeable, C-contiguous"),
    ("adam_update", dict(param=np.ones(2), grad=np.ones(2), exp_avg=np.zeros(2, np.float32),
                         exp_avg_sq=np.zeros(2), step=1), ValueError,
     "exp_avg must be a writeable, C-contiguous float64 array"),
    ("adam_update", dict(param=np.ones(2), grad=np.ones(3), exp_avg=np.zeros(2),
                         exp_avg_sq=np.zeros(2), step=1), ValueError,
     r"grad must have the shape of param \(2,\)"),
    ("adam_update", dict(param=np.ones(2), grad=np.ones(2), exp_avg=np.zeros(2),
                         exp_avg_sq=np.zeros(2), step=0), ValueError, "step must be a positive"),
    ("adam_update", dict(param=np.ones(2), grad=np.ones(2), exp_avg=np.zeros(2),
                         exp_avg_sq=np.zeros(2), step=1, betas=(0.9, 1.0)), ValueError,
     r"betas\[1\] must be a number in \[0, 1\)"),
    ("sgd_update", dict(param=np.ones(2), grad=np.ones(2, np.float32), lr=0.1), TypeError,
     "grad has dtype float32 but param has dtype float64"),
    ("sgd_update", dict(param=np.ones(2), grad=np.ones(2), lr=-0.1), ValueError,
     "lr must be a non-negative number"),
    ("sgd_update", dict(param=np.ones(2), grad=np.ones(2), lr=0.1, momentum=0.9,
                        momentum_buffer=np.zeros(3)), ValueError,
     r"momentum_buffer must be .* of shape \(2,\)"),
])
def test_update_arguments_are_checked(op, kwargs, error, message):
    with pytest.raises(error, match=f"^{op}: {message}"):
        getattr(F, op)(**kwargs)
