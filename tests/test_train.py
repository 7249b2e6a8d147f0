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
from fastconv import nn
from fastconv.__main__ import main
from fastconv.datasets import SHIPPED_FOLDER, load_fashion_mnist
from fastconv.train import Architecture, convnet, count_parameters, evaluate, load_model, mlp

TINY = ["--data", str(SHIPPED_FOLDER), "--limit", "96", "--test-limit", "50", "--epochs", "1",
        "--batch-size", "32", "--no-progress", "--seed", "3"]


@pytest.mark.parametrize("flags", [[], ["--activation", "tanh", "--dropout", "0.3",
                                        "--batchnorm", "--channels", "4", "8", "--hidden", "16"]])
def test_train_end_to_end(tmp_path, capsys, flags):
    output = tmp_path / "out" / "model.npz"
    assert main(["train", *TINY, "--output", str(output), *flags]) == 0
    out = capsys.readouterr().out
    assert f"data: {SHIPPED_FOLDER}" in out
    assert re.search(r"^epoch 1/1: train loss [\d.]+ accuracy [\d.]+% \| test loss [\d.]+ "
                     r"accuracy [\d.]+% \| [\d.]+ s \([\d]+ images/s\)$", out, re.M), out
    final = out.strip().splitlines()[-1]
    assert re.fullmatch(r"test accuracy: \d{1,3}\.\d\d%", final), final

    meta = json.loads(output.with_suffix(".json").read_text())
    assert meta["training_images"] == 96 and meta["test_images"] == 50
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


@pytest.mark.parametrize("bad, message", [
    (["--epochs", "0"], "must be a positive integer"),
    (["--dropout", "1"], r"must be in \[0, 1\)"),
    (["--activation", "gelu"], "invalid choice"),
])
def test_train_rejects_bad_flags(capsys, bad, message):
    with pytest.raises(SystemExit) as info:
        main(["train", *bad])
    assert info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_train_reports_missing_data(tmp_path):
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz not found"):
        main(["train", "--data", str(tmp_path), "--output", str(tmp_path / "m.npz")])


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
