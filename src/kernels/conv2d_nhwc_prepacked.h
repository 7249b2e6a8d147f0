/* conv2d_nhwc_prepacked.h: the channels-last forward pass on weights packed once, for
 * fastconv.infer's executor, which runs the same layers with the same weights call after call.
 *
 * conv2d_nhwc_fwd packs the weights on every call: B panels for direct and im2col, and for
 * Winograd the kernel transform U = G g G^T into its panels; at batch 1 on few pixels that costs
 * as much as the GEMMs (ResNet-14's 64 -> 64 8 x 8 layer: the transform 29% of the layer's
 * cycles, the GEMMs 22%, Zen 5). Here conv2d_nhwc_prepack writes those panels once, in the
 * selected ISA's tile (NR lanes), and conv2d_nhwc_fwd_prepacked runs the passes' own task loops
 * (conv2d_nhwc_fwd.h, conv2d_nhwc_winograd.h: the same tasks, microkernel calls and order of the
 * sums, so the outputs equal conv2d_nhwc_fwd's bit for bit) on them, plus an epilogue on each
 * task's outputs while they are in cache: y = y + residual (a residual block's shortcut), then
 * ReLU (p->relu), each rounded as the element-wise kernels round them (eltwise_impl.h's relu_fwd
 * and add_relu_fwd), so equal to the separate passes bit for bit.
 *
 * The loops below are conv2d_nhwc_fwd_direct, _im2col and _winograd with the packing taken out;
 * a change to those loops should be made here too (or those passes should take packed weights
 * themselves, which would leave one copy). */
#ifndef FC_CONV2D_NHWC_PREPACKED_H
#define FC_CONV2D_NHWC_PREPACKED_H

#include "conv2d_nhwc_fwd.h"
#include "conv2d_nhwc_winograd.h"
#include "fc_template.h"

/* y[i] = relu?(y[i] + r[i]) (r may be NULL: no residual) for i < n: rounded as add_relu_fwd and
 * relu_fwd do, NaN kept. */
static inline void FC_LOCAL(prepacked_epilogue)(T *restrict y, const T *restrict r, fc_index n,
                                                int relu) {
    if (r && relu) {
        for (fc_index i = 0; i < n; i++) {
            const T s = y[i] + r[i];
            y[i] = s < 0 ? (T)0 : s;
        }
    } else if (r) {
        for (fc_index i = 0; i < n; i++) y[i] = y[i] + r[i];
    } else if (relu) {
        for (fc_index i = 0; i < n; i++) y[i] = y[i] < 0 ? (T)0 : y[i];
    }
}

/* Values of direct's and im2col's packed weights: the B panels [group][K block][R][NR], then, with
 * a bias, its NR-wide rows per (group, K block). */
static fc_index FC_LOCAL(prepacked_panels)(const fc_conv2d_params *p) {
    const fc_index G = p->groups, Kg = p->out_channels / G;
    const fc_index R = p->kernel_h * p->kernel_w * (p->in_channels / G);
    return G * FC_CEIL_DIV(Kg, FC_NR) * R * FC_NR;
}

static fc_index FC_LOCAL(prepacked_size)(const fc_conv2d_params *p, int has_bias) {
    if (p->algorithm == FC_CONV_WINOGRAD)
        return p->groups * 16 * FC_LOCAL(nhwc_winograd_u_stride)(p);
    return FC_LOCAL(prepacked_panels)(p) +
           (has_bias ? p->groups * FC_CEIL_DIV(p->out_channels / p->groups, FC_NR) * FC_NR : 0);
}

