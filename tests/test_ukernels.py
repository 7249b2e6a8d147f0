"""The GEMM microkernels (the channels-last indirect ones too), Winograd F(2x2, 3x3) transforms,
packing routines, depthwise microkernels and global pooling's plane reductions one by one, against
plain NumPy, on every ISA path this machine has (fastconv._kernels.ukernel_table; each routine's
contract is in docs/KERNELS.md).

As XNNPACK tests its microkernels: one tester per routine and a table of cases at the routine's
edges, with sizes given relative to the ISA's register tile where the tile matters ("tile-1" is
MR - 1 or NR - 1): m < MR, n < NR, k = 1, reductions that are not a multiple of anything, odd
leading dimensions and offsets, accumulate vs overwrite, with and without bias. Every buffer starts
as NaN, so a routine that writes outside its contract, or leaves a promised element unwritten,
fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DTYPES, isa_params, tolerance

from fastconv import _kernels


@pytest.fixture(params=[pytest.param((p.values[0], d), marks=p.marks,
                                     id=f"{p.values[0]}-{np.dtype(d).name}")
                        for p in isa_params() for d in DTYPES])
def table(request):
    isa, dtype = request.param
    return _kernels.ukernel_table(isa, dtype)


def _size(spec, tile: int) -> int:
    """An int, or 'tile' / 'tile-1' / 'tile+1' / '2tile+3' relative to the register tile, or
    one of those halved ('3tile/2')."""
    if isinstance(spec, int):
        return spec
    if spec.endswith("/2"):
        return _size(spec[:-2], tile) // 2
    times, _, delta = spec.partition("tile")
    return (int(times) if times else 1) * tile + int(delta or 0)


def _nan(n, dtype):
    return np.full(n, np.nan, dtype)


def _rand(rng, n, dtype):
    return rng.standard_normal(n).astype(dtype)


def _tile(rng, rows: int, cols: int, ldc: int, dtype):
    """A C tile buffer of rows x ldc: random in its first `cols` columns, NaN past them; and the
    mask of those columns."""
    written = np.zeros((rows, ldc), bool)
    written[:, :cols] = True
    written = written.reshape(-1)
    c = _nan(rows * ldc, dtype)
    c[written] = _rand(rng, rows * cols, dtype)
    return c, written


def _assert_region(actual, expected, written, terms: int, scale, what: str):
    """actual == expected within the tolerance where `written`, and still NaN elsewhere."""
    assert np.isnan(actual[~written]).all(), f"{what}: wrote outside its region"
    bound = tolerance(actual.dtype, terms) * (np.abs(scale[written]) + 1.0)
    err = np.abs(actual[written].astype(np.float64) - expected[written])
    assert (err <= bound).all(), f"{what}: worst error {err.max()} vs bound {bound.max()}"


# ---- GEMM microkernels -------------------------------------------------------------------------

# id: (m, n, kc, extra columns of ldc, accumulate, bias)
GEMM_CASES = {
    "full-tile": ("tile", "tile", 17, 0, False, False),
    "full-tile-bias": ("tile", "tile", 17, 0, False, True),
    "k1": ("tile", "tile", 1, 0, False, True),
    "k2": ("tile", "tile", 2, 0, False, False),
    "k3-odd-ldc": ("tile", "tile", 3, 3, False, True),
    "k-long-odd": ("tile", "tile", 193, 1, False, False),
    "m1": (1, "tile", 5, 0, False, True),
    "m-edge": ("tile-1", "tile", 7, 0, False, True),
    "n1": ("tile", 1, 5, 0, False, True),
    "n-edge": ("tile", "tile-1", 7, 0, False, False),
    "mn-edge-odd-ldc": ("tile-1", "tile-1", 9, 5, False, True),
    "m1-n1-k1": (1, 1, 1, 0, False, True),
    "accumulate": ("tile", "tile", 9, 0, True, False),
    "accumulate-k1": ("tile", "tile", 1, 2, True, False),
    "accumulate-edges": ("tile-1", "tile-1", 11, 3, True, False),
    "accumulate-ignores-bias": ("tile", "tile-1", 4, 0, True, True),
}


def _check_gemm(table, case, half, seed=0):
    m_spec, n_spec, kc, ldc_extra, accumulate, with_bias = case
    MR, NR, dtype = table.mr, table.nr, table.dtype
    width = NR // 2 if half else NR
    m, n = _size(m_spec, MR), _size(n_spec, width)
    rng = np.random.default_rng(seed)
    a = _rand(rng, kc * MR, dtype)  # the packed A panel [kc][MR]
    b = _rand(rng, kc * NR, dtype)  # the packed B panel [kc][NR]
    if half:  # columns past NR/2 must not be read: poison them
        b.reshape(kc, NR)[:, width:] = np.nan
    ldc = width + ldc_extra
    c, written = _tile(rng, m, n, ldc, dtype)
    bias = _rand(rng, MR, dtype) if with_bias else None
    before = c.copy()
    table.gemm(kc, a, b, c, ldc, m, n, accumulate, bias, half=half)

    A = a.reshape(kc, MR).T.astype(np.float64)[:m]
    B = b.reshape(kc, NR).astype(np.float64)[:, :n]
    expected = np.full((m, ldc), np.nan)
    scale = np.zeros((m, ldc))
    expected[:, :n] = A @ B
    scale[:, :n] = np.abs(A) @ np.abs(B)
    base = before.reshape(m, ldc)[:, :n].astype(np.float64)
    if accumulate:
        expected[:, :n] += base
        scale[:, :n] += np.abs(base)
    elif bias is not None:
        expected[:, :n] += bias[:m, None]
        scale[:, :n] += np.abs(bias[:m, None])
    name = table.names["gemm_half" if half else "gemm"]
    _assert_region(c, expected.reshape(-1), written, kc + 1, scale.reshape(-1), name)


@pytest.mark.parametrize("case", list(GEMM_CASES.values()), ids=list(GEMM_CASES))
def test_gemm_ukernel(table, case):
    _check_gemm(table, case, half=False)


@pytest.mark.parametrize("case", list(GEMM_CASES.values()), ids=list(GEMM_CASES))
def test_gemm_ukernel_half(table, case):
    if table.names["gemm_half"] is None:
        pytest.skip(f"the {table.isa} path has no half-width microkernel (no vector registers)")
    _check_gemm(table, case, half=True)


# id: (kc, extra columns of ldc, row offsets as a function of (MR, kc), segments, a_step): the
# rows microkernel reads A through MR row pointers, which the weight gradient points at
# overlapping taps, in segments (output rows) a_step apart in the phase grid; the elements
# between segments (the grid's padding columns) must not be read
GEMM_ROWS_CASES = {
    "k1": (1, 0, lambda mr, kc: [i * 3 for i in range(mr)], 1, 0),
    "k2-odd-ldc": (2, 3, lambda mr, kc: [i * 5 + 1 for i in range(mr)], 1, 0),
    "k7-overlapping-rows": (7, 0, lambda mr, kc: [i + 1 for i in range(mr)], 1, 0),
    "k64-same-row": (64, 1, lambda mr, kc: [3] * mr, 1, 0),
    "k65-far-apart": (65, 5, lambda mr, kc: [i * (kc + 17) + 2 for i in range(mr)], 1, 0),
    "seg-1x1": (1, 0, lambda mr, kc: [i * 2 for i in range(mr)], 1, 3),
    "seg-3x1-step2": (3, 1, lambda mr, kc: [i for i in range(mr)], 3, 2),
    "seg-14x14-step16": (196, 0, lambda mr, kc: [i * 16 + (i % 3) for i in range(mr)], 14, 16),
    "seg-2x7-odd-runs": (14, 2, lambda mr, kc: [i * 9 for i in range(mr)], 2, 9),
    "seg-5x8-same-row": (40, 0, lambda mr, kc: [1] * mr, 5, 10),
}


# id: (images, A's image stride a_img, extra elements between B's panels): gemm_rows_images sums
# the rows microkernel over images, image g's A rows g * a_img further on (past the previous
# image's rows, overlapping them, or the same rows) and its B panel g * (kc NR + gap) further on
# (the gap poisoned, as must stay unread)
GEMM_ROWS_IMAGES = {
    "2-images-apart": (2, "apart", 3),
    "3-images-overlapping": (3, 1, 0),
    "4-images-same-rows": (4, 0, 5),
}


def _check_gemm_rows(table, case, half: bool, images=None):
    """The rows microkernel (MR x NR) or its half-width variant (MR x NR/2 on the panel's first
    NR/2 columns; the columns past them must stay unread and unwritten), over segments: A's row
    i is a[offset_i + s * a_step:][:kc / segments] for s < segments, one after another. With
    `images` (a GEMM_ROWS_IMAGES case): gemm_rows_images[_half], that summed over the images."""
    kc, ldc_extra, offsets_of, segments, a_step = case
    imgs, a_img, b_gap = images or (1, 0, 0)
    NR, dtype = table.nr, table.dtype
    rows, cols = table.mr, (NR // 2 if half else NR)
    offsets = offsets_of(rows, kc)
    seg_len = kc // segments
    span = max(offsets) + (segments - 1) * a_step + seg_len
    if a_img == "apart":
        a_img = span + 2
    b_img = kc * NR + b_gap
    rng = np.random.default_rng(1)
    a = _rand(rng, (imgs - 1) * a_img + span + 3, dtype)
    starts = [g * a_img + o + s * a_step for g in range(imgs) for o in offsets
              for s in range(segments)]
    read = np.zeros(a.size, bool)
    for start in starts:
        read[start:start + seg_len] = True
    a[~read] = np.nan  # a kernel that read between the segments would spread NaN
    b = _nan(imgs * b_img, dtype)
    panels = [b[g * b_img:][:kc * NR].reshape(kc, NR) for g in range(imgs)]
    for panel in panels:  # columns past a half-width kernel's would spread NaN
        panel[:, :cols] = _rand(rng, kc * cols, dtype).reshape(kc, cols)
        if not half:
            panel[:, cols:] = _rand(rng, kc * (NR - cols), dtype).reshape(kc, NR - cols)
    ldc = cols + ldc_extra
    c, written = _tile(rng, rows, cols, ldc, dtype)
    before = c.copy().reshape(rows, ldc)
    name = "gemm_rows" + ("_images" if images else "") + ("_half" if half else "")
    table.gemm_rows(kc, a, offsets, b, c, ldc, half=half, segments=segments, a_step=a_step,
                    images=imgs if images else None, a_img=a_img, b_img=b_img)
    expected = np.full((rows, ldc), np.nan)
    scale = np.zeros((rows, ldc))
    expected[:, :cols] = before[:, :cols]
    scale[:, :cols] = np.abs(before[:, :cols])
    for g, panel in enumerate(panels):
        A = np.stack([np.concatenate([a[g * a_img + o + s * a_step:][:seg_len]
                                      for s in range(segments)])
                      for o in offsets]).astype(np.float64)
        B = panel[:, :cols].astype(np.float64)
        expected[:, :cols] += A @ B
        scale[:, :cols] += np.abs(A) @ np.abs(B)
    _assert_region(c, expected.reshape(-1), written, imgs * kc + 1, scale.reshape(-1),
                   table.names[name])


@pytest.mark.parametrize("case", list(GEMM_ROWS_CASES.values()), ids=list(GEMM_ROWS_CASES))
def test_gemm_rows_ukernel(table, case):
    _check_gemm_rows(table, case, half=False)


@pytest.mark.parametrize("case", list(GEMM_ROWS_CASES.values()), ids=list(GEMM_ROWS_CASES))
def test_gemm_rows_ukernel_half(table, case):
    if table.names["gemm_rows_half"] is None:
        pytest.skip(f"the {table.isa} path has no half-width rows microkernel (no vectors)")
    _check_gemm_rows(table, case, half=True)


@pytest.mark.parametrize("half", [False, True], ids=["full", "half"])
@pytest.mark.parametrize("images", list(GEMM_ROWS_IMAGES.values()), ids=list(GEMM_ROWS_IMAGES))
@pytest.mark.parametrize("case", list(GEMM_ROWS_CASES.values()), ids=list(GEMM_ROWS_CASES))
def test_gemm_rows_images_ukernel(table, case, images, half):
    """The weight gradient's rows microkernels over several images, on the rows cases."""
    if half and table.names["gemm_rows_images_half"] is None:
        pytest.skip(f"the {table.isa} path has no half-width rows microkernel (no vectors)")
    _check_gemm_rows(table, case, half, images)


