"""Downloads into the dataset cache, against a local HTTP server (127.0.0.1, in a thread) that
serves small IDX files well and badly: whole, truncated, with a wrong checksum, too long, 404,
hanging; mirrors that fail before one that works; the offline fallbacks."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from fastconv import datasets
from fastconv.datasets import Dataset, DownloadError, Remote, load_fashion_mnist


def _tiny_files(rng) -> dict[str, bytes]:
    """The four MNIST-named .gz files of a 6 + 4 image dataset."""
    files = {}
    for stem, n in (("train", 6), ("t10k", 4)):
        for kind, shape in (("images-idx3", (n, 28, 28)), ("labels-idx1", (n,))):
            high = 256 if kind.startswith("images") else 10
            array = rng.integers(0, high, shape, dtype=np.uint8)
            payload = (bytes([0, 0, 8, len(shape)]) + b"".join(
                s.to_bytes(4, "big") for s in shape) + array.tobytes())
            files[f"{stem}-{kind}-ubyte.gz"] = gzip.compress(payload, mtime=0)
    return files


FILES = _tiny_files(np.random.default_rng(7))
REMOTES = tuple(Remote(name, len(data), hashlib.md5(data).hexdigest(),
                       hashlib.sha256(data).hexdigest()) for name, data in FILES.items())


class _Handler(http.server.BaseHTTPRequestHandler):
    """/<behaviour>/<file name>: how the mirror answers."""

    release: threading.Event
    requests: list

    def log_message(self, *args):
        pass

    def do_GET(self):
        behaviour, _, name = self.path.strip("/").partition("/")
        self.requests.append(self.path)
        data = FILES.get(name)
        if behaviour == "missing" or data is None:
            self.send_error(404)
            return
        body, length = data, len(data)
        if behaviour == "truncated":  # the connection drops half way
            body = data[:len(data) // 2]
        elif behaviour == "short":  # a whole response, just shorter (no Content-Length lie)
            body = data[:-10]
            length = len(body)
        elif behaviour == "corrupt":
            body = data[:-1] + bytes([data[-1] ^ 1])
        elif behaviour == "long":
            body = data + b"\0" * 100
            length = len(body)
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if behaviour == "hang":  # headers, then nothing until the test ends
            self.release.wait(30)
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    handler = type("Handler", (_Handler,), {"release": threading.Event(), "requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield base, handler.requests
    finally:
        handler.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A dataset 'tiny' of the FILES, with no mirrors of its own and no offline copy."""
    dataset = Dataset("tiny", "Tiny", REMOTES, (), datasets.MNIST_CLASSES)
    monkeypatch.setitem(datasets.DATASETS, "tiny", dataset)
    return dataset


def _cache(tmp_path):
    return sorted(p.name for p in (tmp_path / "tiny").iterdir()) \
        if (tmp_path / "tiny").exists() else []


def _quiet(message):
    pass


def test_download_verifies_and_caches_once(server, tiny, tmp_path):
    base, requests = server
    folder = datasets.download("tiny", tmp_path, [f"{base}/good/"], progress=False, log=_quiet)
    assert folder == tmp_path / "tiny"
    assert _cache(tmp_path) == sorted(FILES)
    for name, data in FILES.items():
        assert (folder / name).read_bytes() == data
    x, y = load_fashion_mnist(folder, "train")
    assert x.shape == (6, 1, 28, 28) and y.shape == (6,)
    assert len(requests) == 4
    datasets.download("tiny", tmp_path, [f"{base}/good/"], progress=False, log=_quiet)
    assert len(requests) == 4  # nothing fetched again


BAD = [
    ("truncated", "IncompleteRead|truncated"),
    ("short", r"truncated: [\d,]+ of [\d,]+ bytes"),
    ("corrupt", "wrong checksum: MD5"),
    ("long", "longer than the published"),
    ("missing", "HTTP 404"),
]


@pytest.mark.parametrize("behaviour, message", BAD, ids=[b[0] for b in BAD])
def test_bad_mirror_leaves_nothing_in_the_cache(server, tiny, tmp_path, behaviour, message):
    base, _ = server
    with pytest.raises(DownloadError, match=message) as info:
        datasets.download("tiny", tmp_path, [f"{base}/{behaviour}/"], progress=False,
                          log=_quiet)
    assert f"{base}/{behaviour}/" in str(info.value)
    assert _cache(tmp_path) == []  # no partial file, no temporary


def test_hanging_mirror_times_out(server, tiny, tmp_path):
    base, _ = server
    start = time.perf_counter()
    with pytest.raises(DownloadError, match="timed out"):
        datasets.download("tiny", tmp_path, [f"{base}/hang/"], timeout=0.5, progress=False,
                          log=_quiet)
    assert time.perf_counter() - start < 10
    assert _cache(tmp_path) == []