int FC_FN(conv2d_nhwc_prepack)(const fc_conv2d_params *p, const T *w, const T *bias, T *packed,
                               fc_index *size, int nthreads) {
    (void)nthreads;
    fc_conv_plan plan;
    const int a = p->algorithm;
    if ((a != FC_CONV_WINOGRAD && a != FC_CONV_DIRECT && a != FC_CONV_IM2COL) ||
        fc_conv2d_plan(FC_CONV_NHWC_FWD, FC_DT_ID, FC_ISA_ID, p, &plan) != FC_OK)
        return FC_EALGORITHM;
    *size = FC_LOCAL(prepacked_size)(p, bias != NULL);
    if (!packed) return FC_OK;
    if (a == FC_CONV_WINOGRAD) {
        const fc_index kblocks = FC_CEIL_DIV(p->out_channels / p->groups, FC_NR);
        int bad = 0;
        for (fc_index gk = 0; gk < p->groups * kblocks; gk++)
            bad |= FC_LOCAL(nhwc_winograd_kernel_panel)(p, w, gk / kblocks, gk % kblocks, packed);
        return bad ? FC_EALGORITHM : FC_OK; /* Inf - Inf in U: only direct is exact */
    }
    FC_NR_NAME(conv2d_nhwc_pack_w)(p, w, packed);
    if (bias) FC_LOCAL(nhwc_pad_bias)(p, bias, packed + FC_LOCAL(prepacked_panels)(p));
    return FC_OK;
}

/* nhwc_fwd_work_of without the packing: wk's panels point into `packed`. */
static int FC_LOCAL(prepacked_work_of)(const fc_conv2d_params *p, const fc_tuning *tn,
                                       const T *packed, int has_bias, fc_index tile_max,
                                       fc_index nzero, int nthreads, FC_LOCAL(nhwc_fwd_work) *wk) {
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
    wk->wp = (T *)packed;
    wk->bp = has_bias ? (T *)packed + FC_LOCAL(prepacked_panels)(p) : NULL;
    wk->zero = (T *)calloc((size_t)FC_MAX(nzero, 1), sizeof(T));
    return wk->zero ? FC_OK : FC_ENOMEM;
}

/* The epilogue over one direct or im2col task's outputs: pixels [p0, p0 + np) of image n, the
 * channels of group g's K blocks of part `part`. */
static void FC_LOCAL(prepacked_task_epilogue)(const fc_conv2d_params *p,
                                              const FC_LOCAL(nhwc_fwd_work) *wk, fc_index n,
                                              fc_index g, fc_index p0, fc_index np, fc_index part,
                                              const T *residual, T *y) {
    if (!residual && !p->relu) return;
    const fc_index K = p->out_channels, Kg = K / p->groups, P = p->out_h * p->out_w;
    const fc_index k0 = part * wk->kblocks / wk->kparts * FC_NR;
    const fc_index k1 = FC_MIN((part + 1) * wk->kblocks / wk->kparts * FC_NR, Kg);
    for (fc_index q = p0; q < p0 + np; q++) {
        const fc_index at = (n * P + q) * K + g * Kg + k0;
        FC_LOCAL(prepacked_epilogue)(y + at, residual ? residual + at : NULL, k1 - k0, p->relu);
    }
}

/* conv2d_nhwc_fwd_direct on packed weights, plus the epilogue. */
static int FC_LOCAL(prepacked_direct)(const fc_conv2d_params *p, const fc_tuning *tn, const T *x,
                                      const T *packed, const T *bias, const T *residual, T *y,
                                      int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G;
    const fc_index P = p->out_h * p->out_w, HWC = p->in_h * p->in_w * p->in_channels;
    const fc_index total = p->batch * HWC;
    fc_nhwc_segments sg;
    if (fc_nhwc_segments_of(p, FC_MR, &sg) != FC_OK) return FC_ENOMEM;
    const fc_index tile_max = FC_MAX(
        FC_MR, FC_MIN(tn->tile_pixels, tn->indirection_pointers / sg.count / FC_MR * FC_MR));
    FC_LOCAL(nhwc_fwd_work) wk;
    if (FC_LOCAL(prepacked_work_of)(p, tn, packed, bias != NULL, tile_max, sg.len, nthreads, &wk) !=
        FC_OK) {
        fc_nhwc_segments_free(&sg);
        return FC_ENOMEM;
    }
    const fc_index tile = wk.tile, ntiles = wk.ntiles, kparts = wk.kparts;
    const T *zero = wk.zero;
    int failed = 0;

    FC_PRAGMA(omp parallel num_threads(wk.nt))
    {
        const T **a = (const T **)malloc(sizeof(*a) * (size_t)(tile * sg.count));
        T *stage = NULL;
        fc_index slots = 0;
        int ok = a != NULL;
        FC_PRAGMA(omp for schedule(dynamic, 1))
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
            FC_LOCAL(prepacked_task_epilogue)(p, &wk, n, g, p0, np, part, residual, y);
        }
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        free(a);
        fc_aligned_free(stage);
    }
    free(wk.zero);
    fc_nhwc_segments_free(&sg);
    return failed ? FC_ENOMEM : FC_OK;
}

