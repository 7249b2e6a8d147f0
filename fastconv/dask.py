"""fastconv on Dask arrays: the forward ops and model inference, lazily, one task per batch chunk.

Each op takes a 4-D (N, C, H, W) ``dask.array.Array`` chunked along the batch axis only (one
chunk along C, H and W) and returns a lazy dask array whose shape, chunks and dtype are known
before anything runs: the ``fastconv.functional`` op of the same name applied to every chunk.
Arguments are checked when the op is called, by that functional op itself run on an empty batch
of x's image shape, so a bad argument raises the usual ValueError or TypeError while the graph
is built, not later on a worker.

``predict(model, x)`` runs a ``fastconv.nn`` model in evaluation mode over every chunk, and
``from_npy(path)`` reads a .npy file lazily on the workers.

The model and the NumPy arrays among an op's arguments (weight, bias) travel once to each
worker, not once per chunk: with a ``dask.distributed`` client active they are scattered to
every worker when the op or predict is called (so the result must be computed on that client),
otherwise each is one key of the graph that every chunk's task refers to.

Kernel threads: a worker runs ``threads_per_worker`` tasks at once and each kernel call uses up
to ``fastconv.get_num_threads()`` OpenMP threads, so keep their product at most the worker's
cores. Workers started by a dask Nanny (``LocalCluster(processes=True)``, ``dask worker``) get
``OMP_NUM_THREADS=1`` unless the environment they start from sets it (the
``distributed.nanny.pre-spawn-environ`` setting).

Needs Dask: ``pip install "fastconv[dask]"`` (or ``pip install "dask[array,distributed]"``);
``import fastconv`` alone never imports it.

Examples
--------
>>> import numpy as np, dask.array as da
>>> import fastconv.dask as fd
>>> x = da.ones((10, 3, 8, 8), dtype=np.float32, chunks=(4, 3, 8, 8))
>>> w = np.ones((5, 3, 3, 3), np.float32)
>>> y = fd.max_pool2d(fd.relu(fd.conv2d(x, w, padding=1)), 2)
>>> y.shape, y.chunks[0], y.dtype
((10, 5, 4, 4), (4, 4, 2), dtype('float32'))
>>> float(y[0, 0, 0, 0].compute())
27.0
"""

from __future__ import annotations

import copy
import inspect
import math
import operator
import os
from collections.abc import Callable

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:
    raise ImportError(
        "fastconv.dask needs Dask: pip install 'fastconv[dask]' (the extra installs "
        f"dask[array,distributed]), or pip install 'dask[array,distributed]'. ({exc})"
    ) from exc

from . import _validation as v
from . import functional as F
from . import nn

__all__ = ["conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "lp_pool2d",
           "adaptive_avg_pool2d", "adaptive_max_pool2d", "relu", "predict", "from_npy"]

_IMAGE_AXES = "CHW"


# ---- checking the input and building the graph ---------------------------------------------------

def _batch_chunked(op: str, x) -> da.Array:
    """x if it is a 4-D dask array chunked along the batch axis only; else TypeError/ValueError."""
    if not isinstance(x, da.Array):
        v.fail(op, f"x must be a dask.array.Array, got {type(x).__name__} (use "
                   "dask.array.from_array, or fastconv.functional for NumPy arrays)", TypeError)
    if x.ndim != 4:
        v.fail(op, f"x must be a 4-D (N, C, H, W) dask array, got shape {x.shape}")
    if any(math.isnan(s) for s in x.shape[1:]):
        v.fail(op, f"x's C, H and W must be known, got shape {x.shape} (call "
                   "x.compute_chunk_sizes() first)")
    split = [axis for axis, chunks in zip(_IMAGE_AXES, x.chunks[1:]) if len(chunks) > 1]
    if split:
        v.fail(op, f"x must be chunked along the batch axis only (one chunk along C, H and W), "
                   f"but it is split along {', '.join(split)}: chunks {x.chunks[1:]}; "
                   "use x.rechunk({1: -1, 2: -1, 3: -1})")
    return x


def _empty_batch(x: da.Array) -> np.ndarray:
    """No images of x's shape and dtype: what the functional ops are validated on."""
    return np.empty((0,) + x.shape[1:], x.dtype)


def _active_client():
    """The dask.distributed client that compute() would use now, or None."""
    try:
        from distributed import default_client
        return default_client()
    except (ImportError, ValueError):
        return None


def _shared(obj):
    """`obj` as one dependency that every chunk's task refers to, so that it reaches each worker
    once: scattered to every worker of the active dask.distributed client, else a single key
    of the graph."""
    client = _active_client()
    if client is not None:
        return client.scatter(obj, broadcast=True, hash=False)
    return dask.delayed(obj, pure=True)