# ---- the channels-last microkernels -------------------------------------------------------------

# id: (m, n, ks, kc, accumulate, bias, row layout): the indirect GEMM reads row i of segment s
# through a[i * ks + s], which the NHWC passes point at pixel runs in place, overlapping or not,
# or all at one row of zeros
IGEMM_CASES = {
    "full-tile-bias": ("tile", "tile", 3, 5, False, True, "apart"),
    "ks1-k1": ("tile", "tile", 1, 1, False, False, "apart"),
    "edges-bias": ("tile-1", "tile-1", 2, 7, False, True, "overlapping"),
    "m1-n1": (1, 1, 4, 3, False, True, "apart"),
    "n1-ks9": ("tile", 1, 9, 2, False, False, "overlapping"),
    "same-row": ("tile", "tile", 5, 4, False, True, "same"),
    "accumulate": ("tile", "tile", 3, 17, True, False, "apart"),
    "accumulate-edges-ignores-bias": ("tile-1", "tile-1", 2, 3, True, True, "overlapping"),
    # whole rows, a ragged last vector (wide: all but one lane, or one lane past NR, stored
    # from the registers under a mask), with a bias (kernel rows of 9 values, odd-3-37's), then
    # adding to C
    "rows-ragged-bias": ("tile", "tile-1", 3, 9, False, True, "overlapping"),
    "accumulate-rows-n1-ignores-bias": ("tile", 1, 2, 5, True, True, "apart"),
}


