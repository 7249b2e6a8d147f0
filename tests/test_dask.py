"""fastconv.dask and fastconv.distributed on a local dask.distributed cluster (2 worker processes
of 1 thread): the ops and predict against fastconv.functional and the model itself, shapes and
dtypes known before computing, errors at graph build, weights sent once, data read from disk,
workers killed mid-computation, and data-parallel training against single-process training.
Skipped where Dask is not installed."""

from __future__ import annotations

import copy
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import fastconv.dask as fd  # noqa: E402
import fastconv.distributed as fdist  # noqa: E402
import fastconv.functional as F  # noqa: E402
from fastconv import init, nn, optim, train  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """One cluster for the module (starting one takes seconds). Not the default client: a test
    makes it current (``with client.as_current()``) where it wants the cluster."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


def _run(code: str) -> subprocess.CompletedProcess:
    # cwd: `python -c` puts the current folder first on sys.path, and a source checkout's
    # fastconv/ (no compiled extension when the package is installed) must not shadow it
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tempfile.gettempdir())


# ---- imports -------------------------------------------------------------------------------------

def test_import_fastconv_leaves_dask_alone():
    result = _run("import sys, fastconv, fastconv.train, fastconv.bench\n"
                  "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                  "('dask', 'distributed')))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("module, missing", [("fastconv.dask", "dask"),
                                             ("fastconv.distributed", "distributed")])
def test_missing_dask_names_the_extra(module, missing):
    result = _run(f"import sys; sys.modules[{missing!r}] = None\n"
                  f"try:\n    import {module}\nexcept ImportError as e:\n    print(e)")
    assert result.returncode == 0, result.stderr
    assert f"{module} needs" in result.stdout and "fastconv[dask]" in result.stdout


# ---- the ops -------------------------------------------------------------------------------------

def _weights(rng, dtype, *shape):
    return rng.standard_normal(shape).astype(dtype)


# (op, function of (rng, dtype) giving the arguments after x, keyword arguments); x has 6
# channels and 11 x 10 pixels
OP_CASES = [
    ("conv2d", lambda r, t: (_weights(r, t, 8, 6, 3, 3),), {"padding": 1}),
    ("conv2d", lambda r, t: (_weights(r, t, 4, 3, 3, 2), _weights(r, t, 4)),
     {"stride": 2, "dilation": (1, 2), "groups": 2}),
    ("conv2d", lambda r, t: (_weights(r, t, 6, 6, 5, 5),), {"padding": "same"}),
    ("conv_transpose2d", lambda r, t: (_weights(r, t, 6, 2, 3, 3), _weights(r, t, 4)),
     {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}),
    ("max_pool2d", lambda r, t: (3,), {"stride": 2, "padding": 1, "ceil_mode": True}),
    ("max_pool2d", lambda r, t: (2,), {"return_indices": True}),
    ("avg_pool2d", lambda r, t: (3,), {"stride": 2, "padding": 1, "count_include_pad": False}),
    ("avg_pool2d", lambda r, t: ((2, 3),), {"divisor_override": 5}),
    ("lp_pool2d", lambda r, t: (2, 3), {"stride": 2, "ceil_mode": True}),
    ("adaptive_avg_pool2d", lambda r, t: ((4, 3),), {}),
    ("adaptive_max_pool2d", lambda r, t: (1,), {"return_indices": True}),
    ("relu", lambda r, t: (), {}),
]

BATCH_CHUNKS = [(3, 3, 1), (7,), (1,) * 7, (0,)]

def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunks", BATCH_CHUNKS, ids=str)
@pytest.mark.parametrize("op, make_args, kwargs", OP_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(OP_CASES)])
def test_op_matches_functional_with_everything_known_before_compute(op, make_args, kwargs,
                                                                    chunks, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((sum(chunks), 6, 11, 10)).astype(dtype)
    args = make_args(rng, dtype)
    expected = _as_tuple(getattr(F, op)(x, *args, **kwargs))
    lazy = _as_tuple(getattr(fd, op)(da.from_array(x, chunks=(chunks, 6, 11, 10)), *args,
                                     **kwargs))
    assert len(lazy) == len(expected)
    for y, want in zip(lazy, expected):
        assert y.shape == want.shape and y.dtype == want.dtype
        assert y.chunks == ((chunks,) + tuple((n,) for n in want.shape[1:]))
        assert type(y._meta) is np.ndarray and y._meta.dtype == want.dtype
    # every op gives each image what it gives it alone (tests/test_batch_invariance.py), so
    # chunking changes no bit
    for y, want in zip(da.compute(*lazy, scheduler="sync"), expected):
        assert np.array_equal(y, want, equal_nan=True)


def test_ops_chain_on_the_cluster(client):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 3, 16, 16)).astype(np.float32)
    w, b = _weights(rng, np.float32, 8, 3, 3, 3), _weights(rng, np.float32, 8)
    expected = F.avg_pool2d(F.max_pool2d(F.relu(F.conv2d(x, w, b, padding=1)), 2), 2)
    with client.as_current():
        dx = da.from_array(x, chunks=(6, 3, 16, 16))
        y = fd.avg_pool2d(fd.max_pool2d(fd.relu(fd.conv2d(dx, w, b, padding=1)), 2), 2)
        assert y.chunks == ((6, 6, 6, 2), (8,), (4,), (4,))
        assert np.array_equal(y.compute(), expected)


X_GOOD = ((4, 3, 8, 8), (2, 3, 8, 8))  # shape, chunks


def _dask(shape=X_GOOD[0], chunks=X_GOOD[1], dtype=np.float32):
    return da.zeros(shape, dtype=dtype, chunks=chunks)


W3 = np.ones((2, 3, 3, 3), np.float32)

# (op, x, arguments after x, keyword arguments, exception, text in the message)
ERROR_CASES = [
    ("conv2d", np.zeros((4, 3, 8, 8), np.float32), (W3,), {}, TypeError, "dask.array.Array"),
    ("relu", _dask((4, 3, 8), (2, 3, 8)), (), {}, ValueError, "4-D"),
    ("conv2d", _dask(chunks=(2, 1, 8, 8)), (W3,), {}, ValueError, "split along C"),
    ("max_pool2d", _dask(chunks=(4, 3, 4, 8)), (2,), {}, ValueError, "split along H"),
    ("avg_pool2d", _dask(chunks=(4, 3, 8, 3)), (2,), {}, ValueError, "split along W"),
    ("conv2d", _dask(dtype=np.int32), (W3,), {}, TypeError, "float32 or float64"),
    ("conv2d", _dask(), (W3.astype(np.float64),), {}, TypeError, "float64"),
    ("conv2d", _dask(), (np.ones((2, 4, 3, 3), np.float32),), {}, ValueError, "channels"),
    ("conv2d", _dask(), (np.ones((2, 3, 9, 9), np.float32),), {}, ValueError, "output size"),
    ("conv2d", _dask(), (W3, np.ones(3, np.float32)), {}, ValueError, "bias"),
    ("conv2d", _dask(), (W3,), {"padding": "same", "stride": 2}, ValueError, "stride 1"),
    ("max_pool2d", _dask(), (2,), {"padding": 2}, ValueError, "half of kernel_size"),
    ("avg_pool2d", _dask(), (2,), {"divisor_override": 0}, ValueError, "divisor_override"),
    ("lp_pool2d", _dask(), (0, 2), {}, ValueError, "norm_type"),
    ("max_pool2d", _dask(), (0,), {}, ValueError, "kernel_size"),
    ("conv_transpose2d", _dask(), (W3,), {}, ValueError, "expects 2 input channels"),
    ("conv_transpose2d", _dask(), (W3.transpose(1, 0, 2, 3),), {"padding": "same"}, TypeError,
     "padding"),
    ("conv_transpose2d", _dask(), (W3.transpose(1, 0, 2, 3),), {"output_padding": 1},
     ValueError, "output_padding must be smaller than stride or dilation"),
]


@pytest.mark.parametrize("op, x, args, kwargs, exc, text", ERROR_CASES,
                         ids=[f"{c[0]}-{c[-1]}" for c in ERROR_CASES])
def test_bad_arguments_raise_when_the_graph_is_built(op, x, args, kwargs, exc, text):
    with pytest.raises(exc, match=f"^{op}: .*{text}"):
        getattr(fd, op)(x, *args, **kwargs)


def test_weights_are_one_key_not_one_copy_per_chunk():
    w = np.random.default_rng(0).standard_normal((64, 16, 3, 3))  # 74 KB, float64
    y = fd.conv2d(da.zeros((32, 16, 8, 8), chunks=(4, 16, 8, 8)), w, padding=1)
    assert y.numblocks[0] == 8
    # embedded in every task, the weight would take 8 x 74 KB
    assert len(pickle.dumps(dict(y.__dask_graph__()))) < 1.5 * w.nbytes


# ---- models --------------------------------------------------------------------------------------

def _model(dtype=np.float32, batchnorm=False, dropout=0.0, channels=(4, 8), hidden=16):
    init.manual_seed(0)
    return train.convnet(channels=channels, hidden=hidden, batchnorm=batchnorm,
                         dropout=dropout).to(dtype)


def _images(n, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28)).astype(dtype), rng.integers(0, 10, n)


def _trained_model(dtype=np.float32):
    """A model with batch norm and dropout after two training steps (running statistics that
    are not the initial ones), left in training mode."""
    model = _model(dtype, batchnorm=True, dropout=0.3)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    for seed in (1, 2):
        train.train_step(model, nn.CrossEntropyLoss(), optimizer, *_images(16, dtype, seed))
    return model


LAYERS = [
    nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2),
    nn.Linear(2 * 5 * 5, 3), nn.BatchNorm2d(2), nn.MaxPool2d(2, ceil_mode=True),
    nn.AvgPool2d(3, 1, 1, count_include_pad=False), nn.LPPool2d(2, 2), nn.ReLU(), nn.Tanh(),
    nn.Sigmoid(), nn.Flatten(), nn.Dropout(0.5),
]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda m: type(m).__name__)
def test_modules_pickle_with_their_state(layer):
    """Models travel to workers pickled: each layer, after a forward pass, round-trips with
    its parameters, buffers, mode and behaviour."""
    x = np.random.default_rng(0).standard_normal((3, 2, 5, 5)).astype(np.float32)
    x = x.reshape(3, -1) if isinstance(layer, nn.Linear) else x
    layer.train()
    layer(x)  # batch norm updates its running statistics, every layer saves activations
    copy_ = pickle.loads(pickle.dumps(layer))
    assert type(copy_) is type(layer) and copy_.training
    assert copy_.state_dict().keys() == layer.state_dict().keys()
    for key, value in layer.state_dict().items():
        assert np.array_equal(copy_.state_dict()[key], value)
    for module in (layer, copy_):
        module.eval()
    assert np.array_equal(copy_(x), layer(x))


def test_snapshot_leaves_out_gradients_and_activations():
    model = _trained_model()
    frozen = fd._snapshot(model)
    assert all(p.grad is None for p in frozen.parameters())
    assert all(m._saved is None for m in frozen.modules())
    assert all(p.grad is not None for p in model.parameters())  # the model keeps its own
    assert model[0]._saved is not None
    for key, value in model.state_dict().items():
        assert np.array_equal(frozen.state_dict()[key], value)
    assert len(pickle.dumps(frozen)) < 0.6 * len(pickle.dumps(model))


def _eval_output(model, x):
    frozen = copy.deepcopy(model).eval()
    return frozen(x)


def _assert_logits_close(actual, expected):
    # the fully connected layers' matrix products may round differently for another batch size
    tol = 1e-5 if expected.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("batch_size", [None, 1, 4, 100])
def test_predict_is_the_model_in_eval_mode(client, batch_size):
    model = _trained_model(np.float64)
    before = model.state_dict()
    x, _ = _images(23, np.float64)
    with client.as_current():
        logits = fd.predict(model, da.from_array(x, chunks=(5, 1, 28, 28)), batch_size)
        assert logits.shape == (23, 10) and logits.dtype == np.float64
        assert logits.chunks == ((5, 5, 5, 5, 3), (10,))
        result = logits.compute()
    _assert_logits_close(result, _eval_output(model, x))
    assert model.training and all(m.training for m in model.modules())
    for key, value in before.items():
        assert np.array_equal(model.state_dict()[key], value)


def test_predict_takes_the_model_as_it_was_called():
    model = _model()
    x, _ = _images(6)
    logits = fd.predict(model, da.from_array(x, chunks=(4, 1, 28, 28)))
    expected = _eval_output(model, x)
    for p in model.parameters():
        p.data += 1.0
    _assert_logits_close(logits.compute(scheduler="threads"), expected)


def test_predict_of_no_images():
    logits = fd.predict(_model(), da.zeros((0, 1, 28, 28), dtype=np.float32, chunks=(4, 1, 28, 28)))
    assert logits.shape == (0, 10) and logits.compute(scheduler="sync").shape == (0, 10)


@pytest.mark.parametrize("model, x, batch_size, exc, text", [
    ("not a model", _dask((4, 1, 28, 28), (2, 1, 28, 28)), None, TypeError, "^predict: model"),
    (None, _dask((4, 1, 28, 28), (2, 1, 28, 28)), 0, ValueError, "^predict: batch_size"),
    (None, _dask((4, 1, 28, 28), (2, 1, 14, 28)), None, ValueError, "^predict: .*split along H"),
    (None, _dask((4, 1, 28, 28), (2, 1, 28, 28), np.float64), None, TypeError, "float64"),
    (None, _dask((4, 1, 24, 24), (2, 1, 24, 24)), None, ValueError, "in_features"),
])
def test_predict_checks_the_input_when_called(model, x, batch_size, exc, text):
    with pytest.raises(exc, match=text):
        fd.predict(_model() if model is None else model, x, batch_size)


def test_predict_without_a_client_puts_the_model_in_one_key():
    model = _model(channels=(16, 32), hidden=64)
    logits = fd.predict(model, da.zeros((64, 1, 28, 28), dtype=np.float32, chunks=(8, 1, 28, 28)))
    model_bytes = len(pickle.dumps(fd._snapshot(model)))
    assert logits.numblocks[0] == 8
    assert len(pickle.dumps(dict(logits.__dask_graph__()))) < 1.5 * model_bytes


def test_predict_with_a_client_scatters_the_model_to_every_worker(client):
    model = _model(channels=(16, 32), hidden=64)
    x = da.zeros((64, 1, 28, 28), dtype=np.float32, chunks=(8, 1, 28, 28))
    before = {w: set(keys) for w, keys in client.has_what().items()}
    with client.as_current():
        logits = fd.predict(model, x)
    new = {w: set(keys) - before[w] for w, keys in client.has_what().items()}
    assert len(new) == 2 and all(len(keys) == 1 for keys in new.values())
    assert len(set.union(*new.values())) == 1  # the same key on both workers
    # the graph refers to the scattered model and holds no copy of it
    model_bytes = len(pickle.dumps(fd._snapshot(model)))
    assert len(pickle.dumps(dict(logits.__dask_graph__()))) < 0.1 * model_bytes
    with client.as_current():
        _assert_logits_close(logits.compute(), _eval_output(model, x.compute()))


# ---- data on disk --------------------------------------------------------------------------------

def test_predict_on_a_memory_mapped_npy(tmp_path):
    x, _ = _images(30)
    np.save(tmp_path / "x.npy", x)
    disk = da.from_array(np.load(tmp_path / "x.npy", mmap_mode="r"), chunks=(8, 1, 28, 28))
    model = _model()
    _assert_logits_close(fd.predict(model, disk).compute(scheduler="threads"),
                         _eval_output(model, x))


def test_from_npy_reads_on_the_workers(client, tmp_path):
    x, _ = _images(300)
    path = tmp_path / "x.npy"
    np.save(path, x)
    disk = fd.from_npy(path, chunks=64)
    assert disk.chunks == ((64, 64, 64, 64, 44), (1,), (28,), (28,)) and disk.dtype == x.dtype
    assert len(pickle.dumps(dict(disk.__dask_graph__()))) < 0.01 * x.nbytes  # only the path
    model = _model()
    with client.as_current():
        assert np.array_equal(disk.compute(), x)
        _assert_logits_close(fd.predict(model, disk).compute(), _eval_output(model, x))


def test_from_npy_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="^from_npy: chunks"):
        fd.from_npy(tmp_path / "x.npy", chunks=0)
    with pytest.raises(FileNotFoundError):
        fd.from_npy(tmp_path / "missing.npy")


def test_predict_on_a_zarr_store(client, tmp_path):
    zarr = pytest.importorskip("zarr")
    x, _ = _images(40)
    store = zarr.open_array(str(tmp_path / "x.zarr"), mode="w", shape=x.shape,
                            chunks=(16, 1, 28, 28), dtype=x.dtype)
    store[:] = x
    disk = da.from_zarr(str(tmp_path / "x.zarr"))
    assert disk.chunks[0] == (16, 16, 8)
    model = _model()
    with client.as_current():
        _assert_logits_close(fd.predict(model, disk).compute(), _eval_output(model, x))


# ---- killed workers ------------------------------------------------------------------------------

def _kill_a_worker_when(client, busy) -> None:
    """SIGKILL the worker process for which busy(address) first holds; its nanny starts a new
    one. Waits up to 60 s for the condition."""
    pids = client.run(os.getpid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for address, pid in pids.items():
            if busy(address):
                os.kill(pid, signal.SIGKILL)
                return
        time.sleep(0.005)
    raise AssertionError("no worker became busy")


def test_a_worker_killed_during_predict_loses_and_duplicates_nothing(client):
    model = _model(channels=(32, 64), hidden=128)
    x, _ = _images(1200, seed=3)
    expected = _eval_output(model, x)
    with client.as_current():
        logits = fd.predict(model, da.from_array(x, chunks=(40, 1, 28, 28)))
        future = client.compute(logits)
        output_key = logits.name

        def has_results(address):  # some chunks done there, more to come
            held = client.has_what().get(address, ())
            return any(output_key in str(k) for k in held) and not future.done()

        _kill_a_worker_when(client, has_results)
        result = future.result(timeout=120)
    _assert_logits_close(result, expected)
    client.wait_for_workers(2, timeout=60)


# ---- data-parallel training ----------------------------------------------------------------------

def _train_locally(model, optimizer, batches):
    loss_fn = nn.CrossEntropyLoss()
    return [train.train_step(model, loss_fn, optimizer, x, y) for x, y in batches]


def _assert_same_state(a, b, rtol):
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol, err_msg=key)


def test_data_parallel_steps_equal_single_process_training(client):
    """Three Adam steps, batches of 37, 37 and 26 (shards of 19 + 18 and 13 + 13, so a
    gradient average that ignored shard sizes would show)."""
    x, y = _images(100, np.float64)
    batches = [(x[:37], y[:37]), (x[37:74], y[37:74]), (x[74:], y[74:])]
    local, remote = _model(np.float64), _model(np.float64)
    expected = _train_locally(local, optim.Adam(local.parameters(), lr=1e-2), batches)
    parallel = fdist.DataParallel(client)
    optimizer = optim.Adam(remote.parameters(), lr=1e-2)
    got = [parallel.step(remote, nn.CrossEntropyLoss(), optimizer, xb, yb) for xb, yb in batches]
    assert parallel.shards == 2 and parallel.steps == 3
    _assert_same_state(remote, local, rtol=1e-10)
    for (loss, correct), (want_loss, want_correct) in zip(got, expected):
        assert loss == pytest.approx(want_loss, rel=1e-12) and correct == want_correct
    timing = parallel.last_timing
    assert len(timing.shard_seconds) == 2 and 0 < timing.overhead < timing.seconds


def test_data_parallel_batch_norm_normalises_each_shard(client):
    """With batch norm a step equals one single-process replica per shard, gradients and
    running statistics averaged with the shard sizes as weights."""
    x, y = _images(37, np.float64)
    model = _model(np.float64, batchnorm=True)
    whole = copy.deepcopy(model)
    _train_locally(whole, optim.SGD(whole.parameters(), lr=0.1), [(x, y)])

    shards = [(x[:19], y[:19]), (x[19:], y[19:])]
    replicas = [copy.deepcopy(model) for _ in shards]
    for replica, batch in zip(replicas, shards):
        _train_locally(replica, optim.SGD(replica.parameters(), lr=0.0), [batch])
    expected = copy.deepcopy(model)
    for name, p in expected.named_parameters():
        grads = [dict(r.named_parameters())[name].grad for r in replicas]
        p.data -= 0.1 * (19 / 37 * grads[0] + 18 / 37 * grads[1])
    state, params = expected.state_dict(), {name for name, _ in model.named_parameters()}
    for key in state.keys() - params:
        first, second = (r.state_dict()[key] for r in replicas)
        state[key] = 19 / 37 * first + 18 / 37 * second if first.dtype.kind == "f" else first
    expected.load_state_dict(state)

    fdist.DataParallel(client).step(model, nn.CrossEntropyLoss(),
                                    optim.SGD(model.parameters(), lr=0.1), x, y)
    _assert_same_state(model, expected, rtol=1e-10)
    assert int(model[1].num_batches_tracked) == 1
    # not whole-batch training (beyond the tolerance that equal results are held to), but the
    # running mean is the whole batch's
    assert not np.allclose(model[0].weight.data, whole[0].weight.data, rtol=1e-10, atol=0)
    assert not np.allclose(model[1].running_var, whole[1].running_var, rtol=1e-10, atol=0)
    np.testing.assert_allclose(model[1].running_mean, whole[1].running_mean, rtol=1e-12)


def test_dropout_masks_follow_fastconv_init_seed(client):
    """The shards' dropout masks come from seeds drawn from fastconv.init's generator: the same
    seed gives the same step, another seed other masks."""
    x, y = _images(24)
    results = []
    for seed in (5, 5, 6):
        model = _model(dropout=0.5)
        init.manual_seed(seed)
        fdist.DataParallel(client).step(model, nn.CrossEntropyLoss(),
                                        optim.SGD(model.parameters(), lr=0.1), x, y)
        results.append(model.state_dict())
    for key in results[0]:
        assert np.array_equal(results[0][key], results[1][key])
    assert not np.array_equal(results[0]["8.weight"], results[2]["8.weight"])


def test_a_failed_step_raises_and_changes_nothing(client):
    x, y = _images(20)
    y[-1] = 10  # not a class: the second shard's loss raises on its worker
    model = _model()
    before = copy.deepcopy(model)
    optimizer = optim.Adam(model.parameters())
    parallel = fdist.DataParallel(client)
    with pytest.raises(RuntimeError, match="^DataParallel.step: step 1 failed .*not applied.*"
                                           "target values"):
        parallel.step(model, nn.CrossEntropyLoss(), optimizer, x, y)
    _assert_same_state(model, before, rtol=0)
    assert optimizer.state == [{} for _ in optimizer.params] and parallel.steps == 0


def test_a_step_past_its_timeout_raises_and_changes_nothing(client):
    x, y = _images(1024, seed=6)
    model = _model(channels=(32, 64), hidden=128)
    before = copy.deepcopy(model)
    with pytest.raises(RuntimeError, match="^DataParallel.step: step 1 failed .*TimeoutError"):
        fdist.DataParallel(client, timeout=0.05).step(model, nn.CrossEntropyLoss(),
                                                      optim.SGD(model.parameters(), lr=0.1), x, y)
    _assert_same_state(model, before, rtol=0)


class _Stop(Exception):
    pass


def test_the_drivers_own_exception_passes_through_and_cancels_the_step(client):
    """An exception raised in the driver while it waits for the shards, as fastconv train's
    signal handler raises one, is not taken for a failure of the cluster."""
    x, y = _images(1024, seed=5)
    model = _model(channels=(32, 64), hidden=128)
    before = copy.deepcopy(model)

    def stop(signum, frame):
        raise _Stop

    previous = signal.signal(signal.SIGALRM, stop)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(_Stop):
            fdist.DataParallel(client).step(model, nn.CrossEntropyLoss(),
                                            optim.SGD(model.parameters(), lr=0.1), x, y)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    _assert_same_state(model, before, rtol=0)
    deadline = time.monotonic() + 30
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(client.processing().values())  # the shards were cancelled


@pytest.mark.parametrize("x, y, exc, text", [
    (np.zeros((0, 1, 28, 28), np.float32), np.zeros(0, int), ValueError, ">= 1"),
    (np.zeros((4, 1, 28, 28), np.float32), np.zeros(3, int), ValueError, "4 and 3"),
    ([[1.0]], np.zeros(1, int), TypeError, "x must be a numpy.ndarray"),
])
def test_data_parallel_step_and_fit_check_the_examples(client, x, y, exc, text):
    model = _model()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(exc, match=f"^DataParallel.step: .*{text}"):
        fdist.DataParallel(client).step(model, nn.CrossEntropyLoss(), optimizer, x, y)
    with pytest.raises(exc, match=f"^fit: .*{text}"):
        fdist.fit(model, optimizer, nn.CrossEntropyLoss(), x, y, client)


def test_a_worker_killed_during_a_step_changes_nothing(client):
    """The killed worker's shard runs again on the other worker: the step's result is bit for
    bit the one an undisturbed step gives."""
    x, y = _images(512, seed=4)
    undisturbed, model = _model(channels=(32, 64), hidden=128), _model(channels=(32, 64),
                                                                       hidden=128)
    loss_fn = nn.CrossEntropyLoss()
    expected = fdist.DataParallel(client).step(undisturbed, loss_fn,
                                               optim.SGD(undisturbed.parameters(), lr=0.1), x, y)
    parallel = fdist.DataParallel(client)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    with ThreadPoolExecutor(1) as pool:
        stepping = pool.submit(parallel.step, model, loss_fn, optimizer, x, y)
        _kill_a_worker_when(client, lambda address: bool(client.processing().get(address)))
        assert stepping.result(timeout=120) == expected and parallel.steps == 1
    _assert_same_state(model, undisturbed, rtol=0)
    client.wait_for_workers(2, timeout=60)


def test_fit_checkpoints_every_epoch_and_equals_the_local_loop(client, tmp_path):
    x, y = _images(40, np.float64)
    model, local = _model(np.float64), _model(np.float64)
    lines = []
    losses = fdist.fit(model, optim.SGD(model.parameters(), lr=0.05), nn.CrossEntropyLoss(),
                       x, y, client, epochs=2, batch_size=16, seed=7,
                       checkpoint=tmp_path / "model-{epoch}.npz", log=lines.append)
    rng, optimizer = np.random.default_rng(7), optim.SGD(local.parameters(), lr=0.05)
    for _ in range(2):
        order = rng.permutation(40)
        _train_locally(local, optimizer, [(x[order[i:i + 16]], y[order[i:i + 16]])
                                          for i in range(0, 40, 16)])
    _assert_same_state(model, local, rtol=1e-10)
    assert len(losses) == 2 and len(lines) == 2 and "model-2.npz" in lines[1]
    first, last = _model(np.float64).load(tmp_path / "model-1.npz"), \
        _model(np.float64).load(tmp_path / "model-2.npz")
    _assert_same_state(last, model, rtol=0)
    assert not np.array_equal(first[0].weight.data, last[0].weight.data)


@pytest.mark.parametrize("kwargs, exc, text", [
    ({"shards": 0}, ValueError, "shards"), ({"retries": -1}, ValueError, "retries"),
    ({"timeout": 0}, ValueError, "timeout"), ({"retries": 1.0}, TypeError, "retries"),
])
def test_data_parallel_checks_its_options(client, kwargs, exc, text):
    with pytest.raises(exc, match=f"^DataParallel: {text}"):
        fdist.DataParallel(client, **kwargs)


def test_connect_needs_one_of_scheduler_and_workers():
    for kwargs in ({}, {"scheduler": "tcp://127.0.0.1:1", "workers": 2}):
        with pytest.raises(ValueError, match="^connect: give exactly one"), \
                fdist.connect(**kwargs):
            pass


def test_dask_bench_runs_and_reports(client):
    from fastconv import dask_bench

    lines = []
    figures = dask_bench.run({1: client, 2: client}, images=64, chunk=16, batch=16, steps=1,
                             repeat=1, log=lines.append)
    assert set(figures["predict"]) == {1, 2} and set(figures["step"]) == {"local", 1, 2}
    assert all(min(t) > 0 for t in figures["predict"].values())
    assert figures["parts"]["model_bytes"] > figures["parts"]["gradient_bytes"] > 0
    report = "\n".join(lines)
    for text in ("load average before", "images/s", "speed-up", "overhead parts",
                 "load average after"):
        assert text in report


# ---- fastconv train on a cluster -----------------------------------------------------------------

def _train_cli(tmp_path, name, *flags):
    from fastconv.__main__ import main
    from fastconv.datasets import SHIPPED_FOLDER

    output = tmp_path / name
    assert main(["train", "--data", str(SHIPPED_FOLDER), "--limit", "96", "--test-limit", "50",
                 "--epochs", "2", "--batch-size", "32", "--no-progress", "--seed", "3",
                 "--channels", "4", "8", "--hidden", "16", "--output", str(output),
                 *flags]) == 0
    import json
    return json.loads((tmp_path / f"{name}.json").read_text())["history"]


def test_train_command_on_local_workers_matches_one_process(tmp_path, capsys):
    """`fastconv train --workers 2`: the batch split over two worker processes gives the
    single-process run's losses (sums in another order: float32 rounding apart)."""
    alone = _train_cli(tmp_path, "alone")
    split = _train_cli(tmp_path, "split", "--workers", "2")
    assert "cluster: " in capsys.readouterr().out
    for a, b in zip(alone, split):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-4)


def test_train_command_without_dask_is_a_usage_error(tmp_path):
    output = str(tmp_path / "m")
    result = _run("import sys; sys.modules['distributed'] = None\n"
                  "from fastconv.__main__ import main\n"
                  f"sys.exit(main(['train', '--workers', '2', '--output', {output!r}]))")
    assert result.returncode == 2, result.stderr
    assert "--workers" in result.stderr and "fastconv[dask]" in result.stderr
