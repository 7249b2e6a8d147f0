import os
import sys

import pytest
from helpers import isa_params
from hypothesis import HealthCheck, settings

import fastconv

settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
# .ci/sanitize: the instrumented kernels are several times slower
settings.register_profile("sanitize", max_examples=15, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

if os.environ.get("FASTCONV_SANITIZED") == "1":
    # .ci/sanitize preloads the ASan runtime, under which any C++ exception PyTorch throws (a
    # refused argument in a parity test) aborts the process: ASan's __cxa_throw interceptor
    # finds no real __cxa_throw. So the sanitized run leaves PyTorch out (importorskip skips
    # its parity tests; the normal run has them) and checks fastconv's kernels alone.
    sys.modules["torch"] = None


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz: hypothesis fuzzing of every public op (also runs by "
                                       "default; HYPOTHESIS_PROFILE=long pytest -m fuzz for more)")
    config.addinivalue_line("markers", "slow: needs more than 4 GB or a minute; runs only with "
                                       "FASTCONV_TEST_LARGE=1")


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch, tmp_path_factory):
    """Tests never reach the network and never touch the user's dataset cache: downloads are
    off and the cache is an empty folder (subprocesses inherit both); the download tests turn
    them back on against a local server."""
    monkeypatch.setenv("FASTCONV_OFFLINE", "1")
    monkeypatch.setenv("FASTCONV_DATA", str(tmp_path_factory.mktemp("dataset-cache")))


@pytest.fixture(params=isa_params())
def isa(request):
    """Run the test once on every instruction-set path this machine has."""
    with fastconv.use_isa(request.param):
        yield request.param
