/* conv2d_pack.h: how the convolution passes lay out GEMM operands for the microkernels
 * (conv2d_gemm_ukernel.h): A panels of MR rows, B panels of NR columns, and the row runs that
 * im2col and col2im move as contiguous stretches. docs/KERNELS.md gives each layout.
 *
 *   fc_<dt>_gemm_pack_a_mr<MR>__<isa>         A(i, k) from any strides into [m/MR][kd][MR]
 *   fc_<dt>_gemm_pack_b_nr<NR>__<isa>         B(k, q) from rows into [nc/NR][kd][NR]
 *   fc_<dt>_gemm_pack_b_panel_nr<NR>__<isa>   one KC x NR panel from kc row pointers
 *   fc_<dt>_conv2d_pack_dyt_nr<NR>__<isa>     dY^T of a pixel chunk into [Kg/NR][n][NR]
 *   fc_<dt>_gather_run__<isa>                 one strided run of an input row, zero outside
 *   fc_<dt>_scatter_add_run__<isa>            its adjoint: add a run back into a row
 *
 * Loop structure: each routine walks its destination in order, panel by panel, writing every
 * element once (zeros for the padding rows and columns of a partial panel), so a packed operand
 * never needs clearing first. */
#ifndef FC_CONV2D_PACK_H
#define FC_CONV2D_PACK_H

#include "fc_template.h"

/* A(i, k) = src[i * rs + k * cs] for i < m, k < kd, into panels [m / MR][kd][MR] (rows past m are
 * zero). Used for W (forward), W^T (input gradient) and dY (weight gradient). */
static void FC_MR_NAME(gemm_pack_a)(fc_index m, fc_index kd, const T *src, fc_index rs, fc_index cs,
                                    T *dst) {
    for (fc_index i0 = 0; i0 < m; i0 += FC_MR) {
        const int mr = (int)FC_MIN(FC_MR, m - i0);
        for (fc_index k = 0; k < kd; k++, dst += FC_MR) {
            int i = 0;
            for (; i < mr; i++) dst[i] = src[(i0 + i) * rs + k * cs];
            for (; i < FC_MR; i++) dst[i] = (T)0;
        }
    }
}

/* ---- im2col by row runs ------------------------------------------------------------------------
 * The pixels of a tile are cut into runs that lie in one output row (and one NR panel). For a
 * kernel tap (c, i, j) a run reads one input row at a fixed column step, so packing and col2im
 * work on contiguous stretches with the bounds settled once per run, not once per element. */
typedef struct {
    fc_index q;   /* first pixel of the run, relative to the tile */
    fc_index len; /* pixels in the run */
    fc_index ih0; /* input row of tap (0, 0): oh * stride_h - pad_top */
    fc_index iw0; /* input column of tap (0, 0) for the run's first pixel */
} FC_LOCAL(run_t);

/* True when col(X) row r is simply channel r of X (1x1, stride 1, no padding): runs may then
 * cross output rows. */
static inline int FC_LOCAL(is_pointwise)(const fc_conv2d_params *p) {
    return p->kernel_h == 1 && p->kernel_w == 1 && p->stride_h == 1 && p->stride_w == 1 &&
           p->pad_top == 0 && p->pad_left == 0 && p->out_w == p->in_w && p->out_h == p->in_h;
}

/* Runs of tile pixels [p0, p0 + n), also cut every `split` pixels; returns how many. */
static fc_index FC_LOCAL(tile_runs)(const fc_conv2d_params *p, fc_index p0, fc_index n,
                                    fc_index split, FC_LOCAL(run_t) *runs) {
    const int pointwise = FC_LOCAL(is_pointwise)(p);
    fc_index count = 0, q = 0;
    while (q < n) {
        const fc_index oh = (p0 + q) / p->out_w, ow = (p0 + q) % p->out_w;
        fc_index len = FC_MIN(n - q, split - q % split);
        if (!pointwise) len = FC_MIN(len, p->out_w - ow);
        runs[count].q = q;
        runs[count].len = len;
        runs[count].ih0 = oh * p->stride_h - p->pad_top;
        runs[count].iw0 = ow * p->stride_w - p->pad_left;
        count++;
        q += len;
    }
    return count;
}

