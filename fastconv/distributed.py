"""Data-parallel training of ``fastconv.nn`` models on a dask.distributed cluster.

``DataParallel(client).step(model, loss_fn, optimizer, x, y)`` has the signature and the effect
of ``fastconv.train.train_step`` (one optimiser step on the batch, returning the mean loss and
the number classified right), with the batch's work spread over the cluster. Each step:

1. copies the model as it is now (parameters, buffers and train/eval modes, without gradients
   or saved activations) and scatters it to every worker once (``client.scatter(...,
   broadcast=True)``);
2. splits the batch into one contiguous shard per worker thread (the sizes
   ``numpy.array_split`` gives) and submits one task per shard, the shard's images and labels
   travelling with the task;
3. each task runs forward and backward on its own copy of the model and returns its
   gradients times n_i / N (its share of the batch: the loss is a mean over the batch), with
   its loss, its count of right answers and its buffers;
4. the driver sums the gradients in shard order into each parameter's ``.grad`` and takes one
   optimiser step. The optimiser and its state stay on the driver.

So for a model without batch norm, k steps give the parameters that single-process training on
the same batches gives, to floating-point rounding (the sums run in another order).

Batch norm: each task normalises its shard with the shard's own statistics, as PyTorch's
DistributedDataParallel does without SyncBatchNorm, so the step equals averaging the gradients
of one single-process replica per shard, not training on the whole batch. Running statistics:
each replica updates them from its shard and the driver keeps their average weighted by shard
size. running_mean then equals the single-process value (the weighted mean of the shard means
is the batch mean); running_var becomes the weighted mean of the shards' unbiased variances,
which leaves out the spread between shard means. (DistributedDataParallel keeps rank 0's.)

Dropout: each step draws one seed per shard from fastconv.init's package-wide generator on the
driver (the one ``init.manual_seed`` seeds and ``fastconv train`` checkpoints), and the shard's
masks come from it on the worker. So a run is reproducible, a task that runs again after a
worker was lost draws the same masks, and a resumed run draws the masks the uninterrupted one
would have; they are not the masks single-process training draws.

Failures: a worker lost during a step has its tasks run again on the others by the scheduler
(up to ``distributed.scheduler.allowed-failures`` times); ``retries`` also re-runs tasks that
raise. A step that still fails, or outlasts ``timeout``, raises RuntimeError and is not applied:
the model, its buffers and the optimiser stay as they were before it. It is never skipped.
An exception of the driver's own while it waits (KeyboardInterrupt, a signal handler's) cancels
the step's tasks and passes through as it is.

Needs dask.distributed: ``pip install "fastconv[dask]"``.

Examples
--------
>>> import numpy as np
>>> from fastconv import init, nn, optim
>>> import fastconv.distributed as fdist
>>> _ = init.manual_seed(0)
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
>>> optimizer = optim.SGD(model.parameters(), lr=0.1)
>>> x = np.random.default_rng(0).random((64, 1, 8, 8), np.float32)
>>> y = np.arange(64) % 3
>>> with fdist.connect(workers=2) as client:
...     losses = fdist.fit(model, optimizer, nn.CrossEntropyLoss(), x, y, client, epochs=2,
...                        batch_size=16)
>>> len(losses), bool(losses[1] < losses[0])
(2, True)
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

try:
    from distributed import Client, LocalCluster, wait
except ImportError as exc:
    raise ImportError(
        "fastconv.distributed needs dask.distributed: pip install 'fastconv[dask]' (the extra "
        f"installs dask[array,distributed]), or pip install 'dask[array,distributed]'. ({exc})"
    ) from exc

from . import _validation as v
from . import init, nn
from .dask import _snapshot

__all__ = ["DataParallel", "StepTiming", "fit", "connect"]

# how a step fails on the cluster besides a task raising (a KilledWorker, when a worker was lost
# too often, among them): its timeout, cancelled tasks, lost connections
_CLUSTER_ERRORS = (asyncio.TimeoutError, CancelledError, OSError)


class _Shard(NamedTuple):
    """What a worker returns for its shard of a step."""
    grads: list  # each parameter's gradient times the shard's share of the batch
    buffers: dict  # the model's buffers after the shard's forward pass (batch norm statistics)
    loss: float  # the shard's mean loss times its share
    correct: int
    seconds: float  # time the worker spent on it


def _shard_step(model: nn.Module, loss_fn: nn.Module, x: np.ndarray, y: np.ndarray,
                share: float, seed: int) -> _Shard:
    start = time.perf_counter()
    model = copy.deepcopy(model)  # the scattered model is shared by the worker's tasks
    params = list(model.parameters())
    for p in params:
        p.grad = np.zeros_like(p.data)
    init.manual_seed(seed)  # this worker's dropout masks
    logits = model(x)
    loss = loss_fn(logits, y)
    model.backward(loss_fn.backward())
    names = {name for name, _ in model.named_parameters()}
    buffers = {key: a for key, a in model.state_dict().items() if key not in names}
    return _Shard([p.grad * share for p in params], buffers, float(loss) * share,
                  int((logits.argmax(axis=1) == y).sum()), time.perf_counter() - start)


def _average_buffers(shards: list[_Shard], shares: list[float]) -> dict:
    """Float buffers averaged with the shards' shares as weights; integer ones (batch counts,
    equal in every shard) from the first shard."""
    averaged = {}
    for key, first in shards[0].buffers.items():
        if first.dtype.kind == "f":
            averaged[key] = sum(share * s.buffers[key] for s, share in zip(shards, shares))
        else:
            averaged[key] = first
    return averaged


@dataclass(frozen=True)
class StepTiming:
    """Where the time of a step went: ``seconds`` on the driver from start to the optimiser
    step's end, ``shard_seconds`` spent by each worker on its shard. ``overhead`` (scattering,
    scheduling, serialisation, transfers, summing) is the difference to the slowest shard."""

    seconds: float
    shard_seconds: tuple[float, ...]

    @property
    def overhead(self) -> float:
        return self.seconds - max(self.shard_seconds)


def _examples(op: str, x, y) -> int:
    """The number of examples in (x, y): NumPy arrays (or memory maps) of the same length >= 1."""
    for name, a in (("x", x), ("y", y)):
        if not isinstance(a, np.ndarray) or a.ndim < 1:
            v.fail(op, f"{name} must be a numpy.ndarray with a batch axis, got "
                       f"{getattr(a, 'shape', type(a).__name__)}", TypeError)
    if len(x) == 0 or len(y) != len(x):
        v.fail(op, f"x and y must hold the same number (>= 1) of examples, got {len(x)} and "
                   f"{len(y)}")
    return len(x)


def _non_negative_int(op: str, name: str, value) -> int:
    if not v._is_int(value) or value < 0:
        v.fail(op, f"{name} must be an int >= 0, got {value!r}",
               ValueError if v._is_int(value) else TypeError)
    return int(value)


class DataParallel:
    """Data-parallel training steps on a dask.distributed cluster; see the module's docstring.

    Parameters
    ----------
    client : distributed.Client of the cluster to use
    shards : tasks per step, default the number of worker threads in the cluster now
    retries : times to re-run a shard's task that raised, default 0 (a lost worker's tasks are
        re-run regardless)
    timeout : seconds to wait for a step's tasks before failing the step, default None (wait;
        a cluster may be scaling up)

    Attributes
    ----------
    steps : steps applied so far
    last_timing : StepTiming of the latest step, or None
    """

    def __init__(self, client: Client, shards: int | None = None, retries: int = 0,
                 timeout: float | None = None):
        op = "DataParallel"
        if not isinstance(client, Client):
            v.fail(op, f"client must be a distributed.Client, got {type(client).__name__}",
                   TypeError)
        if shards is None:
            shards = sum(client.nthreads().values())
            if shards == 0:
                v.fail(op, "the cluster has no workers yet: call client.wait_for_workers(n) "
                           "first or pass shards")
        self.client = client
        self.shards = v.positive_int(op, "shards", shards)
        self.retries = _non_negative_int(op, "retries", retries)
        self.timeout = None if timeout is None else v.real(
            op, "timeout", timeout, np.finfo(np.float64).tiny, np.inf,
            "None or a positive number of seconds")
        self.steps = 0
        self.last_timing: StepTiming | None = None

    def step(self, model: nn.Module, loss_fn: nn.Module, optimizer, x: np.ndarray,
             y: np.ndarray) -> tuple[float, int]:
        """One optimiser step on the batch (x, y), as ``fastconv.train.train_step``.

        x (N, ...) images and y (N,) labels: NumPy arrays (memory maps too), N >= 1. `loss_fn`
        must compute the mean loss over its batch, as ``nn.CrossEntropyLoss`` does.
        Returns (mean loss over the batch, number of rows whose largest logit is the label).
        """
        op = "DataParallel.step"
        start = time.perf_counter()
        for name, module in (("model", model), ("loss_fn", loss_fn)):
            if not isinstance(module, nn.Module):
                v.fail(op, f"{name} must be a fastconv.nn.Module, got {type(module).__name__}",
                       TypeError)
        n = _examples(op, x, y)
        bounds = [(int(part[0]), int(part[-1]) + 1)
                  for part in np.array_split(np.arange(n), min(self.shards, n))]
        shares = [(stop - first) / n for first, stop in bounds]
        seeds = init.default_generator().integers(2**63 - 1, size=len(bounds))
        loss_copy = _snapshot(loss_fn)
        futures = []
        try:
            shared_model = self.client.scatter(_snapshot(model), broadcast=True, hash=False)
            futures = [self.client.submit(_shard_step, shared_model, loss_copy, x[first:stop],
                                          y[first:stop], share, int(seed), pure=False,
                                          retries=self.retries)
                       for (first, stop), share, seed in zip(bounds, shares, seeds)]
            with self.client.as_current():  # wait() asks for the current client
                wait(futures, timeout=self.timeout)
            shards = self.client.gather(futures)
        except BaseException as exc:
            failed = any(f.status == "error" for f in futures)
            with contextlib.suppress(Exception):  # best effort: the cluster may be gone
                self.client.cancel(futures)
            if not (failed or isinstance(exc, _CLUSTER_ERRORS)):
                raise  # not the cluster's: e.g. a signal handler's, raised while waiting
            raise RuntimeError(
                f"{op}: step {self.steps + 1} failed on the cluster and was not applied (the "
                f"model, its buffers and the optimiser are as they were): "
                f"{type(exc).__name__}: {exc}") from exc

        buffers = _average_buffers(shards, shares)
        if buffers:
            model.load_state_dict({**model.state_dict(), **buffers})
        optimizer.zero_grad()
        for j, p in enumerate(model.parameters()):
            for shard in shards:
                p.grad += shard.grads[j]
        optimizer.step()
        self.steps += 1
        self.last_timing = StepTiming(time.perf_counter() - start,
                                      tuple(s.seconds for s in shards))
        return sum(s.loss for s in shards), sum(s.correct for s in shards)


def fit(model: nn.Module, optimizer, loss_fn: nn.Module, x: np.ndarray, y: np.ndarray,
        client: Client, epochs: int = 1, batch_size: int = 32, seed: int = 0,
        checkpoint=None, log=None, **options) -> list[float]:
    """Train `model` data-parallel on the cluster: `epochs` passes over (x, y) in shuffled
    batches, one ``DataParallel`` step each.

    Parameters
    ----------
    model, optimizer, loss_fn : as for ``DataParallel.step``
    x, y : (N, ...) images and (N,) labels, NumPy arrays or memory maps
    client : distributed.Client
    epochs, batch_size : default 1 and 32
    seed : shuffles the batches (``numpy.random.default_rng(seed).permutation`` per epoch);
        ``fastconv.init.manual_seed`` seeds the dropout masks
    checkpoint : path to ``model.save`` to after every epoch, or None; ``{epoch}`` in it is
        replaced by the epoch's number (1, 2, …) to keep every epoch's
    log : called with a line per epoch, e.g. ``print``; default None
    **options : ``DataParallel``'s shards, retries, timeout

    Returns
    -------
    The mean training loss of each epoch.
    """
    op = "fit"
    epochs = v.positive_int(op, "epochs", epochs)
    batch_size = v.positive_int(op, "batch_size", batch_size)
    _examples(op, x, y)
    parallel = DataParallel(client, **options)
    rng = np.random.default_rng(seed)
    losses = []
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x))
        total = 0.0
        for first in range(0, len(order), batch_size):
            batch = order[first:first + batch_size]
            loss, _ = parallel.step(model, loss_fn, optimizer, x[batch], y[batch])
            total += loss * len(batch)
        losses.append(total / len(order))
        saved = ""
        if checkpoint is not None:
            path = str(checkpoint).format(epoch=epoch)
            model.save(path)
            saved = f", saved {path}"
        if log is not None:
            log(f"epoch {epoch}/{epochs}: train loss {losses[-1]:.4f}{saved}")
    return losses


@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None,
            threads_per_worker: int = 1):
    """A distributed.Client for ``with``: on the cluster whose scheduler is at `scheduler`
    (e.g. ``"tcp://10.0.0.1:8786"``), or on a LocalCluster of `workers` processes of
    `threads_per_worker` threads started here and shut down on leaving. Give exactly one of
    the two. Dask starts workers with ``OMP_NUM_THREADS=1`` unless this process's environment
    sets it, so fastconv runs one kernel thread per task: keep workers x threads_per_worker
    at most the machine's cores."""
    op = "connect"
    if (scheduler is None) == (workers is None):
        v.fail(op, f"give exactly one of scheduler and workers, got scheduler={scheduler!r}, "
                   f"workers={workers!r}")
    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    workers = v.positive_int(op, "workers", workers)
    threads_per_worker = v.positive_int(op, "threads_per_worker", threads_per_worker)
    # workers on this machine are always reachable: fetch results from them directly rather
    # than through the scheduler, a few milliseconds less per step
    with LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                      processes=True, dashboard_address=None) as cluster, \
            Client(cluster, direct_to_workers=True) as client:
        yield client
