"""fastconv.optim: SGD and Adam follow PyTorch's update rules exactly.

Without PyTorch the rules are checked against the formulas written out by hand for a few steps;
with it, whole trajectories on a quadratic loss (whose gradient depends on where the parameters
are, so any early difference grows) are compared with torch.optim's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastconv import init, nn, optim

TOL = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=1e-5, atol=1e-6)}
SHAPES = [(3, 4), (5,)]
STEPS = 8


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(rng.standard_normal(shape).astype(dtype)) for shape in SHAPES]


def quadratic_gradient(data: np.ndarray, step: int) -> np.ndarray:
    """Gradient of sum(c * (p - target)**2) with a target that moves each step."""
    index = np.arange(data.size).reshape(data.shape)
    return (2 * (1 + index % 3) * (data - np.sin(index + step))).astype(data.dtype)


def run(opt, params, steps=STEPS):
    for step in range(steps):
        opt.zero_grad()
        for p in params:
            p.grad += quadratic_gradient(p.data, step)
        opt.step()
    return [p.data for p in params]


OPTIMIZERS = [  # (class name, kwargs): the same entries build fastconv's and torch's optimiser
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.5, weight_decay=0.1, nesterov=True)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.05)),
    ("Adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3)),
    ("Adam", dict(lr=0.05, weight_decay=0.1)),
]
IDS = [f"{name}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for name, kw in OPTIMIZERS]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, kwargs", OPTIMIZERS, ids=IDS)
def test_trajectory_matches_pytorch(name, kwargs, dtype):
    torch = pytest.importorskip("torch")
    params = make_params(dtype)
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    run(getattr(optim, name)(params, **kwargs), params)
    their_opt = getattr(torch.optim, name)(theirs, **kwargs)
    for step in range(STEPS):
        their_opt.zero_grad()
        for t in theirs:
            t.grad = torch.from_numpy(quadratic_gradient(t.detach().numpy(), step))
        their_opt.step()
    for p, t in zip(params, theirs):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, t.detach().numpy(), **TOL[dtype])


# ---- the rules by hand, no PyTorch needed --------------------------------------------------------

GRADIENTS = [np.array([0.5, 1.0]), np.array([-1.0, 2.0]), np.array([3.0, 0.0])]


@pytest.mark.parametrize("nesterov, dampening", [(False, 0.0), (True, 0.0), (False, 0.3)])
def test_sgd_momentum_buffer_starts_at_the_first_gradient(nesterov, dampening):
    lr, mu, wd = 0.1, 0.9, 0.01
    p = nn.Parameter(np.array([1.0, -2.0]))
    opt = optim.SGD([p], lr=lr, momentum=mu, dampening=dampening, weight_decay=wd,
                    nesterov=nesterov)
    expected, buf = p.data.copy(), None
    for g in GRADIENTS:
        p.grad[...] = g
        opt.step()
        d = g + wd * expected
        # undamped on the first step, as PyTorch
        buf = d.copy() if buf is None else mu * buf + (1 - dampening) * d
        expected = expected - lr * (d + mu * buf if nesterov else buf)
        np.testing.assert_allclose(p.data, expected, rtol=1e-15)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_bias_correction_by_hand(weight_decay):
    lr, (b1, b2), eps = 0.01, (0.9, 0.999), 1e-8
    p = nn.Parameter(np.array([0.3, -0.7]))
    opt = optim.Adam([p], lr=lr, weight_decay=weight_decay)
    expected, m, s = p.data.copy(), 0.0, 0.0
    for t, g in enumerate(GRADIENTS, start=1):
        p.grad[...] = g
        opt.step()
        g = g + weight_decay * expected  # L2 added to the gradient (not decoupled, as AdamW)
        m, s = b1 * m + (1 - b1) * g, b2 * s + (1 - b2) * g * g
        expected = expected - lr * (m / (1 - b1**t)) / (np.sqrt(s / (1 - b2**t)) + eps)
        np.testing.assert_allclose(p.data, expected, rtol=1e-13)
    # the first step moves each coordinate by about lr, whatever the gradient's size
    q = nn.Parameter(np.zeros(3))
    q.grad[...] = [1e-3, -5.0, 1e3]
    optim.Adam([q], lr=lr).step()
    np.testing.assert_allclose(q.data, [-lr, lr, -lr], rtol=1e-4)


def test_zero_grad_and_hyper_parameters_as_attributes():
    params = make_params(np.float32)
    opt = optim.SGD(params, lr=0.1)
    for p in params:
        p.grad += 1
    opt.zero_grad()
    assert all(not p.grad.any() for p in params)
    opt.lr = 0.0
    before = [p.data.copy() for p in params]
    for p in params:
        p.grad += 1
    opt.step()
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.data, b)


def test_optimizer_takes_a_model_and_keeps_its_dtype():
    layer = nn.Linear(3, 2).to(np.float64)
    opt = optim.Adam(layer.parameters(), lr=0.1)
    layer(np.ones((4, 3)))
    layer.backward(np.ones((4, 2)))
    opt.step()
    assert all(p.data.dtype == np.float64 for p in layer.parameters())
    assert len(opt.params) == 2


ARGUMENT_ERRORS = [  # (class, kwargs, exception, message pattern: names the argument)
    (optim.SGD, dict(lr=-0.1), ValueError, "SGD: lr must be a non-negative number, got -0.1"),
    (optim.SGD, dict(lr=math.nan), ValueError, "SGD: lr must be"),
    (optim.SGD, dict(lr="0.1"), TypeError, "SGD: lr must be"),
    (optim.SGD, dict(lr=0.1, momentum=-0.9), ValueError, "SGD: momentum must be"),
    (optim.SGD, dict(lr=0.1, weight_decay=-1), ValueError, "SGD: weight_decay must be"),
    (optim.SGD, dict(lr=0.1, dampening=math.inf), ValueError, "SGD: dampening must be"),
    (optim.SGD, dict(lr=0.1, nesterov=True), ValueError, "SGD: nesterov=True needs momentum"),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError,
     "dampening == 0"),
    (optim.SGD, dict(lr=0.1, nesterov=1), TypeError, "SGD: nesterov must be a bool"),
    (optim.Adam, dict(lr=-1e-3), ValueError, "Adam: lr must be"),
    (optim.Adam, dict(betas=(1.0, 0.999)), ValueError, r"Adam: betas\[0\] must be a number in"),
    (optim.Adam, dict(betas=(0.9, -0.1)), ValueError, r"Adam: betas\[1\] must be"),
    (optim.Adam, dict(betas=0.9), ValueError, "Adam: betas must be a pair"),
    (optim.Adam, dict(eps=-1e-8), ValueError, "Adam: eps must be"),
    (optim.Adam, dict(weight_decay=-0.1), ValueError, "Adam: weight_decay must be"),
]


@pytest.mark.parametrize("cls, kwargs, exc, pattern", ARGUMENT_ERRORS)
def test_bad_arguments_raise_naming_the_argument(cls, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        cls(make_params(np.float64), **kwargs)


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam])
def test_bad_params_raise(cls):
    with pytest.raises(ValueError, match="params is empty"):
        cls([], lr=0.1)
    with pytest.raises(TypeError, match="params must be fastconv.nn.Parameter"):
        cls([np.zeros(3)], lr=0.1)


# ---- state_dict: resuming an optimiser ----------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda params: optim.Adam(params, lr=0.01, weight_decay=0.1),
    lambda params: optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True),
], ids=["Adam", "SGD"])
def test_state_dict_resumes_exactly(make):
    """Three steps, a state_dict into a fresh optimiser on a copy of the weights, three more:
    the same weights, bit for bit, as six steps in one go."""
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(6)]

    def layer():
        init.manual_seed(0)
        return nn.Linear(4, 3, bias=False)

    def steps(model, opt, gs):
        for g in gs:
            model.weight.grad[...] = g
            opt.step()

    straight = layer()
    steps(straight, make(straight.parameters()), grads)
    first = layer()
    opt = make(first.parameters())
    steps(first, opt, grads[:3])
    opt.lr *= 1.0  # hyperparameters travel too
    second = layer().load_state_dict(first.state_dict())
    resumed = make(second.parameters()).load_state_dict(opt.state_dict())
    steps(second, resumed, grads[3:])
    assert second.weight.data.tobytes() == straight.weight.data.tobytes()


def test_load_state_dict_refuses_a_mismatch():
    layer = nn.Linear(4, 3)
    opt = optim.Adam(layer.parameters())
    layer.weight.grad[...] = 1
    opt.step()
    other = optim.Adam(nn.Linear(5, 3).parameters())
    with pytest.raises(ValueError, match="Adam.load_state_dict: state 0 has 'exp_avg' of shape"):
        other.load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="another optimiser"):
        optim.SGD(layer.parameters(), lr=0.1).load_state_dict(opt.state_dict())
    with pytest.raises(TypeError, match="must be a dict with 'hyperparameters' and 'state'"):
        opt.load_state_dict([1, 2])


# ---- one flat buffer per dtype ------------------------------------------------------------------

FLAT_OPTIMIZERS = [  # (name, kwargs): the optimisers whose state differs in kind
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, weight_decay=0.1)),
]
FLAT_IDS = [f"{name}-" + "-".join(f"{k}={v}" for k, v in kw.items())
            for name, kw in FLAT_OPTIMIZERS]


def per_parameter_run(name, kwargs, params, steps):
    """The rule applied parameter by parameter through fastconv.functional: what the flat step
    must equal bit for bit."""
    from fastconv import functional as F
    state = [{} for _ in params]
    for step in range(steps):
        for p, s in zip(params, state):
            p.grad[...] = quadratic_gradient(p.data, step)
            if name == "Adam":
                s.setdefault("m", np.zeros_like(p.data))
                s.setdefault("v", np.zeros_like(p.data))
                F.adam_update(p.data, p.grad, s["m"], s["v"], step + 1, **kwargs)
            else:
                s["buf"] = F.sgd_update(p.data, p.grad, momentum_buffer=s.get("buf"), **kwargs)
    return [p.data for p in params]


@pytest.mark.parametrize("name, kwargs", FLAT_OPTIMIZERS, ids=FLAT_IDS)
def test_one_flat_update_equals_per_parameter_updates(name, kwargs):
    """Parameters of two dtypes, one non-contiguous: one call per dtype gives each parameter
    exactly the per-parameter kernels' values, and .data / .grad become views of the buffers."""
    shapes = [((3, 4), np.float32), ((5,), np.float64), ((2, 3, 2), np.float32), ((), np.float64)]
    rng = np.random.default_rng(1)
    values = [rng.standard_normal(shape).astype(dtype) for shape, dtype in shapes]
    values[0] = np.asfortranarray(values[0])
    ours = [nn.Parameter(v.copy(order="K")) for v in values]
    expected = per_parameter_run(name, kwargs, [nn.Parameter(v.copy()) for v in values], 4)
    opt = getattr(optim, name)(ours, **kwargs)
    for step in range(4):
        opt.zero_grad()
        for p in ours:
            p.grad += quadratic_gradient(p.data, step)
        opt.step()
    for p, e in zip(ours, expected):
        assert p.data.dtype == e.dtype and p.data.shape == e.shape
        assert p.data.tobytes() == np.ascontiguousarray(e).tobytes()
    assert ours[0].data.base is ours[2].data.base  # both float32 parameters in one buffer
    assert ours[1].data.base is not ours[0].data.base


