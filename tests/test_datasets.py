"""The IDX reader on small synthetic files (plain and gzip, good and broken), and the Fashion-MNIST
subset shipped with fastconv."""

from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import replace

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


def test_default_folder_prefers_the_cache_then_debian(tmp_path, monkeypatch):
    debian, cache = tmp_path / "debian", tmp_path / "cache"
    debian.mkdir()
    monkeypatch.setitem(datasets.DATASETS, "fashion-mnist",
                        replace(datasets.DATASETS["fashion-mnist"], debian=debian))
    monkeypatch.setenv("FASTCONV_DATA", str(cache))
    assert datasets.default_folder() == SHIPPED_FOLDER
    _fake_mnist(debian)
    assert datasets.default_folder() == debian
    assert load_fashion_mnist(split="test")[0].shape == (3, 1, 28, 28)
    # a complete cache (the published sizes) wins over Debian's package
    (cache / "fashion-mnist").mkdir(parents=True)
    for remote in datasets.DATASETS["fashion-mnist"].files:
        with open(cache / "fashion-mnist" / remote.name, "wb") as f:
            f.truncate(remote.size)
    assert datasets.default_folder() == cache / "fashion-mnist"


# Debian's files are the published ones with their gzip header rewritten (file name dropped,
# time set to the package's build): restoring the original header, with the times the files
# were made, must give exactly the published MD5 and SHA-256. This checks fastconv's checksum
# table against a copy that did not come through fastconv's own downloads.
ORIGINAL_GZIP_TIMES = {"train": 1504176606, "t10k": 1504176627}


@pytest.mark.skipif(not all((datasets.DEBIAN_FOLDER / f.name).is_file()
                            for f in datasets.DATASETS["fashion-mnist"].files),
                    reason="Debian's dataset-fashion-mnist is not installed")
@pytest.mark.parametrize("remote", datasets.DATASETS["fashion-mnist"].files,
                         ids=lambda r: r.name)
def test_published_checksums_match_debians_files(remote):
    raw = (datasets.DEBIAN_FOLDER / remote.name).read_bytes()
    assert raw[:4] == b"\x1f\x8b\x08\x00"  # gzip, deflate, no name stored
    when = ORIGINAL_GZIP_TIMES[remote.name.split("-")[0]]
    original = (b"\x1f\x8b\x08\x08" + struct.pack("<I", when) + raw[8:10]
                + remote.name[:-3].encode() + b"\0" + raw[10:])
    assert len(original) == remote.size
    assert hashlib.md5(original).hexdigest() == remote.md5
    assert hashlib.sha256(original).hexdigest() == remote.sha256
