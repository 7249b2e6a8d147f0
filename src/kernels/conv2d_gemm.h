/* conv2d_gemm.h: convolution forward and backward as packed GEMMs, one template for every dtype and
 * instruction set. A kernel file defines T, FC_DT (f32|f64), FC_ISA (scalar|avx2|avx512), FC_MR
 * and FC_NR, and for a SIMD path the vector type and intrinsics listed at the microkernel, then
 * includes this file.
 *
 * Every pass is C[M x N] (+)= A[M x Kd] * B[Kd x N] on one image and one group, BLIS-style: A and B
 * are packed into MR-row / NR-column panels and an MR x NR register microkernel does the FMAs. The
 * im2col matrix is never built whole: it is packed tile by tile into a bounded per-thread buffer.
 *   forward      Y[K, P]      = W[K, R] * col(X)[R, P]      tasks: (image, group, pixel tile)
 *   input grad   col(dX)[R,P] = W^T[R, K] * dY[K, P]        tasks: (image, group, channel block);
 *                then col2im scatter-adds each tile into dX (a task owns its channels: no races)
 *   weight grad  dW[K, R]    += dY[K, P] * col(X)^T[P, R]   tasks: (batch chunk, group, R block);
 *                batch chunks accumulate privately and are summed in a fixed order
 * with R = C/groups * kH * kW and P = OH * OW. The split into tasks never depends on the thread
 * count, so results are bit-identical for any number of threads.
 */
#include "fc_internal.h"

#define FC_FN(op) FC_CAT3(FC_CAT3(fc_, FC_DT, _), op, FC_CAT2(__, FC_ISA))
#define FC_LOCAL(name) FC_CAT3(name, _, FC_DT)

/* Reduction depth per packed panel: one B panel (KC x NR) stays within ~16 KB of L1. */
#define FC_KC FC_MAX(64, 16384 / (FC_NR * (int)sizeof(T)))
/* Upper bound on the pixels in one forward / input-gradient tile. */
#define FC_NC_MAX 384
/* Rows of col(dX) (channels x kernel offsets) that one input-gradient task owns at most. */
#define FC_ROWS_MAX 288
/* Columns of dW one weight-gradient task packs at once. */
#define FC_RB 256
/* Roughly 200k multiply-adds per thread before another thread pays for its start-up. */
#define FC_CONV_MIN_WORK 2.0e5

/* ---- the microkernel: C[mr x nr] (+)= A_panel * B_panel over kc --------------------------- */
/* A panel: kc groups of FC_MR values; B panel: kc groups of FC_NR values (zero padded).
 * accumulate: C += acc; else C = acc + bias[i] (bias may be NULL). */
#ifdef FC_VEC
/* Vector path: the kernel file defines FC_VEC (the register type), FC_VL (its lanes) and the
 * intrinsics FC_VLOADU, FC_VSTOREU, FC_VSET1, FC_VFMA (a*b+c), FC_VADD, FC_VZERO. The broadcast of
 * A folds into the FMA's memory operand; MR x NR/VL accumulators stay in registers. */
#define FC_NV (FC_NR / FC_VL)

