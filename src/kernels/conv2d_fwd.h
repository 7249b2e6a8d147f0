/* conv2d_fwd.h: the convolution forward pass, Y[K, P] = W[K, R] * col(X)[R, P] per image and
 * group (R = C/groups * kH * kW, P = OH * OW), as a packed GEMM on the stride phases
 * (conv2d_phases.h); Winograd (conv2d_winograd.h) and the plain loops (conv2d_plain.h) where
 * they apply.
 *
 * Loop structure: W is packed once into MR-row panels. Tasks are (image, group, pixel tile,
 * output-channel part), an image's tasks dealt together so each thread splits an image into its
 * phases once. Within a task: over KC-deep slices of R, over NR-wide panels of the tile, one
 * KC x NR panel of col(X) is copied from the phases into an aligned buffer and every MR-row
 * panel of W passes over it through the microkernel into a tile buffer; the tile's real columns
 * are then copied out to Y, one output channel at a time, plus bias. */
#ifndef FC_CONV2D_FWD_H
#define FC_CONV2D_FWD_H

#include "conv2d_depthwise.h"
#include "conv2d_gemm_ukernel.h"
#include "conv2d_pack.h"
#include "conv2d_phases.h"
#include "conv2d_plain.h"
#include "conv2d_plan.h"
#include "conv2d_winograd.h"
#include "fc_template.h"

/* `pixels` runs the channels-last passes' gemm_cols microkernel; the header's other microkernels
 * are theirs alone, unused here */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "conv2d_nhwc_ukernel.h"
#pragma GCC diagnostic pop

/* The stride phases, or copies by kernel column where the phases' grid would drop a large share
 * of its pixels (small outputs of wide kernels) and the copies stay within the phases' bound
 * (conv2d_plan.c). Either gives every output the same terms in the same order. */
static FC_LOCAL(phases_t) FC_LOCAL(fwd_phases)(const fc_conv2d_params *p, const fc_tuning *tn) {
    const FC_LOCAL(phases_t) ph = FC_LOCAL(phase_geometry)(p);
    const FC_LOCAL(phases_t) tc = FC_LOCAL(tap_column_geometry)(p);
    const double data = (double)p->in_h * p->in_w + (double)p->out_h * p->out_w;
    const int wasteful = (double)(ph.wph - p->out_w) > tn->grid_max_waste * (double)ph.wph;
    return wasteful && (double)tc.channel <= tn->phases_ratio * data + tn->phases_slack ? tc : ph;
}

