"""Child processes use fastconv after the parent did: fork (os.fork and multiprocessing's
default start method on Linux), spawn and forkserver, with multi-threaded kernels on both sides.

GNU OpenMP's thread team does not survive fork(): before fastconv moved such calls to a fresh
thread in the child, the child's first multi-threaded kernel hung for ever. Each scenario runs in
its own Python process under a timeout, so a hang fails the test instead of stopping the suite;
every child checks its results against the parent's bit for bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import fastconv

TIMEOUT = 120  # seconds for a whole scenario; each takes about a second when it works

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="this platform has no fork")

# Run first in every scenario: the parent's kernels run on 2 OpenMP threads before any child is
# made (what left the forking thread's team stale), and `expected` holds the parent's results.
PRELUDE = """
import multiprocessing, os, sys, threading
import numpy as np
import fastconv, fastconv.functional as F

fastconv.set_num_threads(2)
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 16, 20, 20)).astype(np.float32)
w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)

def work(_=None):
    y = F.conv2d(x, w, padding=1)
    gx, gw, gb = F.conv2d_backward(np.ones_like(y), x, w, padding=1)
    p, idx = F.max_pool2d(F.relu(y), 2, return_indices=True)
    return [y, gx, gw, gb, p, idx]

def same(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a, b))

expected = work()
"""

SCENARIOS = {
    # os.fork from the thread that ran the kernels: the child's calls from that thread move to
    # a fresh thread of its own
    "os.fork": """
        pid = os.fork()
        if pid == 0:
            stale, mine = fastconv._kernels.after_fork_state()
            os._exit(0 if stale and mine and same(work(), expected) else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
    """,
    # one thread in the child: no team is needed, the call runs directly
    "os.fork, child on one thread": """
        pid = os.fork()
        if pid == 0:
            fastconv.set_num_threads(1)
            os._exit(0 if same(work(), expected) else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
    """,
    # a thread the child starts has a team of its own
    "os.fork, child's own thread": """
        pid = os.fork()
        if pid == 0:
            out = []
            t = threading.Thread(target=lambda: out.append(same(work(), expected)))
            t.start(); t.join()
            os._exit(0 if out == [True] else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
    """,
    # a child that used fastconv forks again: the grandchild works too
    "os.fork twice": """
        pid = os.fork()
        if pid == 0:
            ok = same(work(), expected)
            grandchild = os.fork()
            if grandchild == 0:
                os._exit(0 if same(work(), expected) else 3)
            _, status = os.waitpid(grandchild, 0)
            os._exit(0 if ok and os.waitstatus_to_exitcode(status) == 0 else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
    """,
    # the kernels ran in another thread of the parent, not the one that forks: no fresh thread
    # is needed in the child, and none is used
    "os.fork after kernels in another thread": """
        other = []
        t = threading.Thread(target=lambda: other.append(work()))
        t.start(); t.join()
        pid = os.fork()
        if pid == 0:
            ok = same(work(), expected)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
    """,
    # an error raised in the child's fresh thread reaches the caller
    "os.fork, error in the child": """
        pid = os.fork()
        if pid == 0:
            try:
                F.conv2d(x, w[:, :3])
            except ValueError as exc:
                os._exit(0 if "conv2d" in str(exc) else 4)
            os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
    """,
}

for method in ("fork", "spawn", "forkserver"):
    SCENARIOS[f"multiprocessing {method}"] = f"""
        if __name__ == "__main__":
            ctx = multiprocessing.get_context("{method}")
            with ctx.Pool(2) as pool:
                results = pool.map(work, range(4))
            assert all(same(r, expected) for r in results)
    """

SCENARIOS["ProcessPoolExecutor (fork)"] = """
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(pool.map(work, range(4)))
    assert all(same(r, expected) for r in results)
"""


@pytest.mark.parametrize("name", SCENARIOS)
def test_child_processes_use_fastconv_after_the_parent(name, tmp_path):
    if name.endswith("forkserver") and sys.platform == "darwin":
        pytest.skip("forkserver is not available here")
    script = tmp_path / "scenario.py"  # spawn and forkserver import the main module by path
    script.write_text(PRELUDE + textwrap.dedent(SCENARIOS[name]))
    try:
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                                timeout=TIMEOUT, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}: no answer in {TIMEOUT} s (a hang)")
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_forking_thread_is_stale_only_in_the_child():
    assert fastconv._kernels.after_fork_state() == (False, False)