/* conv2d_nhwc_fwd_im2col on packed weights, plus the epilogue. */
static int FC_LOCAL(prepacked_im2col)(const fc_conv2d_params *p, const fc_tuning *tn, const T *x,
                                      const T *packed, const T *bias, const T *residual, T *y,
                                      int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, R = p->kernel_h * p->kernel_w * Cg;
    const fc_index P = p->out_h * p->out_w, HWC = p->in_h * p->in_w * p->in_channels;
    const fc_index kH = p->kernel_h;
    const fc_index span = G == 1 && p->dilation_w == 1 ? FC_LOCAL(nhwc_im2col_span)(p) : 0;
    const fc_index tile_max = FC_MAX(
        FC_MR, FC_MIN(tn->tile_pixels, tn->indirection_pointers / R / FC_MR * FC_MR));
    FC_LOCAL(nhwc_fwd_work) wk;
    if (FC_LOCAL(prepacked_work_of)(p, tn, packed, bias != NULL, tile_max, span, nthreads, &wk) !=
        FC_OK)
        return FC_ENOMEM;
    const fc_index tile = wk.tile, ntiles = wk.ntiles, kparts = wk.kparts;
    int failed = 0;

    FC_PRAGMA(omp parallel num_threads(wk.nt))
    {
        T *panel = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(tile * R + FC_IM2COL_SLACK));
        const T **a = (const T **)malloc(sizeof(*a) * (size_t)tile);
        FC_LOCAL(im2col_rows_t) r;
        const int ok = FC_LOCAL(im2col_rows_init)(&r, kH, span, wk.zero) && panel && a;
        FC_PRAGMA(omp for schedule(dynamic, 1))
        for (fc_index t = 0; t < wk.ntasks; t++) {
            if (!ok) continue;
            const fc_index part = t % kparts, ti = (t / kparts) % ntiles;
            const fc_index ng = t / (kparts * ntiles), g = ng % G, n = ng / G;
            const fc_index p0 = ti * tile, np = FC_MIN(tile, P - p0), base = n * HWC + g * Cg;
            FC_LOCAL(nhwc_im2col_panel)(p, x, base, p0, np, &r, panel);
            for (fc_index q = 0; q < tile; q++) a[q] = panel + (q < np ? q : 0) * R;
            FC_LOCAL(nhwc_fwd_tile_gemm)(p, &wk, n, g, p0, np, part, a, 1, R, y);
            FC_LOCAL(prepacked_task_epilogue)(p, &wk, n, g, p0, np, part, residual, y);
        }
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        free(a);
        FC_LOCAL(im2col_rows_free)(&r);
        fc_aligned_free(panel);
    }
    free(wk.zero);
    return failed ? FC_ENOMEM : FC_OK;
}

/* conv2d_nhwc_fwd_winograd on the transformed kernels `up`, plus the epilogue on each tile's
 * outputs. FC_NONFINITE when x holds an Inf or NaN (the weights' were checked when packed). */
