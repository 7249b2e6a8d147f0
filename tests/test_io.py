"""Crash-safe writes and careful reads (fastconv._io): a save interrupted by SIGINT or killed by
SIGKILL at a random point, a full disk (real, on a small tmpfs, where this user can mount one;
simulated everywhere) and hostile .npz files (unexpected members, pickles, zip bombs, headers
that lie)."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import _io, nn
from fastconv.datasets import read_idx, write_idx

REPO = str(Path(fastconv.__file__).parents[1])


def _linear(value: float, size: int = 8) -> nn.Linear:
    layer = nn.Linear(size, size)
    layer.weight.data[...] = value
    layer.bias.data[...] = value
    return layer


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---- round trips ---------------------------------------------------------------------------------

def test_save_with_metadata_round_trip(tmp_path):
    path = tmp_path / "m.npz"
    _linear(3.0).save(path, metadata={"architecture": {"hidden": 8}, "note": "é"})
    loaded = _linear(0.0).load(path)
    assert np.all(loaded.weight.data == 3) and np.all(loaded.bias.data == 3)
    assert _io.read_metadata("test", path) == {"architecture": {"hidden": 8}, "note": "é"}
    _linear(1.0).save(path)  # no metadata: a plain state_dict archive, as np.savez writes
    assert _io.read_metadata("test", path) is None
    assert set(np.load(path).files) == {"weight", "bias"}


def test_saved_file_has_the_usual_permissions(tmp_path):
    _linear(1.0).save(tmp_path / "m.npz")
    (tmp_path / "plain").write_bytes(b"")
    assert (tmp_path / "m.npz").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_save_refuses_the_metadata_name(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        _io.save_npz(tmp_path / "x.npz", {_io.METADATA: np.zeros(1)})
    assert not list(tmp_path.iterdir())


# ---- hostile or broken archives ------------------------------------------------------------------

def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _zip(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _good_members():
    return {"weight.npy": _npy(np.ones((8, 8), np.float32)),
            "bias.npy": _npy(np.ones(8, np.float32))}


def _lying_header():
    """An .npy whose header claims 2**40 float64 but holds 8 bytes."""
    data = _npy(np.zeros(1))
    header = data[:data.index(b"\n") + 1].replace(b"(1,)", b"(1099511627776,)")
    header = header[:-1].ljust(len(data) - 8 - 1) + b"\n"
    return header + data[-8:]


HOSTILE = [
    ("unexpected member", {**_good_members(), "extra.npy": _npy(np.zeros(2))},
     r"unexpected \['extra'\]"),
    ("missing member", {"weight.npy": _npy(np.ones((8, 8), np.float32))}, r"missing \['bias'\]"),
    ("not .npy", {**_good_members(), "readme.txt": b"hello"}, "unexpected member 'readme.txt'"),
    ("pickle", {**_good_members(), "bias.npy": _npy(np.array([None] * 8, dtype=object))},
     "Python objects"),
    ("bigger than the model", {**_good_members(), "bias.npy": _npy(np.ones(10**6))},
     "would unpack to"),
    ("header claims more than it holds", {**_good_members(), "bias.npy": _lying_header()},
     "claims shape"),
    ("short data", {**_good_members(), "bias.npy": _npy(np.ones(8, np.float32))[:-4]},
     "does not hold exactly"),
    ("wrong shape", {**_good_members(), "bias.npy": _npy(np.ones(7, np.float32))},
     r"does not fit this model: load_state_dict: 'bias' has shape \(7,\)"),
    ("wrong dtype", {**_good_members(), "bias.npy": _npy(np.ones(8, np.complex64))},
     "does not fit this model: load_state_dict: 'bias' has dtype complex64"),
    ("metadata not JSON", {**_good_members(), "__metadata__.npy": _npy(np.frombuffer(b"{no",
                                                                                     np.uint8))},
     "not JSON"),
    ("metadata not text", {**_good_members(), "__metadata__.npy": _npy(np.zeros(3))},
     "not JSON text"),
]


@pytest.mark.parametrize("members, message", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_load_refuses_what_it_does_not_expect(tmp_path, members, message):
    path = tmp_path / "hostile.npz"
    _zip(path, members)
    model = _linear(5.0)
    with pytest.raises(ValueError, match=message) as info:
        model.load(path)
    assert str(path) in str(info.value) and str(info.value).startswith("load: ")
    assert np.all(model.weight.data == 5)  # unchanged


def test_zip_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    """64 MiB of zeros deflates to 64 KB: the size in the zip directory is checked before
    anything is inflated (reading a member would go through ZipFile.open: it must not run)."""
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("weight.npy", _npy(np.ones((8, 8), np.float32)))
        with archive.open("bias.npy", "w") as member:
            for _ in range(4):
                member.write(bytes(2**24))
    assert path.stat().st_size < 2**20

    def no_inflating(self, name, *args, **kwargs):
        if str(getattr(name, "filename", name)) == "bias.npy":
            raise AssertionError("the bomb was opened")
        return real_open(self, name, *args, **kwargs)

    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", no_inflating)
    with pytest.raises(ValueError, match=r"'bias.npy' would unpack to 67,108,864 bytes, more "
                                         r"than the 4,160 expected"):
        _linear(0.0).load(path)


# ---- interrupted and failing writes --------------------------------------------------------------

class _FullDisk:
    """A file whose writes fail with ENOSPC once `room` bytes are written."""

    def __init__(self, f, room: int):
        self._f, self._room = f, room

    def write(self, data):
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _fig_writer(path):
    plt = pytest.importorskip("matplotlib.pyplot")
    fig, _ = plt.subplots()
    try:
        _io.save_figure(fig, path)
    finally:
        plt.close(fig)


WRITERS = {
    "Module.save": lambda path: _linear(2.0, 64).save(path, metadata={"n": 2}),
    "write_text": lambda path: _io.write_text(path, "new text " * 10_000),
    "write_idx": lambda path: write_idx(
        path, np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)),
    "figure": _fig_writer,
}
READERS = {
    "Module.save": lambda path: float(_linear(0.0, 64).load(path).weight.data[0, 0]),
    "write_text": lambda path: path.read_text()[:20],
    "write_idx": lambda path: read_idx(path).shape,
    "figure": lambda path: path.read_bytes(),
}
FIRST = {
    "Module.save": lambda path: _linear(1.0, 64).save(path),
    "write_text": lambda path: _io.write_text(path, "old text"),
    "write_idx": lambda path: write_idx(path, np.zeros((3, 28, 28), np.uint8)),
    "figure": lambda path: path.write_bytes(b"old figure"),
}


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("room", [0, 100, 5000])
@pytest.mark.parametrize("where", ["write", "fsync"])
def test_simulated_full_disk_keeps_the_old_file(tmp_path, monkeypatch, writer, room, where):
    path = tmp_path / "target.idx.gz" if writer == "write_idx" else tmp_path / "target"
    FIRST[writer](path)
    before = READERS[writer](path)
    real_open = _io._open_temporary
    if where == "write":
        monkeypatch.setattr(_io, "_open_temporary", lambda temp: _FullDisk(real_open(temp), room))
    else:
        def no_room(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(_io.os, "fsync", no_room)
    with pytest.raises(OSError) as info:
        WRITERS[writer](path)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert READERS[writer](path) == before
    assert _leftovers(tmp_path) == []


def test_interrupt_inside_a_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.npz"
    _linear(1.0).save(path)
    with pytest.raises(KeyboardInterrupt), _io.atomic_write(path) as f:
        f.write(b"half a model")
        raise KeyboardInterrupt
    assert np.all(_linear(0.0).load(path).weight.data == 1)
    assert _leftovers(tmp_path) == []


def test_saving_onto_a_folder_fails_cleanly(tmp_path):
    (tmp_path / "m.npz").mkdir()
    with pytest.raises(OSError):
        _linear(1.0).save(tmp_path / "m.npz")
    assert _leftovers(tmp_path) == []


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs: needs root (or CAP_SYS_ADMIN); skipped, with the reason, elsewhere."""
    if sys.platform != "linux":
        pytest.skip("tmpfs is Linux-only; the simulated full disk covers other systems")
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the simulated full disk still runs")
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_real_full_disk_keeps_the_old_file(small_tmpfs):
    path = small_tmpfs / "m.npz"
    _linear(1.0, 256).save(path)  # 257 KB: fits
    with pytest.raises(OSError) as info:
        _linear(2.0, 512).save(path)  # 1 MB more: does not
    assert info.value.errno == errno.ENOSPC
    assert np.all(_linear(0.0, 256).load(path).weight.data == 1)
    assert _leftovers(small_tmpfs) == []


