/* conv2d_nhwc_fwd.h: the channels-last convolution forward pass, Y[pixels, K] = sum over taps s of
 * X_s[pixels, C] W_s[C, K] per image and group (x (N, H, W, C), y (N, OH, OW, K)), computed on the
 * NHWC data itself:
 *
 *   direct     an indirect GEMM (conv2d_nhwc_ukernel.h): the A rows of tap s are the input pixels
 *              it reads, in place, through one pointer per (pixel, tap); padding taps point at a
 *              row of zeros, so padding multiplies as in the definition (and Inf or NaN weights
 *              give what the reference gives). No input copy, no stride phases: any geometry.
 *   im2col     for one or two input channels per group: each tile's pixels' kH kW C/groups
 *              inputs copied into one panel row, then the same GEMM at that depth.
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
#include "conv2d_pack.h"
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

/* What direct and im2col share: their tasks, (image, group, pixel tile, output-channel part) in
 * that order from the slowest, the threads they get, the weights packed as B panels [group][K
 * block][R][NR] (R = kH kW C/groups) with the bias as NR-wide rows, and a run of zeros for the
 * padding. */
typedef struct {
    fc_index tile, ntiles, kparts, ntasks, kblocks;
    int nt, chunk; /* chunk: the tasks a thread takes at a time */
    T *wp, *bp;    /* bp NULL without a bias */
    T *zero;
} FC_LOCAL(nhwc_fwd_work);

static void FC_LOCAL(nhwc_fwd_work_free)(FC_LOCAL(nhwc_fwd_work) *wk) {
    fc_aligned_free(wk->wp);
    fc_aligned_free(wk->bp);
    free(wk->zero);
}

/* Tiles of equal size, at most tile_max pixels, rounded up to MR; the output channels split too
 * when images and tiles alone leave threads idle (batch 1): every output is still summed by one
 * task in one order, so results do not depend on the split. Packs the weights and bias and
 * allocates nzero zeros; FC_ENOMEM with nothing left allocated if that fails. */
static int FC_LOCAL(nhwc_fwd_work_of)(const fc_conv2d_params *p, const fc_tuning *tn, const T *w,
                                      const T *bias, fc_index tile_max, fc_index nzero,
                                      int nthreads, FC_LOCAL(nhwc_fwd_work) *wk) {
    const fc_index G = p->groups, Kg = p->out_channels / G, P = p->out_h * p->out_w;
    const fc_index R = p->kernel_h * p->kernel_w * (p->in_channels / G);
    wk->kblocks = FC_CEIL_DIV(Kg, FC_NR);
    wk->tile = FC_CEIL_DIV(FC_CEIL_DIV(P, FC_CEIL_DIV(P, tile_max)), FC_MR) * FC_MR;
    wk->ntiles = FC_CEIL_DIV(P, wk->tile);
    wk->kparts = FC_MAX(
        1, FC_MIN(wk->kblocks, FC_CEIL_DIV(2 * (fc_index)nthreads, p->batch * G * wk->ntiles)));
    wk->ntasks = p->batch * G * wk->ntiles * wk->kparts;
    wk->nt = fc_threads_for(nthreads, (double)p->batch * p->out_channels * P * R, tn->conv_min_work,
                            wk->ntasks);
    /* an image's tasks at a time while that leaves at least two chunks per thread, as the NCHW
     * forward deals them: one task at a time, the threads met on the loop's shared counter
     * once per task (192 tasks of a few microseconds each on cifar-3x3), and an image's
     * neighbouring tiles, which read the same input rows (im2col: its ring of them), went to
     * different threads. Which thread sums an output does not change its sum. */
    wk->chunk = (int)FC_MAX(
        1, FC_MIN(FC_MIN(wk->ntiles * wk->kparts, wk->ntasks / (2 * (fc_index)wk->nt)), 1 << 20));
    wk->wp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(G * wk->kblocks * R * FC_NR));
    wk->bp = bias ? (T *)fc_aligned_alloc(sizeof(T) * (size_t)(G * wk->kblocks * FC_NR)) : NULL;
    wk->zero = (T *)calloc((size_t)FC_MAX(nzero, 1), sizeof(T));
    if (!wk->wp || (bias && !wk->bp) || !wk->zero) {
        FC_LOCAL(nhwc_fwd_work_free)(wk);
        return FC_ENOMEM;
    }
    FC_NR_NAME(conv2d_nhwc_pack_w)(p, w, wk->wp);
    if (bias) FC_LOCAL(nhwc_pad_bias)(p, bias, wk->bp);
    return FC_OK;
}

