"""Optimisers with PyTorch's exact update rules: SGD (momentum, dampening, Nesterov, weight
decay) and Adam (bias-corrected, L2 weight decay added to the gradient).

An optimiser takes ``model.parameters()`` and updates each Parameter's ``.data`` in place from
its ``.grad``, in the parameter's dtype. Hyper-parameters are plain attributes (``opt.lr = …``
changes the learning rate for the next step).

Examples
--------
>>> import numpy as np
>>> from fastconv import nn, optim
>>> layer = nn.Linear(2, 1)
>>> opt = optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
>>> before = layer.weight.data.copy()
>>> layer.weight.grad[...] = 1.0
>>> opt.step()
>>> np.allclose(layer.weight.data, before - 0.1)
True
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from . import _validation as v
from . import functional as F
from .nn import Parameter

__all__ = ["Optimizer", "SGD", "Adam"]


class Optimizer:
    """Base class: holds the parameters and one state dict per parameter."""

    def __init__(self, params):
        op = type(self).__name__
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{op}: params is empty; pass model.parameters()")
        for p in self.params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{op}: params must be fastconv.nn.Parameter objects, "
                                f"got {type(p).__name__}")
        self.state = [{} for _ in self.params]

    _hyperparameters: tuple[str, ...] = ("lr",)

    def zero_grad(self) -> None:
        """Set every parameter's gradient to 0."""
        for p in self.params:
            p.grad.fill(0)

    def step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """What resuming needs, as ``torch.optim``'s: ``{"hyperparameters": {name: value},
        "state": [{name: array}, ...]}``, one dict per parameter in order (Adam: step,
        exp_avg, exp_avg_sq; SGD with momentum: momentum_buffer), arrays copied, the step as a
        0-d int64 array.

        Examples
        --------
        >>> from fastconv import nn, optim
        >>> layer = nn.Linear(2, 1)
        >>> opt = optim.Adam(layer.parameters())
        >>> layer.weight.grad[...] = 1.0
        >>> opt.step()
        >>> sorted(opt.state_dict()["state"][0]), opt.state_dict()["hyperparameters"]["lr"]
        (['exp_avg', 'exp_avg_sq', 'step'], 0.001)
        """
        return {"hyperparameters": {name: getattr(self, name) for name in self._hyperparameters},
                "state": [{name: np.array(value) for name, value in state.items()}
                          for state in self.state]}

    def load_state_dict(self, state_dict: dict) -> Optimizer:
        """Restore what ``state_dict`` returned (for the same parameters, in the same order).

        ValueError if the number of parameters, a name or an array's shape does not match;
        nothing changes unless everything does.
        """
        op = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict) or set(state_dict) != {"hyperparameters", "state"}:
            v.fail(op, "state_dict must be a dict with 'hyperparameters' and 'state' (as "
                       f"state_dict() returns), got {type(state_dict).__name__}", TypeError)
        hyper, states = state_dict["hyperparameters"], state_dict["state"]
        if set(hyper) != set(self._hyperparameters) or len(states) != len(self.params):
            v.fail(op, f"state_dict is for another optimiser: hyperparameters {sorted(hyper)} "
                       f"and {len(states)} parameter states, expected "
                       f"{sorted(self._hyperparameters)} and {len(self.params)}")
        restored = []
        for i, (p, state) in enumerate(zip(self.params, states)):
            entry = {}
            for name, value in state.items():
                value = np.asarray(value)
                if name == "step" and value.shape == () and value.dtype.kind in "iu":
                    entry[name] = int(value)
                elif name in ("exp_avg", "exp_avg_sq", "momentum_buffer") \
                        and value.shape == p.shape:
                    entry[name] = np.array(value, dtype=p.dtype, order="C")  # updated in place
                else:
                    v.fail(op, f"state {i} has {name!r} of shape {value.shape}, which parameter "
                               f"{i} of shape {p.shape} cannot take")
            restored.append(entry)
        self.state = restored
        self.lr = v.non_negative(op, "lr", hyper["lr"])
        for name in self._hyperparameters[1:]:
            value = hyper[name]
            setattr(self, name, tuple(value) if isinstance(value, list) else value)
        return self


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD``.

    Per step, with g the gradient: ``g += weight_decay * p``; with momentum, ``buf = g`` on the
    first step and ``buf = momentum * buf + (1 - dampening) * g`` after, then ``g = g +
    momentum * buf`` (nesterov) or ``g = buf``; finally ``p -= lr * g``.

    Parameters
    ----------
    params : iterable of Parameter
    lr : learning rate, non-negative
    momentum, dampening, weight_decay : non-negative, default 0
    nesterov : Nesterov momentum (needs momentum > 0 and dampening == 0), default False
    """

    _hyperparameters = ("lr", "momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, params, lr: float, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False):
        super().__init__(params)
        op = "SGD"
        self.lr = v.non_negative(op, "lr", lr)
        self.momentum = v.non_negative(op, "momentum", momentum)
        self.dampening = v.number(op, "dampening", dampening, lambda x: -math.inf < x < math.inf,
                                 "a finite number")
        self.weight_decay = v.non_negative(op, "weight_decay", weight_decay)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"{op}: nesterov must be a bool, got {nesterov!r}")
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(f"{op}: nesterov=True needs momentum > 0 and dampening == 0, got "
                             f"momentum={momentum!r}, dampening={dampening!r}")
        self.nesterov = bool(nesterov)

    def step(self) -> None:
        """One update of every parameter from its current .grad."""
        for p, state in zip(self.params, self.state):
            with _updatable(p) as data:
                buf = F.sgd_update(data, p.grad, self.lr, self.momentum, self.dampening,
                                   self.weight_decay, self.nesterov,
                                   state.get("momentum_buffer"))
            if buf is not None:
                state["momentum_buffer"] = buf


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (amsgrad off).

    Per step t = 1, 2, …, with g the gradient: ``g += weight_decay * p`` (L2, not AdamW);
    ``m += (1 - beta1) * (g - m)``; ``s = beta2 * s + (1 - beta2) * g**2``;
    ``p -= lr / (1 - beta1**t) * m / (sqrt(s) / sqrt(1 - beta2**t) + eps)``.

    Parameters
    ----------
    params : iterable of Parameter
    lr : default 1e-3, non-negative
    betas : (beta1, beta2), each in [0, 1), default (0.9, 0.999)
    eps : default 1e-8, non-negative
    weight_decay : default 0, non-negative
    """

    _hyperparameters = ("lr", "betas", "eps", "weight_decay")

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0):
        super().__init__(params)
        op = "Adam"
        self.lr = v.non_negative(op, "lr", lr)
        self.betas = v.betas(op, betas)
        self.eps = v.non_negative(op, "eps", eps)
        self.weight_decay = v.non_negative(op, "weight_decay", weight_decay)

    def step(self) -> None:
        """One update of every parameter from its current .grad."""
        for p, state in zip(self.params, self.state):
            if not state:
                state.update(step=0, exp_avg=np.zeros(p.shape, p.dtype),
                             exp_avg_sq=np.zeros(p.shape, p.dtype))
            state["step"] += 1
            with _updatable(p) as data:
                F.adam_update(data, p.grad, state["exp_avg"], state["exp_avg_sq"],
                              state["step"], self.lr, self.betas, self.eps, self.weight_decay)


@contextlib.contextmanager
def _updatable(p: Parameter):
    """p.data, or a C-contiguous copy of it written back after the block: the updates run in
    place on a buffer a kernel can write."""
    data = p.data
    if data.flags.c_contiguous and data.flags.writeable and data.dtype.isnative:
        yield data
        return
    copy = np.array(data, dtype=data.dtype.newbyteorder("="), order="C")
    yield copy
    p.data[...] = copy