def _share_arrays(values):
    return [_shared(a) if isinstance(a, np.ndarray) else a for a in values]


def _apply(blocks, func, *args, **kwargs):
    # blockwise hands over the blocks along the contracted C, H, W axes as nested lists, one
    # block in each (x is whole along them): unwrap rather than concatenate, which would copy
    while isinstance(blocks, list):
        (blocks,) = blocks
    return func(blocks, *args, **kwargs)


def _map_batches(token: str, func: Callable, x: da.Array, meta: np.ndarray, *args,
                 **kwargs) -> da.Array:
    """func(chunk, *args, **kwargs) on every batch chunk of x, lazily; `meta` is func's output
    for an empty batch, which gives the output's per-image shape and dtype."""
    out_axes = tuple(f"out{i}" for i in range(1, meta.ndim))
    return da.blockwise(_apply, ("n",) + out_axes, x, ("n",) + tuple(_IMAGE_AXES), func, None,
                        *(item for a in args for item in (a, None)),
                        new_axes=dict(zip(out_axes, meta.shape[1:])), concatenate=False,
                        token=token, dtype=meta.dtype, meta=meta, **kwargs)


def _batchwise(func: Callable) -> Callable:
    """The dask version of the fastconv.functional op `func` (which takes x first)."""
    op = func.__name__

    def batchwise(x, *args, **kwargs):
        x = _batch_chunked(op, x)
        meta = func(_empty_batch(x), *args, **kwargs)  # validates every argument
        args = _share_arrays(args)
        kwargs = dict(zip(kwargs, _share_arrays(kwargs.values())))
        if not isinstance(meta, tuple):
            return _map_batches(op, func, x, meta, *args, **kwargs)
        # several outputs (max_pool2d's indices): one task per chunk makes them all, and each
        # output takes its part; the packed array is never computed itself
        packed = _map_batches(op, func, x, np.empty(meta[0].shape, object), *args, **kwargs)
        chunks = (x.chunks[0],) + tuple((n,) for n in meta[0].shape[1:])
        return tuple(packed.map_blocks(operator.getitem, i, chunks=chunks, dtype=m.dtype, meta=m,
                                       token=op) for i, m in enumerate(meta))

    batchwise.__name__ = batchwise.__qualname__ = op
    signature = inspect.signature(func)  # what help() shows: func's, x and the result dask's
    x_param, *params = signature.parameters.values()
    batchwise.__signature__ = signature.replace(
        parameters=[x_param.replace(annotation="da.Array"), *params], return_annotation="da.Array")
    batchwise.__doc__ = f"""``fastconv.functional.{op}`` on a dask array, one task per batch chunk.

    x : (N, C, H, W) dask array chunked along N only (else ValueError); the other arguments,
    their defaults, the semantics and the errors are ``fastconv.functional.{op}``'s, checked
    now (an error message shows x's shape with a batch of 0). NumPy array arguments are sent
    once to each worker. Returns a lazy dask array (a tuple of them where the functional op
    returns a tuple) with x's batch chunks and the op's per-image shape and dtype.
    """
    return batchwise


# The ops: one line each. Any fastconv.functional op that takes an NCHW batch first and treats
# its images independently fits.
conv2d = _batchwise(F.conv2d)
conv_transpose2d = _batchwise(F.conv_transpose2d)
max_pool2d = _batchwise(F.max_pool2d)
avg_pool2d = _batchwise(F.avg_pool2d)
lp_pool2d = _batchwise(F.lp_pool2d)
adaptive_avg_pool2d = _batchwise(F.adaptive_avg_pool2d)
adaptive_max_pool2d = _batchwise(F.adaptive_max_pool2d)
relu = _batchwise(F.relu)


# ---- models --------------------------------------------------------------------------------------

def _snapshot(model: nn.Module) -> nn.Module:
    """A deep copy of `model` to send to workers, without what only training on the driver
    needs: the activations each layer saved for backward and the parameters' gradients (None
    in the copy). Pickling it costs the parameters and buffers once."""
    memo = {}
    for m in model.modules():
        if m._saved is not None:
            memo[id(m._saved)] = None
    for p in model.parameters():
        memo[id(p.grad)] = None
    return copy.deepcopy(model, memo)


def _forget_activations(model: nn.Module) -> None:
    for m in model.modules():
        m._saved = None


