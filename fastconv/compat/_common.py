"""What the adapters share: NumPy's type promotion (the one place fastconv promotes) and the
client function's name in front of fastconv's error messages."""

from __future__ import annotations

import contextlib

import numpy as np


def promoted(*arrays):
    """`arrays` converted to NumPy's result type of the ndarrays among them (float64 where that
    is an integer or bool type). Anything else fastconv cannot take (a list, a complex or string
    array) is returned as it is, for fastconv to reject with the argument's name; so is None."""
    given = [a for a in arrays if isinstance(a, np.ndarray)]
    if not given or any(a.dtype.kind not in "biuf" for a in given):
        return arrays
    dtype = np.result_type(*given)
    if dtype.kind != "f":
        dtype = np.dtype(np.float64)
    return tuple(a.astype(dtype, copy=False) if isinstance(a, np.ndarray) else a for a in arrays)


@contextlib.contextmanager
def named(op: str):
    """Put the client function's name `op` in front of fastconv's TypeError/ValueError messages
    (unless the message already starts with it)."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        if type(exc) not in (TypeError, ValueError) or str(exc).startswith(f"{op}:"):
            raise
        raise type(exc)(f"{op}: {exc}") from exc
