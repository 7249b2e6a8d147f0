"""Scaling of fastconv on Dask: ``python -m fastconv.dask_bench``.

Starts two local clusters of worker processes with one thread each (``LocalCluster(n_workers=k,
threads_per_worker=1, processes=True)``, fastconv on one kernel thread per worker), one with 1
worker and one with 2, and times on both, interleaved and repeated:

- ``fastconv.dask.predict`` of the ``fastconv train`` ConvNet over images held by the workers
  (throughput, images/s);
- a ``fastconv.distributed.DataParallel`` training step of that ConvNet at batch 256, beside the
  same step in this process on one thread; the overhead per step (the step's time on the driver
  minus its slowest shard's time on a worker) and its parts: a task's round trip through the
  scheduler, scattering the model to every worker, the bytes that travel.

Reports medians and fastest runs, each speed-up from both and run by run (interleaved runs meet
the same load), and the load average before and after: on a shared machine other processes slow
some runs, so read the spread. Options: ``--images``, ``--chunk``, ``--batch``, ``--steps``,
``--repeat``.
"""

from __future__ import annotations

import argparse
import copy
import os
import pickle
import statistics
import time

import dask.array as da
import numpy as np
from distributed import wait

import fastconv
from fastconv import nn, optim, train
from fastconv.dask import _snapshot, predict
from fastconv.distributed import DataParallel, connect

WORKER_COUNTS = (1, 2)


def _median(values) -> float:
    return statistics.median(values)


def _speed_ups(slow: list[float], fast: list[float]) -> str:
    """The speed-up of `fast` over `slow` (times of interleaved runs), three ways: a shared
    machine's load can slow any single run."""
    rounds = sorted(a / b for a, b in zip(slow, fast))
    return (f"{_median(slow) / _median(fast):.2f}x from the medians, {min(slow) / min(fast):.2f}x "
            f"from the fastest runs; run by run {' '.join(f'{r:.2f}' for r in rounds)}")


def _noop():
    return None


def time_predict(client, model: nn.Module, x) -> float:
    """Seconds to compute ``predict(model, x)`` on `client` (x already on the workers)."""
    start = time.perf_counter()
    with client.as_current():
        client.compute(predict(model, x)).result()
    return time.perf_counter() - start


def time_local_step(model, optimizer, x, y) -> float:
    """Seconds for ``fastconv.train.train_step`` in this process on one kernel thread."""
    with fastconv.num_threads(1):
        start = time.perf_counter()
        train.train_step(model, nn.CrossEntropyLoss(), optimizer, x, y)
        return time.perf_counter() - start


def overhead_parts(client, model: nn.Module, repeat: int = 20) -> dict[str, float]:
    """Median seconds of a no-op task's round trip and of scattering `model` to every worker,
    with the bytes of the model as sent and of one shard's gradients coming back."""
    round_trips, scatters = [], []
    snapshot = _snapshot(model)
    for _ in range(repeat):
        start = time.perf_counter()
        client.submit(_noop, pure=False).result()
        round_trips.append(time.perf_counter() - start)
        start = time.perf_counter()
        client.scatter(snapshot, broadcast=True, hash=False).release()
        scatters.append(time.perf_counter() - start)
    return {"round_trip": _median(round_trips), "scatter": _median(scatters),
            "model_bytes": len(pickle.dumps(snapshot)),
            "gradient_bytes": sum(p.data.nbytes for p in model.parameters())}


