/* conv2d_winograd.h: 3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3), on
 * the direct path's GEMM microkernel (conv2d_gemm_ukernel.h) and B-panel packing (conv2d_pack.h).
 *
 *   fc_<dt>_winograd_f2x2_3x3_kernel_transform_mr<MR>__<isa>   U = G g G^T, MR kernels at once
 *   fc_<dt>_winograd_f2x2_3x3_input_transform__<isa>          V = B^T d B, tile rows at once
 *   fc_<dt>_winograd_f2x2_3x3_output_transform__<isa>         Y = A^T M A (+ bias), a block
 *
 * Each 2x2 block of outputs ("tile") comes from a 4x4 input tile d and a 3x3 kernel g as
 *   Y = A^T [ (G g G^T) .* (B^T d B) ] A,
 * so the 36 multiply-adds per tile and channel pair become 16: the 16 element-wise products,
 * summed over input channels, are 16 independent GEMMs M_e[K, tiles] = U_e[K, C] * V_e[C, tiles]
 * run on the direct path's microkernel. 2.25x fewer multiplies, at an accuracy cost of a few ulp
 * (the tests hold it to the same float32 tolerance as the direct path).
 *
 * Loop structure: tasks are (group, block of TB tiles, counted across the batch). A task pads
 * the channels of the images its block touches, transforms its tiles' inputs into V (vectorised
 * across each image's tile rows), runs the 16 GEMMs into M and transforms M into the outputs.
 * U is transformed and packed once per call. Workspace per thread: a few padded images,
 * 16 x (C + K) x TB, one KC x NR B panel and the input transform's row combinations
 * (8 x TH x 2 TW, four padded channels' worth). */

#ifndef FC_CONV2D_WINOGRAD_H
#define FC_CONV2D_WINOGRAD_H

#include "conv2d_gemm_ukernel.h"
#include "conv2d_pack.h"
#include "conv2d_plan.h"
#include "conv2d_weights.h"
#include "conv2d_winograd_kernel.h"
#include "fc_template.h"

/* Input channels per stage of the kernel transform: their taps, MR lanes each, stay in L1. */
#define FC_WINO_KERNEL_CHUNK 32
/* The GEMMs ask for each next A panel where a group's U (16 Kg Cg values) exceeds this: half of
 * a Zen 5 core's 1 MiB L2. Smaller U stays in cache (res14-64: 256 KB), where the prefetches
 * only cost issue slots (res14-16's 16-deep panels: 8 per 256 multiply-adds). */
#define FC_WINO_PREFETCH_U_BYTES ((size_t)512 << 10)

#if FC_HAVE_VEC && FC_MR == 8
typedef T FC_LOCAL(wino_vec8) __attribute__((vector_size(8 * sizeof(T))));
/* r[u][i] = r[i][u] for i, u < 8, in registers: round s (4, 2, 1) exchanges bit s of the row
 * and lane indices, as conv2d_pack.h's transpose_block16. */
static inline void FC_LOCAL(wino_transpose8)(FC_LOCAL(wino_vec8) *r) {
    FC_LOCAL(wino_vec8) a, b;
    for (int i = 0; i < 8; i++) {
        if (i & 4) continue;
        a = r[i], b = r[i + 4];
        r[i] = __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11);
        r[i + 4] = __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15);
    }
    for (int i = 0; i < 8; i++) {
        if (i & 2) continue;
        a = r[i], b = r[i + 2];
        r[i] = __builtin_shufflevector(a, b, 0, 1, 8, 9, 4, 5, 12, 13);
        r[i + 2] = __builtin_shufflevector(a, b, 2, 3, 10, 11, 6, 7, 14, 15);
    }
    for (int i = 0; i < 8; i++) {
        if (i & 1) continue;
        a = r[i], b = r[i + 1];
        r[i] = __builtin_shufflevector(a, b, 0, 8, 2, 10, 4, 12, 6, 14);
        r[i + 1] = __builtin_shufflevector(a, b, 1, 9, 3, 11, 5, 13, 7, 15);
    }
}
#endif