/* d[u] = 0 for u < n: whole vector stores and one masked tail, so a margin shorter than a vector
 * (a phase row's is a column or two) is one store where the plain loop was a memset call. */
static inline void FC_LOCAL(zero_run)(T *d, fc_index n) {
    fc_index u = 0;
#if FC_HAVE_VEC
    static const T zeros[FC_VL];
    for (; u + FC_VL <= n; u += FC_VL) FC_VSTOREU(d + u, FC_VZERO());
    if (u < n) FC_VCOPY_PARTIAL(d + u, zeros, (int)(n - u));
#else
    for (; u < n; u++) d[u] = (T)0;
#endif
}

/* dst[t] = row[iw0 + t * s] for t in [lo, hi), columns inside the row (fc_inside_span); dst's
 * other elements untouched. Stride 1 as vector copies and one masked tail (short runs: that beats
 * a memcpy call); strides 2 to 4, the stride phases of strided layers, as constant-stride loops
 * the compiler turns into whole-register loads and permutes, where a variable one moves element by
 * element. */
static inline void FC_LOCAL(gather_inside)(const T *row, fc_index iw0, fc_index s, fc_index lo,
                                           fc_index hi, T *dst) {
    const T *src = row + (iw0 + lo * s); /* the first column inside the row */
    T *d = dst + lo;
    const fc_index n = hi - lo;
    if (s == 1) {
        fc_index u = 0;
#if FC_HAVE_VEC
        for (; u + FC_VL <= n; u += FC_VL) FC_VSTOREU(d + u, FC_VLOADU(src + u));
        if (u < n) FC_VCOPY_PARTIAL(d + u, src + u, (int)(n - u));
#else
        for (; u < n; u++) d[u] = src[u];
#endif
    } else if (s == 2) {
        for (fc_index u = 0; u < n; u++) d[u] = src[2 * u];
    } else if (s == 3) {
        for (fc_index u = 0; u < n; u++) d[u] = src[3 * u];
    } else if (s == 4) {
        for (fc_index u = 0; u < n; u++) d[u] = src[4 * u];
    } else {
        for (fc_index u = 0; u < n; u++) d[u] = src[u * s];
    }
}

/* gather_run (below) given the span [lo, hi) of t whose column lies inside the row
 * (fc_inside_span; lo = hi = len for a NULL row): a caller gathering many rows at the same columns
 * settles the span once, where per row its divisions cost as much as a short run's copy. */
static inline void FC_LOCAL(gather_span)(const T *row, fc_index iw0, fc_index s, fc_index len,
                                         fc_index lo, fc_index hi, T *dst, fc_index ds) {
    if (ds == 1) {
        FC_LOCAL(zero_run)(dst, lo);
        if (row) FC_LOCAL(gather_inside)(row, iw0, s, lo, hi, dst);
        const fc_index t = row ? hi : lo;
        FC_LOCAL(zero_run)(dst + t, len - t);
        return;
    }
    fc_index t = 0;
    for (; t < lo; t++) dst[t * ds] = (T)0;
    if (row)
        for (; t < hi; t++) dst[t * ds] = row[iw0 + t * s];
    for (; t < len; t++) dst[t * ds] = (T)0;
}

/* dst[t * ds] = row[iw0 + t * s] for t < len, 0 where the column falls outside the row (or the
 * whole run when row is NULL: an input row in the padding). */
static inline void FC_FN(gather_run)(const T *row, fc_index iw0, fc_index s, fc_index W,
                                     fc_index len, T *dst, fc_index ds) {
    fc_index lo = len, hi = len;
    if (row) fc_inside_span(iw0, s, len, W, &lo, &hi);
    FC_LOCAL(gather_span)(row, iw0, s, len, lo, hi, dst, ds);
}

/* y[i] = ReLU(y[i]) for i < n: y unless y < 0, as relu_fwd (NaN and -0.0 stay). The forward
 * passes' fused epilogue, on outputs just written. */
static inline void FC_LOCAL(relu_run)(T *y, fc_index n) {
    for (fc_index i = 0; i < n; i++) y[i] = y[i] < 0 ? (T)0 : y[i];
}

