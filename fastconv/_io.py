"""Files that survive a crash: every file fastconv writes goes through ``atomic_write``.

``atomic_write(path)`` gives a binary file on a temporary ``.NAME.<16 hex>.tmp`` in the target's
folder. On a clean exit the data is flushed and fsynced, ``os.replace`` puts it in place in one
step (atomic on POSIX and Windows) and the folder is fsynced where the OS allows, so the name
always points at a whole file: the old one until the rename, the new one after it. On any
exception (KeyboardInterrupt and a full disk included) the temporary is removed and the target
is untouched. Only SIGKILL or a power cut can leave a temporary behind, and it never replaces
anything.

``save_npz`` / ``load_npz`` are the .npz archives of models and checkpoints: arrays plus an
optional JSON metadata member, so one file holds everything a load needs. ``load_npz`` opens the
zip itself, checks the member names against what the caller expects and bounds every member's
size from the zip directory before reading a byte of it (no zip bomb), and reads arrays with
``allow_pickle=False`` (no code runs).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import zipfile
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import numpy as np

__all__ = ["atomic_write", "check_writable", "write_bytes", "write_text", "save_figure",
           "save_npz", "load_npz", "read_metadata", "FileFormatError", "METADATA",
           "MAX_METADATA_BYTES", "NPY_HEADER_BYTES"]

METADATA = "__metadata__"  # the member holding the JSON metadata, as UTF-8 bytes (uint8)
MAX_METADATA_BYTES = 16 * 2**20
NPY_HEADER_BYTES = 4096  # an .npy header is ~128 bytes; numpy reads at most 10 000


def _open_temporary(temp: Path):
    """Create `temp` for writing, with the usual permissions (0o666 less the umask)."""
    return open(temp, "xb")


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable. Windows cannot open a folder, and some file systems
    refuse to fsync one: the rename has happened either way."""
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path):
    """``with atomic_write(path) as f: f.write(...)``: `path` gets all of it or keeps what it had.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from fastconv._io import atomic_write
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "out.bin"
    >>> with atomic_write(path) as f:
    ...     _ = f.write(b"data")
    >>> path.read_bytes()
    b'data'
    """
    path = Path(path)
    # 64 random bits: no two writers pick the same name
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # one try from the file's creation on, so an interrupt at any point removes it
    try:
        with _open_temporary(temp) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    _fsync_folder(path.parent)


def check_writable(folder) -> None:
    """OSError unless a file can be created in (and removed from) `folder`: what a command
    checks before its work, rather than failing at its end."""
    probe = Path(folder) / f".fastconv-probe.{secrets.token_hex(8)}.tmp"
    with open(probe, "xb"):
        pass
    probe.unlink()