def _row_offsets(layout, mr, ks, kc):
    """MR * ks offsets a[i * ks + s] into one array."""
    if layout == "same":
        return [2] * (mr * ks)
    step = kc + 3 if layout == "apart" else 1  # overlapping: runs one element apart
    return [(i * ks + s) * step + 1 for i in range(mr) for s in range(ks)]


def _check_igemm(table, case, kind):
    m_spec, n_spec, ks, kc, accumulate, with_bias, layout = case
    MR, NR, dtype = table.mr, table.nr, table.dtype
    width = {"full": NR, "half": NR // 2, "wide": NR + NR // 2}[kind]
    m, n = _size(m_spec, MR), _size(n_spec, width)
    if kind == "wide" and n <= NR:  # its columns past NR come from the second panel
        n = NR + 1
    rng = np.random.default_rng(4)
    offsets = _row_offsets(layout, MR, ks, kc)
    a = _rand(rng, max(offsets) + kc + 2, dtype)
    b = _rand(rng, ks * kc * NR, dtype)  # B panels [ks][kc][NR]
    b2 = _rand(rng, ks * kc * NR, dtype) if kind == "wide" else None
    if kind != "full":  # columns past the tile's must not be read: poison them
        (b2 if kind == "wide" else b).reshape(ks * kc, NR)[:, NR // 2:] = np.nan
    ldc = width + 3
    c, written = _tile(rng, m, n, ldc, dtype)
    bias = _rand(rng, n, dtype) if with_bias else None
    before = c.copy().reshape(m, ldc)
    table.igemm(ks, kc, a, offsets, b, c, ldc, m, n, accumulate, bias, half=kind == "half", b2=b2)

    # A[i, s * kc + r] = row i of segment s, r; B stacked [ks * kc][NR] (side by side: wide)
    A = np.stack([np.concatenate([a[offsets[i * ks + s]:][:kc] for s in range(ks)])
                  for i in range(m)]).astype(np.float64)
    B = b.reshape(ks * kc, NR)
    if kind == "wide":
        B = np.concatenate([B, b2.reshape(ks * kc, NR)], axis=1)
    B = B.astype(np.float64)[:, :n]
    expected = np.full((m, ldc), np.nan)
    scale = np.zeros((m, ldc))
    expected[:, :n] = A @ B
    scale[:, :n] = np.abs(A) @ np.abs(B)
    if accumulate:
        expected[:, :n] += before[:, :n]
        scale[:, :n] += np.abs(before[:, :n])
    elif bias is not None:
        expected[:, :n] += bias[None, :n]
        scale[:, :n] += np.abs(bias[None, :n])
    _assert_region(c, expected.reshape(-1), written, ks * kc + 1, scale.reshape(-1),
                   table.names["igemm" if kind == "full" else "igemm_" + kind])


@pytest.mark.parametrize("kind", ["full", "half", "wide"])
@pytest.mark.parametrize("case", list(IGEMM_CASES.values()), ids=list(IGEMM_CASES))
def test_igemm_ukernel(table, case, kind):
    if kind == "half" and table.names["igemm_half"] is None:
        pytest.skip(f"the {table.isa} path has no half-width microkernel (no vector registers)")
    if kind == "wide" and table.names["igemm_wide"] is None:
        pytest.skip(f"the {table.isa} path has no one-and-a-half-panel microkernel (it needs 32 "
                    "vector registers)")
    _check_igemm(table, case, kind)


# id: (kc, extra columns of ldc, off, column offsets as a function of (MR, kc)): the weight
# gradient points column r at pixel r's run and reads MR values of it from off
GEMM_COLS_CASES = {
    "k1": (1, 0, 0, lambda mr, kc: [5]),
    "k3-odd-ldc-off": (3, 3, 2, lambda mr, kc: [r * (mr + 4) for r in range(kc)]),
    "k9-overlapping": (9, 0, 1, lambda mr, kc: [r * 2 for r in range(kc)]),
    "k40-same-column": (40, 1, 3, lambda mr, kc: [7] * kc),
}


@pytest.mark.parametrize("kind", ["full", "half", "wide"])
@pytest.mark.parametrize("case", list(GEMM_COLS_CASES.values()), ids=list(GEMM_COLS_CASES))
def test_gemm_cols_ukernel(table, case, kind):
    """The full tile (MR x NR), the half-width one (2 MR x NR/2, the first NR/2 columns of
    the B panel, whose others are random here and must not count) and `pixels`' tall one
    (gemm_cols_wide_rows x NR)."""
    if kind == "half" and table.names["gemm_cols_half"] is None:
        pytest.skip(f"the {table.isa} path has no half-width microkernel (no vector registers)")
    if kind == "wide" and table.names["gemm_cols_wide"] is None:
        pytest.skip(f"the {table.isa} path has no tall pixels tile (it needs 32 vector "
                    "registers)")
    kc, ldc_extra, off, offsets_of = case
    NR, dtype = table.nr, table.dtype
    rows, cols = {"full": (table.mr, NR), "half": (2 * table.mr, NR // 2),
                  "wide": (table.gemm_cols_wide_rows, NR)}[kind]
    offsets = offsets_of(rows, kc)
    rng = np.random.default_rng(5)
    a = _rand(rng, max(offsets) + off + rows + 2, dtype)
    b = _rand(rng, kc * NR, dtype)
    ldc = cols + ldc_extra
    c, written = _tile(rng, rows, cols, ldc, dtype)
    before = c.copy().reshape(rows, ldc)
    table.gemm_cols(kc, a, offsets, off, b, c, ldc, half=kind == "half", wide=kind == "wide")
    A = np.stack([a[o + off:][:rows] for o in offsets], axis=1).astype(np.float64)  # rows x kc
    B = b.reshape(kc, NR).astype(np.float64)[:, :cols]
    expected = np.full((rows, ldc), np.nan)
    expected[:, :cols] = before[:, :cols] + A @ B
    scale = np.zeros((rows, ldc))
    scale[:, :cols] = np.abs(before[:, :cols]) + np.abs(A) @ np.abs(B)
    _assert_region(c, expected.reshape(-1), written, kc + 1, scale.reshape(-1),
                   table.names["gemm_cols" if kind == "full" else "gemm_cols_" + kind])


# ---- packing -----------------------------------------------------------------------------------

def _panels(matrix: np.ndarray, width: int) -> np.ndarray:
    """rows x depth -> [ceil(rows / width)][depth][width], zero past the last row."""
    rows, depth = matrix.shape
    blocks = -(-rows // width)
    padded = np.zeros((blocks * width, depth), matrix.dtype)
    padded[:rows] = matrix
    return padded.reshape(blocks, width, depth).transpose(0, 2, 1).reshape(-1)


# id: (m, kd, row stride, column stride) with m relative to MR; the strides as functions of
# (m, kd): W packs row-major, W^T and dY column-major
PACK_A_CASES = {
    "m1-row-major": (1, 5, lambda m, kd: (kd, 1)),
    "m-edge": ("tile-1", 3, lambda m, kd: (kd, 1)),
    "m-tile": ("tile", 1, lambda m, kd: (kd, 1)),
    "m-past-tile": ("tile+1", 4, lambda m, kd: (kd, 1)),
    "two-panels-odd-stride": ("2tile+3", 7, lambda m, kd: (kd + 3, 1)),
    "transposed": ("tile+2", 5, lambda m, kd: (1, m)),
    "transposed-odd-stride": ("tile-1", 6, lambda m, kd: (1, m + 5)),
}


@pytest.mark.parametrize("case", list(PACK_A_CASES.values()), ids=list(PACK_A_CASES))
def test_gemm_pack_a(table, case):
    m_spec, kd, strides = case
    MR, dtype = table.mr, table.dtype
    m = _size(m_spec, MR)
    rs, cs = strides(m, kd)
    src = _rand(np.random.default_rng(2), (m - 1) * rs + (kd - 1) * cs + 1, dtype)
    dst = _nan(-(-m // MR) * MR * kd, dtype)
    table.pack_a(m, kd, src, rs, cs, dst)
    matrix = np.array([[src[i * rs + k * cs] for k in range(kd)] for i in range(m)])
    np.testing.assert_array_equal(dst, _panels(matrix, MR), err_msg=table.names["pack_a"])


# id: (kd, nc, extra columns of ld) with nc relative to NR
PACK_B_CASES = {
    "n1": (3, 1, 0),
    "n-edge": (4, "tile-1", 2),
    "n-tile-k1": (1, "tile", 0),
    "n-past-tile": (5, "tile+1", 0),
    "three-panels-odd-ld": (2, "3tile-2", 7),
    "whole-then-half-panel": (3, "3tile/2", 1),  # the fixed-size copies of a row
}


@pytest.mark.parametrize("case", list(PACK_B_CASES.values()), ids=list(PACK_B_CASES))
def test_gemm_pack_b(table, case):
    kd, nc_spec, ld_extra = case
    NR, dtype = table.nr, table.dtype
    nc = _size(nc_spec, NR)
    ld = nc + ld_extra
    src = _rand(np.random.default_rng(3), (kd - 1) * ld + nc, dtype)
    dst = _nan(-(-nc // NR) * NR * kd, dtype)
    table.pack_b(kd, nc, src, ld, dst)
    matrix = np.array([[src[k * ld + q] for k in range(kd)] for q in range(nc)])
    np.testing.assert_array_equal(dst, _panels(matrix, NR), err_msg=table.names["pack_b"])


# id: (kc, q, row offsets as a function of kc): one KC x NR panel from rows anywhere
PACK_B_PANEL_CASES = {
    "k1": (1, 0, lambda kc: [5]),
    "odd-offsets": (5, 3, lambda kc: [1, 10, 3, 40, 7]),
    "k64-same-row": (64, 2, lambda kc: [9] * kc),
    "k67-spread": (67, 1, lambda kc: [3 * r + 1 for r in range(kc)]),
}


@pytest.mark.parametrize("case", list(PACK_B_PANEL_CASES.values()), ids=list(PACK_B_PANEL_CASES))
def test_gemm_pack_b_panel(table, case):
    kc, q, offsets_of = case
    NR, dtype = table.nr, table.dtype
    offsets = offsets_of(kc)
    rows = _rand(np.random.default_rng(4), max(offsets) + q + NR + 2, dtype)
    dst = _nan(kc * NR, dtype)
    table.pack_b_panel(kc, rows, offsets, q, dst)
    expected = np.concatenate([rows[o + q:o + q + NR] for o in offsets])
    np.testing.assert_array_equal(dst, expected, err_msg=table.names["pack_b_panel"])


# id: (Kg relative to NR, OH, OW, extra grid columns, q0, n): dY^T of a chunk of grid pixels
PACK_DYT_CASES = {
    "one-channel-whole-grid": (1, 3, 4, 2, 0, 18),
    "k-edge-mid-row-chunk": ("tile-1", 4, 5, 1, 3, 7),
    "k-tile-rows-crossed": ("tile", 3, 3, 0, 2, 6),
    "k-past-tile": ("tile+1", 2, 5, 3, 5, 11),
    "single-pixel-in-grid-padding": (2, 2, 3, 2, 4, 1),
    # float32 packs 16 channels x 16 pixels of a row at a time where both are there
    "blocks-rows-of-37-mid-row": ("2tile+17", 3, 37, 2, 10, 90),
    "blocks-rows-of-16": ("tile", 2, 16, 0, 0, 32),
    # whole panels without grid padding are written without clearing first; a run's tail past
    # its 16-pixel blocks is packed as its last 16 pixels (runs of 17, 21 and 2 pixels)
    "full-panels-row-tails": ("tile", 3, 21, 0, 4, 40),
    "two-full-panels-row-tails": ("2tile", 2, 37, 0, 0, 74),
}


@pytest.mark.parametrize("case", list(PACK_DYT_CASES.values()), ids=list(PACK_DYT_CASES))
def test_conv2d_pack_dyt(table, case):
    kg_spec, oh, ow, extra, q0, n = case
    NR, dtype = table.nr, table.dtype
    kg, wph = _size(kg_spec, NR), ow + extra
    gy = _rand(np.random.default_rng(5), kg * oh * ow, dtype)
    dst = _nan(-(-kg // NR) * NR * n, dtype)
    table.pack_dyt(gy, kg, oh * ow, ow, wph, q0, n, dst)
    grid = np.zeros((kg, oh, wph), dtype)  # dY on the grid, zero in its padding columns
    grid[:, :, :ow] = gy.reshape(kg, oh, ow)
    chunk = grid.reshape(kg, -1)[:, q0:q0 + n]  # (kg, n)
    np.testing.assert_array_equal(dst, _panels(chunk, NR), err_msg=table.names["pack_dyt"])


# ---- row runs: the gather behind im2col and the stride phases, the scatter behind col2im ------

# id: (iw0, column step s, row width W, run length, destination step ds, no row)
RUN_CASES = {
    "s1-inside": (2, 1, 40, 17, 1, False),
    "s1-short": (0, 1, 5, 3, 1, False),
    "s1-one": (4, 1, 9, 1, 1, False),
    "s1-left-padding": (-3, 1, 20, 12, 1, False),
    "s1-past-the-end": (10, 1, 20, 16, 1, False),
    "s1-both-sides": (-2, 1, 7, 13, 1, False),
    "s1-long": (1, 1, 100, 67, 1, False),
    "s2-padded": (-1, 2, 21, 11, 1, False),
    # the scatter adds stride-2 runs 16 at a time where a block's 32 columns lie in the row
    "s2-blocks-and-tail": (1, 2, 100, 40, 1, False),
    "s2-blocks-padded": (-5, 2, 80, 40, 1, False),
    "s2-block-fills-the-row": (0, 2, 64, 32, 1, False),
    "s2-block-one-past-the-row": (0, 2, 63, 32, 1, False),
    "s3-past-the-end": (2, 3, 20, 9, 1, False),
    "s4": (0, 4, 33, 8, 1, False),
    "s5-general": (-4, 5, 30, 8, 1, False),
    "s1-ds3": (-1, 1, 10, 9, 3, False),
    "s2-ds2": (1, 2, 15, 8, 2, False),
    "all-outside": (-20, 1, 10, 5, 1, False),
    "padding-row": (0, 1, 10, 6, 1, True),
    # zero margins of whole vectors and a partial one on either side of the row
    "s1-wide-margins": (-20, 1, 10, 45, 1, False),
    "padding-row-long": (0, 1, 10, 37, 1, True),
}


def _run_columns(iw0, s, w, length):
    cols = iw0 + s * np.arange(length)
    return cols, (cols >= 0) & (cols < w)


@pytest.mark.parametrize("case", list(RUN_CASES.values()), ids=list(RUN_CASES))
def test_gather_run(table, case):
    iw0, s, w, length, ds, no_row = case
    dtype = table.dtype
    row = None if no_row else _rand(np.random.default_rng(6), w, dtype)
    dst = _nan((length - 1) * ds + 1, dtype)
    table.gather_run(row, iw0, s, w, length, dst, ds)
    cols, inside = _run_columns(iw0, s, w, length)
    expected = np.full(dst.shape, np.nan, dtype)
    expected[::ds] = 0
    if row is not None:
        expected[::ds][inside] = row[cols[inside]]
    np.testing.assert_array_equal(dst, expected, err_msg=table.names["gather_run"])


@pytest.mark.parametrize("case", [c for c in RUN_CASES.values() if c[4] == 1 and not c[5]],
                         ids=[k for k, c in RUN_CASES.items() if c[4] == 1 and not c[5]])
def test_scatter_add_run(table, case):
    """Bit for bit, every column of the row but the run's unchanged (-0.0 among them), and
    nothing past the row touched: signalling NaNs there would come back quiet."""
    iw0, s, w, length, _, _ = case
    dtype = table.dtype
    bits = np.uint32 if dtype == np.float32 else np.uint64
    snan = np.array(0x7FA00000 if dtype == np.float32 else 0x7FF4000000000000, bits).view(dtype)
    rng = np.random.default_rng(7)
    row = np.concatenate([_rand(rng, w, dtype), np.full(40, snan)])
    row[1:w:3] = -0.0
    src = _rand(rng, length, dtype)
    expected = row.copy()
    cols, inside = _run_columns(iw0, s, w, length)
    np.add.at(expected, cols[inside], src[inside])
    table.scatter_add_run(row, iw0, s, w, length, src)
    np.testing.assert_array_equal(row.view(bits), expected.view(bits),
                                  err_msg=table.names["scatter_add_run"])


# ---- Winograd F(2x2, 3x3) transforms -----------------------------------------------------------

G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float)


# id: (kg relative to MR, cg, k0, c): the transform writes MR kernels at once, lanes past kg zero
WINO_KERNEL_CASES = {
    "full-lanes": ("tile", 3, 0, 1),
    "lanes-past-kg": ("tile-1", 2, 0, 0),
    "one-kernel-left": ("2tile+1", 1, "2tile", 0),
    "second-block": ("2tile", 4, "tile", 3),
}


@pytest.mark.parametrize("case", list(WINO_KERNEL_CASES.values()), ids=list(WINO_KERNEL_CASES))
def test_winograd_kernel_transform(table, case):
    kg_spec, cg, k0_spec, c = case
    MR, dtype = table.mr, table.dtype
    kg, k0 = _size(kg_spec, MR), _size(k0_spec, MR)
    w = _rand(np.random.default_rng(8), kg * cg * 9, dtype)
    u = _nan(16 * MR, dtype)
    assert not table.winograd_kernel(w, k0, kg, cg, c, u)
    g = w.reshape(kg, cg, 3, 3).astype(np.float64)
    expected = np.zeros((16, MR))
    for i in range(min(MR, kg - k0)):
        expected[:, i] = (G @ g[k0 + i, c] @ G.T).reshape(16)
    scale = np.abs(expected) + 1.0
    _assert_region(u, expected.reshape(-1), np.ones(u.shape, bool), 9, scale.reshape(-1),
                   table.names["winograd_kernel"])


@pytest.mark.parametrize("special", [np.inf, -np.inf, np.nan])
def test_winograd_kernel_transform_reports_nonfinite(table, special):
    """Inf - Inf cancels into NaN in the transforms: the forward pass reruns on the direct path
    when the kernel transform says so (docs/KERNELS.md, the plan)."""
    MR, dtype = table.mr, table.dtype
    w = _rand(np.random.default_rng(9), MR * 9, dtype)
    w[4] = special
    assert table.winograd_kernel(w, 0, MR, 1, 0, _nan(16 * MR, dtype))


# id: (tile rows in the plane, tiles per row TW, th0, th1, m0, m1): the tiles [m0, m1) counted
# from tile row th0; a block may start and end mid-row
WINO_INPUT_CASES = {
    "one-tile": (1, 1, 0, 1, 0, 1),
    "one-row": (2, 7, 1, 2, 0, 7),
    "whole-plane": (3, 5, 0, 3, 0, 15),
    "starts-mid-row": (4, 6, 1, 3, 2, 12),
    "ends-mid-row": (4, 6, 0, 3, 0, 14),
    "mid-row-both-ends": (5, 4, 2, 5, 3, 9),
    "inside-one-row": (2, 9, 1, 2, 2, 6),
}


@pytest.mark.parametrize("case", list(WINO_INPUT_CASES.values()), ids=list(WINO_INPUT_CASES))
def test_winograd_input_transform(table, case):
    th, tw, th0, th1, m0, m1 = case
    dtype = table.dtype
    hp, wp = 2 * th + 2, 2 * tw + 2
    plane = _rand(np.random.default_rng(10), hp * wp, dtype)
    count = m1 - m0
    stride = count + 3  # each V_e is followed by three elements that must stay NaN
    v = _nan(16 * stride, dtype)
    table.winograd_input(plane, wp, th0, th1, m0, m1, v, [e * stride for e in range(16)])
    d = plane.reshape(hp, wp).astype(np.float64)
    expected = np.full((16, stride), np.nan)
    for m in range(m0, m1):
        r, col = th0 + m // tw, m % tw
        expected[:, m - m0] = (BT @ d[2 * r:2 * r + 4, 2 * col:2 * col + 4] @ BT.T).reshape(16)
    written = ~np.isnan(expected)
    _assert_region(v, expected.reshape(-1), written.reshape(-1), 4,
                   np.abs(expected).reshape(-1) + 4.0, table.names["winograd_input"])


# id: (tiles n, extra row stride of tmp, bias)
WINO_OUTPUT_CASES = {
    "one-tile": (1, 0, 0.0),
    "odd-count-bias": (5, 3, 1.5),
    "long-block": (33, 0, -0.25),
}


@pytest.mark.parametrize("case", list(WINO_OUTPUT_CASES.values()), ids=list(WINO_OUTPUT_CASES))
def test_winograd_output_transform(table, case):
    n, extra, bias = case
    dtype = table.dtype
    ts = n + extra
    m = _rand(np.random.default_rng(11), 16 * n, dtype)
    tmp = _nan(12 * ts, dtype)
    table.winograd_output(m, [e * n for e in range(16)], n, bias, tmp, ts)
    M = m.reshape(4, 4, n).astype(np.float64)
    Y = np.einsum("ij,jkt,lk->ilt", AT, M, AT) + float(dtype.type(bias))  # (2, 2, n)
    out = tmp.reshape(12, ts)[8:, :n]
    scale = np.einsum("ij,jkt,lk->ilt", np.abs(AT), np.abs(M), np.abs(AT)) + abs(bias)
    np.testing.assert_array_less(np.abs(out - Y.reshape(4, n)),
                                 tolerance(dtype, 9) * (scale.reshape(4, n) + 1.0),
                                 err_msg=table.names["winograd_output"])


# ---- global pooling's plane reductions ----------------------------------------------------------

# plane sizes around the 16 lanes: none, one, a lane short, whole blocks, a remainder, 7 x 7
PLANE_SIZES = [0, 1, 2, 15, 16, 17, 31, 32, 33, 49, 100, 1000]


@pytest.mark.parametrize("n", PLANE_SIZES)
def test_plane_sum_ukernel(table, n):
    x = _rand(np.random.default_rng(n), n + 3, table.dtype)
    x[n:] = np.nan  # past the plane: never read
    total = table.plane_sum(n, x)
    assert total.dtype == table.dtype
    expected = np.sum(x[:n].astype(np.float64))
    bound = tolerance(table.dtype, n) * (np.sum(np.abs(x[:n].astype(np.float64))) + 1.0)
    assert abs(float(total) - expected) <= bound, (table.names["plane_sum"], n)


def _scan_argmax(x):
    """PyTorch's scan: from -inf at index 0, a value replaces the maximum when greater or NaN."""
    best, at = -np.inf, 0
    for i, v in enumerate(x):
        if v > best or np.isnan(v):
            best, at = v, i
    return at


@pytest.mark.parametrize("kind", ["distinct", "ties", "signed-zeros", "nan", "all-minus-inf",
                                  "nan-first-lane-last"])
@pytest.mark.parametrize("n", [n for n in PLANE_SIZES if n > 0])
def test_plane_argmax_ukernel(table, n, kind):
    rng = np.random.default_rng(n)
    dtype = table.dtype
    x = {"distinct": lambda: rng.permutation(n).astype(dtype),
         "ties": lambda: rng.integers(-2, 3, n).astype(dtype),
         "signed-zeros": lambda: np.where(rng.random(n) < 0.5, -0.0, 0.0).astype(dtype),
         "nan": lambda: np.where(rng.random(n) < 0.2, np.nan, rng.integers(-2, 3, n)).astype(
             dtype),
         "all-minus-inf": lambda: np.full(n, -np.inf, dtype),
         "nan-first-lane-last": lambda: np.where(np.arange(n) % 16 == 0, np.nan, 1.0).astype(
             dtype)}[kind]()
    if kind == "nan":
        x[rng.integers(n)] = -np.nan  # NaNs of both signs: the last one's bits
    buffer = np.concatenate([x, np.full(3, np.inf, dtype)])  # past the plane: never read
    at, value = table.plane_argmax(n, buffer)
    expected = _scan_argmax(x)
    assert at == expected, (table.names["plane_argmax"], kind, n, at, expected)
    assert value.tobytes() == x[expected].tobytes()


# ---- depthwise microkernels ---------------------------------------------------------------------

# (pixels, taps): none, fewer than a vector, around a vector and the 8-vector block of every ISA
# (VL = 4 .. 16), a ragged end; one tap, 3x3, 5x5 (the dot kernel's taps in groups of up to 8)
DW_PIXELS = [0, 1, 3, 8, 9, 16, 17, 31, 33, 64, 65, 127, 129, 300]
DW_TAPS = [1, 9, 25]


def _dw_operands(rng, n, kk, dtype):
    """A source of n + 40 random elements then NaN (never read), and kk tap offsets into it
    (overlapping, unordered, as a kernel's taps are)."""
    src = np.concatenate([_rand(rng, n + 40, dtype), _nan(5, dtype)])
    offsets = [int(o) for o in rng.integers(0, 41, kk)]
    return src, offsets


@pytest.mark.parametrize("kk", DW_TAPS)
@pytest.mark.parametrize("n", DW_PIXELS)
def test_dwconv_ukernel(table, n, kk):
    rng = np.random.default_rng(100 * n + kk)
    src, offsets = _dw_operands(rng, n, kk, table.dtype)
    w = _rand(rng, kk, table.dtype)
    out = _nan(n + 3, table.dtype)  # past n: never written
    table.dwconv(n, w, src, offsets, out)
    terms = np.stack([w[t] * src[o:o + n].astype(np.float64) for t, o in enumerate(offsets)])
    written = np.arange(n + 3) < n
    expected = np.zeros(n + 3)
    expected[:n] = terms.sum(axis=0)
    scale = np.zeros(n + 3)
    scale[:n] = np.abs(terms).sum(axis=0)
    _assert_region(out, expected, written, kk, scale, table.names["dwconv"])


@pytest.mark.parametrize("kk", DW_TAPS)
@pytest.mark.parametrize("n", DW_PIXELS)
def test_dwconv_dot_ukernel(table, n, kk):
    rng = np.random.default_rng(100 * n + kk + 7)
    src, offsets = _dw_operands(rng, n, kk, table.dtype)
    g = np.concatenate([_rand(rng, n, table.dtype), _nan(3, table.dtype)])  # past n: unread
    start = _rand(rng, kk, table.dtype)
    acc = np.concatenate([start, _nan(2, table.dtype)])  # past kk: never written
    table.dwconv_dot(n, g, src, offsets, acc)
    terms = [g[:n].astype(np.float64) * src[o:o + n] for o in offsets]
    expected = np.concatenate([start + np.array([t.sum() for t in terms]), np.zeros(2)])
    scale = np.concatenate([np.abs(start) + np.array([np.abs(t).sum() for t in terms]),
                            np.zeros(2)])
    written = np.arange(kk + 2) < kk
    _assert_region(acc, expected, written, n + 1, scale, table.names["dwconv_dot"])


# channels last: id: (channels c, terms ne, accumulate, bias); "tile" is NR, whose blocks the
# routine runs first, then one vector (VL = NR/2 on the vector ISAs), then single channels
DWCONV_NHWC_CASES = {
    "one-channel": (1, 3, False, True),
    "no-terms-bias": ("tile+1", 0, False, True),
    "no-terms-accumulate": ("tile+1", 0, True, False),
    "one-term": ("tile", 1, False, False),
    "vector-and-tail": ("tile-1", 2, False, True),
    "odd-terms-all-paths": ("2tile+11", 9, False, True),
    "accumulate-ignores-bias": ("2tile+11", 4, True, True),
    "many-terms": ("tile+3", 56, True, False),
}


@pytest.mark.parametrize("case", list(DWCONV_NHWC_CASES.values()), ids=list(DWCONV_NHWC_CASES))
def test_dwconv_nhwc_ukernel(table, case):
    c_spec, ne, accumulate, with_bias = case
    c, dtype = _size(c_spec, table.nr), table.dtype
    rng = np.random.default_rng(ne * 31 + c)
    # each operand read in place at offsets that overlap, repeat and are unaligned; NaN past the
    # last element any term may read
    a = np.concatenate([_rand(rng, c + 50, dtype), _nan(4, dtype)])
    b = np.concatenate([_rand(rng, c + 50, dtype), _nan(4, dtype)])
    a_offsets = [int(o) for o in rng.integers(0, 51, ne)]
    b_offsets = [int(o) for o in rng.integers(0, 51, ne)]
    y = np.concatenate([_rand(rng, c, dtype), _nan(3, dtype)])  # past c: never written
    before = y[:c].astype(np.float64)
    bias = np.concatenate([_rand(rng, c, dtype), _nan(2, dtype)]) if with_bias else None
    table.dwconv_nhwc(c, a, a_offsets, b, b_offsets, y, accumulate, bias)
    terms = np.zeros((ne + 1, c))
    for e, (i, j) in enumerate(zip(a_offsets, b_offsets)):
        terms[e] = a[i:i + c].astype(np.float64) * b[j:j + c]
    if accumulate:
        terms[ne] = before
    elif with_bias:
        terms[ne] = bias[:c]
    expected = np.concatenate([terms.sum(axis=0), np.zeros(3)])
    scale = np.concatenate([np.abs(terms).sum(axis=0), np.zeros(3)])
    written = np.arange(c + 3) < c
    _assert_region(y, expected, written, ne + 1, scale, table.names["dwconv_nhwc"])


# groups of four channels: id: (channels c, a multiple of 4, terms ne, accumulate, bias)
GCONV4_CASES = {
    "one-group": (4, 3, False, True),
    "no-terms-bias": ("tile+4", 0, False, True),
    "one-term": ("tile", 1, False, False),
    "vector-and-groups": ("tile-4", 2, False, True),
    "all-paths": ("2tile+12", 9, False, True),
    "accumulate-ignores-bias": ("2tile+12", 4, True, True),
}


def _rotated(a, offset, c):
    """a[offset + q - q % 4 + (q % 4 + r) % 4] for r < 4 (rows), q < c (columns), in float64."""
    q = np.arange(c)
    return np.stack([a[offset + q - q % 4 + (q % 4 + r) % 4] for r in range(4)]).astype(np.float64)


def _gconv4_operands(rng, c, ne, b_rows, dtype):
    """a (read at group-aligned offsets: a row of pixels) and b (b_rows rows of c per term, any
    offset), NaN past their ends, and ne offsets into each."""
    a = np.concatenate([_rand(rng, c + 48, dtype), _nan(4, dtype)])
    b = np.concatenate([_rand(rng, b_rows * c + 50, dtype), _nan(4, dtype)])
    return (a, [4 * int(o) for o in rng.integers(0, 13, ne)],
            b, [int(o) for o in rng.integers(0, 51, ne)])


@pytest.mark.parametrize("case", list(GCONV4_CASES.values()), ids=list(GCONV4_CASES))
def test_gconv4_nhwc_ukernel(table, case):
    c_spec, ne, accumulate, with_bias = case
    c, dtype = _size(c_spec, table.nr), table.dtype
    rng = np.random.default_rng(ne * 17 + c)
    a, a_offsets, b, b_offsets = _gconv4_operands(rng, c, ne, 4, dtype)
    y = np.concatenate([_rand(rng, c, dtype), _nan(3, dtype)])
    before = y[:c].astype(np.float64)
    bias = np.concatenate([_rand(rng, c, dtype), _nan(2, dtype)]) if with_bias else None
    table.gconv4_nhwc(c, a, a_offsets, b, b_offsets, y, accumulate, bias)
    terms = np.zeros((4 * ne + 1, c))
    for e, (i, j) in enumerate(zip(a_offsets, b_offsets)):
        terms[4 * e:4 * e + 4] = _rotated(a, i, c) * b[j:j + 4 * c].reshape(4, c)
    if accumulate:
        terms[-1] = before
    elif with_bias:
        terms[-1] = bias[:c]
    expected = np.concatenate([terms.sum(axis=0), np.zeros(3)])
    scale = np.concatenate([np.abs(terms).sum(axis=0), np.zeros(3)])
    written = np.arange(c + 3) < c
    _assert_region(y, expected, written, 4 * ne + 1, scale, table.names["gconv4_nhwc"])


@pytest.mark.parametrize("case", list(GCONV4_CASES.values()), ids=list(GCONV4_CASES))
def test_gconv4_dot_nhwc_ukernel(table, case):
    c_spec, ne = case[:2]
    c, dtype = _size(c_spec, table.nr), table.dtype
    rng = np.random.default_rng(ne * 19 + c)
    a, a_offsets, b, b_offsets = _gconv4_operands(rng, c, ne, 1, dtype)
    y = np.concatenate([_rand(rng, 4 * c, dtype), _nan(3, dtype)])
    terms = np.zeros((ne + 1, 4, c))
    terms[ne] = y[:4 * c].reshape(4, c)
    table.gconv4_dot_nhwc(c, a, a_offsets, b, b_offsets, y)
    for e, (i, j) in enumerate(zip(a_offsets, b_offsets)):
        terms[e] = _rotated(a, i, c) * b[j:j + c].astype(np.float64)
    expected = np.concatenate([terms.sum(axis=0).reshape(-1), np.zeros(3)])
    scale = np.concatenate([np.abs(terms).sum(axis=0).reshape(-1), np.zeros(3)])
    written = np.arange(4 * c + 3) < 4 * c
    _assert_region(y, expected, written, ne + 1, scale, table.names["gconv4_dot_nhwc"])


# depthwise weight gradient along a run: id: (channels c, pixels n, taps kt, pixel step xs and
# tap step ts in channels, "c" for c): more taps than one pass carries (4), overlapping reads
# (c, n pixels, kh, kw, xs, rs, ts): "c" is c; 9 taps fill an avx512 pass, 6 an avx2 one
DWCONV_DOT_NHWC_CASES = {
    "stride-1-row": ("2tile+3", 7, 1, 3, "c", 0, "c"),
    "no-pixels": ("tile", 0, 3, 3, "c", 200, "c"),
    "one-tap-tail": ("tile-1", 5, 1, 1, "c", 0, 0),
    "strided-dilated": ("tile+1", 4, 1, 3, 37, 0, 11),
    "more-taps-than-a-pass": ("tile", 6, 1, 7, "c", 0, 5),
    "one-channel": (1, 9, 1, 5, 2, 0, 1),
    "3x3": ("2tile+3", 7, 3, 3, "c", 300, "c"),
    "3x3-tail-lanes": ("tile+5", 3, 3, 3, "c", 97, "c"),
    "2x3-fewer-rows": ("tile", 5, 2, 3, "c", 150, "c"),
    "5x5-three-passes": ("tile+1", 4, 5, 5, 40, 333, 3),
    "two-rows-one-column": ("tile-1", 6, 2, 1, "c", 101, 0),
}


@pytest.mark.parametrize("case", list(DWCONV_DOT_NHWC_CASES.values()),
                         ids=list(DWCONV_DOT_NHWC_CASES))
def test_dwconv_dot_nhwc_ukernel(table, case):
    c_spec, n, kh, kw, xs, rs, ts = case
    c, dtype = _size(c_spec, table.nr), table.dtype
    xs, ts = (c if s == "c" else s for s in (xs, ts))
    kt = kh * kw
    rng = np.random.default_rng(n * 23 + kt * 5 + c)
    extent = (n - 1) * xs + (kh - 1) * rs + (kw - 1) * ts + c if n else 0
    x = np.concatenate([_rand(rng, extent, dtype), _nan(4, dtype)])
    g = np.concatenate([_rand(rng, n * c, dtype), _nan(4, dtype)])
    y = np.concatenate([_rand(rng, kt * c, dtype), _nan(3, dtype)])
    terms = np.zeros((n + 1, kt, c))
    terms[n] = y[:kt * c].reshape(kt, c)
    table.dwconv_dot_nhwc(c, n, kh, kw, x, xs, rs, ts, g, y)
    for e in range(n):
        for t in range(kt):
            start = e * xs + t // kw * rs + t % kw * ts
            terms[e, t] = x[start:start + c].astype(np.float64) * g[e * c:(e + 1) * c]
    expected = np.concatenate([terms.sum(axis=0).reshape(-1), np.zeros(3)])
    scale = np.concatenate([np.abs(terms).sum(axis=0).reshape(-1), np.zeros(3)])
    written = np.arange(kt * c + 3) < kt * c
    _assert_region(y, expected, written, n + 1, scale, table.names["dwconv_dot_nhwc"])