/* U = G g G^T, G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], of the nk <= FC_MR kernels of one
 * packed A panel (lane i: kernel i; lanes past nk are zero) for input channels c < nc, element
 * (k, c, tap) of the weights at w[k * ks + c * cs + tap * ts] (OIHW, or the flipped, transposed
 * view of conv2d_weights.h): u[e * us + c * FC_MR + i]. The taps of a chunk of channels are
 * first copied lane by lane into a stage, tap by tap in the panels' order (channel, lane), so
 * the arithmetic is one long vector loop writing each U_e's panel rows in order: gathered into a
 * vector per channel just before use, every vector load waited for its lanes' scalar stores (a
 * failed store forward each), which at batch 1 made the transform rival the GEMMs. Returns nonzero
 * if any result is Inf or NaN. */
static int FC_MR_NAME(winograd_f2x2_3x3_kernel_transform)(const T *w, fc_index ks, fc_index cs,
                                                          fc_index ts, fc_index nk, fc_index nc,
                                                          T *restrict u, fc_index us) {
    T stage[9][FC_WINO_KERNEL_CHUNK * FC_MR];
    int bad = 0;
    for (fc_index c0 = 0; c0 < nc; c0 += FC_WINO_KERNEL_CHUNK) {
        const fc_index cn = FC_MIN(FC_WINO_KERNEL_CHUNK, nc - c0), n = cn * FC_MR;
        /* a (channel, tap)'s MR lanes at a time, so the stores run in order through the stage:
         * lane by lane, each channel's nine stores landed 1 KB apart, and at batch 1 (res-256's
         * 256 x 256 kernels) those stores were most of the transform's time */
        const T *src[FC_MR];
        for (fc_index i = 0; i < FC_MR; i++) src[i] = w + (i < nk ? i : 0) * ks + c0 * cs;
        /* the next chunk's taps, where each kernel's are one run (OIHW): MR streams in turn are
         * more than the hardware prefetchers keep ahead of, and the weights come from L3 */
        if (ts == 1 && cs == 9 && c0 + cn < nc)
            for (fc_index i = 0; i < nk; i++)
                fc_prefetch(src[i] + cn * cs, sizeof(T) * (size_t)(FC_MIN(cn, nc - c0 - cn) * cs));
        fc_index x0 = 0; /* (channel, tap) pairs staged, c * 9 + tap */
#if FC_HAVE_VEC && FC_MR == 8
        /* OIHW and a full panel: 8 pairs of the 8 lanes at a time, transposed in registers */
        if (ts == 1 && cs == 9 && nk == FC_MR)
            for (; x0 + 8 <= 9 * cn; x0 += 8) {
                FC_LOCAL(wino_vec8) r[8];
                for (int i = 0; i < 8; i++) memcpy(&r[i], src[i] + x0, sizeof r[i]);
                FC_LOCAL(wino_transpose8)(r);
                for (int v = 0; v < 8; v++)
                    memcpy(&stage[(x0 + v) % 9][(x0 + v) / 9 * FC_MR], &r[v], sizeof r[v]);
            }
#endif
        for (; x0 < 9 * cn; x0++) {
            T *restrict d = &stage[x0 % 9][x0 / 9 * FC_MR];
            const fc_index off = x0 / 9 * cs + x0 % 9 * ts;
            FC_PRAGMA(GCC unroll 16)
            for (fc_index i = 0; i < FC_MR; i++) d[i] = i < nk ? src[i][off] : (T)0;
        }
        bad |= FC_LOCAL(winograd_kernel_from_stage)(stage[0], FC_WINO_KERNEL_CHUNK * FC_MR, n,
                                                    u + c0 * FC_MR, us);
    }
    return bad;
}