static inline void FC_LOCAL(ukernel)(fc_index kc, const T *restrict A, const T *restrict B,
                                     T *restrict C, fc_index ldc, int mr, int nr, int accumulate,
                                     const T *restrict bias) {
    FC_VEC acc[FC_MR][FC_NV];
    FC_PRAGMA(GCC unroll 16)
    for (int i = 0; i < FC_MR; i++)
        FC_PRAGMA(GCC unroll 8)
        for (int v = 0; v < FC_NV; v++) acc[i][v] = FC_VZERO();
    for (fc_index r = 0; r < kc; r++) {
        FC_VEC b[FC_NV];
        FC_PRAGMA(GCC unroll 8)
        for (int v = 0; v < FC_NV; v++) b[v] = FC_VLOADU(B + r * FC_NR + v * FC_VL);
        FC_PRAGMA(GCC unroll 16)
        for (int i = 0; i < FC_MR; i++) {
            const FC_VEC a = FC_VSET1(A[r * FC_MR + i]);
            FC_PRAGMA(GCC unroll 8)
            for (int v = 0; v < FC_NV; v++) acc[i][v] = FC_VFMA(a, b[v], acc[i][v]);
        }
    }
    if (mr == FC_MR && nr == FC_NR) {
        FC_PRAGMA(GCC unroll 16)
        for (int i = 0; i < FC_MR; i++) {
            T *c = C + i * ldc;
            const FC_VEC add = (!accumulate && bias) ? FC_VSET1(bias[i]) : FC_VZERO();
            FC_PRAGMA(GCC unroll 8)
            for (int v = 0; v < FC_NV; v++) {
                const FC_VEC base = accumulate ? FC_VLOADU(c + v * FC_VL) : add;
                FC_VSTOREU(c + v * FC_VL, FC_VADD(acc[i][v], base));
            }
        }
        return;
    }
    T tile[FC_MR][FC_NR];
    for (int i = 0; i < FC_MR; i++)
        for (int v = 0; v < FC_NV; v++) FC_VSTOREU(&tile[i][v * FC_VL], acc[i][v]);
    for (int i = 0; i < mr; i++) {
        T *c = C + i * ldc;
        const T add = (!accumulate && bias) ? bias[i] : (T)0;
        for (int j = 0; j < nr; j++) c[j] = accumulate ? c[j] + tile[i][j] : tile[i][j] + add;
    }
}
#else
static inline void FC_LOCAL(ukernel)(fc_index kc, const T *restrict A, const T *restrict B,
                                     T *restrict C, fc_index ldc, int mr, int nr, int accumulate,
                                     const T *restrict bias) {
    T acc[FC_MR][FC_NR];
    memset(acc, 0, sizeof(acc));
    for (fc_index r = 0; r < kc; r++)
        for (int i = 0; i < FC_MR; i++) {
            const T a = A[r * FC_MR + i];
            for (int j = 0; j < FC_NR; j++) acc[i][j] += a * B[r * FC_NR + j];
        }
    for (int i = 0; i < mr; i++) {
        T *c = C + i * ldc;
        const T add = (!accumulate && bias) ? bias[i] : (T)0;
        for (int j = 0; j < nr; j++) c[j] = accumulate ? c[j] + acc[i][j] : acc[i][j] + add;
    }
}
#endif

/* ---- packing -------------------------------------------------------------------------------- */

/* A(i, k) = src[i * rs + k * cs] for i < m, k < kd, into panels [m / MR][kd][MR] (rows past m are
 * zero). Used for W (forward), W^T (input gradient) and dY (weight gradient). */