@pytest.mark.parametrize("replace", ["data", "grad", "to", "load_state_dict"])
@pytest.mark.parametrize("name, kwargs", FLAT_OPTIMIZERS, ids=FLAT_IDS)
def test_replaced_arrays_are_taken_in_at_the_next_step(name, kwargs, replace):
    """After an array of a parameter (or the optimiser's state) is replaced between steps, the
    next step updates the new array, exactly as per-parameter updates would."""
    values = [np.random.default_rng(2).standard_normal(shape) for shape in SHAPES]
    expected = per_parameter_run(name, kwargs, [nn.Parameter(v.copy()) for v in values], 4)
    params = [nn.Parameter(v.copy()) for v in values]
    opt = getattr(optim, name)(params, **kwargs)
    for step in range(4):
        opt.zero_grad()
        for p in params:
            p.grad += quadratic_gradient(p.data, step)
        if step == 2:
            if replace == "data":
                params[1].data = params[1].data.copy()
            elif replace == "grad":
                params[0].grad = params[0].grad.copy()
            elif replace == "to":
                layer = nn.Module()
                layer.a, layer.b = params
                layer.to(np.float64)  # the same dtype: new arrays, the same values
            else:
                opt.load_state_dict(opt.state_dict())
        opt.step()
    for p, e in zip(params, expected):
        assert p.data.tobytes() == e.tobytes()


def test_duplicate_parameters_are_refused():
    p = nn.Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="Adam: params lists a Parameter more than once"):
        optim.Adam([p, p])