def _predict_block(block: np.ndarray, model: nn.Module, batch_size: int | None) -> np.ndarray:
    step = batch_size or max(len(block), 1)
    parts = [model(block[i:i + step]) for i in range(0, len(block), step)] or [model(block)]
    _forget_activations(model)  # a worker keeps the model between tasks, not its activations
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def predict(model: nn.Module, x, batch_size: int | None = None) -> da.Array:
    """A ``fastconv.nn`` model in evaluation mode applied to every image of a dask array.

    Parameters
    ----------
    model : fastconv.nn.Module taking (n, C, H, W) batches, e.g. a trained ``nn.Sequential``.
        A copy taken now, in evaluation mode, is what runs: `model` itself is left as it is
        (its mode too), and changing it later does not change the result.
    x : (N, C, H, W) dask array of the model's dtype, chunked along N only (ValueError
        otherwise), e.g. ``from_npy(path)``, ``dask.array.from_zarr(store)`` or
        ``dask.array.from_array(np.load(path, mmap_mode='r'))`` (that last one, on a
        distributed cluster, sends the whole file to the scheduler: prefer ``from_npy``).
    batch_size : run each chunk through the model this many images at a time, to bound the
        activations' memory; default None: the whole chunk at once. Results do not depend on it.

    Returns
    -------
    Lazy dask array (N, *out) of the model's output dtype, with x's batch chunks, e.g.
    (N, classes) logits. The model is run now on an empty batch to check x and learn the
    output's shape, so a mismatch raises here. With a dask.distributed client active the model
    is scattered to every worker now and the result must be computed on that client; without
    one it is a single key of the graph.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from fastconv import nn
    >>> import fastconv.dask as fd
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    >>> x = da.zeros((1000, 1, 8, 8), dtype=np.float32, chunks=(256, 1, 8, 8))
    >>> logits = fd.predict(model, x, batch_size=64)
    >>> logits.shape, logits.chunks
    ((1000, 10), ((256, 256, 256, 232), (10,)))
    >>> bool(np.allclose(logits[:3].compute(), model.eval()(np.zeros((3, 1, 8, 8), np.float32))))
    True
    """
    op = "predict"
    if not isinstance(model, nn.Module):
        v.fail(op, f"model must be a fastconv.nn.Module, got {type(model).__name__}", TypeError)
    x = _batch_chunked(op, x)
    if batch_size is not None:
        batch_size = v.positive_int(op, "batch_size", batch_size)
    frozen = _snapshot(model).eval()
    meta = frozen(_empty_batch(x))
    _forget_activations(frozen)
    return _map_batches(op, _predict_block, x, meta, _shared(frozen), batch_size)


# ---- reading from disk ---------------------------------------------------------------------------

class _NpyFile:
    """A .npy file as an array-like that reads only the rows it is indexed with, from a memory
    map opened on the worker: what a dask graph can hold instead of the data."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        header = np.load(self.path, mmap_mode="r")
        self.shape, self.dtype, self.ndim = header.shape, header.dtype, header.ndim

    def __getitem__(self, index) -> np.ndarray:
        return np.array(np.load(self.path, mmap_mode="r")[index])  # a copy: unmap the file

    def __dask_tokenize__(self):
        stat = os.stat(self.path)
        return (self.path, stat.st_size, stat.st_mtime_ns)


def from_npy(path, chunks: int = 256) -> da.Array:
    """A .npy file as a dask array chunked along its first axis, read lazily on the workers.

    Each chunk's task memory-maps the file where it runs and copies its rows, so the graph holds
    only the path: on a cluster, every worker must see the file at that path (a shared
    filesystem). ``dask.array.from_array(np.load(path, mmap_mode='r'))`` instead puts the
    memory map itself in the graph, and a distributed client then sends the whole file.

    Parameters
    ----------
    path : a .npy file (not a pickled object array)
    chunks : rows (images) per chunk, default 256; the other axes are whole

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> import fastconv.dask as fd
    >>> path = os.path.join(tempfile.mkdtemp(), "images.npy")
    >>> np.save(path, np.arange(5 * 4, dtype=np.float32).reshape(5, 1, 2, 2))
    >>> x = fd.from_npy(path, chunks=2)
    >>> x.chunks, float(x[4].sum().compute())
    (((2, 2, 1), (1,), (2,), (2,)), 70.0)
    """
    op = "from_npy"
    chunks = v.positive_int(op, "chunks", chunks)
    source = _NpyFile(path)
    return da.from_array(source, chunks=(chunks,) + (-1,) * (source.ndim - 1), fancy=False,
                         meta=np.empty((0,) * source.ndim, source.dtype))
