/* conv2d_nhwc_fwd.h: the channels-last convolution forward pass, Y[pixels, K] = sum over taps s of
 * X_s[pixels, C] W_s[C, K] per image and group (x (N, H, W, C), y (N, OH, OW, K)), computed on the
 * NHWC data itself:
 *
 *   direct     an indirect GEMM (conv2d_nhwc_ukernel.h): the A rows of tap s are the input pixels
 *              it reads, in place, through one pointer per (pixel, tap); padding taps point at a
 *              row of zeros, so padding multiplies as in the definition (and Inf or NaN weights
 *              give what the reference gives). No input copy, no stride phases: any geometry.
 *   winograd   F(2x2, 3x3) (conv2d_nhwc_winograd.h) for 3x3 stride-1 layers.
 *   depthwise  one input and one output channel per group: vectorised across the channels
 *              (conv2d_nhwc_depthwise.h).
 *
 * Loop structure (direct): the weights are packed once into B panels [group][K block][tap][C][NR]
 * (from OIHW or HWIO) and the bias into NR-wide rows. Tasks are (image, group, pixel tile,
 * output-channel part). A task points its tile's MR-pixel blocks at their taps' input rows, then,
 * over NR-wide blocks of K (each B panel stays in cache while every block passes), over MR-pixel
 * blocks, runs the microkernel over every tap and channel into Y's rows (K contiguous, so the
 * tile is stored straight from the registers), plus bias. */
#ifndef FC_CONV2D_NHWC_FWD_H
#define FC_CONV2D_NHWC_FWD_H

#include "conv2d_gemm_ukernel.h"
#include "conv2d_nhwc_depthwise.h"
#include "conv2d_nhwc_segments.h"
#include "conv2d_nhwc_ukernel.h"
#include "conv2d_nhwc_winograd.h"
#include "conv2d_plan.h"
#include "conv2d_weights.h"
#include "fc_template.h"

/* B panels of the weights: dst[((g * kblocks + kb) * kk + s) * Cg + c) * NR + u] = w(g * Kg +
 * kb * NR + u, c, s), zero for output channels past Kg. */
static void FC_NR_NAME(conv2d_nhwc_pack_w)(const fc_conv2d_params *p, const T *w, T *dst) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kk = p->kernel_h * p->kernel_w, kblocks = FC_CEIL_DIV(Kg, FC_NR);
    const fc_weight_layout s = fc_weight_layout_of(p);
    for (fc_index g = 0; g < G; g++)
        for (fc_index kb = 0; kb < kblocks; kb++) {
            const int nr = (int)FC_MIN(FC_NR, Kg - kb * FC_NR);
            const T *wk = w + (g * Kg + kb * FC_NR) * s.k_stride;
            for (fc_index t = 0; t < kk; t++)
                for (fc_index c = 0; c < Cg; c++, dst += FC_NR) {
                    const T *src = wk + c * s.c_stride + t * s.tap_stride;
                    int u = 0;
                    for (; u < nr; u++) dst[u] = src[u * s.k_stride];
                    for (; u < FC_NR; u++) dst[u] = (T)0;
                }
        }
}

/* The bias as NR-wide rows per (group, K block), zero past Kg: a whole vector readable per tile. */
static void FC_LOCAL(nhwc_pad_bias)(const fc_conv2d_params *p, const T *bias, T *dst) {
    const fc_index G = p->groups, Kg = p->out_channels / G, kblocks = FC_CEIL_DIV(Kg, FC_NR);
    for (fc_index g = 0; g < G; g++)
        for (fc_index kb = 0; kb < kblocks; kb++, dst += FC_NR)
            for (fc_index u = 0; u < FC_NR; u++)
                dst[u] = kb * FC_NR + u < Kg ? bias[g * Kg + kb * FC_NR + u] : (T)0;
}

