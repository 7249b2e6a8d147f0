"""What the adapters share: NumPy's type promotion (the one place fastconv promotes), the
client function's name in front of fastconv's error messages, and the installed() context."""

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


@contextlib.contextmanager
def installation(lock, install, uninstall, is_installed):
    """`install()` for the duration of a with block and, on leaving it (by an exception too),
    `uninstall()` unless it was installed on entering; `lock` (reentrant, held by install())
    makes that check and the install one step."""
    with lock:
        was_installed = is_installed()
        install()
    try:
        yield
    finally:
        if not was_installed:
            uninstall()