/* The input transform V = B^T d B, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], of every tile
 * in tile rows [th0, th1) of one padded channel (Wp = 2 TW + 2 columns), in two passes of long
 * vectorised loops; a tile row has only TW tiles (7 in res-256), too few to vectorise one at a
 * time. Pass 1, down the rows: row combination i of each tile row (r0 - r2, r1 + r2, r2 - r1,
 * r1 - r3 of its rows r0..r3), stored twice with 2 TW columns per tile row: from column 0 in lo
 * and from column 2 in hi. Tile t's columns 2t..2t+3 are then lo[2t], lo[2t+1], hi[2t], hi[2t+1],
 * with the same t for every tile row in one flat index m = (th - th0) * TW + tw. Pass 2, along
 * the columns, writes V_e for tiles m in [m0, m1) to v[e] + (m - m0). */
static void FC_FN(winograd_f2x2_3x3_input_transform)(const T *plane, fc_index Wp, fc_index th0,
                                                     fc_index th1, fc_index m0, fc_index m1,
                                                     T *restrict lo, T *restrict hi, T *const *v) {
    const fc_index w2 = Wp - 2, rows = th1 - th0, stride = rows * w2; /* one combination */
    for (fc_index th = th0; th < th1; th++) {
        const T *restrict r0 = plane + 2 * th * Wp, *restrict r1 = r0 + Wp;
        const T *restrict r2 = r1 + Wp, *restrict r3 = r2 + Wp;
        /* only the columns pass 2 reads: the first and last rows may be partly in the block */
        const fc_index xa = th == th0 ? 2 * m0 : 0;
        const fc_index xb = th == th1 - 1 ? 2 * m1 - (th1 - 1 - th0) * w2 : w2;
        for (int half = 0; half < 2; half++) {
            T *restrict o = (half ? hi : lo) + (th - th0) * w2;
            const fc_index s = 2 * half;
            for (fc_index x = xa; x < xb; x++) {
                o[x] = r0[x + s] - r2[x + s];
                o[stride + x] = r1[x + s] + r2[x + s];
                o[2 * stride + x] = r2[x + s] - r1[x + s];
                o[3 * stride + x] = r1[x + s] - r3[x + s];
            }
        }
    }
    for (int i = 0; i < 4; i++) {
        const T *restrict a = lo + i * stride, *restrict b = hi + i * stride;
        T *restrict v0 = v[i * 4] - m0, *restrict v1 = v[i * 4 + 1] - m0;
        T *restrict v2 = v[i * 4 + 2] - m0, *restrict v3 = v[i * 4 + 3] - m0;
        for (fc_index m = m0; m < m1; m++) {
            const T c0 = a[2 * m], c1 = a[2 * m + 1], c2 = b[2 * m], c3 = b[2 * m + 1];
            v0[m] = c0 - c2;
            v1[m] = c1 + c2;
            v2[m] = c2 - c1;
            v3[m] = c1 - c3;
        }
    }
}

/* o[t] = a[t] + b[t] + c[t] (sign = 1) or a[t] - b[t] - c[t] (sign = -1), plus bias */
static void FC_LOCAL(wino_sum3)(fc_index n, const T *restrict a, const T *restrict b,
                                const T *restrict c, T sign, T bias, T *restrict o) {
    for (fc_index t = 0; t < n; t++) o[t] = a[t] + sign * (b[t] + c[t]) + bias;
}
/* y[2t] = e[t], y[2t + 1] = f[t] */
static void FC_LOCAL(wino_interleave)(fc_index n, const T *restrict e, const T *restrict f,
                                      T *restrict y) {
    for (fc_index t = 0; t < n; t++) {
        y[2 * t] = e[t];
        y[2 * t + 1] = f[t];
    }
}

/* Y = A^T M A, A^T = [1 1 1 0; 0 1 -1 -1], for tiles t < n (a whole block, across tile rows and
 * images: the sums are element-wise over tiles, so they run as long vector loops): tmp's rows
 * 8..11 (stride ts) get each tile's outputs (0, 0), (0, 1), (1, 0), (1, 1), plus bias. */
