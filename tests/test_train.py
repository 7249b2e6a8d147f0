"""``fastconv train`` and ``fastconv experiment`` end to end on the shipped Fashion-MNIST subset,
with a few training steps each."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import _io, nn
from fastconv.__main__ import main
from fastconv.datasets import SHIPPED_FOLDER, load_fashion_mnist, write_idx
from fastconv.train import Architecture, convnet, count_parameters, evaluate, load_model, mlp

TINY = ["--data", str(SHIPPED_FOLDER), "--limit", "96", "--test-limit", "50", "--epochs", "1",
        "--batch-size", "32", "--no-progress", "--seed", "3"]


@pytest.mark.parametrize("flags", [[], ["--activation", "tanh", "--dropout", "0.3",
                                        "--batchnorm", "--channels", "4", "8", "--hidden", "16"]])
def test_train_end_to_end(tmp_path, capsys, flags):
    output = tmp_path / "out" / "model.npz"
    assert main(["train", *TINY, "--output", str(output), *flags]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # --no-progress: nothing on stderr
    assert out.startswith(f"data: {SHIPPED_FOLDER}\nmodel: ")
    assert re.search(r"^epoch 1/1: train loss [\d.]+ accuracy [\d.]+% \| test loss [\d.]+ "
                     r"accuracy [\d.]+% \| [\d.]+ s \([\d]+ images/s\)$", out, re.M), out
    final = out.strip().splitlines()[-1]
    assert re.fullmatch(r"test accuracy: \d{1,3}\.\d\d%", final), final

    meta = json.loads(output.with_suffix(".json").read_text())
    assert meta["training_images"] == 96 and meta["test_images"] == 50
    assert _io.read_metadata("test", output) == meta  # the model file holds the same
    assert not output.with_suffix(".ckpt").exists()
    assert len(meta["history"]) == 1
    model = load_model(output)
    x, y = load_fashion_mnist(SHIPPED_FOLDER, "test")
    accuracy = evaluate(model, x[:50], y[:50])[1]
    assert final == f"test accuracy: {100 * accuracy:.2f}%"
    pytest.importorskip("matplotlib")
    assert output.with_suffix(".png").stat().st_size > 0


def test_python_m_fastconv_train(tmp_path):
    """``python -m fastconv train`` runs from anywhere, on the default data."""
    env = {**os.environ, "PYTHONPATH": str(Path(fastconv.__file__).parents[1])}
    args = [a for a in TINY if a not in ("--data", str(SHIPPED_FOLDER))]
    result = subprocess.run([sys.executable, "-m", "fastconv", "train", *args, "--channels", "4",
                             "8", "--output", "m.npz"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("data: ")
    assert "test accuracy: " in result.stdout
    assert (tmp_path / "m.npz").is_file()


BAD_TRAIN_OPTIONS = [
    (["--lr", "nan"], "--lr: must be a positive finite number, got 'nan'"),
    (["--lr", "inf"], "--lr: must be a positive finite number, got 'inf'"),
    (["--lr", "-1"], "--lr: must be a positive finite number, got '-1'"),
    (["--lr", "0"], "--lr: must be a positive finite number"),
    (["--lr", "fast"], "--lr: must be a positive finite number, got 'fast'"),
    (["--lr-decay", "nan"], r"--lr-decay: must be a number in \(0, 1\], got 'nan'"),
    (["--lr-decay", "-1"], r"--lr-decay: must be a number in \(0, 1\]"),
    (["--lr-decay", "0"], r"--lr-decay: must be a number in \(0, 1\]"),
    (["--lr-decay", "1.5"], r"--lr-decay: must be a number in \(0, 1\]"),
    (["--lr-decay", "inf"], r"--lr-decay: must be a number in \(0, 1\]"),
    (["--epochs", "0"], "--epochs: must be a positive integer, got '0'"),
    (["--epochs", "1.5"], "--epochs: must be a positive integer"),
    (["--batch-size", "-2"], "--batch-size: must be a positive integer"),
    (["--limit", "0"], "--limit: must be a positive integer"),
    (["--test-limit", "0"], "--test-limit: must be a positive integer"),
    (["--threads", "0"], "--threads: must be a positive integer"),
    (["--seed", "-1"], "--seed: must be an integer >= 0"),
    (["--dropout", "1"], r"--dropout: must be a number in \[0, 1\), got '1'"),
    (["--dropout", "nan"], r"--dropout: must be a number in \[0, 1\)"),
    (["--channels", "8", "0"], "--channels: must be a positive integer"),
    (["--hidden", "0"], "--hidden: must be a positive integer"),
    (["--activation", "gelu"], "invalid choice"),
    (["--dataset", "cifar"], "invalid choice"),
]


@pytest.mark.parametrize("bad, message", BAD_TRAIN_OPTIONS,
                         ids=[" ".join(b) for b, _ in BAD_TRAIN_OPTIONS])
def test_train_refuses_bad_options(capsys, tmp_path, bad, message):
    with pytest.raises(SystemExit) as info:
        main(["train", "--output", str(tmp_path / "m"), *bad])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert re.search(message, err), err
    assert out == "" and list(tmp_path.iterdir()) == []  # refused before any work


BAD_EXPERIMENT_OPTIONS = [
    (["params", "--epochs", "0"], "--epochs: must be a positive integer"),
    (["params", "--lr", "nan"], "--lr: must be a positive finite number"),
    (["params", "--lr-decay", "2"], r"--lr-decay: must be a number in \(0, 1\]"),
    (["params", "--batch-size", "0"], "--batch-size: must be a positive integer"),
    (["params", "--limit", "-5"], "--limit: must be a positive integer"),
    (["relu-vs-tanh", "--checkpoints", "0"], "--checkpoints: must be a positive integer"),
    (["relu-vs-tanh", "--probe", "0"], "--probe: must be a positive integer"),
    (["relu-vs-tanh", "--thresholds", "25", "100"], r"--thresholds: must be a percentage"),
    (["relu-vs-tanh", "--thresholds", "nan"], r"--thresholds: must be a percentage"),
    (["relu-vs-tanh", "--lr", "-0.1"], "--lr: must be a positive finite number"),
]


@pytest.mark.parametrize("bad, message", BAD_EXPERIMENT_OPTIONS,
                         ids=[" ".join(b) for b, _ in BAD_EXPERIMENT_OPTIONS])
def test_experiment_refuses_bad_options(capsys, tmp_path, bad, message):
    with pytest.raises(SystemExit) as info:
        main(["experiment", *bad, "--output-dir", str(tmp_path / "out")])
    assert info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype_flag", [[], ["--float64"]])
def test_demo_runs_every_op_and_agrees_with_the_reference(capsys, dtype_flag):
    assert main(["demo", "--batch", "2", "--repeat", "1", *dtype_flag]) == 0
    out = capsys.readouterr().out
    assert "max_pool2d identical" in out and "conv2d max error" in out


@pytest.mark.parametrize("command", [["bench"], ["demo"]])
@pytest.mark.parametrize("bad, message", [
    (["--threads", "0"], "--threads: must be a positive integer"),
    (["--repeat", "-1"], "--repeat: must be a positive integer"),
])
def test_bench_and_demo_refuse_bad_options(capsys, command, bad, message):
    with pytest.raises(SystemExit) as info:
        main([*command, *bad])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_refuses_an_unwritable_plot_before_timing(capsys, tmp_path, monkeypatch):
    from fastconv import bench

    monkeypatch.setattr(bench, "main", lambda **kw: pytest.fail("bench ran"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    for plot, message in ((tmp_path, "is a directory"), (blocker / "chart.png", "cannot write")):
        with pytest.raises(SystemExit) as info:
            main(["bench", "--plot", str(plot)])
        assert info.value.code == 2
        assert message in capsys.readouterr().err


def _fake_data(folder, n_train=5, n_test=3, size=28, label=None):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (n, size, size), dtype=np.uint8))
        labels = rng.integers(0, 10, n, dtype=np.uint8) if label is None \
            else np.full(n, label, np.uint8)
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", labels)
    return folder


BAD_DATA = [
    (dict(n_train=0), r"train-images-idx3-ubyte.gz holds no images"),
    (dict(n_test=0), r"t10k-images-idx3-ubyte.gz holds no images"),
    (dict(size=32), r"train-images-idx3-ubyte.gz holds 32x32 images; the ConvNet takes 28x28"),
    (dict(label=10), r"train-labels-idx1-ubyte.gz: labels must be 0..9, found 10"),
    (None, r"train-images-idx3-ubyte.gz not found"),
]


@pytest.mark.parametrize("command", ["train", "experiment"])
@pytest.mark.parametrize("data, message", BAD_DATA, ids=["no-train", "no-test", "32x32",
                                                         "label-10", "missing"])
def test_bad_data_is_refused_before_training(capsys, tmp_path, command, data, message):
    folder = tmp_path / "data"
    if data is not None:
        _fake_data(folder, **data)
    args = ["train", "--output", str(tmp_path / "m")] if command == "train" else \
        ["experiment", "params", "--output-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as info:
        main([*args, "--data", str(folder), "--no-progress"])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert re.search(message, err), err
    assert str(folder) in err
    assert "epoch" not in out


def test_output_names_never_collide(tmp_path, capsys):
    """--output model.json and --output run_lr0.001 / run_lr0.01: every file appends its own
    suffix, so no run writes over its own or another run's files."""
    for name in ("model.json", "run_lr0.001", "run_lr0.01", "plain.npz"):
        assert main(["train", *TINY, "--channels", "2", "2", "--hidden", "4",
                     "--output", str(tmp_path / name)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    expected = {"model.json.npz", "model.json.json", "run_lr0.001.npz", "run_lr0.001.json",
                "run_lr0.01.npz", "run_lr0.01.json", "plain.npz", "plain.json"}
    assert expected <= set(names), names
    assert not [n for n in names if n.endswith((".ckpt", ".tmp"))]
    for stem in ("model.json", "run_lr0.001", "plain"):
        (tmp_path / f"{stem}.json").unlink()  # the model file alone is enough to load
        assert load_model(tmp_path / f"{stem}.npz")(np.zeros((1, 1, 28, 28), np.float32)).shape \
            == (1, 10)
    assert "saved " + str(tmp_path / "plain.npz") in capsys.readouterr().out


def test_outputs_are_checked_before_any_work(tmp_path, capsys):
    (tmp_path / "taken.npz").write_bytes(b"an earlier model")
    (tmp_path / "unfinished.ckpt").write_bytes(b"an earlier run")
    (tmp_path / "folder.npz").mkdir()
    (tmp_path / "figure.png").mkdir()
    (tmp_path / "file").write_text("")
    cases = [("taken", "taken.npz exists: choose another --output, or overwrite it with --force"),
             ("unfinished", "unfinished.ckpt holds an unfinished run: continue it with --resume"),
             ("folder", "folder.npz is a directory"),
             ("figure", "figure.png is a directory"),
             ("file/model", "cannot write in"),
             ("folder.npz/", "is a directory")]
    for output, message in cases:
        with pytest.raises(SystemExit) as info:
            main(["train", *TINY, "--output", str(tmp_path / output)])
        assert info.value.code == 2
        out, err = capsys.readouterr()
        assert message in err, (output, err)
        assert out == ""  # not even the data line: nothing was loaded
    assert (tmp_path / "taken.npz").read_bytes() == b"an earlier model"
    assert main(["train", *TINY, "--channels", "2", "2", "--hidden", "4", "--force",
                 "--output", str(tmp_path / "taken")]) == 0
    assert load_model(tmp_path / "taken.npz") is not None


def test_architectures():
    x = np.zeros((2, 1, 28, 28), np.float32)
    model = convnet()
    assert model(x).shape == (2, 10)
    # conv 1->32 5x5, conv 32->64 5x5, fc 64*7*7 -> 128, fc 128 -> 10
    assert count_parameters(model) == (32 * 25 + 32) + (64 * 32 * 25 + 64) \
        + (64 * 49 * 128 + 128) + (128 * 10 + 10)
    with_extras = Architecture(dropout=0.5, batchnorm=True).build()
    kinds = [type(layer).__name__ for layer in with_extras]
    assert kinds.count("BatchNorm2d") == 2 and kinds.count("BatchNorm1d") == 1
    assert kinds.count("Dropout") == 2
    assert with_extras(x).shape == (2, 10)
    assert isinstance(mlp((8, 8), "tanh")[2], nn.Tanh)
    assert count_parameters(mlp((8,))) == 784 * 8 + 8 + 8 * 10 + 10


def test_experiment_params(tmp_path, capsys):
    assert main(["experiment", "params", *TINY, "--output-dir", str(tmp_path)]) == 0
    report = (tmp_path / "params.md").read_text()
    assert report.startswith("# Parameters: ConvNet against fully connected networks")
    assert "| ConvNet conv32-conv64-fc128 | 454,922 |" in report
    assert "MLP fc1024-fc1024" in report and "## Result" in report
    assert "fastconv experiment params" in report  # the command that made it
    assert report in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    assert (tmp_path / "params.png").stat().st_size > 0


def test_experiment_relu_vs_tanh(tmp_path):
    assert main(["experiment", "relu-vs-tanh", *TINY, "--checkpoints", "2", "--probe", "40",
                 "--output-dir", str(tmp_path)]) == 0
    report = (tmp_path / "relu-vs-tanh.md").read_text()
    assert report.startswith("# ReLU against tanh")
    assert re.search(r"^\| 25% \|", report, re.M)
    assert re.search(r"^\| 1 \| [\d.]+% \| [\d.]+% \|$", report, re.M)  # error after epoch 1
    pytest.importorskip("matplotlib")
    assert (tmp_path / "relu-vs-tanh.png").stat().st_size > 0


def test_load_model_reads_files_of_fastconv_0_1(tmp_path):
    """Before the metadata member, the architecture lived only in the .json beside the model."""
    model = convnet(channels=(2, 4), hidden=8)
    model.save(tmp_path / "old.npz")
    meta = {"architecture": {"channels": [2, 4], "kernel_size": 5, "hidden": 8,
                             "activation": "relu", "dropout": 0.0, "batchnorm": False}}
    (tmp_path / "old.json").write_text(json.dumps(meta))
    loaded = load_model(tmp_path / "old.npz")
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    model.eval()
    assert loaded(x).tobytes() == model(x).tobytes()