static int FC_LOCAL(prepacked_winograd)(const fc_conv2d_params *p, const fc_tuning *tn, const T *x,
                                        const T *up, const T *bias, const T *residual, T *y,
                                        int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index C = p->in_channels, K = p->out_channels, H = p->in_h, W = p->in_w;
    const fc_index OH = p->out_h, OW = p->out_w;
    const fc_index TH = FC_CEIL_DIV(OH, 2), TW = FC_CEIL_DIV(OW, 2), TI = TH * TW;
    const fc_index total = p->batch * TI;
    const fc_index TB = FC_CEIL_DIV(FC_MIN(tn->winograd_block, total), FC_MR) * FC_MR;
    const fc_index nblocks = FC_CEIL_DIV(total, TB);
    const fc_index kblocks = FC_CEIL_DIV(Kg, FC_NR), kg_pad = kblocks * FC_NR;
    const fc_index kparts = FC_MAX(
        1, FC_MIN(kblocks, FC_CEIL_DIV(2 * (fc_index)nthreads, G * nblocks)));
    const fc_index ntasks = G * nblocks * kparts;
    const fc_index panel = Cg * FC_NR, u_stride = FC_LOCAL(nhwc_winograd_u_stride)(p);
    const fc_index v_stride = TB * Cg + 48, m_stride = TB * kg_pad + 48;
    const int relu = p->relu;
    int failed = 0, nonfinite = 0;

    /* zeros for the padding's pixels and for the output transform's bias, which is never NULL
     * (conv2d_nhwc_winograd.h: a NULL bias became a masked load from NULL) */
    T *zero = (T *)calloc((size_t)FC_MAX(Cg, Kg), sizeof(T));
    if (!zero) return FC_ENOMEM;

    const int nt = fc_threads_for(nthreads, (double)p->batch * K * OH * OW * Cg * 9,
                                  tn->conv_min_work, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *vb = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(16 * v_stride));
        T *mb = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(16 * m_stride));
        T *junk = (T *)fc_aligned_alloc(sizeof(T) * (size_t)Kg);
        T *edge = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(16 * Cg));
        const int ok = vb && mb && junk && edge;
        if (!ok) {
            FC_PRAGMA(omp atomic write)
            failed = 1;
        }
        FC_PRAGMA(omp for schedule(dynamic, 1))
        for (fc_index t = 0; t < ntasks; t++) {
            int skip;
            FC_PRAGMA(omp atomic read)
            skip = nonfinite;
            if (!ok || skip) continue;
            const fc_index part = t % kparts, blk = (t / kparts) % nblocks;
            const fc_index g = t / (kparts * nblocks), t0 = blk * TB, nb = FC_MIN(TB, total - t0);
            const fc_index kb0 = part * kblocks / kparts, kb1 = (part + 1) * kblocks / kparts;
            const fc_index k0 = kb0 * FC_NR, nk = FC_MIN(kb1 * FC_NR, Kg) - k0;
            int bad = 0;
            FC_LOCAL(wino_tile_pos) at = FC_LOCAL(wino_tile_at)(t0, TH, TW);
            for (fc_index u = 0; u < nb; u++, FC_LOCAL(wino_tile_next)(&at, TH, TW)) {
                const fc_index ih0 = 2 * at.th - p->pad_top, iw0 = 2 * at.tw - p->pad_left;
                const T *d = edge;
                fc_index rs = 4 * Cg, ps = Cg;
                if (ih0 >= 0 && iw0 >= 0 && ih0 + 4 <= H && iw0 + 4 <= W) {
                    d = x + ((at.n * H + ih0) * W + iw0) * C + g * Cg;
                    rs = W * C;
                    ps = C;
                } else {
                    for (int r = 0; r < 4; r++)
                        for (int q = 0; q < 4; q++) {
                            const fc_index ih = ih0 + r, iw = iw0 + q;
                            const T *src = (fc_uindex)ih < (fc_uindex)H &&
                                                   (fc_uindex)iw < (fc_uindex)W
                                               ? x + ((at.n * H + ih) * W + iw) * C + g * Cg
                                               : zero;
                            memcpy(edge + (r * 4 + q) * Cg, src, sizeof(T) * (size_t)Cg);
                        }
                }
                bad |= FC_LOCAL(nhwc_winograd_input_tile)(d, rs, ps, Cg, vb + u * Cg, v_stride);
            }
            if (bad) {
                FC_PRAGMA(omp atomic write)
                nonfinite = 1;
                continue;
            }
            for (int e = 0; e < 16; e++)
                for (fc_index kb = kb0; kb < kb1; kb++) {
                    const T *ue = up + (g * 16 + e) * u_stride + kb * panel;
                    const int nr = FC_HAVE_GEMM_HALF && Kg - kb * FC_NR <= FC_NR / 2 ? FC_NR / 2
                                                                                     : FC_NR;
                    for (fc_index q = 0; q < nb; q += FC_MR) {
                        const T *a[FC_MR];
                        for (int i = 0; i < FC_MR; i++) a[i] = vb + e * v_stride + (q + i) * Cg;
                        FC_IGEMM(1, Cg, a, ue, mb + e * m_stride + q * kg_pad + kb * FC_NR, kg_pad,
                                 FC_MR, nr, 0, NULL);
                    }
                }
            at = FC_LOCAL(wino_tile_at)(t0, TH, TW);
            for (fc_index u = 0; u < nb; u++, FC_LOCAL(wino_tile_next)(&at, TH, TW)) {
                const fc_index oh0 = 2 * at.th, ow0 = 2 * at.tw;
                T *out[4];
                for (int r = 0; r < 2; r++)
                    for (int q = 0; q < 2; q++)
                        out[r * 2 + q] = oh0 + r < OH && ow0 + q < OW
                                             ? y + ((at.n * OH + oh0 + r) * OW + ow0 + q) * K +
                                                   g * Kg + k0
                                             : junk;
                FC_LOCAL(nhwc_winograd_output_tile)(mb + u * kg_pad + k0, m_stride, nk,
                                                    bias ? bias + g * Kg + k0 : zero, out);
                if (residual || relu)
                    for (int i = 0; i < 4; i++)
                        if (out[i] != junk)
                            FC_LOCAL(prepacked_epilogue)(
                                out[i], residual ? residual + (out[i] - y) : NULL, nk, relu);
            }
        }
        fc_aligned_free(vb);
        fc_aligned_free(mb);
        fc_aligned_free(junk);
        fc_aligned_free(edge);
    }
    free(zero);
    return failed ? FC_ENOMEM : nonfinite ? FC_NONFINITE : FC_OK;
}

