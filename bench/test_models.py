"""pytest-benchmark suite for whole networks: a training step and inference of the `fastconv
train` ConvNet and a CIFAR ResNet-14 (fastconv.bench_models.CASES), fastconv beside PyTorch and
onnxruntime when they are installed, one benchmark group per case.

    pytest bench/test_models.py --benchmark-only
    pytest bench/test_models.py --benchmark-only -k "resnet14 and train"

Images per second are stored in each result's extra_info. The interleaved speed-up table, with
the breakdown per layer, is `fastconv bench --model`.
"""

from __future__ import annotations

import functools

import pytest

import fastconv
from fastconv import bench_models


@functools.cache
def _case(network, task, batch):
    return bench_models.model_case(network, task, batch, fastconv.get_num_threads())


CASE_IDS = [f"{network}-{task}-{batch}" for network, task, batch in bench_models.CASES]


@pytest.mark.parametrize("impl", bench_models.IMPLS)
@pytest.mark.parametrize("case", bench_models.CASES, ids=CASE_IDS)
def test_model(benchmark, case, impl):
    step = _case(*case).steps.get(impl)
    if step is None:
        pytest.skip(f"{impl} is not installed or does not run this case")
    if impl == "PyTorch":
        import torch

        torch.set_num_threads(fastconv.get_num_threads())
    network, task, batch = case
    benchmark.group = f"{network}-{task}-{batch}"
    benchmark.extra_info.update(threads=fastconv.get_num_threads(), batch=batch)
    benchmark(step)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["images/s"] = batch / benchmark.stats.stats.median