/* One task's GEMMs: pixels [p0, p0 + np) of image n, group g, through the K blocks of its part,
 * written into Y with the bias. a holds `count` pointers per pixel (MR-pixel blocks, the last
 * padded), each to `len` values. */
static void FC_LOCAL(nhwc_fwd_tile_gemm)(const fc_conv2d_params *p,
                                         const FC_LOCAL(nhwc_fwd_work) *wk, fc_index n, fc_index g,
                                         fc_index p0, fc_index np, fc_index part, const T **a,
                                         fc_index count, fc_index len, T *y) {
    const fc_index K = p->out_channels, Kg = K / p->groups, P = p->out_h * p->out_w;
    const fc_index R = p->kernel_h * p->kernel_w * (p->in_channels / p->groups);
    const fc_index kb0 = part * wk->kblocks / wk->kparts;
    const fc_index kb1 = (part + 1) * wk->kblocks / wk->kparts;
    for (fc_index kb = kb0; kb < kb1; kb++) {
        const T *panel = wk->wp + (g * wk->kblocks + kb) * R * FC_NR;
        const T *brow = wk->bp ? wk->bp + (g * wk->kblocks + kb) * FC_NR : NULL;
        const int nr = (int)FC_MIN(FC_NR, Kg - kb * FC_NR);
        T *yk = y + (n * P + p0) * K + g * Kg + kb * FC_NR;
#ifdef FC_IGEMM_UKERNEL_WIDE
        /* a last K block of at most NR/2 channels with the block before it, in one pass over
         * the tile's A rows (conv2d_nhwc_ukernel.h): the same sums */
        if (kb + 2 == wk->kblocks && kb + 1 < kb1 && Kg - (kb + 1) * FC_NR <= FC_NR / 2) {
            for (fc_index q = 0; q < np; q += FC_MR)
                FC_IGEMM_UKERNEL_WIDE(count, len, a + q * count, panel, panel + R * FC_NR,
                                      yk + q * K, K, (int)FC_MIN(FC_MR, np - q),
                                      (int)(Kg - kb * FC_NR), 0, brow);
            break;
        }
#endif
        for (fc_index q = 0; q < np; q += FC_MR)
            FC_IGEMM(count, len, a + q * count, panel, yk + q * K, K, (int)FC_MIN(FC_MR, np - q),
                     nr, 0, brow);
    }
}