/* Blocks of 16 elements in registers, through GNU vector extensions (the same code on every
 * instruction set of a file). */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define FC_HAVE_VEC16 1
typedef T FC_LOCAL(vec16) __attribute__((vector_size(16 * sizeof(T))));

/* row[2u] += src[u] for u < 16, as whole registers over the 32 columns [0, 32): the sources
 * interleaved with -0.0, which leaves the odd columns as they are (x + -0.0 is x for every x,
 * -0.0 and NaN included; only a signalling NaN would come back quiet). */
static inline void FC_LOCAL(scatter_add_block_s2)(T *row, const T *src) {
    typedef FC_LOCAL(vec16) vec;
    vec s, lo, hi, nz;
    for (int u = 0; u < 16; u++) nz[u] = -(T)0;
    memcpy(&s, src, sizeof s);
    memcpy(&lo, row, sizeof lo);
    memcpy(&hi, row + 16, sizeof hi);
    lo += __builtin_shufflevector(s, nz, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    hi += __builtin_shufflevector(s, nz, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15,
                                  31);
    memcpy(row, &lo, sizeof lo);
    memcpy(row + 16, &hi, sizeof hi);
}
#endif

/* row[iw0 + t * s] += src[t] for the columns inside the row. Stride 2 (the input gradient of
 * stride-2 layers, conv_transpose2d's upsampling by two) goes 16 sources at a time through
 * whole registers where the block's 32 columns lie in the row: element by element it was half
 * the time of col2im's GEMM. The odd columns a block passes over are read and written back
 * unchanged, so the caller must own the whole row (col2im's tasks own whole channels). */
static inline void FC_FN(scatter_add_run)(T *row, fc_index iw0, fc_index s, fc_index W,
                                          fc_index len, const T *src) {
    fc_index lo, hi;
    fc_inside_span(iw0, s, len, W, &lo, &hi);
    if (s == 1) {
        T *d = row + (iw0 + lo);
        for (fc_index t = lo; t < hi; t++) d[t - lo] += src[t];
        return;
    }
    fc_index t = lo;
#ifdef FC_HAVE_VEC16
    if (s == 2)
        for (; t + 16 <= hi && iw0 + 2 * (t + 16) <= W; t += 16)
            FC_LOCAL(scatter_add_block_s2)(row + iw0 + 2 * t, src + t);
#endif
    for (; t < hi; t++) row[iw0 + t * s] += src[t];
}

/* Input row of tap (c, i) for a run, or NULL when it lies in the padding. For pointwise runs the
 * "row" is the channel itself starting at the run's first pixel. */
/* Nonzero when some a[i], i < n, is Inf or NaN (inf - inf and NaN - NaN are NaN): one thread's
 * check of a run it is about to read (all_finite, conv2d_plain.h, splits a whole array across
 * threads). */
static inline int FC_LOCAL(run_nonfinite)(const T *a, fc_index n) {
    int bad = 0;
    for (fc_index i = 0; i < n; i++) bad |= (a[i] - a[i]) != (a[i] - a[i]);
    return bad;
}

static inline const T *FC_LOCAL(tap_row)(const fc_conv2d_params *p, const T *xc,
                                         const FC_LOCAL(run_t) *run, fc_index di, int pointwise) {
    if (pointwise) return xc + run->ih0 * p->in_w;
    const fc_index ih = run->ih0 + di;
    return (fc_uindex)ih < (fc_uindex)p->in_h ? xc + ih * p->in_w : NULL;
}

/* B(k, q) = src[k * ld + q] for k < kd, q < nc, into panels [nc / NR][kd][NR]. A whole or half
 * panel row is a copy of a fixed size, which the compiler inlines as vector moves; a copy of nr
 * values it makes a library call, once per row: per pixel, where the rows are pixels of dY (the
 * channels-last weight gradient). */
static void FC_NR_NAME(gemm_pack_b)(fc_index kd, fc_index nc, const T *src, fc_index ld, T *dst) {
    for (fc_index q0 = 0; q0 < nc; q0 += FC_NR) {
        const int nr = (int)FC_MIN(FC_NR, nc - q0);
        for (fc_index k = 0; k < kd; k++, dst += FC_NR) {
            if (nr == FC_NR) {
                memcpy(dst, src + k * ld + q0, sizeof(T) * FC_NR);
                continue;
            }
            if (nr == FC_NR / 2) {
                memcpy(dst, src + k * ld + q0, sizeof(T) * (FC_NR / 2));
                memset(dst + FC_NR / 2, 0, sizeof(T) * (FC_NR / 2));
                continue;
            }
            int q = 0;
            for (; q < nr; q++) dst[q] = src[k * ld + q0 + q];
            for (; q < FC_NR; q++) dst[q] = (T)0;
        }
    }
}

/* B(r, u) = rows[r][q + u] for r < kc, u < NR: one KC x NR panel of col(X) (or of a Winograd
 * V_e) whose rows lie apart in memory. Reading them in place cost more than this copy: rows at
 * a power-of-two stride fall into a few L1 sets and evict each other, and unaligned rows split
 * every load over two cache lines. The panel is reused by every A panel that passes. */
static inline void FC_NR_NAME(gemm_pack_b_panel)(fc_index kc, const T *const *rows, fc_index q,
                                                 T *restrict dst) {
    for (fc_index r = 0; r < kc; r++) memcpy(dst + r * FC_NR, rows[r] + q, sizeof(T) * FC_NR);
}

/* Split P pixels into equal tiles of at most `max_tile`, rounded up to NR. */
static fc_index FC_LOCAL(tile_size)(fc_index P, fc_index max_tile) {
    const fc_index ntiles = FC_CEIL_DIV(P, max_tile);
    const fc_index t = FC_CEIL_DIV(P, ntiles);
    return FC_CEIL_DIV(t, FC_NR) * FC_NR;
}

#ifdef FC_HAVE_VEC16
/* dst[u * ld + i] = rows[i][u] for i, u < 16: a 16 x 16 block transposed in registers. Round s
 * (8, 4, 2, 1) exchanges bit s of the row and lane indices: rows i and i + s (bit s of i clear)
 * trade the s-lane blocks where their lane index has bit s set and clear respectively. */
static inline void FC_LOCAL(transpose_block16)(const T *const *rows, T *dst, fc_index ld) {
    typedef FC_LOCAL(vec16) vec;
    vec r[16], a, b;
    for (int i = 0; i < 16; i++) memcpy(&r[i], rows[i], sizeof r[i]);
    for (int i = 0; i < 16; i++) {
        if (i & 8) continue;
        a = r[i], b = r[i + 8];
        r[i] = __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22,
                                       23);
        r[i + 8] = __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28,
                                           29, 30, 31);
    }
    for (int i = 0; i < 16; i++) {
        if (i & 4) continue;
        a = r[i], b = r[i + 4];
        r[i] = __builtin_shufflevector(a, b, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26,
                                       27);
        r[i + 4] = __builtin_shufflevector(a, b, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29,
                                           30, 31);
    }
    for (int i = 0; i < 16; i++) {
        if (i & 2) continue;
        a = r[i], b = r[i + 2];
        r[i] = __builtin_shufflevector(a, b, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28,
                                       29);
        r[i + 2] = __builtin_shufflevector(a, b, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15,
                                           30, 31);
    }
    for (int i = 0; i < 16; i++) {
        if (i & 1) continue;
        a = r[i], b = r[i + 1];
        r[i] = __builtin_shufflevector(a, b, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14,
                                       30);
        r[i + 1] = __builtin_shufflevector(a, b, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29,
                                           15, 31);
    }
    for (int u = 0; u < 16; u++) memcpy(dst + u * ld, &r[u], sizeof r[u]);
}
#endif