_SAVER = """
import sys
from fastconv import nn
size, path = 512, sys.argv[1]
models = []
for value in (1.0, 2.0):
    layer = nn.Linear(size, size)
    layer.weight.data[...] = value
    layer.bias.data[...] = value
    models.append(layer)
models[0].save(path)
print("ready", flush=True)
i = 0
while True:
    i += 1
    models[i % 2].save(path)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_save_killed_at_random_points(tmp_path, signum):
    """A child re-saves a 1 MB model in a loop; a signal at a random moment (seeded) must leave
    a file that loads and equals one of the two models, every time."""
    rng = np.random.default_rng(14 + signum)
    env = {**os.environ, "PYTHONPATH": REPO}
    outcomes = []
    for attempt in range(5):
        path = tmp_path / f"model{attempt}.npz"
        # cwd: `python -c` puts the current folder first on sys.path, and a source checkout's
        # fastconv/ (no compiled extension when the package is installed) must not shadow it
        child = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], env=env,
                                 cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        try:
            assert child.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.0, 0.2))
            child.send_signal(signum)
            _, err = child.communicate(timeout=60)
        finally:
            child.kill()
        assert child.returncode == -signum or "KeyboardInterrupt" in err, err
        value = float(_linear(0.0, 512).load(path).weight.data[0, 0])
        assert value in (1.0, 2.0)
        outcomes.append(value)
        if signum == signal.SIGINT:  # the interrupted write removed its temporary
            assert _leftovers(tmp_path) == []
    assert len(outcomes) == 5


def test_json_metadata_of_saved_model_is_plain_json(tmp_path):
    path = tmp_path / "m.npz"
    _linear(1.0).save(path, metadata={"a": [1, 2.5, None]})
    with zipfile.ZipFile(path) as archive, archive.open("__metadata__.npy") as member:
        array = np.lib.format.read_array(member)
    assert json.loads(array.tobytes()) == {"a": [1, 2.5, None]}
