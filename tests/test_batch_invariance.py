"""An image's result does not depend on the images batched with it, bit for bit, on every ISA.

Every per-image op (all but the weight gradient, which sums over the batch) must give each image
exactly what it gives that image alone: fastconv.dask and fastconv.distributed split batches
into chunks and shards, and a user's batch size must not change a prediction's last bit. What
could break it: a fast path chosen by how much data follows a plane (reads past a row are
allowed when the batch goes on), or a loop whose vector body and scalar remainder round
differently. Sizes are odd so rows end in remainders and the last plane's rows in partial
blocks.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DTYPES

import fastconv.functional as F

X_SHAPE = (5, 6, 11, 10)

def _transposed(w):
    """The conv2d weight (K, C, kH, kW) as a conv_transpose2d weight from C channels to K."""
    return np.ascontiguousarray(w.transpose(1, 0, 2, 3))


# name: (function of x, returning an array or a tuple of arrays whose axis 0 is the batch)
OPS = {
    "conv2d": lambda x, w: F.conv2d(x, w, padding=1),
    "conv2d-strided": lambda x, w: F.conv2d(x, w, stride=2, padding=(1, 0, 2, 1)),
    "conv2d_input": lambda x, w: F.conv2d_input(x.shape, w, x[:, :4, :9, :8].copy()),
    "conv_transpose2d": lambda x, w: F.conv_transpose2d(
        x, _transposed(w), np.ones(4, x.dtype), stride=2, padding=1, output_padding=1),
    "conv_transpose2d-stride-1": lambda x, w: F.conv_transpose2d(x, _transposed(w), padding=1),
    "conv_transpose2d_backward-input": lambda x, w: F.conv_transpose2d_backward(
        np.ones((x.shape[0], 4, 22, 20), x.dtype), x, _transposed(w), stride=2, padding=1,
        output_padding=1)[0],
    "max_pool2d": lambda x, w: F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True),
    "max_pool2d_backward": lambda x, w: F.max_pool2d_backward(
        np.ones((x.shape[0], 6, 6, 6), x.dtype), x, 3, 2, 1, ceil_mode=True),
    "avg_pool2d": lambda x, w: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True,
                                            count_include_pad=False),
    "avg_pool2d_backward": lambda x, w: F.avg_pool2d_backward(
        np.ones((x.shape[0], 6, 5, 5), x.dtype), x, 2),
    "lp_pool2d": lambda x, w: F.lp_pool2d(x, 2, 3, stride=2, ceil_mode=True),
    "lp_pool2d-p3": lambda x, w: F.lp_pool2d(np.abs(x), 3, 2),
    "lp_pool2d_backward": lambda x, w: F.lp_pool2d_backward(
        np.ones((x.shape[0], 6, 5, 5), x.dtype), np.abs(x), 2, 3, stride=2, ceil_mode=True),
    "adaptive_avg_pool2d": lambda x, w: F.adaptive_avg_pool2d(x, (4, 3)),
    "adaptive_max_pool2d": lambda x, w: F.adaptive_max_pool2d(x, (4, 3), return_indices=True),
    "global_avg_pool2d": lambda x, w: F.adaptive_avg_pool2d(x, 1),
    "relu": lambda x, w: F.relu(x),
}


def _parts(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", OPS)
def test_each_image_gets_what_it_gets_alone(isa, name, dtype):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(X_SHAPE).astype(dtype)
    w = rng.standard_normal((4, 6, 3, 3)).astype(dtype)
    batched = _parts(OPS[name](x, w))
    alone = [_parts(OPS[name](x[i:i + 1], w)) for i in range(len(x))]
    for k, whole in enumerate(batched):
        pieces = np.concatenate([a[k] for a in alone])
        bits = f"u{whole.itemsize}" if whole.dtype.kind == "f" else whole.dtype
        np.testing.assert_array_equal(whole.view(bits), pieces.view(bits))