/* Where grid pixel q (wph columns per output row) lies in a plane of OW columns: the next
 * real pixel's offset. */
static inline fc_index FC_LOCAL(grid_to_plane)(fc_index q, fc_index OW, fc_index wph) {
    return (q / wph) * OW + FC_MIN(q % wph, OW);
}

/* The grid pixels from q (before `end`) that lie in q's output row: returns how many, and sets
 * *valid to how many of them are real pixels (the rest are the grid's padding columns) and *at
 * to where those start in a plane. */
static inline fc_index FC_LOCAL(grid_run)(fc_index q, fc_index end, fc_index OW, fc_index wph,
                                          fc_index *valid, fc_index *at) {
    const fc_index ow = q % wph, len = FC_MIN(end - q, wph - ow);
    *valid = FC_MAX(0, FC_MIN(len, OW - ow));
    *at = (q / wph) * OW + ow;
    return len;
}

/* dY^T for grid pixels [q0, q0 + n) of one image's dY (Kg channels of P = OH x OW pixels, on a
 * grid of wph >= OW columns per output row): panels [Kg / NR][n][NR], zero for the grid's
 * padding columns and for channels past Kg. Reads dY along its rows (one output row run at a
 * time) and scatters into the L1-sized panel, rather than gathering NR rows per pixel. A chunk
 * reads a short run from each of Kg planes, more streams than the hardware prefetchers follow,
 * so each plane's next chunk is prefetched as this one is packed. */