static void FC_LOCAL(pack_a)(fc_index m, fc_index kd, const T *src, fc_index rs, fc_index cs,
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

/* Window origin (top-left, in input coordinates) of output pixels p0 .. p0+n-1; pixels past the
 * image get an origin so far outside that every offset stays out of bounds. */
static void FC_LOCAL(window_origins)(const fc_conv2d_params *p, fc_index p0, fc_index n,
                                     fc_index *ih0, fc_index *iw0) {
    const fc_index P = p->out_h * p->out_w;
    fc_index oh = p0 / p->out_w, ow = p0 % p->out_w;
    for (fc_index q = 0; q < n; q++) {
        if (p0 + q < P) {
            ih0[q] = oh * p->stride_h - p->pad_top;
            iw0[q] = ow * p->stride_w - p->pad_left;
            if (++ow == p->out_w) { ow = 0; oh++; }
        } else {
            ih0[q] = -((fc_index)1 << 62);
            iw0[q] = -((fc_index)1 << 62);
        }
    }
}

/* col(X)(r, q) for r in [r0, r0+kc) and tile pixels q in [0, nc), into panels [nc / NR][kc][NR].
 * xg points at channel 0 of this group in this image. */
static void FC_LOCAL(pack_b_im2col)(const fc_conv2d_params *p, const T *xg, fc_index r0,
                                    fc_index kc, fc_index nc, const fc_index *ih0,
                                    const fc_index *iw0, T *dst) {
    const fc_index H = p->in_h, W = p->in_w, kk = p->kernel_h * p->kernel_w;
    for (fc_index q0 = 0; q0 < nc; q0 += FC_NR) {
        const int nr = (int)FC_MIN(FC_NR, nc - q0);
        fc_index c = r0 / kk, i = (r0 % kk) / p->kernel_w, j = r0 % p->kernel_w;
        for (fc_index r = 0; r < kc; r++, dst += FC_NR) {
            const T *src = xg + c * H * W;
            const fc_index di = i * p->dilation_h, dj = j * p->dilation_w;
            int q = 0;
            for (; q < nr; q++) {
                const fc_index ih = ih0[q0 + q] + di, iw = iw0[q0 + q] + dj;
                dst[q] = ((fc_uindex)ih < (fc_uindex)H && (fc_uindex)iw < (fc_uindex)W)
                             ? src[ih * W + iw] : (T)0;
            }
            for (; q < FC_NR; q++) dst[q] = (T)0;
            if (++j == p->kernel_w) { j = 0; if (++i == p->kernel_h) { i = 0; c++; } }
        }
    }
}

/* B(k, q) = src[k * ld + q] for k < kd, q < nc, into panels [nc / NR][kd][NR]. */
static void FC_LOCAL(pack_b_rows)(fc_index kd, fc_index nc, const T *src, fc_index ld, T *dst) {
    for (fc_index q0 = 0; q0 < nc; q0 += FC_NR) {
        const int nr = (int)FC_MIN(FC_NR, nc - q0);
        for (fc_index k = 0; k < kd; k++, dst += FC_NR) {
            int q = 0;
            for (; q < nr; q++) dst[q] = src[k * ld + q0 + q];
            for (; q < FC_NR; q++) dst[q] = (T)0;
        }
    }
}

/* col(X)^T(q, r) for tile pixels q < nc and r in [r0, r0+nr_total), into panels
 * [nr_total / NR][nc][NR]: each panel gathers NR kernel taps for every pixel. */
static void FC_LOCAL(pack_b_im2col_t)(const fc_conv2d_params *p, const T *xg, fc_index r0,
                                      fc_index ncols, fc_index nc, const fc_index *ih0,
                                      const fc_index *iw0, T *dst) {
    const fc_index H = p->in_h, W = p->in_w, kk = p->kernel_h * p->kernel_w;
    for (fc_index c0 = 0; c0 < ncols; c0 += FC_NR) {
        const int nr = (int)FC_MIN(FC_NR, ncols - c0);
        fc_index coff[FC_NR], di[FC_NR], dj[FC_NR];
        for (int t = 0; t < nr; t++) {
            const fc_index r = r0 + c0 + t;
            coff[t] = (r / kk) * H * W;
            di[t] = ((r % kk) / p->kernel_w) * p->dilation_h;
            dj[t] = (r % p->kernel_w) * p->dilation_w;
        }
        for (fc_index q = 0; q < nc; q++, dst += FC_NR) {
            int t = 0;
            for (; t < nr; t++) {
                const fc_index ih = ih0[q] + di[t], iw = iw0[q] + dj[t];
                dst[t] = ((fc_uindex)ih < (fc_uindex)H && (fc_uindex)iw < (fc_uindex)W)
                             ? xg[coff[t] + ih * W + iw] : (T)0;
            }
            for (; t < FC_NR; t++) dst[t] = (T)0;
        }
    }
}

/* Split P pixels into equal tiles of at most `max_tile`, rounded up to NR. */
static fc_index FC_LOCAL(tile_size)(fc_index P, fc_index max_tile) {
    const fc_index ntiles = FC_CEIL_DIV(P, max_tile);
    const fc_index t = FC_CEIL_DIV(P, ntiles);
    return FC_CEIL_DIV(t, FC_NR) * FC_NR;
}

/* ---- forward -------------------------------------------------------------------------------- */

int FC_FN(conv2d_fwd)(const fc_conv2d_params *p, const T *x, const T *w, const T *bias, T *y,
                      int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kk = p->kernel_h * p->kernel_w, R = Cg * kk, P = p->out_h * p->out_w;
    const fc_index HW = p->in_h * p->in_w;
    const fc_index nc_max = FC_LOCAL(tile_size)(P, FC_NC_MAX);
    const fc_index ntiles = FC_CEIL_DIV(P, nc_max);
    const fc_index ntasks = p->batch * G * ntiles;
    const fc_index kblocks = FC_CEIL_DIV(Kg, FC_MR);
    const fc_index kc_max = FC_MIN(R, FC_KC);
    int failed = 0;

    /* Weights packed once for all tasks: [group][k block][R][MR]. */
    T *wp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(G * kblocks * FC_MR * R));
    if (!wp) return FC_ENOMEM;
    for (fc_index g = 0; g < G; g++)
        FC_LOCAL(pack_a)(Kg, R, w + g * Kg * R, R, 1, wp + g * kblocks * FC_MR * R);

    const int nt = fc_threads_for(nthreads, (double)p->batch * p->out_channels * P * R,
                                  FC_CONV_MIN_WORK, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *bp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(kc_max * nc_max));
        fc_index *org = (fc_index *)malloc(sizeof(fc_index) * 2 * (size_t)nc_max);
        if (!bp || !org) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(dynamic, 1))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!bp || !org) continue;
            const fc_index tile = t % ntiles, g = (t / ntiles) % G, n = t / (ntiles * G);
            const fc_index p0 = tile * nc_max, nc = FC_MIN(nc_max, P - p0);
            const T *xg = x + (n * p->in_channels + g * Cg) * HW;
            T *yg = y + (n * p->out_channels + g * Kg) * P + p0;
            const T *bg = bias ? bias + g * Kg : NULL;
            FC_LOCAL(window_origins)(p, p0, nc, org, org + nc_max);
            for (fc_index r0 = 0; r0 < R; r0 += FC_KC) {
                const fc_index kc = FC_MIN(FC_KC, R - r0);
                FC_LOCAL(pack_b_im2col)(p, xg, r0, kc, nc, org, org + nc_max, bp);
                for (fc_index kb = 0; kb < kblocks; kb++) {
                    const T *ap = wp + (g * kblocks + kb) * FC_MR * R + r0 * FC_MR;
                    const int mr = (int)FC_MIN(FC_MR, Kg - kb * FC_MR);
                    for (fc_index q0 = 0; q0 < nc; q0 += FC_NR)
                        FC_LOCAL(ukernel)(kc, ap, bp + q0 * kc, yg + kb * FC_MR * P + q0, P, mr,
                                          (int)FC_MIN(FC_NR, nc - q0), r0 > 0,
                                          bg ? bg + kb * FC_MR : NULL);
                }
            }
        }
        fc_aligned_free(bp);
        free(org);
    }
    fc_aligned_free(wp);
    return failed ? FC_ENOMEM : FC_OK;
}