static int FC_LOCAL(conv2d_fwd_direct)(const fc_conv2d_params *p, const fc_tuning *tn, const T *x,
                                       const T *w, const T *bias, T *y, int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kk = p->kernel_h * p->kernel_w, R = Cg * kk, P = p->out_h * p->out_w;
    const fc_index HW = p->in_h * p->in_w, OW = p->out_w;
    const FC_LOCAL(phases_t) ph = FC_LOCAL(fwd_phases)(p, tn);
    const fc_index L = p->out_h * ph.wph; /* grid pixels per image */
    const fc_index nc_max = FC_LOCAL(tile_size)(L, tn->tile_pixels);
    const fc_index ntiles = FC_CEIL_DIV(L, nc_max);
    const fc_index kblocks = FC_CEIL_DIV(Kg, FC_MR);
    /* Output channels split too when images and tiles alone leave threads idle (batch 1). Every
     * output is still summed by one task in one order, so results do not depend on the split. */
    const fc_index kparts = FC_MAX(
        1, FC_MIN(kblocks, FC_CEIL_DIV(2 * (fc_index)nthreads, p->batch * G * ntiles)));
    const fc_index ntasks = p->batch * G * ntiles * kparts;
    /* an image's tasks at a time, while there are enough images to go round */
    const int per_image = (int)FC_MAX(
        1, FC_MIN(FC_MIN(ntiles * kparts, ntasks / (2 * (fc_index)nthreads)), 1 << 20));
    /* phases of one image's group, plus slack for the last tile's padding pixels */
    const fc_index xph_size = Cg * ph.channel + ph.phase + nc_max;
    const int pointwise = FC_LOCAL(is_pointwise)(p);
    int failed = 0;

    /* Weights packed once for all tasks: [group][k block][R][MR]. */
    T *wp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(G * kblocks * FC_MR * R));
    if (!wp) return FC_ENOMEM;
    for (fc_index g = 0; g < G; g++)
        FC_MR_NAME(gemm_pack_a)(Kg, R, w + g * Kg * R, R, 1, wp + g * kblocks * FC_MR * R);

    const int nt = fc_threads_for(nthreads, (double)p->batch * p->out_channels * P * R,
                                  tn->conv_min_work, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *xph = pointwise ? NULL : (T *)fc_aligned_alloc(sizeof(T) * (size_t)xph_size);
        T *cbuf = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(kblocks * FC_MR * nc_max));
        /* a KC x NR panel of col(X); a 1x1 layer read in place packs a whole KC-deep slice of
         * its tile's panels at once (below) */
        T *stage = (T *)fc_aligned_alloc(sizeof(T) *
                                         (size_t)(tn->kc * (pointwise ? nc_max : FC_NR)));
        const T **brow = (const T **)malloc(sizeof(*brow) * (size_t)R);
        const int ok = (xph || pointwise) && cbuf && stage && brow;
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        } else if (!pointwise) { /* the slack; the phases are written in full (split_image) */
            memset(xph + Cg * ph.channel, 0, sizeof(T) * (size_t)(xph_size - Cg * ph.channel));
            FC_LOCAL(tap_rows)(p, &ph, Cg, xph, brow);
        }
        fc_index built = -1; /* which (image, group) xph or brow holds */
        /* an image's tasks at a time: a thread builds each image's phases once, and threads
         * slowed by other work still hand over whole images to faster ones */
        FC_PRAGMA(omp for schedule(dynamic, per_image))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!ok) continue;
            const fc_index part = t % kparts, tile = (t / kparts) % ntiles;
            const fc_index ng = t / (kparts * ntiles), g = ng % G, n = ng / G;
            const fc_index q0 = tile * nc_max, nc = FC_MIN(nc_max, L - q0);
            const fc_index kb0 = part * kblocks / kparts, kb1 = (part + 1) * kblocks / kparts;
            if (built != ng) {
                const T *xg = x + (n * p->in_channels + g * Cg) * HW;
                if (pointwise) /* 1x1, stride 1, no padding: the channels are the phases */
                    for (fc_index c = 0; c < Cg; c++) brow[c] = xg + c * HW;
                else
                    FC_LOCAL(split_image)(p, &ph, xg, Cg, built < 0, xph);
                built = ng;
            }
            /* 1x1 read in place, an image a task (pw-1x1): the task's channels of Y and the
             * input of the image this thread likely takes next (the threads take tasks in
             * turn) asked for into L2, a share after each microkernel call, as `pixels` does:
             * the copy-out's stores and the next image's packing otherwise wait on L3. A wrong
             * guess costs a few idle reads. */
            const char *ahead = NULL, *next_x = NULL;
            size_t ahead_left = 0, next_left = 0, ask_y = 0, ask_x = 0;
            if (pointwise && ntiles == 1 && kparts == 1) {
                const fc_index calls = FC_CEIL_DIV(R, tn->kc) * FC_CEIL_DIV(nc, FC_NR) *
                                       (kb1 - kb0);
                const fc_index k0 = kb0 * FC_MR, k1 = FC_MIN(Kg, kb1 * FC_MR);
                const fc_index next = ng + nt, gn = next % G, nn = next / G;
                ahead = (const char *)(y + (n * p->out_channels + g * Kg + k0) * P);
                ahead_left = sizeof(T) * (size_t)((k1 - k0) * P);
                if (nn < p->batch) {
                    next_x = (const char *)(x + (nn * p->in_channels + gn * Cg) * HW);
                    next_left = sizeof(T) * (size_t)(Cg * HW);
                }
                ask_y = 64 * (size_t)FC_CEIL_DIV(FC_CEIL_DIV(ahead_left, 64), calls);
                ask_x = 64 * (size_t)FC_CEIL_DIV(FC_CEIL_DIV(next_left, 64), calls);
            }
            for (fc_index r0 = 0; r0 < R; r0 += tn->kc) {
                const fc_index kc = FC_MIN(tn->kc, R - r0);
                /* 1x1 read in place: the slice's kc input rows (channels) packed into the tile's
                 * panels in one pass, each row's nc pixels in order, so the reads run through
                 * the image's channels as one stream. Packed a panel at a time, each panel read
                 * a few lines from each of kc rows, more streams than the prefetchers follow,
                 * and the image's first pass came from L3 line by line (perf: the packing was
                 * 40% of pw-1x1's pass, its loads waiting). Columns past the tile are zeros. */
                if (pointwise)
                    for (fc_index r = 0; r < kc; r++) {
                        const T *src = brow[r0 + r] + q0;
                        for (fc_index j = 0; j < nc; j += FC_NR) {
                            T *d = stage + j * kc + r * FC_NR;
                            const fc_index n = FC_MIN(FC_NR, nc - j);
                            if (n == FC_NR) { /* a constant length: vector moves, not rep movs */
                                for (fc_index u = 0; u < FC_NR; u++) d[u] = src[j + u];
                                continue;
                            }
                            fc_index u = 0;
                            for (; u < n; u++) d[u] = src[j + u];
                            for (; u < FC_NR; u++) d[u] = (T)0;
                        }
                    }
                /* the kc x NR block of col(X) stays in L1 while every A panel passes */
                for (fc_index j = 0; j < nc; j += FC_NR) {
                    const T *bp = stage;
                    if (pointwise)
                        bp = stage + j * kc;
                    else
                        FC_NR_NAME(gemm_pack_b_panel)(kc, brow + r0, q0 + j, stage);
                    /* a last panel of at most NR/2 real columns (P = 196: 4) runs on the
                     * half-width tile (FC_GEMM), the same sums on half the multiply-adds; cbuf
                     * has room for whole panels, so the other panels store whole */
                    const int half = nc - j <= FC_NR / 2;
                    for (fc_index kb = kb0; kb < kb1; kb++) {
                        const T *a = wp + (g * kblocks + kb) * FC_MR * R + r0 * FC_MR;
                        T *c = cbuf + kb * FC_MR * nc_max + j;
                        if (half) /* a constant width each: the tile chosen at compile time */
                            FC_GEMM(kc, a, bp, c, nc_max, FC_MR, FC_NR / 2, r0 > 0, NULL);
                        else
                            FC_GEMM(kc, a, bp, c, nc_max, FC_MR, FC_NR, r0 > 0, NULL);
                        const size_t n_y = FC_MIN(ask_y, ahead_left);
                        const size_t n_x = FC_MIN(ask_x, next_left);
                        fc_prefetch_l2(ahead, n_y);
                        fc_prefetch_l2(next_x, n_x);
                        ahead += n_y, ahead_left -= n_y;
                        next_x += n_x, next_left -= n_x;
                    }
                }
            }
            /* the grid's real columns (ow < OW), plus bias (then ReLU if fused), into Y, one
             * channel at a time: the
             * tile's rows of a channel are consecutive in Y, so each channel is one stream the
             * prefetcher follows, where row by row across all channels would keep a write
             * stream open per channel and their misses would wait one by one */
            T *yg = y + (n * p->out_channels + g * Kg) * P;
            for (fc_index k = kb0 * FC_MR; k < FC_MIN(Kg, kb1 * FC_MR); k++) {
                const T b = bias ? bias[g * Kg + k] : (T)0;
                for (fc_index j = 0; j < nc;) {
                    const fc_index q = q0 + j, oh = q / ph.wph, ow = q % ph.wph;
                    const fc_index len = FC_MIN(nc - j, ph.wph - ow);
                    const fc_index valid = FC_MAX(0, FC_MIN(len, OW - ow));
                    const T *src = cbuf + k * nc_max + j;
                    T *dst = yg + k * P + oh * OW + ow;
                    for (fc_index u = 0; u < valid; u++) dst[u] = src[u] + b;
                    if (p->relu) FC_LOCAL(relu_run)(dst, valid);
                    j += len;
                }
            }
        }
        fc_aligned_free(xph);
        fc_aligned_free(cbuf);
        fc_aligned_free(stage);
        free(brow);
    }
    fc_aligned_free(wp);
    return failed ? FC_ENOMEM : FC_OK;
}