/* For output pixels [p0, p0 + n) of one image and group (base: x's offset of its first pixel's
 * group channels): a[q * count + s] = where segment s of pixel p0 + q reads its run
 * (conv2d_nhwc_segments.h), `zero` for the pixels past n up to a whole MR block; runs that cross
 * the padding are copied into stage. Returns the slots used; with a NULL, only counts them. */
static fc_index FC_LOCAL(nhwc_tile_runs)(const fc_conv2d_params *p, const fc_nhwc_segments *sg,
                                         const T *x, fc_index total, fc_index base, fc_index p0,
                                         fc_index n, const T *zero, T *stage, const T **a) {
    const fc_index OW = p->out_w;
    fc_index used = 0;
    for (fc_index q = 0; q < n;) { /* one output row's stretch at a time */
        const fc_index oh = (p0 + q) / OW, ow0 = (p0 + q) % OW, len = FC_MIN(n - q, OW - ow0);
        for (fc_index s = 0; s < sg->count; s++)
            used += FC_LOCAL(segment_row_runs)(p, sg, s, x, total, base, oh, ow0, len, sg->len,
                                               zero, stage, used, a ? a + q * sg->count + s : NULL,
                                               sg->count);
        q += len;
    }
    if (a)
        for (fc_index q = n; q < FC_CEIL_DIV(n, FC_MR) * FC_MR; q++)
            for (fc_index s = 0; s < sg->count; s++) a[q * sg->count + s] = zero;
    return used;
}

/* Split P pixels into equal tiles of at most `max_tile`, rounded up to MR. */
static fc_index FC_LOCAL(nhwc_tile_size)(fc_index P, fc_index max_tile) {
    const fc_index ntiles = FC_CEIL_DIV(P, max_tile);
    return FC_CEIL_DIV(FC_CEIL_DIV(P, ntiles), FC_MR) * FC_MR;
}

static int FC_LOCAL(conv2d_nhwc_fwd_direct)(const fc_conv2d_params *p, const fc_tuning *tn,
                                            const T *x, const T *w, const T *bias, T *y,
                                            int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index K = p->out_channels, kk = p->kernel_h * p->kernel_w, R = kk * Cg;
    const fc_index P = p->out_h * p->out_w, HWC = p->in_h * p->in_w * p->in_channels;
    const fc_index kblocks = FC_CEIL_DIV(Kg, FC_NR), total = p->batch * HWC;
    fc_nhwc_segments sg;
    if (fc_nhwc_segments_of(p, FC_MR, &sg) != FC_OK) return FC_ENOMEM;
    /* pixels per tile: the tile's pointers (one per segment and pixel) within the budget */
    const fc_index tile_max = FC_MAX(
        FC_MR, FC_MIN(tn->tile_pixels, tn->indirection_pointers / sg.count / FC_MR * FC_MR));
    const fc_index tile = FC_LOCAL(nhwc_tile_size)(P, tile_max);
    const fc_index ntiles = FC_CEIL_DIV(P, tile);
    /* output channels split too when images and tiles alone leave threads idle (batch 1): every
     * output is still summed by one task in one order, so results do not depend on the split */
    const fc_index kparts = FC_MAX(
        1, FC_MIN(kblocks, FC_CEIL_DIV(2 * (fc_index)nthreads, p->batch * G * ntiles)));
    const fc_index ntasks = p->batch * G * ntiles * kparts;
    int failed = 0;

    T *wp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(G * kblocks * R * FC_NR));
    T *bp = bias ? (T *)fc_aligned_alloc(sizeof(T) * (size_t)(G * kblocks * FC_NR)) : NULL;
    T *zero = (T *)calloc((size_t)sg.len, sizeof(T)); /* the padding runs' row */
    if (!wp || (bias && !bp) || !zero) {
        fc_aligned_free(wp);
        fc_aligned_free(bp);
        free(zero);
        fc_nhwc_segments_free(&sg);
        return FC_ENOMEM;
    }
    FC_NR_NAME(conv2d_nhwc_pack_w)(p, w, wp);
    if (bias) FC_LOCAL(nhwc_pad_bias)(p, bias, bp);

    const int nt = fc_threads_for(nthreads, (double)p->batch * K * P * R, tn->conv_min_work,
                                  ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        const T **a = (const T **)malloc(sizeof(*a) * (size_t)(tile * sg.count));
        T *stage = NULL; /* the tile's runs that cross the padding, copied */
        fc_index slots = 0;
        int ok = a != NULL;
        FC_PRAGMA(omp for schedule(dynamic, 1))
        for (fc_index t = 0; t < ntasks; t++) {
            if (!ok) continue;
            const fc_index part = t % kparts, ti = (t / kparts) % ntiles;
            const fc_index ng = t / (kparts * ntiles), g = ng % G, n = ng / G;
            const fc_index p0 = ti * tile, np = FC_MIN(tile, P - p0), base = n * HWC + g * Cg;
            const fc_index kb0 = part * kblocks / kparts, kb1 = (part + 1) * kblocks / kparts;
            const fc_index need = FC_LOCAL(nhwc_tile_runs)(p, &sg, x, total, base, p0, np, zero,
                                                           NULL, NULL);
            ok = FC_LOCAL(nhwc_stage_reserve)(&stage, &slots, need, sg.len_pad);
            if (!ok) continue;
            FC_LOCAL(nhwc_tile_runs)(p, &sg, x, total, base, p0, np, zero, stage, a);
            for (fc_index kb = kb0; kb < kb1; kb++) {
                const T *panel = wp + (g * kblocks + kb) * R * FC_NR;
                const T *brow = bp ? bp + (g * kblocks + kb) * FC_NR : NULL;
                const int nr = (int)FC_MIN(FC_NR, Kg - kb * FC_NR);
                T *yk = y + (n * P + p0) * K + g * Kg + kb * FC_NR;
                for (fc_index q = 0; q < np; q += FC_MR)
                    FC_IGEMM(sg.count, sg.len, a + q * sg.count, panel, yk + q * K, K,
                             (int)FC_MIN(FC_MR, np - q), nr, 0, brow);
            }
        }
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        free(a);
        fc_aligned_free(stage);
    }
    fc_aligned_free(wp);
    fc_aligned_free(bp);
    free(zero);
    fc_nhwc_segments_free(&sg);
    return failed ? FC_ENOMEM : FC_OK;
}