static int FC_LOCAL(conv2d_nhwc_fwd_direct)(const fc_conv2d_params *p, const fc_tuning *tn,
                                            const T *x, const T *w, const T *bias, T *y,
                                            int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G;
    const fc_index P = p->out_h * p->out_w, HWC = p->in_h * p->in_w * p->in_channels;
    const fc_index total = p->batch * HWC;
    fc_nhwc_segments sg;
    if (fc_nhwc_segments_of(p, FC_MR, &sg) != FC_OK) return FC_ENOMEM;
    /* pixels per tile: the tile's pointers (one per segment and pixel) within the budget */
    const fc_index tile_max = FC_MAX(
        FC_MR, FC_MIN(tn->tile_pixels, tn->indirection_pointers / sg.count / FC_MR * FC_MR));
    FC_LOCAL(nhwc_fwd_work) wk; /* its zeros: the padding runs' row */
    if (FC_LOCAL(nhwc_fwd_work_of)(p, tn, w, bias, tile_max, sg.len, nthreads, &wk) != FC_OK) {
        fc_nhwc_segments_free(&sg);
        return FC_ENOMEM;
    }
    const fc_index tile = wk.tile, ntiles = wk.ntiles, kparts = wk.kparts;
    const T *zero = wk.zero;
    int failed = 0;

    FC_PRAGMA(omp parallel num_threads(wk.nt))
    {
        const T **a = (const T **)malloc(sizeof(*a) * (size_t)(tile * sg.count));
        T *stage = NULL; /* the tile's runs that cross the padding, copied */
        fc_index slots = 0;
        int ok = a != NULL;
        FC_PRAGMA(omp for schedule(dynamic, wk.chunk))
        for (fc_index t = 0; t < wk.ntasks; t++) {
            if (!ok) continue;
            const fc_index part = t % kparts, ti = (t / kparts) % ntiles;
            const fc_index ng = t / (kparts * ntiles), g = ng % G, n = ng / G;
            const fc_index p0 = ti * tile, np = FC_MIN(tile, P - p0), base = n * HWC + g * Cg;
            const fc_index need = FC_LOCAL(nhwc_tile_runs)(p, &sg, x, total, base, p0, np, zero,
                                                           NULL, NULL);
            ok = FC_LOCAL(nhwc_stage_reserve)(&stage, &slots, need, sg.len_pad);
            if (!ok) continue;
            FC_LOCAL(nhwc_tile_runs)(p, &sg, x, total, base, p0, np, zero, stage, a);
            FC_LOCAL(nhwc_fwd_tile_gemm)(p, &wk, n, g, p0, np, part, a, sg.count, sg.len, y);
        }
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        free(a);
        fc_aligned_free(stage);
    }
    FC_LOCAL(nhwc_fwd_work_free)(&wk);
    fc_nhwc_segments_free(&sg);
    return failed ? FC_ENOMEM : FC_OK;
}

/* The im2col panel's rows stop reading the input rows and writing the panel this many values
 * past a run: whole vectors per copy (each run overwritten by the next, in order). */
#define FC_IM2COL_SLACK FC_NR

/* dst[u] = src[u] for u < n, and up to a vector's worth past n clobbered from src. A run of at
 * most half a vector (a 5 x 5 kernel row on one channel) is copied as half a vector: the panel's
 * copies are bound by their stores, and a whole vector's would store three times what it keeps,
 * across two cache lines more often than not. */
static inline void FC_LOCAL(copy_run_over)(T *restrict dst, const T *restrict src, fc_index n) {
#if FC_HAVE_VEC
    if (n <= FC_VL / 2) {
        memcpy(dst, src, sizeof(T) * (size_t)(FC_VL / 2));
        return;
    }
    for (fc_index u = 0; u < n; u += FC_VL) FC_VSTOREU(dst + u, FC_VLOADU(src + u));
#else
    for (fc_index u = 0; u < n; u++) dst[u] = src[u];
#endif
}

/* Values in one zero-padded input row of the im2col panel's (the last run read, plus slack):
 * input column iw at iw + pad_left (a negative padding, the transposed input gradient's, drops
 * the columns before -pad_left). */
static fc_index FC_LOCAL(nhwc_im2col_span)(const fc_conv2d_params *p) {
    const fc_index C = p->in_channels, run = p->kernel_w * C;
    return FC_MAX((p->pad_left + p->in_w) * C, (p->out_w - 1) * p->stride_w * C + run) +
           FC_IM2COL_SLACK;
}

/* One thread's input rows for nhwc_im2col_panel: kH zero-padded rows of nhwc_im2col_span values
 * (`rows`, zero outside the input), the kH row pointers an output row reads (`src`: into `rows`,
 * or the shared row of zeros `zero`), the input row each ring slot holds (`held`, -1 for none)
 * and the image and group they come from (`base`, -1 for none). */
typedef struct {
    T *rows;
    const T **src;
    fc_index *held, base;
    const T *zero;
} FC_LOCAL(im2col_rows_t);

static int FC_LOCAL(im2col_rows_init)(FC_LOCAL(im2col_rows_t) *r, fc_index kH, fc_index span,
                                      const T *zero) {
    r->rows = (T *)calloc((size_t)FC_MAX(kH * span, 1), sizeof(T));
    r->src = (const T **)malloc(sizeof(*r->src) * (size_t)kH);
    r->held = (fc_index *)malloc(sizeof(*r->held) * (size_t)kH);
    r->base = -1;
    r->zero = zero;
    return r->rows && r->src && r->held;
}

