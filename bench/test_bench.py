"""pytest-benchmark suite: fastconv, PyTorch (when installed) and the NumPy reference on the real
layer shapes of fastconv.bench, one benchmark group per layer and pass.

    pytest bench/ --benchmark-only                       # everything, reference included
    pytest bench/ --benchmark-only -m short              # fastconv and PyTorch only
    pytest bench/ --benchmark-only --benchmark-group-by=group -k res-256

Throughput (GFLOP/s for convolution, GB/s for pooling) is stored in each result's extra_info.
The interleaved speed-up table is `fastconv bench`. The conv2d-nhwc and pool2d-nhwc groups are
the same layers channels last (PyTorch on channels_last tensors; `fastconv bench --layout nhwc`
times them against NCHW in the same rounds).
"""

from __future__ import annotations

import functools

import pytest

import fastconv
from fastconv import bench


@functools.lru_cache(maxsize=1)
def _cases():
    cases = bench.conv_cases() + bench.conv_transpose_cases() + bench.pool_cases() + \
        bench.adaptive_pool_cases() + [bench.copy_case()] + \
        bench.conv_cases(data_format="NHWC") + bench.pool_cases(data_format="NHWC")
    return {f"{c.group}-{c.name}-{c.direction}": c for c in cases}


CASE_IDS = [f"conv2d-{n}-{d}" for n in bench.CONV_LAYERS for d in ("forward", "backward")] + \
           [f"conv2d-{n}-{d}" for n in bench.CONV_PASS_LAYERS for d in ("input", "weight")] + \
           [f"conv_transpose2d-{n}-{d}" for n in bench.CONV_TRANSPOSE_LAYERS
            for d in ("forward", "backward")] + \
           [f"pool2d-{n}-{d}" for n in [*bench.POOL_CASES, *bench.ADAPTIVE_POOL_CASES]
            for d in ("forward", "backward")] + \
           ["relu-copy-forward"] + \
           [f"conv2d-nhwc-{n}-{d}" for n in bench.CONV_LAYERS for d in ("forward", "backward")] + \
           [f"pool2d-nhwc-{n}-{d}" for n in bench.POOL_CASES for d in ("forward", "backward")]

IMPLS = [pytest.param("fastconv", marks=pytest.mark.short),
         pytest.param("torch", marks=pytest.mark.short),
         "reference"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_layer(benchmark, case_id, impl):
    case = _cases()[case_id]
    fn = {"fastconv": case.fastconv, "torch": case.torch, "reference": case.reference}[impl]
    if fn is None:
        pytest.skip("PyTorch is not installed")
    if impl == "torch":
        import torch

        torch.set_num_threads(fastconv.get_num_threads())
    benchmark.group = case_id
    benchmark.extra_info.update(threads=fastconv.get_num_threads(), unit=case.unit)
    if impl == "reference":  # seconds per call: one round is enough
        benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)
    else:
        benchmark(fn)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info[case.unit] = case.work / benchmark.stats.stats.median / 1e9