static int FC_LOCAL(conv2d_nhwc_fwd_run)(fc_conv_algorithm algorithm, const fc_conv2d_params *p,
                                         const fc_tuning *tn, const T *x, const T *w, const T *bias,
                                         T *y, int nthreads) {
    if (algorithm == FC_CONV_WINOGRAD)
        return FC_LOCAL(conv2d_nhwc_fwd_winograd)(p, tn, x, w, bias, y, nthreads);
    if (algorithm == FC_CONV_DEPTHWISE)
        return FC_LOCAL(conv2d_nhwc_fwd_depthwise)(p, tn, x, w, bias, y, nthreads);
    return FC_LOCAL(conv2d_nhwc_fwd_direct)(p, tn, x, w, bias, y, nthreads);
}

/* The algorithm the plan (conv2d_plan.c) gives, then its fallback if that met Inf or NaN. */
int FC_FN(conv2d_nhwc_fwd)(const fc_conv2d_params *p, const T *x, const T *w, const T *bias, T *y,
                           int nthreads) {
    fc_conv_plan plan;
    if (fc_conv2d_plan(FC_CONV_NHWC_FWD, FC_DT_ID, FC_ISA_ID, p, &plan) != FC_OK)
        return FC_EALGORITHM;
    const int rc = FC_LOCAL(conv2d_nhwc_fwd_run)(plan.algorithm, p, plan.tuning, x, w, bias, y,
                                                 nthreads);
    if (rc != FC_NONFINITE) return rc;
    return FC_LOCAL(conv2d_nhwc_fwd_run)(plan.nonfinite, p, plan.tuning, x, w, bias, y, nthreads);
}

#endif /* FC_CONV2D_NHWC_FWD_H */