static void FC_LOCAL(im2col_rows_free)(FC_LOCAL(im2col_rows_t) *r) {
    free(r->rows);
    free(r->src);
    free(r->held);
}

/* im2col: row q of the panel (R = kH kW C/groups values, tap-major like the B panels) is output
 * pixel p0 + q's inputs, for q < n, of one image and group (base: x's offset of the image's first
 * pixel plus the group's first channel); zero where a tap lies in the padding. With one group and
 * dilation 1 along W a kernel row's kW C values are one run: the kH input rows an output row reads
 * are copied into r's rows, and each pixel's runs copied whole from there. With stride and
 * dilation 1 along H the rows are a ring, input row ih in slot ih mod kH, and r->held[slot] the
 * row a slot holds (emptied when the image or group changes): an output row copies only the one
 * input row the last did not read. Otherwise each tap's
 * C/groups values are gathered from x. */
static void FC_LOCAL(nhwc_im2col_panel)(const fc_conv2d_params *p, const T *x, fc_index base,
                                        fc_index p0, fc_index n, FC_LOCAL(im2col_rows_t) *r,
                                        T *panel) {
    const fc_index C = p->in_channels, Cg = C / p->groups, W = p->in_w, OW = p->out_w;
    const fc_index kH = p->kernel_h, kW = p->kernel_w, run = kW * Cg, R = kH * run;
    const fc_index span = FC_LOCAL(nhwc_im2col_span)(p), step = p->stride_w * C;
    const fc_index first = FC_MAX(-p->pad_left, 0); /* the first input column a run reads */
    if (p->groups == 1 && p->dilation_w == 1) {
        const int ring = p->stride_h == 1 && p->dilation_h == 1;
        T *rows = r->rows;
        const T **src = r->src;
        fc_index *held = r->held;
        if (base != r->base)
            for (fc_index i = 0; i < kH; i++) held[i] = -1;
        r->base = base;
        for (fc_index q = 0; q < n;) { /* one output row's stretch at a time */
            const fc_index oh = (p0 + q) / OW, ow0 = (p0 + q) % OW, len = FC_MIN(n - q, OW - ow0);
            for (fc_index i = 0; i < kH; i++) {
                const fc_index ih = oh * p->stride_h - p->pad_top + i * p->dilation_h;
                src[i] = r->zero;
                if ((fc_uindex)ih >= (fc_uindex)p->in_h) continue;
                const fc_index slot = ring ? ih % kH : i;
                T *row = rows + slot * span;
                src[i] = row;
                if (ring && held[slot] == ih) continue;
                if (ring) held[slot] = ih;
                if (first < W)
                    memcpy(row + (first + p->pad_left) * C, x + base + (ih * W + first) * C,
                           sizeof(T) * (size_t)((W - first) * C));
            }
            for (fc_index k = 0; k < len; k++) {
                T *d = panel + (q + k) * R;
                for (fc_index i = 0; i < kH; i++)
                    FC_LOCAL(copy_run_over)(d + i * run, src[i] + (ow0 + k) * step, run);
            }
            q += len;
        }
        return;
    }
    fc_index oh = p0 / OW, ow = p0 % OW;
    for (fc_index q = 0; q < n; q++, panel += R) {
        const fc_index ih0 = oh * p->stride_h - p->pad_top, iw0 = ow * p->stride_w - p->pad_left;
        T *d = panel;
        for (fc_index i = 0; i < kH; i++, d += run) {
            const fc_index ih = ih0 + i * p->dilation_h;
            const T *row = (fc_uindex)ih < (fc_uindex)p->in_h ? x + base + ih * W * C : NULL;
            for (fc_index j = 0; j < kW; j++) {
                const fc_index iw = iw0 + j * p->dilation_w;
                const T *at = row && (fc_uindex)iw < (fc_uindex)W ? row + iw * C : NULL;
                FC_LOCAL(gather_span)(at, 0, 1, Cg, at ? 0 : Cg, Cg, d + j * Cg, 1);
            }
        }
        if (++ow == OW) {
            ow = 0;
            oh++;
        }
    }
}

