"""``fastconv train`` stopped by a real SIGINT or SIGTERM mid-epoch, then ``--resume``d, ends
exactly where an uninterrupted run ends: the same per-epoch losses and accuracies and the same
final weights, bit for bit. Also: what ``import fastconv`` pulls in, and the command line's
progress without tqdm."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv.datasets import SHIPPED_FOLDER
from fastconv.train import load_model

REPO = str(Path(fastconv.__file__).parents[1])
# one kernel thread: on a loaded 2-core machine two-thread teams slow every step tenfold
RUN = ["--data", str(SHIPPED_FOLDER), "--limit", "480", "--test-limit", "50", "--epochs", "2",
       "--batch-size", "8", "--channels", "4", "8", "--hidden", "16", "--dropout", "0.2",
       "--batchnorm", "--seed", "11", "--threads", "1"]


def _env(tmp_path, hide_tqdm: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": REPO}
    if hide_tqdm:  # a tqdm that cannot be imported, ahead of the real one
        fake = tmp_path / "no-tqdm" / "tqdm"
        fake.mkdir(parents=True, exist_ok=True)
        (fake / "__init__.py").write_text("raise ImportError('tqdm is hidden by the test')\n")
        env["PYTHONPATH"] = f"{fake.parent}{os.pathsep}{REPO}"
    return env


def _train(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "fastconv", "train", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _interrupted_run(args, env, cwd, signum, epoch: int, delay: float):
    """Start a run, send `signum` `delay` s after the progress of `epoch` first shows."""
    child = subprocess.Popen([sys.executable, "-m", "fastconv", "train", *args], env=env,
                             cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines = []
    seen = threading.Event()

    def read_stderr():  # whatever is there as soon as it is there (os.read, not TextIO.read)
        marker = f"epoch {epoch}/2"
        for chunk in iter(lambda: os.read(child.stderr.fileno(), 4096), b""):
            err_lines.append(chunk.decode(errors="replace"))
            if marker in "".join(err_lines[-3:]):
                seen.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert seen.wait(240), "".join(err_lines)
        time.sleep(delay)
        child.send_signal(signum)
        out = child.stdout.read()
        child.wait(240)
    finally:
        child.kill()
    reader.join(10)
    return child.returncode, out, "".join(err_lines)


def _weights(path):
    with np.load(path) as archive:
        return {k: archive[k] for k in archive.files if k != "__metadata__"}


def _history(path):
    meta = json.loads(Path(str(path)[:-4] + ".json").read_text())
    return [{k: e[k] for k in ("epoch", "train_loss", "train_accuracy", "test_loss",
                               "test_accuracy")} for e in meta["history"]]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    result = _train([*RUN, "--no-progress", "--output", "ref"], _env(folder, False), folder)
    assert result.returncode == 0, result.stderr
    return _history(folder / "ref.npz"), _weights(folder / "ref.npz")


CASES = [  # signal, epoch it arrives in, tqdm hidden
    (signal.SIGINT, 1, False),
    (signal.SIGTERM, 2, True),
]


@pytest.mark.parametrize("signum, epoch, hide_tqdm", CASES,
                         ids=[f"{s.name}-epoch{e}{'-no-tqdm' if h else ''}" for s, e, h in CASES])
def test_resume_gives_the_uninterrupted_result(tmp_path, uninterrupted, signum, epoch,
                                               hide_tqdm):
    env = _env(tmp_path, hide_tqdm)
    # the signal goes out within milliseconds of the epoch's first progress line: on a fast
    # machine an epoch of this tiny model takes well under a second
    delay = np.random.default_rng(signum * 10 + epoch).uniform(0.0, 0.005)
    code, out, err = _interrupted_run([*RUN, "--output", "run"], env, tmp_path, signum, epoch,
                                      delay)
    assert code == 128 + signum, err
    assert f"interrupted by {signum.name}: checkpoint saved to run.ckpt" in err
    if hide_tqdm:  # the plain progress line stood in for tqdm's bar
        assert re.search(rf"epoch {epoch}/2: \d+/480 img", err), err
    checkpoint = tmp_path / "run.ckpt"
    assert not (tmp_path / "run.npz").exists()
    meta = json.loads(np.load(checkpoint)["__metadata__"].tobytes())
    position = meta["position"]
    assert position["epoch"] == epoch - 1 and 0 < position["step"] < 60, position  # mid-epoch

    result = _train(["--resume", str(checkpoint), "--no-progress"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("data: ")
    assert f"resuming {checkpoint}: {epoch - 1} epoch(s) and {position['step']} step(s) done" \
        in result.stdout
    history, weights = uninterrupted
    assert _history(tmp_path / "run.npz") == history
    mine = _weights(tmp_path / "run.npz")
    assert list(mine) == list(weights)
    for key in weights:
        assert mine[key].tobytes() == weights[key].tobytes(), key
    assert not checkpoint.exists()  # a finished run leaves no checkpoint
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume_refuses_changed_options(tmp_path, uninterrupted, capsys):
    from fastconv.__main__ import main

    code, _, err = _interrupted_run([*RUN, "--output", "run"], _env(tmp_path, False), tmp_path,
                                    signal.SIGINT, 1, 0.0)
    assert code == 130, err
    checkpoint = str(tmp_path / "run.ckpt")
    for extra, message in ((["--lr", "0.01"], "--lr 0.01 differs from the resumed run's 0.001"),
                           (["--epochs", "0"], "--epochs: must be a positive integer"),
                           (["--output", "other"], "differs from the resumed run's")):
        with pytest.raises(SystemExit) as info:
            main(["train", "--resume", checkpoint, *extra])
        assert info.value.code == 2
        assert message in capsys.readouterr().err
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(tmp_path / "broken.ckpt")])
    assert "is not a readable fastconv file" in capsys.readouterr().err
    # the same run can go on past its planned epochs
    os.chdir(tmp_path)
    assert main(["train", "--resume", checkpoint, "--epochs", "3", "--no-progress"]) == 0
    assert [e["epoch"] for e in _history(tmp_path / "run.npz")] == [1, 2, 3]
    assert _history(tmp_path / "run.npz")[:2] == uninterrupted[0]
    assert load_model(tmp_path / "run.npz") is not None


def test_import_pulls_in_numpy_and_the_standard_library_only():
    code = ("import sys, fastconv, fastconv.train, fastconv.experiments, fastconv.datasets, "
            "fastconv.__main__\n"
            "heavy = ('tqdm', 'threadpoolctl', 'matplotlib', 'torch', 'dask', 'onnx', "
            "'hypothesis', 'pytest')\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))")
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": REPO},
                            capture_output=True, text=True, timeout=120,
                            cwd=tempfile.gettempdir())  # no source checkout first on sys.path
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_second_signal_stops_at_once():
    """The first SIGINT or SIGTERM only asks (fit stops after its step); the second raises at
    once; the previous handlers come back after the block."""
    from fastconv.train import Interrupted, stop_on_signals

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as info, stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the handler runs between bytecodes of the main thread
        assert stop.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    assert info.value.signum == signal.SIGINT and not info.value.saved
    assert signal.getsignal(signal.SIGTERM) is before