/* `pixels`' tile height: MR grid pixels, or FC_PIXELS_WIDE (14, conv2d_nhwc_ukernel.h) where the
 * vector registers hold 14 x NR sums beside a row of B and the broadcast (AVX-512: 28
 * accumulators of 32 registers) and 14-pixel tiles pad the grid no more than MR-pixel ones. More
 * rows per tile load B less often per multiply-add, and a 14 x 14 grid (convnet-5x5) then
 * computes its 196 pixels, not 200. Each output's sum runs in the same order whatever the
 * height, so the results are the same. */
static fc_index FC_LOCAL(pixels_rows)(fc_index L) {
#ifdef FC_PIXELS_WIDE
    if (FC_CEIL_DIV(L, FC_PIXELS_WIDE) * FC_PIXELS_WIDE <= FC_CEIL_DIV(L, FC_MR) * FC_MR)
        return FC_PIXELS_WIDE;
#endif
    return FC_MR;
}

/* `pixels`' copy-out: channels [k0, k1) of an image's [grid pixel][Kp] sums, the grid's real
 * pixels (ow < OW), plus bias (then ReLU if fused), into Y (k, pixel). Real pixels run
 * consecutively on both sides for a row (for the whole image where the grid drops no column), so
 * float32 moves them 16 channels x 16 pixels at a time, transposed in registers: element by
 * element every read is a strided one. The sums are the same either way. */