/* For few input channels: each tile's im2col panel, then one indirect GEMM of depth kH kW C/groups
 * per MR pixels (a pointer per panel row), where `direct` would start a short run per kernel row
 * or tap. The same tasks, B panels and order of the sums as `direct`: the results are the same bit
 * for bit, padding multiplied as in the definition. */
static int FC_LOCAL(conv2d_nhwc_fwd_im2col)(const fc_conv2d_params *p, const fc_tuning *tn,
                                            const T *x, const T *w, const T *bias, T *y,
                                            int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, R = p->kernel_h * p->kernel_w * Cg;
    const fc_index P = p->out_h * p->out_w, HWC = p->in_h * p->in_w * p->in_channels;
    const fc_index kH = p->kernel_h;
    /* one group and dilation 1 along W: whole kernel rows copied from zero-padded input rows */
    const fc_index span = G == 1 && p->dilation_w == 1 ? FC_LOCAL(nhwc_im2col_span)(p) : 0;
    /* pixels per tile: the panel's values within the indirection budget */
    const fc_index tile_max = FC_MAX(
        FC_MR, FC_MIN(tn->tile_pixels, tn->indirection_pointers / R / FC_MR * FC_MR));
    FC_LOCAL(nhwc_fwd_work) wk; /* its zeros: the padding rows' row */
    if (FC_LOCAL(nhwc_fwd_work_of)(p, tn, w, bias, tile_max, span, nthreads, &wk) != FC_OK)
        return FC_ENOMEM;
    const fc_index tile = wk.tile, ntiles = wk.ntiles, kparts = wk.kparts;
    int failed = 0;

    FC_PRAGMA(omp parallel num_threads(wk.nt))
    {
        T *panel = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(tile * R + FC_IM2COL_SLACK));
        const T **a = (const T **)malloc(sizeof(*a) * (size_t)tile); /* tile: MR rows a block */
        FC_LOCAL(im2col_rows_t) r;
        const int ok = FC_LOCAL(im2col_rows_init)(&r, kH, span, wk.zero) && panel && a;
        FC_PRAGMA(omp for schedule(dynamic, wk.chunk))
        for (fc_index t = 0; t < wk.ntasks; t++) {
            if (!ok) continue;
            const fc_index part = t % kparts, ti = (t / kparts) % ntiles;
            const fc_index ng = t / (kparts * ntiles), g = ng % G, n = ng / G;
            const fc_index p0 = ti * tile, np = FC_MIN(tile, P - p0), base = n * HWC + g * Cg;
            FC_LOCAL(nhwc_im2col_panel)(p, x, base, p0, np, &r, panel);
            /* the rows past the tile's last pixel, up to a whole MR block, read its first */
            for (fc_index q = 0; q < tile; q++) a[q] = panel + (q < np ? q : 0) * R;
            FC_LOCAL(nhwc_fwd_tile_gemm)(p, &wk, n, g, p0, np, part, a, 1, R, y);
        }
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        free(a);
        FC_LOCAL(im2col_rows_free)(&r);
        fc_aligned_free(panel);
    }
    FC_LOCAL(nhwc_fwd_work_free)(&wk);
    return failed ? FC_ENOMEM : FC_OK;
}

static int FC_LOCAL(conv2d_nhwc_fwd_run)(fc_conv_algorithm algorithm, const fc_conv2d_params *p,
                                         const fc_tuning *tn, const T *x, const T *w, const T *bias,
                                         T *y, int nthreads) {
    if (algorithm == FC_CONV_WINOGRAD)
        return FC_LOCAL(conv2d_nhwc_fwd_winograd)(p, tn, x, w, bias, y, nthreads);
    if (algorithm == FC_CONV_DEPTHWISE)
        return FC_LOCAL(conv2d_nhwc_fwd_depthwise)(p, tn, x, w, bias, y, nthreads);
    if (algorithm == FC_CONV_IM2COL)
        return FC_LOCAL(conv2d_nhwc_fwd_im2col)(p, tn, x, w, bias, y, nthreads);
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
