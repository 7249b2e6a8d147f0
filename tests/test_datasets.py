"""The IDX reader on small synthetic files (plain and gzip, good and broken), and the Fashion-MNIST
subset shipped with fastconv."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from fastconv import datasets
from fastconv.datasets import SHIPPED_FOLDER, load_fashion_mnist, read_idx, write_idx


def _fake_mnist(folder, n_train=5, n_test=3, h=28, w=28, gz=True):
    """A folder of MNIST-named IDX files with random uint8 pixels and labels."""
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    data = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(folder / f"{stem}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{stem}-labels-idx1-ubyte{ext}", labels)
        data[stem] = images, labels
    return data


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize("array", [
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.array([9, 0, 5], np.uint8),
    np.array([[-1, 2]], np.int16),
    np.array([1.5, -2.25], np.float32),
    np.zeros((0, 28, 28), np.uint8),
])
def test_idx_round_trip(tmp_path, name, array):
    write_idx(tmp_path / name, array)
    got = read_idx(tmp_path / name)
    assert got.dtype == array.dtype and got.shape == array.shape
    np.testing.assert_array_equal(got, array)


def test_idx_header_by_hand(tmp_path):
    """The layout of the original MNIST files: magic 0x00000803, big-endian sizes, pixels."""
    pixels = bytes(range(6))
    (tmp_path / "x").write_bytes(struct.pack(">I3I", 0x0803, 1, 2, 3) + pixels)
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), np.arange(6).reshape(1, 2, 3))
    (tmp_path / "x.gz").write_bytes(gzip.compress(struct.pack(">II", 0x0801, 2) + b"\x07\x03"))
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), [7, 3])


def _valid_idx() -> bytes:
    return struct.pack(">I3I", 0x0803, 2, 2, 2) + bytes(8)


BROKEN = [
    ("empty", b"", "shorter than the 4-byte magic"),
    ("bad magic", b"\x12\x34" + _valid_idx()[2:], "bad magic number"),
    ("unknown type", b"\x00\x00\x07\x03" + _valid_idx()[4:], "bad magic number"),
    ("zero dimensions", b"\x00\x00\x08\x00", "bad magic number"),
    ("short header", _valid_idx()[:10], "truncated"),
    ("truncated data", _valid_idx()[:-1], "truncated"),
    ("trailing bytes", _valid_idx() + b"\x00", "longer than its header says"),
    ("truncated gzip", gzip.compress(_valid_idx())[:-6], "corrupt or truncated gzip"),
    ("corrupt gzip", b"\x1f\x8b" + bytes(30), "corrupt or truncated gzip"),
]


@pytest.mark.parametrize("content, message", [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_idx_raises_naming_the_file(tmp_path, content, message):
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read IDX file .*nothing-here"):
        read_idx(tmp_path / "nothing-here")


@pytest.mark.parametrize("gz", [True, False])
def test_load_from_folder(tmp_path, gz):
    data = _fake_mnist(tmp_path, gz=gz)
    for split, stem in (("train", "train"), ("test", "t10k")):
        x, y = load_fashion_mnist(tmp_path, split)
        images, labels = data[stem]
        assert x.shape == (len(images), 1, 28, 28) and x.dtype == np.float32
        assert y.dtype == np.int64
        np.testing.assert_array_equal(x[:, 0] * 255, images)
        np.testing.assert_array_equal(y, labels)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz not found"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        load_fashion_mnist(tmp_path, "val")
    _fake_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="holds 5 images but .* holds 4 labels"):
        load_fashion_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(5, 10, np.uint8))
    with pytest.raises(ValueError, match="labels must be 0..9, found 10"):
        load_fashion_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros((5, 1), np.uint8))
    with pytest.raises(ValueError, match=r"labels of shape \(N,\)"):
        load_fashion_mnist(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28), np.float32))
    with pytest.raises(ValueError, match="t10k-images.*expected uint8 images"):
        load_fashion_mnist(tmp_path, "test")


@pytest.mark.parametrize("split, n", [("train", 2000), ("test", 1000)])
def test_shipped_subset(split, n):
    x, y = load_fashion_mnist(SHIPPED_FOLDER, split)
    assert x.shape == (n, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    assert x.min() >= 0 and x.max() == 1
    # every class is there, roughly balanced (Fashion-MNIST's first images are)
    counts = np.bincount(y, minlength=10)
    assert counts.min() > n / 20, counts
    assert (SHIPPED_FOLDER / "LICENSE-fashion-mnist").is_file()


def test_default_folder_prefers_debian(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FOLDER", tmp_path)
    assert datasets.default_folder() == SHIPPED_FOLDER
    _fake_mnist(tmp_path)
    assert datasets.default_folder() == tmp_path
    assert load_fashion_mnist(split="test")[0].shape == (3, 1, 28, 28)