static void FC_NR_NAME(conv2d_pack_dyt)(const T *gyg, fc_index Kg, fc_index P, fc_index OW,
                                        fc_index wph, fc_index q0, fc_index n, T *dst) {
    const fc_index grid = (P / OW) * wph, end = q0 + n;
    const fc_index next0 = FC_LOCAL(grid_to_plane)(FC_MIN(end, grid), OW, wph);
    const fc_index next1 = FC_LOCAL(grid_to_plane)(FC_MIN(end + n, grid), OW, wph);
    fc_index len, valid, at;
    for (fc_index k0 = 0; k0 < Kg; k0 += FC_NR) {
        const int nr = (int)FC_MIN(FC_NR, Kg - k0);
        T *panel = dst + (k0 / FC_NR) * n * FC_NR;
        if (nr < FC_NR || wph > OW) /* zeros to leave: else every element is written below */
            memset(panel, 0, sizeof(T) * (size_t)(n * FC_NR));
        for (int t = 0; t < nr; t++)
            fc_prefetch(gyg + (k0 + t) * P + next0, sizeof(T) * (size_t)(next1 - next0));
        int t = 0;
#ifdef FC_HAVE_VEC16
        /* float32, 16 channels at a time: each run in 16 x 16 blocks transposed in registers,
         * where element by element the stores were most of the packing's time (float64's
         * blocks span two registers each way and were no faster) */
        for (; sizeof(T) == 4 && t + 16 <= nr; t += 16)
            for (fc_index q = q0; q < end; q += len) {
                len = FC_LOCAL(grid_run)(q, end, OW, wph, &valid, &at);
                T *d = panel + (q - q0) * FC_NR + t;
                const T *rows[16];
                for (int i = 0; i < 16; i++) rows[i] = gyg + (k0 + t + i) * P + at;
                fc_index u = 0;
                for (; u + 16 <= valid; u += 16) {
                    const T *block[16];
                    for (int i = 0; i < 16; i++) block[i] = rows[i] + u;
                    FC_LOCAL(transpose_block16)(block, d + u * FC_NR, FC_NR);
                }
                if (u < valid && valid >= 16) { /* the tail as the run's last 16 pixels: the
                                                   block's first ones are written again, with
                                                   the same values */
                    const T *block[16];
                    for (int i = 0; i < 16; i++) block[i] = rows[i] + valid - 16;
                    FC_LOCAL(transpose_block16)(block, d + (valid - 16) * FC_NR, FC_NR);
                    u = valid;
                }
                for (; u < valid; u++)
                    for (int i = 0; i < 16; i++) d[u * FC_NR + i] = rows[i][u];
            }
#endif
        for (; t < nr; t++)
            for (fc_index q = q0; q < end; q += len) {
                len = FC_LOCAL(grid_run)(q, end, OW, wph, &valid, &at);
                T *d = panel + (q - q0) * FC_NR + t;
                const T *s = gyg + (k0 + t) * P + at;
                for (fc_index u = 0; u < valid; u++) d[u * FC_NR] = s[u];
            }
    }
}

#endif /* FC_CONV2D_PACK_H */