def test_mirrors_are_tried_in_order(server, tiny, tmp_path):
    base, requests = server
    lines = []
    mirrors = [f"{base}/missing/", f"{base}/hang/", f"{base}/corrupt/", f"{base}/good/"]
    datasets.download("tiny", tmp_path, mirrors, timeout=0.5, progress=False, log=lines.append)
    assert _cache(tmp_path) == sorted(FILES)
    first = next(iter(FILES))
    assert requests[:4] == [f"/{m}/{first}" for m in ("missing", "hang", "corrupt", "good")]
    assert sum("failed: HTTP 404" in line for line in lines) == 4
    assert sum("failed: timed out" in line for line in lines) == 4


def test_progress_bar_without_tqdm(server, tiny, tmp_path, monkeypatch, capsys):
    """tqdm belongs to the command line's extra: without it the bar is a plain line."""
    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)  # import tqdm fails
    base, _ = server
    datasets.download("tiny", tmp_path, [f"{base}/good/"], log=_quiet)
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz: 0.0/0.0 MB\n" in err  # tiny files: 0.0 MB


def test_locate_falls_back_to_the_shipped_subset(server, tiny, tmp_path, monkeypatch):
    base, requests = server
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setitem(datasets.DATASETS, "tiny", replace(tiny, shipped=shipped,
                                                           mirrors=(f"{base}/missing/",)))
    lines = []
    source = datasets.locate("tiny", tmp_path / "cache", download=True, progress=False,
                             log=lines.append)
    assert source.folder == shipped and not source.full
    assert "as the download failed" in source.description
    assert any("HTTP 404" in line for line in lines)
    monkeypatch.setenv("FASTCONV_OFFLINE", "1")
    requests.clear()
    source = datasets.locate("tiny", tmp_path / "cache", progress=False, log=_quiet)
    assert source.folder == shipped and "FASTCONV_OFFLINE" in source.description
    assert requests == []
    monkeypatch.setenv("FASTCONV_OFFLINE", "0")
    monkeypatch.setitem(datasets.DATASETS, "tiny", replace(tiny, shipped=shipped,
                                                           mirrors=(f"{base}/good/",)))
    source = datasets.locate("tiny", tmp_path / "cache", progress=False, log=_quiet)
    assert source.full and source.folder == tmp_path / "cache" / "tiny"
    assert "downloaded into the cache" in source.description
    assert "in the cache" in datasets.locate("tiny", tmp_path / "cache").description


def test_locate_without_an_offline_copy_says_what_to_do(server, tiny, tmp_path, monkeypatch):
    base, _ = server
    monkeypatch.setitem(datasets.DATASETS, "tiny", replace(tiny, mirrors=(f"{base}/missing/",)))
    with pytest.raises(DownloadError, match="not in the cache .* download failed .*HTTP 404.*"
                                            "put its four .gz files there"):
        datasets.locate("tiny", tmp_path, download=True, progress=False, log=_quiet)
    monkeypatch.setenv("FASTCONV_OFFLINE", "1")
    with pytest.raises(DownloadError, match="not in the cache .*put its four .gz files there"):
        datasets.locate("tiny", tmp_path, progress=False, log=_quiet)


def test_unwritable_cache_falls_back(tiny, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    shipped = tmp_path / "shipped"
    monkeypatch.setitem(datasets.DATASETS, "tiny", replace(tiny, shipped=shipped))
    source = datasets.locate("tiny", blocker, download=True, progress=False, log=_quiet)
    assert source.folder == shipped and "the download failed" in source.description


@pytest.mark.parametrize("env, expected", [
    ({"FASTCONV_DATA": "/d", "XDG_CACHE_HOME": "/x"}, "/d"),
    ({"XDG_CACHE_HOME": "/x"}, "/x/fastconv"),
    ({}, "~/.cache/fastconv"),
])
def test_cache_folder(monkeypatch, env, expected):
    for name in ("FASTCONV_DATA", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert datasets.cache_folder() == datasets.Path(expected).expanduser()
    assert datasets.cache_folder("/r") == datasets.Path("/r")


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"download: name must be one of \['fashion-mnist', "
                                         r"'mnist'\], got 'cifar'"):
        datasets.download("cifar")


def test_interrupted_download_leaves_nothing(server, tiny, tmp_path, monkeypatch):
    """Ctrl-C half way through a file: the temporary goes, the cache stays as it was."""
    base, _ = server

    class Interrupting:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def update(self, n):
            raise KeyboardInterrupt

    monkeypatch.setattr(datasets, "progress_bar", Interrupting)
    with pytest.raises(KeyboardInterrupt):
        datasets.download("tiny", tmp_path, [f"{base}/good/"], log=_quiet)
    assert _cache(tmp_path) == []