static void FC_LOCAL(pixels_copy_out)(const fc_conv2d_params *p, fc_index wph, const T *sums,
                                      fc_index Kp, const T *bias, fc_index k0, fc_index k1, T *y) {
    const fc_index OW = p->out_w, P = p->out_h * OW;
    const fc_index run = wph == OW ? P : OW; /* real pixels consecutive in the grid */
    for (fc_index k = k0; k < k1;) {
#ifdef FC_HAVE_VEC16
        const fc_index kb = sizeof(T) == 4 && k + 16 <= k1 ? 16 : 1;
#else
        const fc_index kb = 1;
#endif
        T b[16];
        for (fc_index c = 0; c < kb; c++) b[c] = bias ? bias[k + c] : (T)0;
        for (fc_index q = 0; q < P; q += run) { /* output pixel q is grid pixel q / OW * wph */
            const T *src = sums + (q / OW) * wph * Kp + k;
            T *dst = y + k * P + q;
            fc_index u = 0;
#ifdef FC_HAVE_VEC16
            for (; kb == 16 && u + 16 <= run; u += 16) {
                T block[16 * 16];
                const T *rows[16];
                for (int i = 0; i < 16; i++) rows[i] = src + (u + i) * Kp;
                FC_LOCAL(transpose_block16)(rows, block, 16);
                for (int c = 0; c < 16; c++)
                    for (int i = 0; i < 16; i++) dst[c * P + u + i] = block[c * 16 + i] + b[c];
            }
#endif
            for (fc_index c = 0; c < kb; c++) {
                for (fc_index v = u; v < run; v++) dst[c * P + v] = src[v * Kp + c] + b[c];
                if (p->relu) FC_LOCAL(relu_run)(dst + c * P, run);
            }
        }
        k += kb;
    }
}

/* `pixels`: the same GEMM transposed, Y^T[P, K] = col(X)^T[P, R] * W^T[R, K] per image and
 * group, MR consecutive grid pixels as the tile's rows and NR output channels as its vector
 * lanes. The tile's columns of col(X)^T are read in place from the phases (a tap's MR pixels
 * are consecutive there; gemm_cols), so no panel of col(X) is copied, and the grid is cut into
 * MR pixels rather than NR: 196 pixels compute 200, not 224. W^T is packed once into NR-wide
 * panels, so output channels pay for a multiple of NR. Every output gets direct's terms in
 * direct's order (the same KC slices, each summed from zero and added to the last), so the two
 * agree bit for bit and take the same data.
 *
 * Loop structure: tasks are (image, group, part of the NR panels; parts only when images are
 * fewer than the threads). Within a task: over KC-deep slices of R, over its panels (one
 * KC x NR slice of W^T stays in L1), over the grid's MR-pixel tiles into a [pixel][channel]
 * buffer; then its channels are copied out to Y plus bias. */
