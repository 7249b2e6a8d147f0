"""MNIST and Fashion-MNIST, downloaded once into a cache and verified, with offline fallbacks;
and a reader and writer for their IDX file format.

Where ``load_fashion_mnist()`` and ``load_mnist()`` find the images when no folder is given
(``locate``), in order:

1. The cache: ``FASTCONV_DATA`` if set, else ``$XDG_CACHE_HOME/fastconv``, else
   ``~/.cache/fastconv`` (or the ``root`` argument), one subfolder per dataset
   (``fashion-mnist/``, ``mnist/``) holding the four original ``.gz`` files.
2. Fashion-MNIST only: Debian's ``dataset-fashion-mnist`` package (``apt-get install
   dataset-fashion-mnist``: the full 60 000 + 10 000 images in ``/usr/share/datasets/
   fashion-mnist``), with no download.
3. A download into the cache: the mirrors tried in order for each file, each checked against its
   published size, MD5 (torchvision's) and SHA-256 (Keras's for Fashion-MNIST, TensorFlow
   Datasets' for MNIST) as it streams into a temporary file in the cache folder, and moved into
   place only when whole and verified: a failed, interrupted or corrupt download leaves nothing
   in the cache. ``FASTCONV_OFFLINE=1`` (or ``download=False``) skips this step.
4. Fashion-MNIST only: the small real subset shipped inside fastconv (``fastconv/data/``: 2 000
   training and 1 000 test images taken from the original files, MIT-licensed by Zalando SE, see
   ``fastconv/data/LICENSE-fashion-mnist``). MNIST has no offline copy: without the cache or a
   download, loading it fails with a message that says where to put the files.

The IDX format (http://yann.lecun.com/exdb/mnist/): a big-endian header, magic ``0x0000TTDD``
with TT the element type (0x08 = uint8) and DD the number of dimensions, then DD uint32 sizes,
then the elements in row-major order. Files may be gzip-compressed (``.gz``).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import socket
import struct
import sys
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _io
from ._progress import progress_bar

__all__ = ["CLASSES", "MNIST_CLASSES", "DATASETS", "DEBIAN_FOLDER", "SHIPPED_FOLDER",
           "DownloadError", "Source", "cache_folder", "default_folder", "download", "idx_files",
           "load_fashion_mnist", "load_mnist", "locate", "read_idx", "write_idx"]

DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
SHIPPED_FOLDER = Path(__file__).resolve().parent / "data"

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")
MNIST_CLASSES = tuple("0123456789")

_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@dataclass(frozen=True)
class Remote:
    """One published file: its name on the mirrors, size in bytes and checksums."""

    name: str
    size: int
    md5: str
    sha256: str


@dataclass(frozen=True)
class Dataset:
    """A dataset fastconv can fetch: its files, the mirrors to try in order, its classes and
    the offline copies to fall back on (None where there is none)."""

    name: str
    title: str
    files: tuple[Remote, ...]
    mirrors: tuple[str, ...]
    classes: tuple[str, ...]
    debian: Path | None = None
    shipped: Path | None = None


# Checksums as torchvision (MD5), Keras (Fashion-MNIST SHA-256) and TensorFlow Datasets (MNIST
# SHA-256) publish them. Debian's Fashion-MNIST files are these with their gzip header rewritten
# (name dropped, time changed): restoring it gives exactly these MD5s and SHA-256s.
DATASETS = {
    "fashion-mnist": Dataset(
        "fashion-mnist", "Fashion-MNIST",
        (Remote("train-images-idx3-ubyte.gz", 26421880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
         Remote("train-labels-idx1-ubyte.gz", 29515, "25c81989df183df01b3e8a0aad5dffbe",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
         Remote("t10k-images-idx3-ubyte.gz", 4422102, "bef4ecab320f06d8554ea6380940ec79",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
         Remote("t10k-labels-idx1-ubyte.gz", 5148, "bb300cfdad3c16e7a12a480ee83cd310",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5")),
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"),
        CLASSES, DEBIAN_FOLDER, SHIPPED_FOLDER),
    "mnist": Dataset(
        "mnist", "MNIST",
        (Remote("train-images-idx3-ubyte.gz", 9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
         Remote("train-labels-idx1-ubyte.gz", 28881, "d53e105ee54ea40749a09fcbcd1e9432",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
         Remote("t10k-images-idx3-ubyte.gz", 1648877, "9fb629c4189551a2d022fa330f9573f3",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
         Remote("t10k-labels-idx1-ubyte.gz", 4542, "ec29112dd5afa0611ce80d1b7f02629c",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6")),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        MNIST_CLASSES),
}

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



def idx_files(folder, split: str) -> tuple[Path, Path]:
    """The (images, labels) IDX files of `split` ('train', or 'test': the t10k files) in
    `folder`, gzipped or not; ValueError naming the file if one is missing."""
    folder = Path(folder)

    def find(stem: str) -> Path:
        for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
            if (folder / name).is_file():
                return folder / name
        raise ValueError(f"{folder / (stem + '.gz')} not found (nor without .gz): expected the "
                         f"MNIST-format IDX files {', '.join(sum(_FILES.values(), ()))} in "
                         f"{folder}")

    if split not in _FILES:
        raise ValueError(f"idx_files: split must be 'train' or 'test', got {split!r}")
    return find(_FILES[split][0]), find(_FILES[split][1])


# ---- the cache and downloads ---------------------------------------------------------------------

def cache_folder(root=None) -> Path:
    """Where downloads go: `root`, else ``FASTCONV_DATA``, else ``$XDG_CACHE_HOME/fastconv``,
    else ``~/.cache/fastconv``.

    >>> from fastconv.datasets import cache_folder
    >>> str(cache_folder("/data/cache"))
    '/data/cache'
    """
    if root is not None:
        return Path(root)
    if os.environ.get("FASTCONV_DATA"):
        return Path(os.environ["FASTCONV_DATA"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "fastconv"
    return Path.home() / ".cache" / "fastconv"


class DownloadError(OSError):
    """No mirror gave a file whole and with its published checksums; the message says what
    each mirror did."""


def _dataset(op: str, name: str) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"{op}: name must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name]


def _complete(folder: Path, dataset: Dataset, check_sizes: bool) -> bool:
    """All four files are in `folder` (with their published sizes if `check_sizes`)."""
    return all((folder / f.name).is_file()
               and (not check_sizes or (folder / f.name).stat().st_size == f.size)
               for f in dataset.files)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 10**5 else f"{size / 1e3:.1f} kB"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fetch(url: str, remote: Remote, target: Path, timeout: float, progress: bool) -> None:
    """Stream `url` into `target` (atomically), checking size and checksums on the way."""
    request = urllib.request.Request(url, headers={"User-Agent": "fastconv"})
    # MD5 identifies the published file (as torchvision checks it), not a secret
    md5, sha256, received = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0
    with urllib.request.urlopen(request, timeout=timeout) as response, \
            _io.atomic_write(target) as out, \
            progress_bar(remote.size, remote.name, "B", progress, scale=True) as bar:
        while chunk := response.read(1 << 16):
            received += len(chunk)
            if received > remote.size:
                raise ValueError(f"longer than the published {remote.size:,} bytes")
            md5.update(chunk)
            sha256.update(chunk)
            out.write(chunk)
            bar.update(len(chunk))
        # raising inside atomic_write removes the temporary: nothing partial reaches the cache
        if received != remote.size:
            raise ValueError(f"truncated: {received:,} of {remote.size:,} bytes")
        if md5.hexdigest() != remote.md5 or sha256.hexdigest() != remote.sha256:
            raise ValueError(f"wrong checksum: MD5 {md5.hexdigest()}, SHA-256 "
                             f"{sha256.hexdigest()} (published: MD5 {remote.md5}, SHA-256 "
                             f"{remote.sha256})")


def _why(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    return str(exc) or type(exc).__name__


def download(name: str = "fashion-mnist", root=None, mirrors=None, timeout: float = 30.0,
             progress: bool = True, log=_stderr) -> Path:
    """Fetch the files of dataset `name` that the cache lacks; return the cache folder.

    Parameters
    ----------
    name : 'fashion-mnist' or 'mnist' (``DATASETS``)
    root : the cache folder (default ``cache_folder()``); the files go to ``root/name/``
    mirrors : base URLs tried in order for each file (default the dataset's own list)
    timeout : seconds to wait for a connection or for more data before trying the next mirror
    progress : a progress bar per file on stderr
    log : called with one line per download and per failed mirror

    Raises
    ------
    DownloadError (an OSError) if every mirror fails for some file, saying why each failed
    (HTTP error, timeout, truncated, wrong checksum). Files already fetched stay in the cache:
    each is complete and verified.

    Examples
    --------
    >>> from fastconv import datasets
    >>> folder = datasets.download("mnist")  # doctest: +SKIP
    """
    return _download(_dataset("download", name), root, mirrors, timeout, progress, log)


def _download(dataset: Dataset, root, mirrors, timeout: float, progress: bool, log) -> Path:
    folder = cache_folder(root) / dataset.name
    folder.mkdir(parents=True, exist_ok=True)
    mirrors = dataset.mirrors if mirrors is None else tuple(mirrors)
    for remote in dataset.files:
        target = folder / remote.name
        if target.is_file() and target.stat().st_size == remote.size:
            continue
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + remote.name
            log(f"downloading {dataset.title} {remote.name} ({_megabytes(remote.size)}) from "
                f"{url}")
            try:
                _fetch(url, remote, target, timeout, progress)
                break
            except (OSError, ValueError, http.client.HTTPException) as exc:
                failures.append(f"{url}: {_why(exc)}")
                log(f"  failed: {_why(exc)}")
        else:
            raise DownloadError(f"download: could not fetch {dataset.title}'s {remote.name} "
                                f"into {folder}: " + "; ".join(failures or ["no mirrors"]))
    return folder


@dataclass(frozen=True)
class Source:
    """Where ``locate`` found a dataset: the folder, a sentence saying which copy it is, and
    whether it is the full set."""

    folder: Path
    description: str
    full: bool


def _offline() -> bool:
    return os.environ.get("FASTCONV_OFFLINE", "").strip() not in ("", "0")


def locate(name: str = "fashion-mnist", root=None, download: bool | None = None, mirrors=None,
           timeout: float = 30.0, progress: bool = True, log=_stderr) -> Source:
    """Find dataset `name`: the cache, Debian's package, a download, the shipped subset, in
    that order (see the module's docstring). `download` None means "unless FASTCONV_OFFLINE is
    set"; the other arguments are ``download``'s.

    Raises DownloadError for MNIST when it is neither cached nor downloadable.

    >>> from fastconv import datasets
    >>> source = datasets.locate("fashion-mnist", download=False)
    >>> source.folder.is_dir(), source.description.startswith(("Fashion-MNIST", "Debian", "the"))
    (True, True)
    """
    dataset = _dataset("locate", name)
    cached = cache_folder(root) / dataset.name
    if _complete(cached, dataset, check_sizes=True):
        return Source(cached, f"{dataset.title} in the cache ({cached})", True)
    if dataset.debian is not None and _complete(dataset.debian, dataset, check_sizes=False):
        return Source(dataset.debian, f"Debian's dataset-{dataset.name} package "
                                      f"({dataset.debian})", True)
    why = "downloads are off (FASTCONV_OFFLINE)"
    if download if download is not None else not _offline():
        try:
            fetched = _download(dataset, root, mirrors, timeout, progress, log)
            return Source(fetched, f"{dataset.title}, downloaded into the cache ({fetched})",
                          True)
        except OSError as exc:  # DownloadError, or a cache folder that cannot be written
            why = "the download failed"
            if not isinstance(exc, DownloadError):  # each mirror's failure is logged already
                log(f"{why}: {exc}")
            if dataset.shipped is None:
                raise DownloadError(f"locate: {dataset.title} is not in the cache ({cached}) "
                                    f"and {why} ({exc}); put its four .gz files there, or "
                                    "pass a folder") from exc
    if dataset.shipped is None:
        raise DownloadError(f"locate: {dataset.title} is not in the cache ({cached}) and "
                            f"{why}: put its four .gz files there, or pass a folder")
    return Source(dataset.shipped,
                  f"the {dataset.title} subset shipped with fastconv ({dataset.shipped}), as "
                  f"{why}; `apt-get install dataset-{dataset.name}` or a connection gives the "
                  "full set", False)


def default_folder() -> Path:
    """Where ``load_fashion_mnist()`` reads from without downloading: the cache if complete,
    else Debian's package if installed, else the subset shipped with fastconv."""
    return locate("fashion-mnist", download=False, log=lambda message: None).folder


# ---- loading -------------------------------------------------------------------------------------

def _load(op: str, name: str, folder, split: str, download: bool | None):
    if split not in _FILES:
        raise ValueError(f"{op}: split must be 'train' or 'test', got {split!r}")
    classes = DATASETS[name].classes
    folder = locate(name, download=download).folder if folder is None else Path(folder)
    image_path, label_path = idx_files(folder, split)
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
    if labels.size and labels.max() >= len(classes):
        raise ValueError(f"{label_path}: labels must be 0..{len(classes) - 1}, found "
                         f"{labels.max()}")
    x = (images.astype(np.float32) / np.float32(255))[:, None]
    return x, labels.astype(np.int64)


_LOAD_DOC = """{title} images and labels from IDX files.

    Parameters
    ----------
    folder : folder holding ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
        ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]`` (any MNIST-format
        set). Default: ``locate('{name}')``, which downloads the set once into the cache.
    split : 'train' or 'test'.
    download : when `folder` is None, whether ``locate`` may download (default: unless
        FASTCONV_OFFLINE is set).

    Returns
    -------
    images : (N, 1, H, W) float32 in [0, 1] (pixel / 255; 28 x 28 for {title})
    labels : (N,) int64 class indices 0..9 (names in ``{classes}``)

    Raises
    ------
    ValueError naming the file if one is missing, not IDX, truncated or corrupt, if images are
    not uint8 (N, H, W), labels not uint8 (N,) in 0..9, or their counts disagree.
"""


def load_fashion_mnist(folder: str | os.PathLike | None = None, split: str = "train",
                       download: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    return _load("load_fashion_mnist", "fashion-mnist", folder, split, download)


def load_mnist(folder: str | os.PathLike | None = None, split: str = "train",
               download: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    return _load("load_mnist", "mnist", folder, split, download)


load_fashion_mnist.__doc__ = _LOAD_DOC.format(title="Fashion-MNIST", name="fashion-mnist",
                                              classes="CLASSES") + """
    Examples
    --------
    >>> from fastconv.datasets import load_fashion_mnist, SHIPPED_FOLDER
    >>> x, y = load_fashion_mnist(SHIPPED_FOLDER, "test")
    >>> x.shape, x.dtype, y.shape, y.dtype
    ((1000, 1, 28, 28), dtype('float32'), (1000,), dtype('int64'))
"""
load_mnist.__doc__ = _LOAD_DOC.format(title="MNIST", name="mnist", classes="MNIST_CLASSES")