/* ---- input gradient ------------------------------------------------------------------------- */

int FC_FN(conv2d_bwd_input)(const fc_conv2d_params *p, const T *gy, const T *w, T *gx,
                            int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kk = p->kernel_h * p->kernel_w, R = Cg * kk, P = p->out_h * p->out_w;
    const fc_index H = p->in_h, W = p->in_w, HW = H * W;
    const fc_index cb = FC_MAX(1, FC_ROWS_MAX / kk); /* channels per task */
    const fc_index cblocks = FC_CEIL_DIV(Cg, cb);
    const fc_index rows_max = FC_CEIL_DIV(FC_MIN(cb, Cg) * kk, FC_MR) * FC_MR;
    const fc_index nc_max = FC_LOCAL(tile_size)(P, FC_NC_MAX);
    const fc_index ntasks = p->batch * G * cblocks;
    const fc_index kc_max = FC_MIN(Kg, FC_KC);
    int failed = 0;

    const int nt = fc_threads_for(nthreads, (double)p->batch * p->out_channels * P * R,
                                  FC_CONV_MIN_WORK, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *bp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(kc_max * nc_max));
        T *col = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(rows_max * nc_max));
        T *wtp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(rows_max * Kg));
        fc_index *org = (fc_index *)malloc(sizeof(fc_index) * 2 * (size_t)nc_max);
        const int ok = bp && col && wtp && org;
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(dynamic, 1))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!ok) continue;
            const fc_index blk = t % cblocks, g = (t / cblocks) % G, n = t / (cblocks * G);
            const fc_index c0 = blk * cb, c1 = FC_MIN(Cg, c0 + cb);
            const fc_index row0 = c0 * kk, rows = (c1 - c0) * kk;
            T *gxg = gx + (n * p->in_channels + g * Cg) * HW;
            const T *gyg = gy + (n * p->out_channels + g * Kg) * P;
            memset(gxg + c0 * HW, 0, sizeof(T) * (size_t)((c1 - c0) * HW));
            /* This task's rows of W^T, packed as [row block][Kg][MR]. */
            FC_LOCAL(pack_a)(rows, Kg, w + g * Kg * R + row0, 1, R, wtp);
            for (fc_index p0 = 0; p0 < P; p0 += nc_max) {
                const fc_index nc = FC_MIN(nc_max, P - p0);
                const fc_index ldc = FC_CEIL_DIV(nc, FC_NR) * FC_NR;
                for (fc_index k0 = 0; k0 < Kg; k0 += FC_KC) {
                    const fc_index kc = FC_MIN(FC_KC, Kg - k0);
                    FC_LOCAL(pack_b_rows)(kc, nc, gyg + k0 * P + p0, P, bp);
                    for (fc_index m0 = 0; m0 < rows; m0 += FC_MR) {
                        const T *ap = wtp + (m0 * Kg + k0 * FC_MR);
                        for (fc_index q0 = 0; q0 < nc; q0 += FC_NR)
                            FC_LOCAL(ukernel)(kc, ap, bp + q0 * kc, col + m0 * ldc + q0, ldc,
                                              FC_MR, FC_NR, k0 > 0, NULL);
                    }
                }
                /* col2im: scatter-add the tile's rows into this task's channels. */
                FC_LOCAL(window_origins)(p, p0, nc, org, org + nc_max);
                for (fc_index r = 0; r < rows; r++) {
                    const fc_index rr = row0 + r;
                    T *dst = gxg + (rr / kk) * HW;
                    const fc_index di = ((rr % kk) / p->kernel_w) * p->dilation_h;
                    const fc_index dj = (rr % p->kernel_w) * p->dilation_w;
                    const T *src = col + r * ldc;
                    for (fc_index q = 0; q < nc; q++) {
                        const fc_index ih = org[q] + di, iw = org[nc_max + q] + dj;
                        if ((fc_uindex)ih < (fc_uindex)H && (fc_uindex)iw < (fc_uindex)W)
                            dst[ih * W + iw] += src[q];
                    }
                }
            }
        }
        fc_aligned_free(bp);
        fc_aligned_free(col);
        fc_aligned_free(wtp);
        free(org);
    }
    return failed ? FC_ENOMEM : FC_OK;
}