def write_bytes(path, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def save_figure(fig, path, **savefig_kwargs) -> None:
    """``fig.savefig`` into `path`, atomically; the format comes from the suffix (default png)."""
    path = Path(path)
    with atomic_write(path) as f:
        fig.savefig(f, format=path.suffix[1:] or "png", **savefig_kwargs)


def save_npz(path, arrays: Mapping[str, np.ndarray], metadata: dict | None = None) -> None:
    """Write `arrays` (and `metadata` as JSON in the member ``__metadata__``) to the .npz `path`,
    atomically."""
    members = dict(arrays)
    if METADATA in members:
        raise ValueError(f"save: {METADATA!r} is reserved for the metadata, not an array name")
    if metadata is not None:
        members[METADATA] = np.frombuffer(json.dumps(metadata).encode("utf-8"), np.uint8)
    with atomic_write(path) as f:
        np.savez(f, **members)


class FileFormatError(ValueError):
    """A file that is not what its reader expects; the message names the file."""


def _bad(op: str, path, why: str) -> FileFormatError:
    return FileFormatError(f"{op}: {str(path)!r} is not a readable fastconv file: {why}")


@contextlib.contextmanager
def _archive(op: str, path):
    """The open zip `path` and its members by array name; any failure to read it becomes a
    FileFormatError naming it (a missing file stays FileNotFoundError)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {}
            for info in archive.infolist():
                if not info.filename.endswith(".npy") or info.filename[:-4] in members:
                    raise _bad(op, path, f"unexpected member {info.filename!r} (an .npz holds "
                                         "one NAME.npy per array)")
                members[info.filename[:-4]] = info
            yield archive, members
    except (FileNotFoundError, FileFormatError):
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
            NotImplementedError) as exc:
        raise _bad(op, path, f"{type(exc).__name__}: {exc}") from exc


_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


def _read(op: str, path, archive: zipfile.ZipFile, info: zipfile.ZipInfo,
          limit: int) -> np.ndarray:
    """One .npy member, its size checked before anything is inflated or allocated."""
    # zipfile inflates at most file_size bytes (then checks the CRC), so bounding the
    # directory's size bounds what a hostile file can make us inflate
    if info.file_size > limit:
        raise _bad(op, path, f"member {info.filename!r} would unpack to {info.file_size:,} "
                             f"bytes, more than the {limit:,} expected")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in _HEADER_READERS:
            raise _bad(op, path, f"member {info.filename!r} is .npy version {version}")
        shape, fortran_order, dtype = _HEADER_READERS[version](member)
        if dtype.hasobject:
            raise _bad(op, path, f"member {info.filename!r} holds Python objects (a pickle), "
                                 "which fastconv never loads")
        nbytes = math.prod(shape) * dtype.itemsize
        # the header's shape must fit in the member: nothing is allocated on its word alone
        if nbytes > info.file_size:
            raise _bad(op, path, f"member {info.filename!r} claims shape {shape} of {dtype}, "
                                 f"more than its {info.file_size:,} bytes")
        data = bytearray(nbytes)
        if member.readinto(data) != nbytes or member.read(1):
            raise _bad(op, path, f"member {info.filename!r} does not hold exactly the "
                                 f"{nbytes:,} bytes of its shape {shape}")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")


def _decode_metadata(op: str, path, array: np.ndarray) -> dict:
    if array.dtype != np.uint8 or array.ndim != 1:
        raise _bad(op, path, f"its {METADATA} member is not JSON text")
    try:
        metadata = json.loads(array.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(op, path, f"its {METADATA} member is not JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise _bad(op, path, f"its {METADATA} member is not a JSON object")
    return metadata


def load_npz(op: str, path, expected: Collection[str], max_bytes: Callable[[str], int],
             metadata_required: bool = False) -> tuple[dict[str, np.ndarray], dict | None]:
    """The arrays named `expected` (each at most ``max_bytes(name)`` bytes unpacked, header
    included) and the metadata of the .npz `path`.

    Raises FileNotFoundError for a missing file, and ValueError (FileFormatError) naming the
    file, prefixed by `op`, if it is not a zip of .npy members, if a member is missing or
    unexpected (the metadata member is always allowed, and needed with `metadata_required`),
    larger than allowed, a pickle, or not the size its header says.
    """
    with _archive(op, path) as (archive, members):
        missing = [k for k in expected if k not in members]
        unexpected = [k for k in members if k not in expected and k != METADATA]
        if metadata_required and METADATA not in members:
            missing.append(METADATA)
        if missing or unexpected:
            raise _bad(op, path, f"its arrays do not match: missing {missing}, "
                                 f"unexpected {unexpected}")
        arrays = {key: _read(op, path, archive, members[key], max_bytes(key))
                  for key in expected}
        metadata = _decode_metadata(op, path, _read(op, path, archive, members[METADATA],
                                                    MAX_METADATA_BYTES)) \
            if METADATA in members else None
    return arrays, metadata


def read_metadata(op: str, path) -> dict | None:
    """Only the metadata of the .npz `path` (None if it has none), e.g. to learn which model to
    build before loading its arrays. Errors as ``load_npz``."""
    with _archive(op, path) as (archive, members):
        if METADATA not in members:
            return None
        return _decode_metadata(op, path, _read(op, path, archive, members[METADATA],
                                                MAX_METADATA_BYTES))
