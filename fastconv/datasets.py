"""Fashion-MNIST from MNIST-format IDX files on disk, with no download.

Where the images come from, in order: the folder you pass; else Debian's ``dataset-fashion-mnist``
package (``apt-get install dataset-fashion-mnist``, the full 60 000 + 10 000 images at
``/usr/share/datasets/fashion-mnist``); else the small real subset shipped inside fastconv
(``fastconv/data/``: 2 000 training and 1 000 test images taken from the original files,
MIT-licensed by Zalando SE, see ``fastconv/data/LICENSE-fashion-mnist``).

The IDX format (http://yann.lecun.com/exdb/mnist/): a big-endian header, magic ``0x0000TTDD``
with TT the element type (0x08 = uint8) and DD the number of dimensions, then DD uint32 sizes,
then the elements in row-major order. Files may be gzip-compressed (``.gz``).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from . import _io

__all__ = ["CLASSES", "DEBIAN_FOLDER", "SHIPPED_FOLDER", "default_folder", "load_fashion_mnist",
           "read_idx", "write_idx"]

DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
SHIPPED_FOLDER = Path(__file__).resolve().parent / "data"

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")

_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

# element type code in the magic number -> big-endian NumPy dtype
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_bytes(path: Path) -> bytes:
    """The file's contents, gunzipped when it starts with gzip's magic bytes."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read IDX file {path}: {exc.strerror or exc}") from exc
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"corrupt or truncated gzip file {path}: {exc}") from exc


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not) into an array of its stored shape.

    Parameters
    ----------
    path : the file. Gzip compression is detected from the contents, not the name.

    Returns
    -------
    ndarray with the file's dimensions, in native byte order (uint8 for MNIST-style files).

    Raises
    ------
    ValueError naming the file if it is missing, unreadable, not IDX (bad magic number),
    truncated, longer than its header says, or a corrupt gzip stream.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from fastconv.datasets import read_idx, write_idx
    >>> path = tempfile.mkdtemp() + "/labels-idx1-ubyte.gz"
    >>> write_idx(path, np.array([3, 1, 4], np.uint8))
    >>> read_idx(path)
    array([3, 1, 4], dtype=uint8)
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path} is not an IDX file: {len(data)} bytes, shorter than the "
                         f"4-byte magic number")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(f"{path} is not an IDX file: bad magic number 0x{data[:4].hex()} "
                         f"(expected 0x0000TTDD with a known type TT and DD >= 1 dimensions)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path} is truncated: {len(data)} bytes, the header alone needs "
                         f"{header}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[type_code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise ValueError(f"{path} is {what}: {len(data)} bytes, expected {expected} for "
                         f"shape {shape} of {dtype.newbyteorder('=').name}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzipped if ``path`` ends in ``.gz`` (inverse of read_idx)."""
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes or array.ndim == 0:
        raise ValueError(f"write_idx: cannot store a {array.ndim}-d {array.dtype} array in IDX")
    payload = (struct.pack(">HBB", 0, codes[native], array.ndim)
               + struct.pack(f">{array.ndim}I", *array.shape)
               + np.ascontiguousarray(array, native.newbyteorder(">")).tobytes())
    path = Path(path)
    # mtime=0 keeps the bytes reproducible
    _io.write_bytes(path, gzip.compress(payload, mtime=0) if path.suffix == ".gz" else payload)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"{folder / (stem + '.gz')} not found (nor without .gz): expected the "
                     f"Fashion-MNIST IDX files {', '.join(sum(_FILES.values(), ()))} in {folder}")


def default_folder() -> Path:
    """Debian's full Fashion-MNIST if installed, else the subset shipped with fastconv."""
    if all((DEBIAN_FOLDER / (stem + ".gz")).is_file() for stem in sum(_FILES.values(), ())):
        return DEBIAN_FOLDER
    return SHIPPED_FOLDER


def load_fashion_mnist(folder: str | os.PathLike | None = None,
                       split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (or MNIST: same file names and format) images and labels from IDX files.

    Parameters
    ----------
    folder : folder holding ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
        ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``. Default
        :func:`default_folder`: Debian's package if installed, else the shipped subset.
    split : 'train' or 'test'.

    Returns
    -------
    images : (N, 1, 28, 28) float32 in [0, 1] (pixel / 255)
    labels : (N,) int64 class indices 0..9 (names in ``CLASSES``)

    Raises
    ------
    ValueError naming the file if one is missing, not IDX, truncated or corrupt, if images are
    not uint8 (N, H, W), labels not uint8 (N,) in 0..9, or their counts disagree.

    Examples
    --------
    >>> from fastconv.datasets import load_fashion_mnist, SHIPPED_FOLDER
    >>> x, y = load_fashion_mnist(SHIPPED_FOLDER, "test")
    >>> x.shape, x.dtype, y.shape, y.dtype
    ((1000, 1, 28, 28), dtype('float32'), (1000,), dtype('int64'))
    """
    if split not in _FILES:
        raise ValueError(f"load_fashion_mnist: split must be 'train' or 'test', got {split!r}")
    folder = default_folder() if folder is None else Path(folder)
    image_path, label_path = (_find(folder, stem) for stem in _FILES[split])
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{image_path}: expected uint8 images of shape (N, H, W), got "
                         f"{images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{label_path}: expected uint8 labels of shape (N,), got "
                         f"{labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{image_path} holds {len(images)} images but {label_path} holds "
                         f"{len(labels)} labels")
    if labels.size and labels.max() >= len(CLASSES):
        raise ValueError(f"{label_path}: labels must be 0..{len(CLASSES) - 1}, found "
                         f"{labels.max()}")
    x = (images.astype(np.float32) / np.float32(255))[:, None]
    return x, labels.astype(np.int64)
