/* conv2d_bwd_input.h: the convolution input gradient dX (plus a bias per input channel, when
 * given: this pass is conv_transpose2d's forward), two ways.
 *
 * Stride 1: a forward convolution (conv2d_fwd.h) of dY with the flipped, transposed weights.
 * Otherwise: col(dX)[R, P] = W^T[R, K] * dY[K, P] per image and group, then col2im.
 *
 * Loop structure (col2im): tasks are (image, group, block of input channels), so a task owns its
 * channels of dX and no two tasks write the same element; the blocks are smaller when there are
 * too few images to share out (batch 1). Within a task: its rows of W^T are packed once; over
 * pixel tiles, over KC-deep slices of K, dY is packed into NR-column panels and every MR-row
 * panel of W^T passes through the microkernel into col(dX); the tile's rows are then
 * scatter-added into dX run by run (conv2d_pack.h). */
#ifndef FC_CONV2D_BWD_INPUT_H
#define FC_CONV2D_BWD_INPUT_H

#include "conv2d_depthwise.h"
#include "conv2d_fwd.h"
#include "conv2d_gemm_ukernel.h"
#include "conv2d_pack.h"
#include "conv2d_plain.h"
#include "conv2d_plan.h"
#include "conv2d_weights.h"
#include "fc_template.h"

/* Stride 1: the input gradient is itself a convolution, of dY with the weights transposed
 * (K <-> C per group) and flipped, padded by d*(k-1) - pad, so it runs on the forward kernels
 * (with a plan of its own) with no col2im scatter and the forward's parallelism over pixel
 * tiles. Where that plan is Winograd and there is one group, its kernel transform reads w in
 * place through the flipped, transposed view (transposed_view), the same values the copy would
 * hold, so the copy (a scatter over the whole weights) is skipped; otherwise the pass runs on a
 * copy. FC_NONFINITE when w holds an Inf or NaN: that forward pass pads dY with zeros that
 * would meet them, which the exact gradient (col2im keeps only real output positions) never
 * multiplies. The bias is that forward pass's own. */
static int FC_LOCAL(conv2d_bwd_input_transposed)(const fc_conv2d_params *p, const fc_tuning *tn,
                                                 const T *gy, const T *w, const T *bias, T *gx,
                                                 int nthreads) {
    const fc_index wsize = p->out_channels * (p->in_channels / p->groups) * p->kernel_h *
                           p->kernel_w;
    if (!FC_LOCAL(all_finite)(tn, w, wsize, nthreads)) return FC_NONFINITE;
    fc_conv_plan plan;
    int nonfinite_gy = 0;
    if (p->groups == 1) {
        const T *wv;
        const fc_conv2d_params q = FC_LOCAL(transposed_view)(p, w, &wv);
        if (fc_conv2d_plan(FC_CONV_FWD, FC_DT_ID, FC_ISA_ID, &q, &plan) == FC_OK &&
            plan.algorithm == FC_CONV_WINOGRAD) {
            const int rc = FC_LOCAL(conv2d_fwd_winograd)(&q, plan.tuning, gy, wv, bias, gx,
                                                         nthreads);
            if (rc != FC_NONFINITE) return rc;
            nonfinite_gy = 1; /* dY holds Inf or NaN: Winograd on the copy would say so again */
        }
    }
    T *wt = (T *)fc_aligned_alloc(sizeof(T) * (size_t)wsize);
    if (!wt) return FC_ENOMEM;
    const fc_conv2d_params q = FC_LOCAL(transposed_problem)(p, w, wt);
    int rc;
    if (nonfinite_gy && fc_conv2d_plan(FC_CONV_FWD, FC_DT_ID, FC_ISA_ID, &q, &plan) == FC_OK)
        rc = FC_LOCAL(conv2d_fwd_run)(plan.nonfinite, &q, plan.tuning, gy, wt, bias, gx, nthreads);
    else
        rc = FC_FN(conv2d_fwd)(&q, gy, wt, bias, gx, nthreads);
    fc_aligned_free(wt);
    return rc;
}

/* Any stride: col(dX) = W^T dY tile by tile, scatter-added into dX, whose channels start as
 * their bias (or zero). */
