"""Optimisers with PyTorch's exact update rules: SGD (momentum, dampening, Nesterov, weight
decay) and Adam (bias-corrected, L2 weight decay added to the gradient).

An optimiser takes ``model.parameters()`` and updates each Parameter's ``.data`` in place from
its ``.grad``, in the parameter's dtype. Hyper-parameters are plain attributes (``opt.lr = …``
changes the learning rate for the next step).

A step is one kernel call per dtype, not one per parameter: at its first step the optimiser
moves the parameters' values, gradients and its own state into one flat buffer each (per dtype),
and each Parameter's ``.data`` and ``.grad`` become views of them, with the same values. An array
replaced afterwards (``Module.to``, ``p.data = ...``, ``load_state_dict``) is taken in again at
the next step; an array kept from before the first step is no longer the parameter's.

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
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError(f"{op}: params lists a Parameter more than once")
        self.state = [{} for _ in self.params]
        self._flat: list[_Flat] = []  # set by _groups

    _hyperparameters: tuple[str, ...] = ("lr",)

    def zero_grad(self) -> None:
        """Set every parameter's gradient to 0."""
        if self._flat and all(group.intact(self) for group in self._flat):
            for group in self._flat:
                group.arrays["grad"].fill(0)
            return
        for p in self.params:
            p.grad.fill(0)

    def step(self) -> None:
        raise NotImplementedError

    # what the parameters of one flat group share besides their dtype, and the state buffers
    # each of them has (made as zeros when its state has none yet)
    def _group_key(self, state: dict):
        return ()

    _buffers: tuple[str, ...] = ()

    def _groups(self) -> list[_Flat]:
        """The parameters in groups that one kernel call updates, each holding flat arrays of
        its parameters' data, gradients and state buffers, of which each parameter's arrays
        are views; built again when any of those arrays was replaced since."""
        if self._flat and all(group.intact(self) for group in self._flat):
            return self._flat
        members: dict = {}
        for i, (p, state) in enumerate(zip(self.params, self.state)):
            members.setdefault((p.dtype, self._group_key(state)), []).append(i)
        self._flat = [_Flat(self, indices, self._buffers) for indices in members.values()]
        return self._flat

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

    def _group_key(self, state: dict):
        return "momentum_buffer" in state  # the first step's buffer is the gradient itself

    def step(self) -> None:
        """One update of every parameter from its current .grad."""
        if not self.momentum:  # no buffer, and no momentum kept
            for group in self._groups():
                F.sgd_update(group.arrays["data"], group.arrays["grad"], self.lr, 0.0,
                             self.dampening, self.weight_decay, self.nesterov)
            return
        for group in self._groups():
            first = "momentum_buffer" not in group.arrays
            buf = F.sgd_update(group.arrays["data"], group.arrays["grad"], self.lr,
                               self.momentum, self.dampening, self.weight_decay, self.nesterov,
                               None if first else group.arrays["momentum_buffer"])
            if first:
                group.adopt(self, "momentum_buffer", buf)


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

    _buffers = ("exp_avg", "exp_avg_sq")

    def _group_key(self, state: dict):
        return state.get("step", 0)  # the bias corrections depend on it

    def step(self) -> None:
        """One update of every parameter from its current .grad."""
        for group in self._groups():
            step = self.state[group.indices[0]].get("step", 0) + 1
            for i in group.indices:
                self.state[i]["step"] = step
            a = group.arrays
            F.adam_update(a["data"], a["grad"], a["exp_avg"], a["exp_avg_sq"], step, self.lr,
                          self.betas, self.eps, self.weight_decay)


class _Flat:
    """Parameters of one dtype (and one `Optimizer._group_key`) in flat buffers: ``arrays``
    maps "data", "grad" and each state buffer's name to a 1-D array holding every member's,
    in order; each member's ``.data``, ``.grad`` and state entries are views of them."""

    __slots__ = ("indices", "arrays", "views")

    def __init__(self, opt: Optimizer, indices: list[int], buffers: tuple[str, ...]):
        self.indices = indices
        self.arrays, self.views = {}, {}
        params = [opt.params[i] for i in indices]
        self._allocate("data", [p.data for p in params])
        self._allocate("grad", [p.grad for p in params])
        for p, data, grad in zip(params, self.views["data"], self.views["grad"]):
            p.data, p.grad = data, grad
        states = [opt.state[i] for i in indices]
        names = buffers + tuple(name for name in ("momentum_buffer",) if name in states[0])
        for name in names:
            self._allocate(name, [s.get(name, np.zeros(p.shape, p.dtype))
                                  for s, p in zip(states, params)])
            for state, view in zip(states, self.views[name]):
                state[name] = view

    def _allocate(self, name: str, arrays: list[np.ndarray]) -> None:
        flat = np.empty(sum(a.size for a in arrays), arrays[0].dtype.newbyteorder("="))
        views, start = [], 0
        for a in arrays:
            view = flat[start:start + a.size].reshape(a.shape)
            view[...] = a
            views.append(view)
            start += a.size
        self.arrays[name], self.views[name] = flat, views

    def adopt(self, opt: Optimizer, name: str, flat: np.ndarray) -> None:
        """Take `flat` (the members' state `name`, in order) as a buffer of the group."""
        views, start = [], 0
        for i in self.indices:
            shape = opt.params[i].shape
            view = flat[start:start + math.prod(shape)].reshape(shape)
            opt.state[i][name] = view
            views.append(view)
            start += view.size
        self.arrays[name], self.views[name] = flat, views

    def intact(self, opt: Optimizer) -> bool:
        """Whether every member's arrays are still the group's views."""
        views = self.views
        for k, i in enumerate(self.indices):
            p, state = opt.params[i], opt.state[i]
            if p.data is not views["data"][k] or p.grad is not views["grad"][k]:
                return False
            for name, buffer_views in views.items():
                if name not in ("data", "grad") and state.get(name) is not buffer_views[k]:
                    return False
        return True