static int FC_LOCAL(conv2d_fwd_pixels)(const fc_conv2d_params *p, const fc_tuning *tn, const T *x,
                                       const T *w, const T *bias, T *y, int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kk = p->kernel_h * p->kernel_w, R = Cg * kk, P = p->out_h * p->out_w;
    const fc_index HW = p->in_h * p->in_w;
    const FC_LOCAL(phases_t) ph = FC_LOCAL(fwd_phases)(p, tn);
    const fc_index L = p->out_h * ph.wph, mt = FC_LOCAL(pixels_rows)(L);
    const fc_index Lp = FC_CEIL_DIV(L, mt) * mt;
    const fc_index panels = FC_CEIL_DIV(Kg, FC_NR), Kp = panels * FC_NR;
    const fc_index kparts = FC_MAX(
        1, FC_MIN(panels, FC_CEIL_DIV(2 * (fc_index)nthreads, p->batch * G)));
    const fc_index ntasks = p->batch * G * kparts;
    /* phases of one image's group, plus slack for the last tile's pixels past the grid */
    const fc_index xph_size = Cg * ph.channel + ph.phase + mt;
    int failed = 0;

    /* W^T for all tasks: [group][panel][R][NR], channels past Kg zero (packed below) */
    T *wp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(G * Kp * R));
    if (!wp) return FC_ENOMEM;

    const int nt = fc_threads_for(nthreads, (double)p->batch * p->out_channels * P * R,
                                  tn->conv_min_work, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *xph = (T *)fc_aligned_alloc(sizeof(T) * (size_t)xph_size);
        T *cbuf = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(Lp * Kp));
        const T **brow = (const T **)malloc(sizeof(*brow) * (size_t)R);
        const int ok = xph && cbuf && brow;
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        } else { /* the slack, as direct's */
            memset(xph + Cg * ph.channel, 0, sizeof(T) * (size_t)(xph_size - Cg * ph.channel));
            FC_LOCAL(tap_rows)(p, &ph, Cg, xph, brow);
        }
        /* W^T a panel at a time, shared among the threads: W[K, R] is dY[K, P]'s shape, so
         * pack_dyt's register transposes pack it. At batch 1 a serial transposing copy of the
         * whole weights was a large share of the pass. The barrier at the loop's end keeps every
         * task after the packing. */
        FC_PRAGMA(omp for schedule(static))
        for (fc_index gb = 0; gb < G * panels; gb++) {
            const fc_index g = gb / panels, k0 = (gb % panels) * FC_NR;
            FC_NR_NAME(conv2d_pack_dyt)(w + (g * Kg + k0) * R, FC_MIN(FC_NR, Kg - k0), R, R, R, 0,
                                        R, wp + gb * R * FC_NR);
        }
        fc_index built = -1; /* which (image, group) xph holds */
        FC_PRAGMA(omp for schedule(dynamic, 1))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!ok) continue;
            const fc_index part = t % kparts, ng = t / kparts, g = ng % G, n = ng / G;
            const fc_index b0 = part * panels / kparts, b1 = (part + 1) * panels / kparts;
            if (built != ng) {
                FC_LOCAL(split_image)(p, &ph, x + (n * p->in_channels + g * Cg) * HW, Cg, built < 0,
                                      xph);
                built = ng;
            }
            for (fc_index q = 0; q < Lp; q++)
                memset(cbuf + q * Kp + b0 * FC_NR, 0, sizeof(T) * (size_t)((b1 - b0) * FC_NR));
            /* the task's channels of Y, a few lines asked for after each microkernel call: the
             * copy-out's stores then find them in cache instead of waiting on memory; and so is
             * the input of the image this thread is likely to split next (the threads take
             * tasks in turn), whose reads from memory otherwise stall split_image. A wrong guess
             * costs a few idle reads. */
            T *yg = y + (n * p->out_channels + g * Kg) * P;
            const fc_index k0 = b0 * FC_NR, k1 = FC_MIN(Kg, b1 * FC_NR);
            const char *ahead = (const char *)(yg + k0 * P);
            size_t ahead_left = sizeof(T) * (size_t)((k1 - k0) * P);
            const fc_index next = (t + nt) / kparts, gn = next % G, nn = next / G;
            const int has_next = next != ng && nn < p->batch;
            const char *next_x = (const char *)(has_next ? x + (nn * p->in_channels + gn * Cg) * HW
                                                         : x);
            size_t next_left = has_next ? sizeof(T) * (size_t)(Cg * HW) : 0;
            for (fc_index r0 = 0; r0 < R; r0 += tn->kc) {
                const fc_index kc = FC_MIN(tn->kc, R - r0);
                for (fc_index b = b0; b < b1; b++) {
                    const T *wb = wp + ((g * panels + b) * R + r0) * FC_NR;
                    for (fc_index q = 0; q < Lp; q += mt) {
#ifdef FC_PIXELS_WIDE
                        if (mt == FC_PIXELS_WIDE)
                            FC_LOCAL(gemm_cols_nv)(FC_PIXELS_WIDE, FC_NV, kc, brow + r0, q, wb,
                                                   cbuf + q * Kp + b * FC_NR, Kp);
                        else
#endif
                            FC_UKERNEL(gemm_cols_ukernel)(kc, brow + r0, q, wb,
                                                          cbuf + q * Kp + b * FC_NR, Kp);
                        const size_t ask = FC_MIN(64 * (size_t)(mt / 2), ahead_left);
                        fc_prefetch(ahead, ask);
                        ahead += ask;
                        ahead_left -= ask;
                        const size_t ask_x = FC_MIN(64 * (size_t)(mt / 2), next_left);
                        fc_prefetch_l2(next_x, ask_x);
                        next_x += ask_x;
                        next_left -= ask_x;
                    }
                }
            }
            FC_LOCAL(pixels_copy_out)(p, ph.wph, cbuf, Kp, bias ? bias + g * Kg : NULL, k0, k1, yg);
        }
        fc_aligned_free(xph);
        fc_aligned_free(cbuf);
        free(brow);
    }
    fc_aligned_free(wp);
    return failed ? FC_ENOMEM : FC_OK;
}