/* y = conv(x) + bias (+ residual), then ReLU if p->relu, on weights conv2d_nhwc_prepack packed for
 * p->algorithm (same geometry, same ISA). A Winograd call meeting Inf or NaN in x redoes the
 * layer by the plan's fallback (conv2d_nhwc_fwd's) on the raw weights w, then the epilogue. */
int FC_FN(conv2d_nhwc_fwd_prepacked)(const fc_conv2d_params *p, const T *x, const T *w,
                                     const T *packed, const T *bias, const T *residual, T *y,
                                     int nthreads) {
    fc_conv_plan plan;
    const int a = p->algorithm;
    if ((a != FC_CONV_WINOGRAD && a != FC_CONV_DIRECT && a != FC_CONV_IM2COL) ||
        fc_conv2d_plan(FC_CONV_NHWC_FWD, FC_DT_ID, FC_ISA_ID, p, &plan) != FC_OK)
        return FC_EALGORITHM;
    int rc;
    if (a == FC_CONV_WINOGRAD)
        rc = FC_LOCAL(prepacked_winograd)(p, plan.tuning, x, packed, bias, residual, y, nthreads);
    else if (a == FC_CONV_IM2COL)
        rc = FC_LOCAL(prepacked_im2col)(p, plan.tuning, x, packed, bias, residual, y, nthreads);
    else
        rc = FC_LOCAL(prepacked_direct)(p, plan.tuning, x, packed, bias, residual, y, nthreads);
    if (rc != FC_NONFINITE) return rc;
    rc = FC_LOCAL(conv2d_nhwc_fwd_run)(plan.nonfinite, p, plan.tuning, x, w, bias, y, nthreads);
    if (rc != FC_OK) return rc;
    FC_LOCAL(prepacked_epilogue)(y, residual, p->batch * p->out_h * p->out_w * p->out_channels,
                                 p->relu);
    return FC_OK;
}

#endif /* FC_CONV2D_NHWC_PREPACKED_H */