def run(clients: dict, images: int = 4096, chunk: int = 256, batch: int = 256, steps: int = 3,
        repeat: int = 9, log=print) -> dict:
    """Time predict and training steps on each client of `clients` ({workers: Client}),
    interleaved, `repeat` rounds; log the report and return its figures."""
    rng = np.random.default_rng(0)
    fastconv.init.manual_seed(0)
    model = train.convnet()
    xb = rng.random((batch, *train.IMAGE_SHAPE), np.float32)
    yb = rng.integers(0, train.N_CLASSES, batch)
    held = {}  # the images to predict, made and kept on the workers
    for k, client in clients.items():
        with client.as_current():
            held[k] = client.persist(da.random.default_rng(0).random(
                (images, *train.IMAGE_SHAPE), dtype=np.float32,
                chunks=(chunk, *train.IMAGE_SHAPE)))
            wait(held[k])

    # every variant trains its own copy; SGD keeps the work per step constant
    variants = ["local", *clients]
    models = {name: copy.deepcopy(model) for name in variants}
    optimizers = {name: optim.SGD(models[name].parameters(), lr=1e-3) for name in variants}
    parallel = {k: DataParallel(client) for k, client in clients.items()}

    def step(name):
        """(seconds, overhead, slowest shard's seconds on its worker) of one step."""
        if name == "local":
            seconds = time_local_step(models[name], optimizers[name], xb, yb)
            return seconds, 0.0, seconds
        parallel[name].step(models[name], nn.CrossEntropyLoss(), optimizers[name], xb, yb)
        timing = parallel[name].last_timing
        return timing.seconds, timing.overhead, max(timing.shard_seconds)

    load_before = os.getloadavg()
    for k, client in clients.items():  # warm up: imports, first scatter, thread pools
        time_predict(client, model, held[k])
        step(k)
    step("local")
    predict_times = {k: [] for k in clients}
    steps_seen = {name: [] for name in variants}
    for _ in range(repeat):
        for k, client in clients.items():
            predict_times[k].append(time_predict(client, model, held[k]))
        for _ in range(steps):
            for name in variants:
                steps_seen[name].append(step(name))
    parts = overhead_parts(clients[max(clients)], model)
    load_after = os.getloadavg()

    first, last = min(clients), max(clients)
    step_times = {name: [s[0] for s in seen] for name, seen in steps_seen.items()}
    log(f"fastconv {fastconv.__version__} ({fastconv.selected_isa()}); workers are processes "
        f"of 1 thread, fastconv kernel threads per worker: "
        f"{sorted(set(clients[last].run(fastconv.get_num_threads).values()))}")
    log("load average before: " + " ".join(f"{a:.2f}" for a in load_before))
    log(f"predict: {images} images {train.IMAGE_SHAPE} in chunks of {chunk}, the fastconv "
        f"train ConvNet ({train.count_parameters(model):,} parameters), {repeat} rounds")
    for k in clients:
        log(f"  {k} worker(s): median {_median(predict_times[k]):.3f} s "
            f"({images / _median(predict_times[k]):.0f} images/s), fastest "
            f"{min(predict_times[k]):.3f} s ({images / min(predict_times[k]):.0f} images/s)")
    log(f"  speed-up {last} vs {first}: {_speed_ups(predict_times[first], predict_times[last])}")
    log(f"training step, batch {batch}, {repeat} rounds of {steps} steps")
    log(f"  in this process, 1 thread: median {1e3 * _median(step_times['local']):.0f} ms")
    for k in clients:
        overhead = _median([s[1] for s in steps_seen[k]])
        shard = _median([s[2] for s in steps_seen[k]])
        log(f"  {k} worker(s): median {1e3 * _median(step_times[k]):.0f} ms, fastest "
            f"{1e3 * min(step_times[k]):.0f} ms; slowest shard on its worker {1e3 * shard:.0f} "
            f"ms; overhead {1e3 * overhead:.1f} ms (the step minus its slowest shard)")
    log(f"  speed-up {last} vs {first}: {_speed_ups(step_times[first], step_times[last])}")
    log(f"  {first} worker vs this process: "
        f"{_speed_ups(step_times['local'], step_times[first])}")
    log(f"overhead parts: a task's round trip {1e3 * parts['round_trip']:.1f} ms; scattering "
        f"the model ({parts['model_bytes'] / 1e6:.2f} MB) to every worker "
        f"{1e3 * parts['scatter']:.1f} ms; each shard returns "
        f"{parts['gradient_bytes'] / 1e6:.2f} MB of gradients")
    log("load average after: " + " ".join(f"{a:.2f}" for a in load_after))
    return {"predict": predict_times, "step": step_times,
            "overhead": {k: _median([s[1] for s in steps_seen[k]]) for k in clients},
            "parts": parts, "load": (load_before, load_after)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastconv.dask_bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4096, help="images to predict (4096)")
    parser.add_argument("--chunk", type=int, default=256, help="images per chunk (256)")
    parser.add_argument("--batch", type=int, default=256, help="training batch (256)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per round (3)")
    parser.add_argument("--repeat", type=int, default=9, help="interleaved rounds (9)")
    args = parser.parse_args(argv)
    with connect(workers=1) as one, connect(workers=2) as two:
        run({1: one, 2: two}, args.images, args.chunk, args.batch, args.steps, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