static int FC_LOCAL(conv2d_bwd_input_col2im)(const fc_conv2d_params *p, const fc_tuning *tn,
                                             const T *gy, const T *w, const T *bias, T *gx,
                                             int nthreads) {
    const fc_index G = p->groups, Cg = p->in_channels / G, Kg = p->out_channels / G;
    const fc_index kk = p->kernel_h * p->kernel_w, R = Cg * kk, P = p->out_h * p->out_w;
    const fc_index H = p->in_h, W = p->in_w, HW = H * W;
    /* Channels per task: task_rows rows of col(dX) at most, and fewer when images and groups
     * alone would leave threads idle (batch 1). A channel's sums do not depend on the block it
     * is in, so results do not depend on the split. */
    fc_index cb = FC_MAX(1, tn->task_rows / kk);
    const fc_index images = p->batch * G, wanted = 2 * (fc_index)nthreads;
    if (images * FC_CEIL_DIV(Cg, cb) < wanted) cb = FC_CEIL_DIV(Cg, FC_CEIL_DIV(wanted, images));
    const fc_index cblocks = FC_CEIL_DIV(Cg, cb);
    const fc_index rows_max = FC_CEIL_DIV(FC_MIN(cb, Cg) * kk, FC_MR) * FC_MR;
    const fc_index nc_max = FC_LOCAL(tile_size)(P, tn->tile_pixels);
    const fc_index ntasks = p->batch * G * cblocks;
    const fc_index kc_max = FC_MIN(Kg, tn->kc);
    int failed = 0;

    const int nt = fc_threads_for(nthreads, (double)p->batch * p->out_channels * P * R,
                                  tn->conv_min_work, ntasks);
    FC_PRAGMA(omp parallel num_threads(nt))
    {
        T *bp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(kc_max * nc_max));
        T *col = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(rows_max * nc_max));
        T *wtp = (T *)fc_aligned_alloc(sizeof(T) * (size_t)(rows_max * Kg));
        FC_LOCAL(run_t) *runs = (FC_LOCAL(run_t) *)malloc(sizeof(*runs) * (size_t)nc_max);
        const int ok = bp && col && wtp && runs;
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
            for (fc_index c = c0; c < c1; c++) {
                const T b = bias ? bias[g * Cg + c] : (T)0;
                for (fc_index i = 0; i < HW; i++) gxg[c * HW + i] = b;
            }
            /* This task's rows of W^T, packed as [row block][Kg][MR]. */
            FC_MR_NAME(gemm_pack_a)(rows, Kg, w + g * Kg * R + row0, 1, R, wtp);
            for (fc_index p0 = 0; p0 < P; p0 += nc_max) {
                const fc_index nc = FC_MIN(nc_max, P - p0);
                const fc_index ldc = FC_CEIL_DIV(nc, FC_NR) * FC_NR;
                for (fc_index k0 = 0; k0 < Kg; k0 += tn->kc) {
                    const fc_index kc = FC_MIN(tn->kc, Kg - k0);
                    FC_NR_NAME(gemm_pack_b)(kc, nc, gyg + k0 * P + p0, P, bp);
                    for (fc_index m0 = 0; m0 < rows; m0 += FC_MR) {
                        const T *ap = wtp + (m0 * Kg + k0 * FC_MR);
                        for (fc_index q0 = 0; q0 < nc; q0 += FC_NR)
                            FC_GEMM(kc, ap, bp + q0 * kc, col + m0 * ldc + q0, ldc, FC_MR, FC_NR,
                                    k0 > 0, NULL);
                    }
                }
                /* col2im: scatter-add the tile's rows into this task's channels. */
                const fc_index nruns = FC_LOCAL(tile_runs)(p, p0, nc, nc, runs);
                const int pointwise = FC_LOCAL(is_pointwise)(p);
                for (fc_index r = 0; r < rows; r++) {
                    const fc_index rr = row0 + r;
                    T *dst = gxg + (rr / kk) * HW;
                    const fc_index di = ((rr % kk) / p->kernel_w) * p->dilation_h;
                    const fc_index dj = (rr % p->kernel_w) * p->dilation_w;
                    for (fc_index u = 0; u < nruns; u++) {
                        const FC_LOCAL(run_t) *run = &runs[u];
                        T *row = (T *)FC_LOCAL(tap_row)(p, dst, run, di, pointwise);
                        if (row)
                            FC_FN(scatter_add_run)(row, run->iw0 + dj, pointwise ? 1 : p->stride_w,
                                                   pointwise ? HW : W, run->len,
                                                   col + r * ldc + run->q);
                    }
                }
            }
        }
        fc_aligned_free(bp);
        fc_aligned_free(col);
        fc_aligned_free(wtp);
        free(runs);
    }
    return failed ? FC_ENOMEM : FC_OK;
}

static int FC_LOCAL(conv2d_bwd_input_run)(fc_conv_algorithm algorithm, const fc_conv2d_params *p,
                                          const fc_tuning *tn, const T *gy, const T *w,
                                          const T *bias, T *gx, int nthreads) {
    if (algorithm == FC_CONV_TRANSPOSED)
        return FC_LOCAL(conv2d_bwd_input_transposed)(p, tn, gy, w, bias, gx, nthreads);
    if (algorithm == FC_CONV_DEPTHWISE)
        return FC_LOCAL(conv2d_bwd_input_depthwise)(p, tn, gy, w, bias, gx, nthreads);
    return FC_LOCAL(conv2d_bwd_input_col2im)(p, tn, gy, w, bias, gx, nthreads);
}

/* The algorithm the plan (conv2d_plan.c) gives, then its fallback if that met Inf or NaN. */
int FC_FN(conv2d_bwd_input)(const fc_conv2d_params *p, const T *gy, const T *w, const T *bias,
                            T *gx, int nthreads) {
    fc_conv_plan plan;
    if (fc_conv2d_plan(FC_CONV_BWD_INPUT, FC_DT_ID, FC_ISA_ID, p, &plan) != FC_OK)
        return FC_EALGORITHM;
    const int rc = FC_LOCAL(conv2d_bwd_input_run)(plan.algorithm, p, plan.tuning, gy, w, bias, gx,
                                                  nthreads);
    if (rc != FC_NONFINITE) return rc;
    return FC_LOCAL(conv2d_bwd_input_run)(plan.nonfinite, p, plan.tuning, gy, w, bias, gx,
                                          nthreads);
}

#endif /* FC_CONV2D_BWD_INPUT_H */
