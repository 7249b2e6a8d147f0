"""Workspace stays bounded: no whole-batch im2col. A forward pass on vgg-64 or res-256 may grow
the peak resident memory by its output plus at most 64 MB, whatever the batch (issue: faster
than PyTorch, memory target). Run in a fresh interpreter so earlier tests' peaks don't count."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

import fastconv

SCRIPT = r"""
import resource, sys
import numpy as np
import fastconv, fastconv.functional as F
n, c, h, k, ks, pad, op = eval(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.standard_normal((n, c, h, h), dtype=np.float32)
w = rng.standard_normal((k, c, ks, ks), dtype=np.float32)
gy = rng.standard_normal((n, k, h, h), dtype=np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = F.conv2d(x, w, padding=pad) if op == "forward" else F.conv2d_backward(gy, x, w, padding=pad)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
outputs = out.nbytes if op == "forward" else sum(a.nbytes for a in out)
print(after - before, outputs)
"""


@pytest.mark.parametrize("shape", [(32, 64, 56, 64, 3, 1), (32, 256, 14, 256, 3, 1)],
                         ids=["vgg-64", "res-256"])
@pytest.mark.parametrize("op", ["forward", "backward"])
def test_peak_memory_is_outputs_plus_bounded_workspace(shape, op):
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env = {**os.environ, "PYTHONPATH": package_parent, "OMP_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, repr((*shape, op))], env=env,
                            capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    growth, outputs = (int(v) for v in result.stdout.split())
    assert growth <= outputs + 64 * 2**20, (growth / 2**20, outputs / 2**20)
