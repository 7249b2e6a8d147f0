"""fastconv.bench: the interleaved runner, the table and the chart, on tiny cases (the real layer
shapes are for `fastconv bench` and bench/, never for timed tests: nothing here asserts speed)."""

from __future__ import annotations

import io

import numpy as np
import pytest

import fastconv.functional as F
from fastconv import bench


def _tiny_case(with_torch: bool) -> bench.Case:
    x = np.ones((1, 2, 6, 6), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    fn = lambda: F.conv2d(x, w, padding=1)  # noqa: E731
    return bench.Case("conv2d", "tiny", "forward", fn, fn if with_torch else None,
                      work=2.0 * 3 * 36 * 18, unit="GFLOP/s", reference=fn)


@pytest.mark.parametrize("with_torch", [True, False])
def test_run_and_table(with_torch):
    result = bench.run(_tiny_case(with_torch), repeat=3, threads=1)
    assert result.fastconv_s > 0 and result.throughput > 0
    assert (result.ratio is not None) == with_torch
    table = bench.format_table([result])
    assert "conv2d" in table and "tiny" in table and "GFLOP/s" in table
    if with_torch:
        assert "geometric mean speed-up, conv2d forward" in table


def test_geomean():
    assert bench.geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert np.isnan(bench.geomean([]))


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    result = bench.run(_tiny_case(True), repeat=1, threads=1)
    path = tmp_path / "chart.png"
    assert bench.plot([result], str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_layer_tables_match_the_shapes_they_name():
    """Every case the command would time exists for every listed layer and pass."""
    assert {"lenet1-5x5", "cifar-3x3", "vgg-64", "res-256", "pw-1x1", "down-s2", "alex-11x11s4",
            "res-512-7x7", "odd-24-40", "odd-3-37", "vgg-64-n1", "res-256-n1", "expand-1x1",
            "stem-7x7s2", "resnext-g32", "dw-128", "dw-256-s2", "res14-16", "res14-32",
            "res14-64"} <= set(bench.CONV_LAYERS)
    assert set(bench.POOL_CASES) == {"max-2x2s2", "max-3x3s2p1", "avg-2x2s2", "l2-2x2s2"}
    cases = bench.conv_cases(names={"lenet1-5x5", "vgg-64"})
    assert [(c.name, c.direction) for c in cases] == [
        ("lenet1-5x5", "forward"), ("lenet1-5x5", "backward"), ("vgg-64", "forward"),
        ("vgg-64", "backward"), ("vgg-64", "input"), ("vgg-64", "weight")]
    assert all(c.reference is not None for c in cases)
    assert set(bench.CONV_TRANSPOSE_LAYERS) == {"unet-2x2s2", "fcn-3x3s2-op1", "dcgan-4x4s2",
                                                "dcgan-rgb-4x4s2"}
    cases = bench.conv_transpose_cases(names={"fcn-3x3s2-op1"})
    assert [(c.group, c.name, c.direction) for c in cases] == [
        ("conv_transpose2d", "fcn-3x3s2-op1", "forward"),
        ("conv_transpose2d", "fcn-3x3s2-op1", "backward")]
    n, c_in, h, c_out, k, _, _, _ = bench.CONV_TRANSPOSE_LAYERS["fcn-3x3s2-op1"]
    assert cases[0].fastconv().shape == (n, c_out, 2 * h, 2 * h)  # a decoder layer doubles H
    assert cases[0].work == 2.0 * n * c_in * h * h * c_out * k * k
    assert all(c.reference is not None for c in cases)


@pytest.mark.parametrize("name", ["res-256-n1", "odd-3-37", "resnext-g32", "dw-256-s2"])
def test_conv_cases_compute_what_they_name(name, monkeypatch):
    """A layer's fastconv and PyTorch calls agree in every pass (grouped and depthwise included:
    the groups reach both sides); the per-pass cases give the backward's own gradients."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    monkeypatch.setattr(bench, "CONV_PASS_LAYERS", (name,))
    cases = {c.direction: c for c in bench.conv_cases(names={name})}
    assert set(cases) == {"forward", "backward", "input", "weight"}
    for direction, case in cases.items():
        ours, theirs = case.fastconv(), case.torch()
        if direction == "backward":
            pairs = zip(ours, theirs)
        else:
            pairs = [(ours, theirs if direction == "forward" else
                      theirs[0 if direction == "input" else 1])]
        for a, b in pairs:
            np.testing.assert_allclose(a, b.numpy(), rtol=2e-3, atol=2e-3,
                                       err_msg=f"{name} {direction}")


def test_adaptive_pool_cases_compute_what_they_name():
    """Every adaptive case exists for both passes, in the pooling group, and its fastconv,
    PyTorch (when installed) and reference calls agree."""
    cases = {(c.name, c.direction): c for c in bench.adaptive_pool_cases()}
    assert set(cases) == {(n, d) for n in bench.ADAPTIVE_POOL_CASES
                          for d in ("forward", "backward")}
    for case in cases.values():
        assert case.group == "pool2d" and case.unit == "GB/s"
        ours, expected = case.fastconv(), case.reference()
        if isinstance(expected, tuple):  # the max forward's (out, indices)
            expected = expected[0]
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5,
                                   err_msg=f"{case.name} {case.direction}")
        if case.torch is not None:
            np.testing.assert_allclose(ours, np.asarray(case.torch()), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{case.name} {case.direction} (PyTorch)")


@pytest.mark.parametrize("make, name", [(bench.conv_cases, "lenet1-5x5"),
                                        (bench.pool_cases, "max-3x3s2p1")])
def test_nhwc_cases_compute_what_they_name(make, name):
    """Channels-last cases: in their own group, the fastconv call on NHWC arrays gives the NCHW
    call's results transposed, and PyTorch's channels_last call (when installed) the same."""
    for case in make(names={name}, data_format="NHWC"):
        assert case.group.endswith("-nhwc") and case.name == name
        ours, nchw = case.fastconv(), case.nchw()
        ours, nchw = (ours, nchw) if isinstance(ours, tuple) else ((ours,), (nchw,))
        assert ours[0].shape[-1] == nchw[0].shape[1]  # channels last
        first = ours[0].transpose(0, 3, 1, 2)  # the output or the input gradient, as NCHW
        for a, b in zip((first, *ours[1:]), nchw):
            # the weight gradient sums N * OH * OW terms of either sign in another order per
            # layout: an element near zero is off by float32 rounding of its largest neighbours
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(10.0, np.abs(b).max()))
        if case.torch is not None and case.direction == "forward":
            np.testing.assert_allclose(first, np.asarray(case.torch()), rtol=1e-4, atol=1e-4)


def test_run_times_the_nchw_call_beside_a_channels_last_case():
    tiny = _tiny_case(True)
    case = bench.Case("conv2d-nhwc", "tiny", "forward", tiny.fastconv, tiny.torch, tiny.work,
                      tiny.unit, nchw=tiny.fastconv)
    result = bench.run(case, repeat=3, threads=1)
    assert result.nchw_s > 0 and result.nchw_ratio > 0
    table = bench.format_table([result, bench.run(tiny, repeat=1, threads=1)])
    header, _, row, plain = table.splitlines()[:4]
    assert "NHWC/NCHW" in header and row.endswith("x") and plain.endswith("-")
    assert "NHWC speed as a share of NCHW's, conv2d-nhwc forward: geometric mean" in table
    assert bench.run(tiny, repeat=1, threads=1).nchw_s is None


def test_table_columns_fit_the_longest_names():
    case = bench.Case("conv_transpose2d", "dcgan-rgb-4x4s2", "backward", lambda: None, None,
                      work=1e9, unit="GFLOP/s")
    header, rule, row = bench.format_table([bench.Result(case, 0.01, 0.02, 2.0)]).splitlines()[:3]
    assert row.startswith("conv_transpose2d dcgan-rgb-4x4s2 backward")
    assert header.index("layer") == row.index("dcgan") and header.index("pass") == row.index("back")
    assert len(rule) == len(header)


@pytest.mark.parametrize("only", ["conv", "conv_transpose"])
def test_main_prints_the_table(monkeypatch, only):
    monkeypatch.setattr(bench, "conv_cases", lambda dtype=np.float32: [_tiny_case(True)])
    monkeypatch.setattr(bench, "conv_transpose_cases", lambda dtype=np.float32: [_tiny_case(True)])
    out = io.StringIO()
    results = bench.main(threads=1, repeat=1, only=only, out=out)
    assert len(results) == 1 and "tiny" in out.getvalue()


def test_table_gives_pooling_as_a_share_of_the_copy_bandwidth():
    def result(group, name, seconds):
        case = bench.Case(group, name, "forward", lambda: None, None, work=1e9, unit="GB/s")
        return bench.Result(case, seconds, None, None)

    table = bench.format_table([result("pool2d", "max-2x2s2", 0.2), result("relu", "copy", 0.1)])
    assert ("share of the copy bandwidth (10.0 GB/s, relu above): max-2x2s2 50%"
            in table.splitlines()[-1])
    table = bench.format_table([result("pool2d", "max-2x2s2", 0.2)], bandwidth=20.0)
    assert ("share of the copy bandwidth (20.0 GB/s, median of this run's relu copies): "
            "max-2x2s2 25%" in table.splitlines()[-1])


def test_copy_bandwidth_times_the_copy_case():
    x = np.ones(1 << 16, np.float32)
    case = bench.Case("relu", "copy", "forward", lambda: F.relu(x), None, 2.0 * x.nbytes, "GB/s")
    assert bench.copy_bandwidth(case, threads=1, calls=3) > 0


def test_copy_case_reads_and_writes_the_pooling_input():
    case = bench.copy_case()
    assert case.work == 2 * np.prod(bench.POOL_SHAPE) * 4 and case.unit == "GB/s"


def test_table_gives_convolution_forward_as_a_share_of_the_fma_peak():
    case = bench.Case("conv2d", "res-256", "forward", lambda: None, None, work=3e9,
                      unit="GFLOP/s")
    table = bench.format_table([bench.Result(case, 0.01, None, None)], peak=400.0)
    assert table.splitlines()[-1].endswith("share of the FMA peak (400 GFLOP/s, median of this "
                                           "run's measurements; direct-convolution FLOPs): "
                                           "res-256 75%")
    assert "FMA peak" not in bench.format_table([bench.Result(case, 0.01, None, None)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fma_peak_counts_flops_per_thread(dtype):
    """The peak kernel's FLOP count: 12 chains x lanes x 2 per round, times the threads used
    (a run on one thread does half the FLOPs of a run on two, where OpenMP gives two)."""
    from fastconv import _kernels

    one = _kernels.fma_peak(1000, 1, dtype == np.float32)
    assert one > 0 and one % (2 * 12 * 1000) == 0
    two = _kernels.fma_peak(1000, 2, dtype == np.float32)
    assert two in (one, 2 * one)
    assert _kernels.fma_peak(-5, 0, dtype == np.float32) == 0  # clamped, not negative
    assert bench.fma_peak(1, dtype, seconds=0.001) > 0


def test_per_call_cases_run_every_op_beside_pytorch():
    cases = bench.per_call_cases(calls=2)
    ops = {c.name.split()[0] for c in cases}
    assert ops >= {"conv2d", "conv_transpose2d", "max_pool2d", "max_pool2d+indices", "avg_pool2d",
                   "lp_pool2d", "global_avg_pool", "global_max_pool", "relu"}
    assert len(cases) == len({(c.name, c.direction) for c in cases})
    for case in cases:
        assert case.group == "per-call" and case.work == 2
        case.fastconv()
        if case.torch is not None:
            case.torch()


def test_per_call_table_gives_microseconds_per_call():
    case = bench.Case("per-call", "relu 1x1x4x4", "forward", lambda: None, None, 100, "call")
    table = bench.format_per_call([bench.Result(case, 2e-4, 5e-4, 2.5)])
    row = next(line for line in table.splitlines() if line.startswith("relu"))
    assert "2.00us" in row and "5.00us" in row and "2.50x" in row
    assert "geometric mean speed-up, per-call cost: 2.50x" in table


def test_main_prints_the_per_call_table(monkeypatch):
    monkeypatch.setattr(bench, "per_call_cases", lambda dtype=np.float32: [
        bench.Case("per-call", "relu tiny", "forward", lambda: None, None, 10, "call")])
    out = io.StringIO()
    results = bench.main(threads=1, repeat=1, only="per-call", out=out)
    assert len(results) == 1 and "relu tiny" in out.getvalue() and "us" in out.getvalue()