static void FC_FN(winograd_f2x2_3x3_output_transform)(const T *const *m, fc_index n, T bias, T *tmp,
                                                      fc_index ts) {
    T *s = tmp, *d = tmp + 4 * ts, *o = tmp + 8 * ts; /* A^T M's rows, then the outputs */
    for (int j = 0; j < 4; j++) {
        FC_LOCAL(wino_sum3)(n, m[j], m[4 + j], m[8 + j], 1, 0, s + j * ts);
        FC_LOCAL(wino_sum3)(n, m[4 + j], m[8 + j], m[12 + j], -1, 0, d + j * ts);
    }
    FC_LOCAL(wino_sum3)(n, s, s + ts, s + 2 * ts, 1, bias, o);
    FC_LOCAL(wino_sum3)(n, s + ts, s + 2 * ts, s + 3 * ts, -1, bias, o + ts);
    FC_LOCAL(wino_sum3)(n, d, d + ts, d + 2 * ts, 1, bias, o + 2 * ts);
    FC_LOCAL(wino_sum3)(n, d + ts, d + 2 * ts, d + 3 * ts, -1, bias, o + 3 * ts);
}

/* One tile row's n tiles of wino_output_sums' o (stride ts) into output rows y0 (2*th) and y1
 * (2*th + 1, NULL past the image), columns 2t and 2t+1 while < ow_count. */
static void FC_LOCAL(winograd_output_row)(const T *o, fc_index ts, fc_index n, T *y0, T *y1,
                                          fc_index ow_count) {
    const fc_index full = ow_count / 2; /* tiles whose two columns both exist */
    FC_LOCAL(wino_interleave)(full, o, o + ts, y0);
    if (y1) FC_LOCAL(wino_interleave)(full, o + 2 * ts, o + 3 * ts, y1);
    if (full < n) { /* the last tile of an odd-width row has one column */
        y0[2 * full] = o[full];
        if (y1) y1[2 * full] = o[2 * ts + full];
    }
}

/* The zero-padded copies (Hp x Wp each, the input at (pad_top, pad_left)) of an image's Cg
 * channels xg, into dst; nonzero when an element they copy is Inf or NaN. The check runs over
 * the input rows the copies read, one run across every channel when those are whole channels:
 * checked row by row, a padded row of an 8 x 8 image (10 elements) would pay a vector reduction
 * for less than a register's worth of data. */
static int FC_LOCAL(winograd_pad_image)(const fc_conv2d_params *p, const T *xg, fc_index Cg,
                                        fc_index Hp, fc_index Wp, T *restrict dst) {
    const fc_index H = p->in_h, W = p->in_w, HW = H * W;
    fc_index lo, hi; /* the columns inside an input row, the same for every row */
    fc_inside_span(-p->pad_left, 1, Wp, W, &lo, &hi);
    /* the input rows and columns the copies read */
    const fc_index ih0 = FC_MAX(0, -p->pad_top), ih1 = FC_MIN(H, Hp - p->pad_top);
    const fc_index iw0 = lo - p->pad_left, cols = hi - lo;
    int bad = 0;
    if (ih1 - ih0 == H && cols == W)
        bad = FC_LOCAL(run_nonfinite)(xg, Cg * HW);
    else
        for (fc_index c = 0; c < Cg && cols > 0; c++)
            for (fc_index ih = ih0; ih < ih1; ih++)
                bad |= FC_LOCAL(run_nonfinite)(xg + c * HW + ih * W + iw0, cols);
    for (fc_index c = 0; c < Cg; c++)
        for (fc_index r = 0; r < Hp; r++) {
            const fc_index ih = r - p->pad_top;
            T *row = dst + (c * Hp + r) * Wp;
            if ((fc_uindex)ih < (fc_uindex)H)
                FC_LOCAL(gather_span)(xg + c * HW + ih * W, -p->pad_left, 1, Wp, lo, hi, row, 1);
            else /* a padding row */
                FC_LOCAL(gather_span)(NULL, -p->pad_left, 1, Wp, Wp, Wp, row, 1);
        }
    return bad;
}