static int FC_LOCAL(conv2d_fwd_run)(fc_conv_algorithm algorithm, const fc_conv2d_params *p,
                                    const fc_tuning *tn, const T *x, const T *w, const T *bias,
                                    T *y, int nthreads) {
    switch (algorithm) {
    case FC_CONV_PLAIN:
        return FC_LOCAL(conv2d_fwd_plain)(p, tn, x, w, bias, y, nthreads);
    case FC_CONV_WINOGRAD:
        return FC_LOCAL(conv2d_fwd_winograd)(p, tn, x, w, bias, y, nthreads);
    case FC_CONV_DEPTHWISE:
        return FC_LOCAL(conv2d_fwd_depthwise)(p, tn, x, w, bias, y, nthreads);
    case FC_CONV_PIXELS:
        return FC_LOCAL(conv2d_fwd_pixels)(p, tn, x, w, bias, y, nthreads);
    default:
        return FC_LOCAL(conv2d_fwd_direct)(p, tn, x, w, bias, y, nthreads);
    }
}

/* The algorithm the plan (conv2d_plan.c) gives, then its fallback if that met Inf or NaN. */
int FC_FN(conv2d_fwd)(const fc_conv2d_params *p, const T *x, const T *w, const T *bias, T *y,
                      int nthreads) {
    fc_conv_plan plan;
    if (fc_conv2d_plan(FC_CONV_FWD, FC_DT_ID, FC_ISA_ID, p, &plan) != FC_OK) return FC_EALGORITHM;
    const int rc = FC_LOCAL(conv2d_fwd_run)(plan.algorithm, p, plan.tuning, x, w, bias, y,
                                            nthreads);
    if (rc != FC_NONFINITE) return rc;
    return FC_LOCAL(conv2d_fwd_run)(plan.nonfinite, p, plan.tuning, x, w, bias, y, nthreads);
}

#endif /* FC_CONV2D_FWD_H */