/* ---- weight and bias gradients -------------------------------------------------------------- */

int FC_FN(conv2d_bwd_weight)(const fc_conv2d_params *p, const T *gy, const T *x, T *gw, T *gb,
                             int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kk = p->kernel_h * p->kernel_w, R = Cg * kk, P = p->out_h * p->out_w;
    const fc_index HW = p->in_h * p->in_w, N = p->batch;
    const fc_index wsize = p->out_channels * R;
    const fc_index rblocks = FC_CEIL_DIV(R, FC_RB);
    const fc_index kblocks = FC_CEIL_DIV(Kg, FC_MR);
    const fc_index tile = FC_LOCAL(tile_size)(P, FC_KC);
    /* Batch chunks: enough to occupy a machine's cores when the weight is small, few enough that
     * the private sums stay within ~32 MB. Fixed by the problem, not by the thread count. */
    fc_index chunks = FC_MIN(N, 16);
    while (chunks > 1 && (chunks - 1) * wsize * (fc_index)sizeof(T) > ((fc_index)32 << 20)) chunks--;
    if (chunks < 1) chunks = 1;
    const fc_index ntasks = chunks * G * rblocks;
    int failed = 0;

    T *partial = NULL;
    if (chunks > 1) {
        partial = (T *)fc_aligned_alloc(sizeof(T) * (size_t)((chunks - 1) * wsize));
        if (!partial) return FC_ENOMEM;
    }
    const int nt = fc_threads_for(nthreads, (double)N * p->out_channels * P * R,
                                  FC_CONV_MIN_WORK, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *ap = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(kblocks * FC_MR * tile));
        T *bp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(FC_RB * tile));
        fc_index *org = (fc_index *)malloc(sizeof(fc_index) * 2 * (size_t)tile);
        if (!ap || !bp || !org) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(dynamic, 1))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!ap || !bp || !org) continue;
            const fc_index rb = t % rblocks, g = (t / rblocks) % G, chunk = t / (rblocks * G);
            const fc_index r0 = rb * FC_RB, ncols = FC_MIN(FC_RB, R - r0);
            const fc_index n0 = chunk * N / chunks, n1 = (chunk + 1) * N / chunks;
            T *acc = (chunk == 0 ? gw : partial + (chunk - 1) * wsize) + g * Kg * R;
            for (fc_index k = 0; k < Kg; k++)
                memset(acc + k * R + r0, 0, sizeof(T) * (size_t)ncols);
            for (fc_index n = n0; n < n1; n++) {
                const T *xg = x + (n * p->in_channels + g * Cg) * HW;
                const T *gyg = gy + (n * p->out_channels + g * Kg) * P;
                for (fc_index p0 = 0; p0 < P; p0 += tile) {
                    const fc_index nc = FC_MIN(tile, P - p0);
                    FC_LOCAL(pack_a)(Kg, nc, gyg + p0, P, 1, ap);
                    FC_LOCAL(window_origins)(p, p0, nc, org, org + tile);
                    FC_LOCAL(pack_b_im2col_t)(p, xg, r0, ncols, nc, org, org + tile, bp);
                    for (fc_index kb = 0; kb < kblocks; kb++) {
                        const int mr = (int)FC_MIN(FC_MR, Kg - kb * FC_MR);
                        for (fc_index c0 = 0; c0 < ncols; c0 += FC_NR)
                            FC_LOCAL(ukernel)(nc, ap + kb * FC_MR * nc, bp + c0 * nc,
                                              acc + kb * FC_MR * R + r0 + c0, R, mr,
                                              (int)FC_MIN(FC_NR, ncols - c0), 1, NULL);
                    }
                }
            }
        }
        fc_aligned_free(ap);
        fc_aligned_free(bp);
        free(org);
        FC_PRAGMA(omp barrier)
        if (!failed && partial) {
            FC_PRAGMA(omp for schedule(static))
            for (fc_index e = 0; e < wsize; e++) {
                T s = gw[e];
                for (fc_index c = 1; c < chunks; c++) s += partial[(c - 1) * wsize + e];
                gw[e] = s;
            }
        }
        if (gb) {
            FC_PRAGMA(omp for schedule(static))
            for (fc_index k = 0; k < p->out_channels; k++) {
                T s = 0;
                for (fc_index n = 0; n < N; n++) {
                    const T *row = gy + (n * p->out_channels + k) * P;
                    for (fc_index q = 0; q < P; q++) s += row[q];
                }
                gb[k] = s;
            }
        }
    }
    fc_aligned_free(partial);
    return failed ? FC_ENOMEM : FC_OK;
}

#undef FC_FN
#undef FC_LOCAL
#undef FC_KC
#undef FC_NC_MAX
#undef FC_ROWS_MAX
#undef FC_RB
#undef FC_CONV_MIN_WORK
#undef FC_NV