/* Where a block's outputs go: the tiles [u, u + len) of the block, one tile row of one image,
 * land at y + base + k P for output channel k of the group (row 2 th at base, row 2 th + 1 after
 * it where two_rows), cols columns. Worked out once per block rather than per output channel,
 * whose divisions cost as much as a short run's copy on small images. */
typedef struct {
    fc_index u, len, base, cols;
    int two_rows;
} FC_LOCAL(wino_out_run);

/* The forward pass by Winograd; FC_NONFINITE when x or w holds an Inf or NaN, whose
 * cancellations in the transforms (Inf - Inf) would give NaN where the exact sum is +-Inf: the
 * plan's fallback then redoes the call, rewriting all of y. */
static int FC_LOCAL(conv2d_fwd_winograd)(const fc_conv2d_params *p, const fc_tuning *tn, const T *x,
                                         const T *w, const T *bias, T *y, int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index H = p->in_h, W = p->in_w, HW = H * W, OH = p->out_h, OW = p->out_w;
    const fc_index P = OH * OW;
    const fc_index TH = FC_CEIL_DIV(OH, 2), TW = FC_CEIL_DIV(OW, 2), TI = TH * TW;
    const fc_index Hp = 2 * TH + 2, Wp = 2 * TW + 2; /* padded input covering every tile */
    /* Blocks run over the tiles of all images in a row, so small images (res-256's 7 x 7 tiles)
     * fill whole panels; a block spans at most `span` images. */
    const fc_index total = p->batch * TI;
    const fc_index TB = FC_MIN(tn->winograd_block, FC_CEIL_DIV(total, FC_NR) * FC_NR);
    const fc_index span = FC_CEIL_DIV(TB, TI) + 1;
    const fc_index nblocks = FC_CEIL_DIV(total, TB);
    const fc_index kblocks = FC_CEIL_DIV(Kg, FC_MR);
    /* Output channels split too when groups and blocks alone leave threads idle (batch 1: a
     * 14 x 14 image is one block). Each part transforms the block's input again, a small cost
     * beside its share of the 16 GEMMs; every output is still summed by one task in one order,
     * so results do not depend on the split. */
    const fc_index kparts = FC_MAX(
        1, FC_MIN(kblocks, FC_CEIL_DIV(2 * (fc_index)nthreads, G * nblocks)));
    const fc_index ntasks = G * nblocks * kparts;
    /* an image's blocks at a time, while there are enough images to go round */
    const int per_image = (int)FC_MAX(
        1, FC_MIN(FC_MIN(FC_MAX(1, TI / TB) * kparts, ntasks / (2 * (fc_index)nthreads)), 1 << 20));
    /* The 16 transforms are read and written together: skewing their strides off powers of two
     * by 3 cache lines keeps them from all landing in the same L1 sets. */
    const fc_index v_stride = Cg * TB + 48, m_stride = kblocks * FC_MR * TB + 48;
    int failed = 0;

    /* U_e for every group, packed like the direct path's weights: [e][group][k block][C][MR];
     * the 16 U_e are written together, so their stride is skewed off a power of two too */
    const fc_index u_stride = kblocks * FC_MR * Cg + 48; /* one (e, group) */
    const int prefetch_u = sizeof(T) * 16 * (size_t)(Kg * Cg) > FC_WINO_PREFETCH_U_BYTES;
    const fc_weight_layout ws = fc_weight_layout_of(p);
    T *up = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(16 * G * u_stride));
    if (!up) return FC_ENOMEM;
    int nonfinite = 0; /* an Inf or NaN seen in x or w: the caller redoes the call exactly */

    const int nt = fc_threads_for(nthreads, (double)p->batch * p->out_channels * P * Cg * 9,
                                  tn->conv_min_work, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        /* U_e = G g G^T for every kernel, into the packed panels shared by all tasks */
        FC_PRAGMA(omp for schedule(static))
        for (fc_index gkb = 0; gkb < G * kblocks; gkb++) {
            const fc_index g = gkb / kblocks, kb = gkb % kblocks, k0 = g * Kg + kb * FC_MR;
            const int bad = FC_MR_NAME(winograd_f2x2_3x3_kernel_transform)(
                w + k0 * ws.k_stride, ws.k_stride, ws.c_stride, ws.tap_stride,
                FC_MIN(FC_MR, Kg - kb * FC_MR), Cg, up + g * u_stride + kb * Cg * FC_MR,
                G * u_stride);
            if (bad) {
                FC_PRAGMA(omp atomic write)
                nonfinite = 1;
            }
        }
        T *xp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(span * Cg * Hp * Wp));
        T *vb = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(16 * v_stride));
        T *mb = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(16 * m_stride));
        const T **rows = (const T **)malloc(sizeof(*rows) * (size_t)Cg);
        T *tmp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(12 * TB)); /* output sums */
        /* the input transform's row combinations: 4 x 2 x TH tile rows of 2 TW columns */
        T *lo = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(8 * TH * 2 * TW));
        T *hi = lo ? lo + 4 * TH * 2 * TW : NULL;
        T *stage = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(tn->kc * FC_NR)); /* B panel */
        /* xp holds `span` padded images, image n of group g in slot n % span (a block's images
         * are consecutive, so they never collide); slot_of remembers which is where */
        fc_index *slot_of = (fc_index *)malloc(sizeof(fc_index) * (size_t)span);
        /* a block's output runs: at most one per tile */
        FC_LOCAL(wino_out_run) *runs = (FC_LOCAL(wino_out_run) *)malloc(sizeof(*runs) * (size_t)TB);
        const int ok = xp && vb && mb && rows && tmp && lo && stage && slot_of && runs;
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        for (fc_index i = 0; ok && i < span; i++) slot_of[i] = -1;
        fc_index built = -1; /* which (group, block) vb holds the input transform of */
        /* an image's worth of blocks at a time: a thread pads each image it meets once, and
         * threads slowed by other work still hand over images to faster ones */
        FC_PRAGMA(omp for schedule(dynamic, per_image))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!ok) continue;
            const fc_index part = t % kparts, blk = (t / kparts) % nblocks;
            const fc_index g = t / (kparts * nblocks);
            const fc_index t0 = blk * TB, nb = FC_MIN(TB, total - t0);
            const fc_index n_first = t0 / TI, n_last = (t0 + nb - 1) / TI;
            const fc_index kb0 = part * kblocks / kparts, kb1 = (part + 1) * kblocks / kparts;
            /* the block's input, transformed once per thread (the parts of one block are
             * consecutive tasks) */
            if (built != g * nblocks + blk) {
                /* zero-padded copies of the images (this group) the block touches */
                for (fc_index n = n_first; n <= n_last; n++) {
                    if (slot_of[n % span] == n * G + g) continue;
                    slot_of[n % span] = n * G + g;
                    const T *xg = x + (n * p->in_channels + g * Cg) * HW;
                    const int bad = FC_LOCAL(winograd_pad_image)(p, xg, Cg, Hp, Wp,
                                                                 xp + (n % span) * Cg * Hp * Wp);
                    if (bad) {
                        FC_PRAGMA(omp atomic write)
                        nonfinite = 1;
                    }
                }
                /* input transform: V_e[c][tile], tiles past the block's end zeroed; an image's
                 * tiles in the block are consecutive, so each image is one call */
                for (fc_index c = 0; c < Cg; c++) {
                    T *v[16];
                    for (int e = 0; e < 16; e++) {
                        v[e] = vb + e * v_stride + c * TB;
                        for (fc_index u = nb; u < TB; u++) v[e][u] = (T)0;
                    }
                    for (fc_index u = 0; u < nb;) {
                        const fc_index n = (t0 + u) / TI, ti = (t0 + u) % TI;
                        const fc_index len = FC_MIN(nb - u, TI - ti), th0 = ti / TW;
                        const fc_index th1 = (ti + len - 1) / TW + 1;
                        T *ve[16];
                        for (int e = 0; e < 16; e++) ve[e] = v[e] + u;
                        FC_FN(winograd_f2x2_3x3_input_transform)(
                            xp + ((n % span) * Cg + c) * Hp * Wp, Wp, th0, th1, ti - th0 * TW,
                            ti - th0 * TW + len, lo, hi, ve);
                        u += len;
                    }
                }
                built = g * nblocks + blk;
            }
            /* the 16 GEMMs: M_e[k][tile] = sum_c U_e[k][c] V_e[c][tile] */
            for (int e = 0; e < 16; e++) {
                const T *ue = up + (e * G + g) * u_stride;
                T *me = mb + e * m_stride;
                for (fc_index c0 = 0; c0 < Cg; c0 += tn->kc) {
                    const fc_index kc = FC_MIN(tn->kc, Cg - c0);
                    for (fc_index c = 0; c < kc; c++) rows[c] = vb + e * v_stride + (c0 + c) * TB;
                    for (fc_index j = 0; j < nb; j += FC_NR) {
                        FC_NR_NAME(gemm_pack_b_panel)(kc, rows, j, stage);
                        for (fc_index kb = kb0; kb < kb1; kb++) {
                            const T *a = ue + kb * FC_MR * Cg + c0 * FC_MR;
                            /* the next A panel, one call ahead: U (16 C K values, 16 MB in
                             * res-512-7x7) comes from L3 on each block's first panel, and a
                             * panel is too short a run for the prefetchers to get ahead of */
                            if (prefetch_u && kb + 1 < kb1)
                                fc_prefetch(a + FC_MR * Cg, sizeof(T) * (size_t)(kc * FC_MR));
                            FC_GEMM(kc, a, stage, me + kb * FC_MR * TB + j, TB, FC_MR, FC_NR,
                                    c0 > 0, NULL);
                        }
                    }
                }
            }
            /* output transform into Y */
            fc_index nruns = 0;
            for (fc_index u = 0; u < nb; nruns++) {
                const fc_index n = (t0 + u) / TI, ti = (t0 + u) % TI;
                const fc_index th = ti / TW, tw = ti % TW, len = FC_MIN(nb - u, TW - tw);
                FC_LOCAL(wino_out_run) *run = &runs[nruns];
                run->u = u;
                run->len = len;
                run->base = (n * p->out_channels + g * Kg) * P + 2 * th * OW + 2 * tw;
                run->cols = FC_MIN(2 * len, OW - 2 * tw);
                run->two_rows = 2 * th + 1 < OH;
                u += len;
            }
            for (fc_index k = kb0 * FC_MR; k < FC_MIN(Kg, kb1 * FC_MR); k++) {
                const T *m[16];
                for (int e = 0; e < 16; e++) m[e] = mb + e * m_stride + k * TB;
                FC_FN(winograd_f2x2_3x3_output_transform)(m, nb, bias ? bias[g * Kg + k] : (T)0,
                                                          tmp, TB);
                /* the fused epilogue, on the block's four output rows before they are spread
                 * over the image: four long runs instead of two short ones per tile row */
                if (p->relu)
                    for (int r = 8; r < 12; r++) FC_LOCAL(relu_run)(tmp + r * TB, nb);
                for (fc_index i = 0; i < nruns; i++) {
                    const FC_LOCAL(wino_out_run) *run = &runs[i];
                    T *y0 = y + run->base + k * P, *y1 = run->two_rows ? y0 + OW : NULL;
                    FC_LOCAL(winograd_output_row)(tmp + 8 * TB + run->u, TB, run->len, y0, y1,
                                                  run->cols);
                }
            }
        }
        fc_aligned_free(xp);
        fc_aligned_free(vb);
        fc_aligned_free(mb);
        fc_aligned_free(tmp);
        fc_aligned_free(lo);
        fc_aligned_free(stage);
        free(rows);
        free(slot_of);
        free(runs);
    }
    fc_aligned_free(up);
    return failed ? FC_ENOMEM : nonfinite ? FC_NONFINITE : FC_OK;
}

#endif /* FC_CONV2D_WINOGRAD_H */
