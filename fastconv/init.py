"""Weight initialisation, as ``torch.nn.init``: He (Kaiming) and Xavier (Glorot) schemes.

Each function fills an array IN PLACE and returns it; it takes a float32/float64 numpy.ndarray
or a ``fastconv.nn.Parameter`` (whose ``.data`` it fills). Random values come from
``generator`` when given, else from the package-wide generator, which ``manual_seed(seed)``
reseeds (it also drives ``fastconv.functional.dropout``), so one seed reproduces a whole run.

Fans follow PyTorch: for a weight of shape (out, in, *kernel), ``fan_in = in * prod(kernel)``
and ``fan_out = out * prod(kernel)``.

Examples
--------
>>> import numpy as np, fastconv.init as init
>>> _ = init.manual_seed(0)
>>> w = init.kaiming_uniform_(np.empty((16, 8, 3, 3), np.float32))
>>> bool(np.abs(w).max() <= np.sqrt(6 / (8 * 9)))
True
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _validation as v

__all__ = [
    "manual_seed", "default_generator", "calculate_gain",
    "uniform_", "normal_", "zeros_", "ones_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
]

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the package-wide generator (initialisation and dropout) and return it."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator() -> np.random.Generator:
    """The package-wide generator that functions use when given none."""
    return _generator


def _rng(op: str, generator) -> np.random.Generator:
    if generator is None:
        return _generator
    if not isinstance(generator, np.random.Generator):
        v.fail(op, "generator must be a numpy.random.Generator or None, "
                   f"got {type(generator).__name__}", TypeError)
    return generator


def _target(op: str, array) -> np.ndarray:
    """The writeable float array to fill: `array` itself, or a Parameter's .data."""
    if not isinstance(array, np.ndarray) and isinstance(getattr(array, "data", None), np.ndarray):
        array = array.data
    checked = v.float_array(op, "tensor", array)
    if checked is not array or not array.flags.writeable:
        v.fail(op, "tensor must be writeable and in native byte order (it is filled in place)")
    return array


def _fill(op, array, generator, draw):
    """Fill `array` (ndarray or Parameter) in place with draw(rng, shape); return `array`."""
    target = _target(op, array)
    target[...] = draw(_rng(op, generator), target.shape)
    return array


def _fans(op: str, array) -> tuple[int, int]:
    shape = _target(op, array).shape
    if len(shape) < 2:
        v.fail(op, f"fan in and fan out need an array of at least 2 dims, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity, as ``torch.nn.init.calculate_gain``.

    linear, conv*, sigmoid: 1; tanh: 5/3; relu: sqrt(2); leaky_relu (slope `param`, default
    0.01): sqrt(2 / (1 + slope**2)); selu: 3/4.

    Examples
    --------
    >>> import fastconv.init as init
    >>> init.calculate_gain("tanh")
    1.6666666666666667
    """
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "selu":
        return 3.0 / 4
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, numbers.Real):
            v.fail("calculate_gain", f"param must be a number (the negative slope), got {param!r}",
                   TypeError)
        return math.sqrt(2.0 / (1 + slope**2))
    v.fail("calculate_gain", f"unsupported nonlinearity {nonlinearity!r}")


def uniform_(tensor, a: float = 0.0, b: float = 1.0, generator=None):
    """Fill with U(a, b)."""
    return _fill("uniform_", tensor, generator, lambda rng, shape: rng.uniform(a, b, shape))


def normal_(tensor, mean: float = 0.0, std: float = 1.0, generator=None):
    """Fill with N(mean, std**2)."""
    return _fill("normal_", tensor, generator, lambda rng, shape: rng.normal(mean, std, shape))


def zeros_(tensor):
    """Fill with 0."""
    _target("zeros_", tensor)[...] = 0
    return tensor


def ones_(tensor):
    """Fill with 1."""
    _target("ones_", tensor)[...] = 1
    return tensor


def xavier_uniform_(tensor, gain: float = 1.0, generator=None):
    """Glorot uniform: U(-b, b) with ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = _fans("xavier_uniform_", tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain: float = 1.0, generator=None):
    """Glorot normal: N(0, std**2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = _fans("xavier_normal_", tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def _kaiming_std(op, tensor, a, mode, nonlinearity) -> float:
    if mode not in ("fan_in", "fan_out"):
        v.fail(op, f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(op, tensor)
    return calculate_gain(nonlinearity, a) / math.sqrt(fan_in if mode == "fan_in" else fan_out)


def kaiming_uniform_(tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", generator=None):
    """He uniform: U(-b, b) with ``b = gain * sqrt(3 / fan)``.

    `a` is the negative slope of a leaky_relu (0: relu's gain sqrt(2)); mode picks fan_in
    (preserves the forward pass's variance, the default) or fan_out (the backward pass's).
    PyTorch's default Conv2d/Linear weights are ``kaiming_uniform_(w, a=sqrt(5))``.
    """
    std = _kaiming_std("kaiming_uniform_", tensor, a, mode, nonlinearity)
    return uniform_(tensor, -math.sqrt(3.0) * std, math.sqrt(3.0) * std, generator)


def kaiming_normal_(tensor, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", generator=None):
    """He normal: N(0, std**2) with ``std = gain / sqrt(fan)``; arguments as kaiming_uniform_."""
    std = _kaiming_std("kaiming_normal_", tensor, a, mode, nonlinearity)
    return normal_(tensor, 0.0, std, generator)
